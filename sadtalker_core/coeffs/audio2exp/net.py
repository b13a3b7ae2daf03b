"""Audio->expression network (ExpNet, "SimpleWrapperV2") of SadTalker, Zhang et al. 2023.

Also home of the Wav2Lip-style mel encoder (13 conv blocks, 80x16 mel window -> 512 features)
that the pose CVAE reuses with its own weights.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

log = logging.getLogger(__name__)

# (in_channels, out_channels, kernel, stride, padding, residual) of each block of the mel encoder.
# On an (80, 16) window the spatial size goes 80x16 -> 27x16 -> 9x6 -> 3x3 -> 1x1.
_MEL_ENCODER_LAYOUT: tuple[tuple[int, int, int, int | tuple[int, int], int, bool], ...] = (
    (1, 32, 3, 1, 1, False),
    (32, 32, 3, 1, 1, True),
    (32, 32, 3, 1, 1, True),
    (32, 64, 3, (3, 1), 1, False),
    (64, 64, 3, 1, 1, True),
    (64, 64, 3, 1, 1, True),
    (64, 128, 3, 3, 1, False),
    (128, 128, 3, 1, 1, True),
    (128, 128, 3, 1, 1, True),
    (128, 256, 3, (3, 2), 1, False),
    (256, 256, 3, 1, 1, True),
    (256, 512, 3, 1, 0, False),
    (512, 512, 1, 1, 0, False),
)


class ConvBNReLU(nn.Module):
    """Conv2d + BatchNorm2d (+ the input, for residual blocks) followed by ReLU."""

    def __init__(
        self,
        cin: int,
        cout: int,
        kernel: int,
        stride: int | tuple[int, int],
        padding: int,
        residual: bool = False,
    ):
        super().__init__()
        self.conv_block = nn.Sequential(
            nn.Conv2d(cin, cout, kernel, stride, padding), nn.BatchNorm2d(cout)
        )
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv_block(x)
        if self.residual:
            out = out + x
        return torch.relu(out)


def build_mel_encoder() -> nn.Sequential:
    """The 13-block mel encoder: (N, 1, 80, 16) -> (N, 512, 1, 1)"""
    return nn.Sequential(*(ConvBNReLU(*spec) for spec in _MEL_ENCODER_LAYOUT))


@dataclass(frozen=True)
class Audio2ExpConfig:
    """Sizes of the expression network; defaults are those of ``auido2exp_00300-model.pth``."""

    n_mels: int = 80  # mel bins per window (fixed by the encoder layout)
    window: int = 16  # mel frames per window, 200 ms (fixed by the encoder layout)
    audio_dim: int = 512  # mel-encoder feature size
    exp_dim: int = 64  # 3DMM expression coefficients in and out
    blink_dim: int = 1  # eye-blink ratio channel appended per frame

    @classmethod
    def from_state_dict(cls, sd: Mapping[str, torch.Tensor]) -> Audio2ExpConfig:
        """Infer the sizes from an ``audio2exp`` state dict (prefix removed)."""
        out_dim, in_dim = sd["mapping1.weight"].shape
        audio_dim = sd["audio_encoder.12.conv_block.0.weight"].shape[0]
        return cls(audio_dim=audio_dim, exp_dim=out_dim, blink_dim=in_dim - audio_dim - out_dim)


class Audio2ExpNet(nn.Module):
    """ExpNet: one mel window + the reference expression + a blink ratio -> expression, per frame.

    Frames are independent (BatchNorm in eval mode), so any number of frames may be batched.
    The output is the expression itself, not a residual on the reference.

    State-dict keys equal the ``audio2exp.`` block of ``SadTalker_V0.0.2_*.safetensors`` with the
    prefix removed, and the ``model`` entry of ``auido2exp_00300-model.pth``.
    """

    def __init__(self, config: Audio2ExpConfig | None = None):
        super().__init__()
        self.config = config or Audio2ExpConfig()
        c = self.config
        if c.audio_dim != 512:
            raise ValueError(f"audio_dim must be 512 (mel encoder layout), got {c.audio_dim}.")
        self.audio_encoder = build_mel_encoder()
        self.mapping1 = nn.Linear(c.audio_dim + c.exp_dim + c.blink_dim, c.exp_dim)

    def forward(
        self, mel: torch.Tensor, ref_exp: torch.Tensor, blink: torch.Tensor
    ) -> torch.Tensor:
        """Predict the expression of N frames.

        Args:
            mel: (N, 1, 80, 16) float normalised log-mel windows in [-4, 4].
            ref_exp: (N, 64) reference (source) expression coefficients.
            blink: (N, 1) eye-blink ratio in [0, 1] (0 = open).

        Returns:
            (N, 64) expression coefficients.
        """
        n = mel.shape[0]
        feat = self.audio_encoder(mel).reshape(n, -1)  # (N, 512, 1, 1) -> (N, 512)
        x = torch.cat([feat, ref_exp.reshape(n, -1), blink.reshape(n, -1)], dim=1)  # (N, 577)
        return self.mapping1(x)


def build_exp_net(sd: dict) -> Audio2ExpNet:
    """The un-loaded network of an ``audio2exp`` state dict (models.registry.NETWORKS)."""
    return Audio2ExpNet(Audio2ExpConfig())
