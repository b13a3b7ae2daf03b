"""Canonical 3-D keypoint detector (KPDetector) of the SadTalker / face-vid2vid face renderer."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ShapeError
from .motion import coordinate_grid

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class KPDetectorConfig:
    """Hyper-parameters of :class:`KPDetector` (official ``facerender.yaml``)."""

    num_kp: int = 15  # canonical keypoints
    image_channel: int = 3  # RGB input
    block_expansion: int = 32  # width of the first hourglass level (doubles per level)
    max_features: int = 1024  # channel cap of the 2-D down path
    reshape_channel: int = 16384  # 1x1 conv output, = 1024 channels x 16 depth slices
    reshape_depth: int = 16  # depth of the 3-D volume after the reshape
    num_blocks: int = 5  # down blocks (2-D) and up blocks (3-D)
    temperature: float = 0.1  # softmax temperature of the keypoint heatmaps
    scale_factor: float = 0.25  # anti-aliased input downscale (256 -> 64, 512 -> 128)
    kernel_size: int = 3  # conv size in the hourglass and the kp head
    norm_eps: float = 1e-5  # BatchNorm eps


def _width(cfg_expansion: int, level: int, cap: int) -> int:
    return min(cap, cfg_expansion * (2**level))


class AntiAliasDownsample(nn.Module):
    """Gaussian blur then keep every n-th pixel (band-limited downscale by an integer factor).

    The kernel is a persistent buffer (``weight``, (C, 1, k, k)) because the official checkpoint
    stores it; the stored values are used, not recomputed ones.
    """

    def __init__(self, channels: int, scale: float):
        super().__init__()
        sigma = (1 / scale - 1) / 2
        size = 2 * round(sigma * 4) + 1  # 13 taps for sigma 1.5
        self.stride = int(1 / scale)
        self.pad = size // 2  # symmetric, odd kernel
        coords = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
        g = torch.exp(-(coords**2) / (2 * sigma**2))
        kernel = torch.outer(g, g)
        kernel = kernel / kernel.sum()
        self.register_buffer("weight", kernel.expand(channels, 1, size, size).clone())

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, C, H/n, W/n) with n = 1/scale."""
        out = F.pad(image, (self.pad, self.pad, self.pad, self.pad))
        # A strided conv equals the stride-1 conv followed by [::n, ::n].
        return F.conv2d(out, self.weight, stride=self.stride, groups=self.weight.shape[0])


class DownBlock2d(nn.Module):
    """conv3x3 -> BatchNorm -> ReLU -> 2x2 average pool."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int = 3, eps: float = 1e-5):
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, kernel_size, padding=kernel_size // 2)
        self.norm = nn.BatchNorm2d(out_ch, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(F.relu(self.norm(self.conv(x))), 2)  # (B, C, H, W) -> (B, C', H/2, W/2)


class UpBlock3d(nn.Module):
    """Nearest upsample x(1, 2, 2) -> conv3d 3³ -> BatchNorm3d -> ReLU."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int = 3, eps: float = 1e-5):
        super().__init__()
        self.conv = nn.Conv3d(in_ch, out_ch, kernel_size, padding=kernel_size // 2)
        self.norm = nn.BatchNorm3d(out_ch, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=(1, 2, 2))  # (B, C, D, H, W) -> (B, C, D, 2H, 2W)
        return F.relu(self.norm(self.conv(x)))


class DownBlock3d(nn.Module):
    """conv3d 3³ -> BatchNorm3d -> ReLU -> average pool (1, 2, 2)."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int = 3, eps: float = 1e-5):
        super().__init__()
        self.conv = nn.Conv3d(in_ch, out_ch, kernel_size, padding=kernel_size // 2)
        self.norm = nn.BatchNorm3d(out_ch, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.norm(self.conv(x)))
        return F.avg_pool3d(out, (1, 2, 2))  # (B, C', D, H, W) -> (B, C', D, H/2, W/2)


class KPHourglass(nn.Module):
    """2-D encoder -> 1x1 conv -> reshape to a 3-D volume -> 3-D decoder (no skips)."""

    def __init__(self, cfg: KPDetectorConfig):
        super().__init__()
        exp_, cap, n = cfg.block_expansion, cfg.max_features, cfg.num_blocks
        self.reshape_depth = cfg.reshape_depth
        self.down_blocks = nn.Sequential()
        for i in range(n):
            in_ch = cfg.image_channel if i == 0 else _width(exp_, i, cap)
            self.down_blocks.add_module(
                f"down{i}",
                DownBlock2d(in_ch, _width(exp_, i + 1, cap), cfg.kernel_size, cfg.norm_eps),
            )
        self.conv = nn.Conv2d(_width(exp_, n, cap), cfg.reshape_channel, kernel_size=1)
        self.up_blocks = nn.Sequential()
        for i in range(n):
            self.up_blocks.add_module(
                f"up{i}",
                UpBlock3d(
                    _width(exp_, n - i, cap),
                    _width(exp_, n - i - 1, cap),
                    cfg.kernel_size,
                    cfg.norm_eps,
                ),
            )
        self.out_channels = _width(exp_, 0, cap)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(self.down_blocks(x))  # (B, 3, S/4, S/4) -> (B, 16384, S/128, S/128)
        b, c, h, w = out.shape
        out = out.view(b, c // self.reshape_depth, self.reshape_depth, h, w)
        # (B, 16384, h, w) -> (B, 1024, 16, h, w)
        return self.up_blocks(out)  # -> (B, 32, 16, S/4, S/4)


class KPDetector(nn.Module):
    """Canonical keypoint detector: image -> K keypoints as soft-argmax of 3-D heatmaps.

    State-dict keys equal the ``kp_extractor.*`` block of ``SadTalker_V0.0.2_{256,512}.safetensors``
    (prefix removed) and the ``kp_detector`` section of ``facevid2vid_00189-model.pth.tar``.
    No Jacobians are estimated (``estimate_jacobian: False`` in the official config).
    """

    def __init__(self, cfg: KPDetectorConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or KPDetectorConfig()
        self.predictor = KPHourglass(cfg)
        self.kp = nn.Conv3d(
            self.predictor.out_channels,
            cfg.num_kp,
            kernel_size=cfg.kernel_size,
            padding=cfg.kernel_size // 2,
        )
        self.down = AntiAliasDownsample(cfg.image_channel, cfg.scale_factor)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Detect canonical keypoints.

        Args:
            image: (B, 3, S, S) RGB in [0, 1]; S divisible by 128 (256 or 512 in practice).

        Returns:
            (B, K, 3) keypoints (x, y, z), each coordinate in [-1, 1].

        Convention:
            x runs along image width, y along height, z along the 16 depth slices of the
            feature volume, all normalised like :func:`coordinate_grid`.
        """
        if image.dim() != 4 or image.shape[1] != self.cfg.image_channel:
            raise ShapeError(
                f"KPDetector expects (B, {self.cfg.image_channel}, H, W); got {tuple(image.shape)}."
            )
        if image.shape[2] % 128 or image.shape[3] % 128:
            raise ShapeError(
                "KPDetector input height and width must be multiples of 128 (256 or 512); "
                f"got {tuple(image.shape[2:])}."
            )
        x = self.down(image)  # (B, 3, S, S) -> (B, 3, S/4, S/4)
        prediction = self.kp(self.predictor(x))  # (B, K, 16, S/4, S/4)
        b, k, d, h, w = prediction.shape
        logits = prediction.view(b, k, d * h * w)  # (B, K, 16, h, w) -> (B, K, N)
        heatmap = F.softmax(logits / self.cfg.temperature, dim=2)
        grid = coordinate_grid(d, h, w, prediction.dtype, prediction.device)
        return torch.matmul(heatmap, grid.view(d * h * w, 3))  # (B, K, N) @ (N, 3) -> (B, K, 3)


def build_kp_detector(sd: dict) -> KPDetector:
    """The un-loaded network of a ``kp_extractor`` state dict (models.registry.NETWORKS)."""
    return KPDetector(KPDetectorConfig())
