"""MappingNet of SadTalker: 27-frame 3DMM coefficient windows -> head pose and keypoint offsets."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import ShapeError
from .motion import NUM_ANGLE_BINS, HeadMotion

log = logging.getLogger(__name__)

__all__ = ["HeadMotion", "MappingNet", "MappingNetConfig"]


@dataclass(frozen=True)
class MappingNetConfig:
    """Hyper-parameters of :class:`MappingNet` (``mapping_params`` of the official yaml files)."""

    coeff_nc: int = 70  # input coeffs per frame: 70 (mapping_00229, crop/resize), 73 (00109, full)
    descriptor_nc: int = 1024  # hidden channels
    layer: int = 3  # dilated residual conv layers (each trims 6 time steps)
    num_kp: int = 15  # keypoints whose offsets are predicted (exp head = 3 * num_kp)
    num_bins: int = NUM_ANGLE_BINS  # angle classification bins per Euler angle
    window: int = 27  # time steps per input window (radius 13)
    first_kernel: int = 7  # time kernel of the first conv (27 -> 21)
    dilation: int = 3  # dilation of the k3 residual convs (each 2*3 = 6 steps shorter)
    leaky_slope: float = 0.1  # LeakyReLU before each residual conv

    @classmethod
    def from_state_dict(cls, sd: Mapping[str, torch.Tensor]) -> MappingNetConfig:
        """Sizes read from a MappingNet state dict (``coeff_nc`` differs between the two files)."""
        first = sd["first.0.weight"]  # (descriptor_nc, coeff_nc, 7)
        layer = sum(1 for k in sd if k.startswith("encoder") and k.endswith(".1.weight"))
        return cls(
            coeff_nc=int(first.shape[1]),
            descriptor_nc=int(first.shape[0]),
            layer=layer,
            num_kp=int(sd["fc_exp.weight"].shape[0]) // 3,
            num_bins=int(sd["fc_yaw.weight"].shape[0]),
            first_kernel=int(first.shape[2]),
        )


class MappingNet(nn.Module):
    """Temporal conv net mapping coefficient windows to yaw/pitch/roll logits, translation, offsets.

    State-dict keys equal the ``mapping`` section of ``mapping_00229-model.pth.tar`` /
    ``mapping_00109-model.pth.tar``. Unlike upstream's HEEstimator, the head names are not swapped.
    """

    def __init__(self, cfg: MappingNetConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or MappingNetConfig()
        c = cfg.descriptor_nc
        self.first = nn.Sequential(nn.Conv1d(cfg.coeff_nc, c, kernel_size=cfg.first_kernel))
        self.trim = cfg.dilation  # residual path drops (k - 1) * dilation / 2 steps on each side
        for i in range(cfg.layer):
            block = nn.Sequential(
                nn.LeakyReLU(cfg.leaky_slope),
                nn.Conv1d(c, c, kernel_size=3, dilation=cfg.dilation),
            )
            self.add_module(f"encoder{i}", block)
        self.fc_roll = nn.Linear(c, cfg.num_bins)
        self.fc_pitch = nn.Linear(c, cfg.num_bins)
        self.fc_yaw = nn.Linear(c, cfg.num_bins)
        self.fc_t = nn.Linear(c, 3)
        self.fc_exp = nn.Linear(c, 3 * cfg.num_kp)

    def forward(self, window: torch.Tensor) -> HeadMotion:
        """Predict head motion for a batch of coefficient windows.

        Args:
            window: (B, coeff_nc, 27) coefficients, coefficient-major, time last.

        Returns:
            :class:`HeadMotion` with yaw/pitch/roll (B, 66) logits, t (B, 3), exp (B, 45).
        """
        if window.dim() != 3 or window.shape[1] != self.cfg.coeff_nc:
            raise ShapeError(
                f"MappingNet expects (B, {self.cfg.coeff_nc}, 27) windows; "
                f"got {tuple(window.shape)}."
            )
        out = self.first(window)  # (B, C, 27) -> (B, 1024, 21)
        for i in range(self.cfg.layer):
            block = getattr(self, f"encoder{i}")
            out = block(out) + out[:, :, self.trim : -self.trim]  # T -> T - 6: 21 -> 15 -> 9 -> 3
        out = out.mean(dim=2)  # (B, 1024, 3) -> (B, 1024)
        return HeadMotion(
            yaw=self.fc_yaw(out),
            pitch=self.fc_pitch(out),
            roll=self.fc_roll(out),
            t=self.fc_t(out),
            exp=self.fc_exp(out),
        )


def build_mapping(sd: dict, coeff_nc: int | None = None) -> MappingNet:
    """The un-loaded network of a ``mapping`` state dict (models.registry.NETWORKS); its input
    width is read off the first layer (70, or 73 in the official full-mode files) unless given."""
    if coeff_nc is None:
        first = sd.get("first.0.weight")
        coeff_nc = int(first.shape[1]) if first is not None and first.ndim == 3 else 70
    return MappingNet(MappingNetConfig(coeff_nc=coeff_nc))
