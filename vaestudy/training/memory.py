"""A trial's device memory, estimated before it starts, in bytes.

    data        (training + test images) × C·H·W × bytes per stored pixel (1 for uint8) + labels
                (the validation split is carved from the training images; binarised held-out
                images keep the stored type)
    model       members × parameters × 16 bytes (float32 weights, gradients, Adam's two moments)
    batch       members × batch × C·H·W × 4 bytes × `BATCH_FLOATS_PER_PIXEL` (the float batch,
                logits, per-pixel likelihood and their gradients)
    evaluation  one IWAE chunk (`vaestudy.training.evaluation.IWAE_CHUNK_BYTES`)
    context     `CUDA_CONTEXT_BYTES`: the CUDA context of the trial's process (its kernels and
                cuBLAS workspace), which every trial sharing a GPU holds once

An estimate, not a measurement: a network's hidden activations beyond the pixel-sized ones and
the caching allocator's slack are not counted. The parameters are counted on PyTorch's `meta`
device (nothing allocated). Datasets that cannot count their images without reading them
(`Dataset.count` is None: SVHN, CelebA, Omniglot, image folders, `.pt` tensor files) are not
estimated.
"""

from __future__ import annotations

import math

from vaestudy.config.run import RunConfig
from vaestudy.training.datasets import dataset_class
from vaestudy.training.evaluation import IWAE_CHUNK_BYTES

CUDA_CONTEXT_BYTES = 512 * 2**20
BATCH_FLOATS_PER_PIXEL = 8
GIB = 2**30


def trial_memory(cfg: RunConfig, members: int = 1) -> dict[str, int] | None:
    """Bytes of device memory one trial of `cfg` (a pack of `members`) needs, by part (see the
    module doc); None when its dataset cannot say how many images it holds."""
    import torch

    from vaestudy.training.models import build_model

    source = dataset_class(cfg.data.dataset)(cfg.data)
    shape = source.image_shape()
    train, test = source.count("train"), source.count("test")
    if shape is None or train is None or test is None:
        return None
    train = min(train, cfg.data.train_limit or train)
    test = min(test, cfg.data.test_limit or test)
    pixels = math.prod(shape)
    with torch.device("meta"):
        model = build_model(cfg.model, shape, 10 if cfg.model.conditional else 0)
    parameters = sum(p.numel() for p in model.parameters())
    return {
        "data": (train + test) * (pixels * source.pixel_bytes() + 8),
        "model": members * parameters * 16,
        "batch": members * cfg.train.batch_size * pixels * 4 * BATCH_FLOATS_PER_PIXEL,
        "evaluation": IWAE_CHUNK_BYTES,
        "context": CUDA_CONTEXT_BYTES,
    }


def describe(parts: dict[str, int]) -> str:
    """`about 3.4 GiB (data 2.7 GiB, model 0.1 GiB, ...)`."""
    inside = ", ".join(f"{name} {size / GIB:.2f} GiB" for name, size in parts.items())
    return f"about {sum(parts.values()) / GIB:.2f} GiB ({inside})"
