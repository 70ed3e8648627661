"""The GPUs of a machine, for a study's preflight (`vaestudy.study.preflight`): standard library
only. `gpu_memory()` asks `nvidia-smi` (the NVIDIA driver's tool) for the total memory of each
GPU this process may use ($CUDA_VISIBLE_DEVICES respected, as CUDA and Ray do): an empty list
where there is no NVIDIA GPU or driver. On a cluster it runs on each GPU node
(`vaestudy.study.cluster.check_cluster`)."""

from __future__ import annotations

import os
import subprocess


def gpu_memory() -> list[int]:
    """Total bytes of each NVIDIA GPU this process may use; [] where there is none."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and not visible.strip():
        return []
    query = ["nvidia-smi", "--query-gpu=index,uuid,memory.total", "--format=csv,noheader,nounits"]
    try:
        out = subprocess.run(query, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return []
    if out.returncode:
        return []
    rows = [[p.strip() for p in line.split(",")] for line in out.stdout.splitlines() if line]
    if visible is not None:
        keep = {v.strip() for v in visible.split(",")}
        rows = [r for r in rows if r[0] in keep or r[1] in keep]
    return [int(float(r[2])) * 2**20 for r in rows if len(r) == 3]
