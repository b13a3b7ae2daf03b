"""3DMM coefficient regressor of SadTalker: the Deep3DFaceRecon ResNet-50 (Deng et al. 2019) + 7 heads."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..errors import ShapeError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReconNetConfig:
    """Architecture of the face reconstruction network (defaults = the official ``resnet50``)."""

    layers: tuple[int, int, int, int] = (3, 4, 6, 3)  # Bottleneck blocks per stage; ResNet-50
    stem_channels: int = 64  # channels of the 7x7 stem conv and of stage 1's bottleneck
    expansion: int = 4  # Bottleneck output channels = expansion * width (2048 after stage 4)
    bn_eps: float = 1e-5  # BatchNorm epsilon (torch default, as trained)
    id_dims: int = 80  # identity (shape) coefficients of the BFM
    exp_dims: int = 64  # expression coefficients
    tex_dims: int = 80  # texture (albedo) coefficients
    angle_dims: int = 3  # head rotation angles (x, y, z), radians
    gamma_dims: int = 27  # spherical-harmonics lighting, 9 bands x RGB
    xy_trans_dims: int = 2  # head translation (tx, ty)
    z_trans_dims: int = 1  # head translation tz
    input_size: int = 224  # side of the aligned face crop the network was trained on, pixels

    @property
    def head_sizes(self) -> tuple[int, ...]:
        """Output sizes of the seven 1x1-conv heads, in checkpoint order (``final_layers.0..6``)."""
        return (
            self.id_dims,
            self.exp_dims,
            self.tex_dims,
            self.angle_dims,
            self.gamma_dims,
            self.xy_trans_dims,
            self.z_trans_dims,
        )

    @property
    def coeff_dims(self) -> int:
        """Length of the concatenated coefficient vector (257)."""
        return sum(self.head_sizes)

    @property
    def feature_dims(self) -> int:
        """Channels of the pooled backbone feature (2048)."""
        return self.stem_channels * 2 ** (len(self.layers) - 1) * self.expansion


class Bottleneck(nn.Module):
    """torchvision-style ResNet bottleneck (v1.5: the stride sits on the 3x3 conv).

    Args:
        in_channels: input channels.
        width: channels of the 1x1 -> 3x3 path; the block outputs ``width * expansion``.
        stride: spatial stride of the 3x3 conv (and of the projection shortcut).
        expansion: output channel multiplier.
        eps: BatchNorm epsilon.
    """

    def __init__(self, in_channels: int, width: int, stride: int, expansion: int, eps: float):
        super().__init__()
        out_channels = width * expansion
        self.conv1 = nn.Conv2d(in_channels, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width, eps=eps)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width, eps=eps)
        self.conv3 = nn.Conv2d(width, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels, eps=eps)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Sequential | None = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels, eps=eps),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in, H, W) -> (B, width * expansion, H / stride, W / stride)."""
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNetBackbone(nn.Module):
    """ResNet trunk without the classifier: stem, bottleneck stages, global average pool.

    Module names follow torchvision, so the official ``backbone.*`` keys (3DMM net) and the
    RetinaFace ``body.*`` keys load strictly. The pool has no parameters.

    Args:
        layers: bottleneck blocks per stage, (3, 4, 6, 3) for ResNet-50.
        stem_channels: channels of the 7x7 stem and width of stage 1.
        expansion: bottleneck output channels = expansion * width.
        bn_eps: BatchNorm epsilon.
    """

    def __init__(
        self,
        layers: tuple[int, ...] = (3, 4, 6, 3),
        stem_channels: int = 64,
        expansion: int = 4,
        bn_eps: float = 1e-5,
    ):
        super().__init__()
        c = stem_channels
        self.conv1 = nn.Conv2d(3, c, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(c, eps=bn_eps)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        in_channels = c
        for stage, n_blocks in enumerate(layers):
            width = c * 2**stage
            blocks = []
            for i in range(n_blocks):
                stride = 2 if (stage > 0 and i == 0) else 1
                blocks.append(Bottleneck(in_channels, width, stride, expansion, bn_eps))
                in_channels = width * expansion
            self.add_module(f"layer{stage + 1}", nn.Sequential(*blocks))
        self.n_stages = len(layers)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))

    def stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Outputs of every stage: (B, 256, H/4, W/4), (B, 512, H/8, W/8), ... (B, 2048, H/32, W/32)."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))  # (B, 3, H, W) -> (B, 64, H/4, W/4)
        outs = []
        for stage in range(self.n_stages):
            x = getattr(self, f"layer{stage + 1}")(x)
            outs.append(x)
        return outs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> pooled feature (B, 2048, 1, 1)."""
        return self.avgpool(self.stages(x)[-1])  # (B, 2048, H/32, W/32) -> (B, 2048, 1, 1)


class ReconNet(nn.Module):
    """Face reconstruction net: ResNet-50 trunk + seven 1x1-conv coefficient heads.

    State-dict keys equal the ``face_3drecon.*`` block of ``SadTalker_V0.0.2_*.safetensors`` with the
    prefix removed, which is also the ``net_recon`` section of ``epoch_20.pth``.

    Args:
        config: architecture sizes; defaults match the official checkpoint.
    """

    def __init__(self, config: ReconNetConfig | None = None):
        super().__init__()
        self.config = config or ReconNetConfig()
        self.backbone = ResNetBackbone(
            self.config.layers, self.config.stem_channels, self.config.expansion, self.config.bn_eps
        )
        feat = self.config.feature_dims
        self.final_layers = nn.ModuleList(
            nn.Conv2d(feat, n, 1, bias=True) for n in self.config.head_sizes
        )

    def features(self, image: torch.Tensor) -> torch.Tensor:
        """Pooled backbone feature.

        Args:
            image: (B, 3, 224, 224) float RGB in [0, 1], not mean/std-normalised.

        Returns:
            (B, 2048, 1, 1) feature.
        """
        return self.backbone(image)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Regress the 257 3DMM coefficients of an aligned face.

        Args:
            image: (B, 3, 224, 224) float RGB in [0, 1] (``aligned_to_tensor`` of an ``align_for_recon``
                crop), not mean/std-normalised.

        Returns:
            (B, 257) coefficients laid out as described in ``ReconCoeffs``.
        """
        if image.ndim != 4 or image.shape[1] != 3:
            raise ShapeError(
                f"ReconNet expects images of shape (B, 3, H, W); got {tuple(image.shape)}."
            )
        feat = self.backbone(image)
        out = torch.cat([head(feat) for head in self.final_layers], dim=1)  # (B, 257, 1, 1)
        return out.flatten(1)  # (B, 257, 1, 1) -> (B, 257)


def aligned_to_tensor(
    aligned_rgb_u8: np.ndarray, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """Network input from an aligned crop, exactly as the official code builds it.

    The division by 255 is done in float64 and then rounded to float32 (``im_t`` of facerecon.npz).

    Args:
        aligned_rgb_u8: (224, 224, 3) uint8 RGB, or (B, 224, 224, 3).

    Returns:
        (B, 3, 224, 224) float32 in [0, 1] on ``device``.
    """
    arr = np.asarray(aligned_rgb_u8)
    if arr.ndim == 3:
        arr = arr[None]  # (H, W, 3) -> (1, H, W, 3)
    t = torch.from_numpy(arr.astype(np.float64) / 255.0).to(torch.float32)
    return t.permute(0, 3, 1, 2).contiguous().to(device)  # (B, H, W, 3) -> (B, 3, H, W)


@dataclass(frozen=True)
class ReconCoeffs:
    """The 257 regressed coefficients split by meaning (reference §4.2).

    Attributes:
        id: (B, 80) identity/shape coefficients, slice 0:80.
        exp: (B, 64) expression coefficients, slice 80:144.
        tex: (B, 80) texture coefficients, slice 144:224.
        angle: (B, 3) rotation angles x, y, z in radians, slice 224:227.
        gamma: (B, 27) SH lighting, slice 227:254.
        trans: (B, 3) translation tx, ty, tz, slice 254:257.
    """

    id: torch.Tensor
    exp: torch.Tensor
    tex: torch.Tensor
    angle: torch.Tensor
    gamma: torch.Tensor
    trans: torch.Tensor

    @classmethod
    def split(cls, full: torch.Tensor, config: ReconNetConfig | None = None) -> ReconCoeffs:
        """Split a (B, 257) coefficient tensor (views, no copy)."""
        cfg = config or ReconNetConfig()
        sizes = (
            cfg.id_dims,
            cfg.exp_dims,
            cfg.tex_dims,
            cfg.angle_dims,
            cfg.gamma_dims,
            cfg.xy_trans_dims + cfg.z_trans_dims,
        )
        if full.ndim != 2 or full.shape[1] != sum(sizes):
            raise ShapeError(f"Expected (B, {sum(sizes)}) coefficients; got {tuple(full.shape)}.")
        return cls(*torch.split(full, sizes, dim=1))


def coeff_3dmm_row(full: torch.Tensor, trans_params: torch.Tensor | np.ndarray) -> torch.Tensor:
    """SadTalker's per-frame "coeff_3dmm" row: [exp(64), angle(3), trans(3), scale, tx, ty].

    The first 70 numbers drive Audio2Exp/Audio2Pose/MappingNet(70); all 73 feed MappingNet(73)
    in ``full`` mode. The last three are ``trans_params[2:5]`` of ``align_for_recon``.

    Args:
        full: (B, 257) output of ``ReconNet``.
        trans_params: (5,) or (B, 5) float32 ``[w0, h0, scale, tx, ty]``.

    Returns:
        (B, 73) float tensor on ``full``'s device and dtype.
    """
    coeffs = ReconCoeffs.split(full)
    if not isinstance(trans_params, torch.Tensor):
        trans_params = torch.from_numpy(np.asarray(trans_params, dtype=np.float32))
    tp = trans_params.to(device=full.device, dtype=full.dtype).reshape(-1, 5)  # (5,) -> (B or 1, 5)
    tp = tp.expand(full.shape[0], 5)
    return torch.cat([coeffs.exp, coeffs.angle, coeffs.trans, tp[:, 2:5]], dim=1)  # (B, 73)


def build_recon_net(sd: dict) -> ReconNet:
    """The un-loaded network of a ``face_3drecon`` state dict (models.registry.NETWORKS)."""
    return ReconNet(ReconNetConfig())
