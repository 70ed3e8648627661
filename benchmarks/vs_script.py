"""vaestudy against the script a careful researcher writes by hand, on the same study.

    python -m benchmarks.vs_script --data ../shared/data [--device cpu] [--trials 16]

Runs, one after the other, each in a fresh temporary folder and a fresh process as a user
would: `vaestudy run studies/cpu/geco.yaml` (embedded defaults: local Ray, its own tracking
server over a new SQLite store) and the peer `benchmarks/peer_geco.py` (Optuna's `optimize`, a
plain PyTorch GECO loop on resident tensors, MLflow on SQLite; the same space, budget, model and
concurrency; with `--device cuda` the two concurrent trials share the GPU, each asking Ray for
half of it). Prints one side-by-side table: wall time from the command to its exit (set-up
included), trials, trials feasible on the test split (recon <= 125 nats and <= the trial's κ;
vaestudy's verdict also refuses a multiplier pinned at its clip), and the trial each selects (the
least validation KL among the trials feasible on validation) with its test KL and test verdict.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import base_parser

REPO = Path(__file__).resolve().parents[1]
STUDY = REPO / "studies" / "cpu" / "geco.yaml"
YARDSTICK = 125.0


def timed(command: list[str], cwd: Path) -> float:
    start = time.perf_counter()
    proc = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(command)} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    return time.perf_counter() - start


def run_vaestudy(data: Path, device: str, trials: int, folder: Path) -> dict[str, object]:
    from vaestudy.api import report

    gpu = 0.5 if device.startswith("cuda") else 0  # the study's 2 concurrent trials share it
    sets = ["--set", f"data.root={data}", "--set", f"train.device={device}",
            "--set", f"study.resources.gpu={gpu}", "--trials", str(trials)]  # fmt: skip
    wall = timed([sys.executable, "-m", "vaestudy.cli", "run", str(STUDY), *sets], folder)
    trials = report("cpu-geco", tracking_uri=f"sqlite:///{folder / 'mlflow' / 'mlflow.db'}").trials
    chosen = trials[trials["val_feasible"]].sort_values("val/kl").head(1)
    return {
        "wall": wall,
        "trials": len(trials),
        "feasible": int(trials["feasible"].sum()),
        "chosen": None
        if chosen.empty
        else (float(chosen["test/kl"].iloc[0]), bool(chosen["feasible"].iloc[0])),  # fmt: skip
    }


def run_peer(data: Path, device: str, trials: int, folder: Path) -> dict[str, object]:
    command = [sys.executable, "-m", "benchmarks.peer_geco", "--data", str(data),
               "--device", device, "--out", str(folder), "--trials", str(trials)]  # fmt: skip
    wall = timed(command, REPO)
    trials = json.loads((folder / "summary.json").read_text())

    def feasible(t: dict, split: str) -> bool:
        recon = t[split]["recon"]
        return math.isfinite(recon) and recon <= min(YARDSTICK, t["kappa"])

    chosen = sorted((t for t in trials if feasible(t, "val")), key=lambda t: t["val"]["kl"])
    return {
        "wall": wall,
        "trials": len(trials),
        "feasible": sum(feasible(t, "test") for t in trials),
        "chosen": (chosen[0]["test"]["kl"], feasible(chosen[0], "test")) if chosen else None,
    }


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=16, help="trials each (the study's 16)")
    args = parser.parse_args()
    data = Path(args.data).resolve()
    rows = {}
    for name, run in (("vaestudy run", run_vaestudy), ("hand-written peer", run_peer)):
        with tempfile.TemporaryDirectory() as tmp:
            rows[name] = run(data, args.device, args.trials, Path(tmp))
        print(f"{name}: {rows[name]}", flush=True)
    print(f"\n{STUDY.relative_to(REPO)}, device {args.device}: {args.trials} trials, 2 at a time\n")
    print("| what | wall s | trials | feasible on test | selected: test KL (nats) | selected "
          "feasible on test |\n|---|---:|---:|---:|---:|---|")  # fmt: skip
    for name, r in rows.items():
        kl, ok = r["chosen"] or (math.nan, False)
        print(f"| {name} | {r['wall']:.1f} | {r['trials']} | {r['feasible']} | {kl:.2f} | {ok} |")
    ratio = rows["vaestudy run"]["wall"] / rows["hand-written peer"]["wall"]
    print(f"\nvaestudy / peer wall time: {ratio:.2f}x (target <= 1.0x)")


if __name__ == "__main__":
    main()
