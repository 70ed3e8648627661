"""Small conv encoder/decoder of the DeepMind VAE tutorial seed, for square images of 28, 32 or
64 px with any number of channels: stride-2 5×5 convolutions down to 7×7 (28 px) or 8×8 (32, 64
px), a 5×5 convolution to 32 channels, and a linear head; the decoder mirrors it with transposed
convolutions back to C×H×W logits."""

from __future__ import annotations

from torch import Tensor, nn

from vaestudy.config.run import CONV_DOWNSAMPLINGS


def _sizes(shape: tuple[int, int, int]) -> tuple[int, int]:
    """(stride-2 convolutions, the side of the last feature map) for images of `shape`
    (`ModelConfig.shape_problem` has refused any other)."""
    downs = CONV_DOWNSAMPLINGS[shape[1]]
    return downs, shape[1] >> downs


class ConvEncoder(nn.Module):
    def __init__(self, latent_dim: int, shape: tuple[int, int, int]) -> None:
        super().__init__()
        downs, side = _sizes(shape)
        widths = [shape[0], 8, *[16] * (downs - 1)]
        layers: list[nn.Module] = []
        for c_in, c_out in zip(widths, widths[1:], strict=False):
            layers += [nn.Conv2d(c_in, c_out, 5, stride=2, padding=2), nn.ReLU()]
        layers += [nn.Conv2d(widths[-1], 32, 5, stride=1, padding=2), nn.ReLU(), nn.Flatten()]
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(32 * side * side, 2 * latent_dim)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        mu, logvar = self.head(self.body(x)).chunk(2, dim=-1)
        return mu, logvar


class ConvDecoder(nn.Module):
    def __init__(self, in_dim: int, shape: tuple[int, int, int]) -> None:
        super().__init__()
        downs, side = _sizes(shape)
        layers: list[nn.Module] = [
            nn.Linear(in_dim, side * side * 64),
            nn.ReLU(),
            nn.Unflatten(-1, (64, side, side)),
        ]
        widths = [64, *[32] * (downs - 1), shape[0]]
        for i, (c_in, c_out) in enumerate(zip(widths, widths[1:], strict=False)):
            layers.append(nn.ConvTranspose2d(c_in, c_out, 5, stride=2, padding=2, output_padding=1))
            if i < downs - 1:
                layers.append(nn.ReLU())
        self.body = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        return self.body(z)
