"""Face-renderer generator of SadTalker (face-vid2vid OcclusionAwareSPADEGenerator)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ShapeError
from .conv import Conv2d
from .keypoint import DownBlock2d, DownBlock3d, UpBlock3d
from .motion import coordinate_grid
from .spade import SPADEDecoder, SPADEDecoderConfig

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------
# Configs


@dataclass(frozen=True)
class DenseMotionConfig:
    """Hyper-parameters of :class:`DenseMotionNetwork` (``dense_motion_params``)."""

    block_expansion: int = 32  # width of the first 3-D hourglass level
    max_features: int = 1024  # channel cap of the hourglass
    num_blocks: int = 5  # hourglass levels (spatial /32 at the bottom)
    reshape_depth: int = 16  # depth slices of the feature volume
    compress: int = 4  # channels of the compressed source volume sampled per motion
    kp_variance: float = 0.01  # variance of the Gaussian keypoint heatmaps (normalised units²)
    mask_threshold: float = 1e-3  # motion-mask weights below this are zeroed (no renormalisation)
    mask_kernel: int = 7  # conv3d size of the mask head
    occlusion_kernel: int = 7  # conv2d size of the occlusion head


@dataclass(frozen=True)
class GeneratorConfig:
    """Hyper-parameters of :class:`OcclusionAwareSPADEGenerator` (official ``generator_params``)."""

    image_channel: int = 3  # RGB input
    feature_channel: int = 32  # channels of the 3-D feature volume
    num_kp: int = 15  # keypoints (motions = num_kp + 1 with the identity/background motion)
    block_expansion: int = 64  # width of the first 2-D encoder conv
    max_features: int = 512  # channels of the 2-D map reshaped into the volume (= 32 * 16)
    num_down_blocks: int = 2  # 2-D downsampling blocks (S -> S/4)
    reshape_channel: int = 32  # channels of the volume after reshape
    reshape_depth: int = 16  # depth of the volume after reshape
    num_resblocks: int = 6  # pre-activation 3-D res blocks on the volume
    third_leaky_slope: float = 0.01  # LeakyReLU after the 3x3 conv of the `third` block
    norm_eps: float = 1e-5  # BatchNorm eps
    dense_motion: DenseMotionConfig = field(default_factory=DenseMotionConfig)  # motion net
    decoder: SPADEDecoderConfig = field(default_factory=SPADEDecoderConfig)  # SPADE decoder


# --------------------------------------------------------------------------------------------
# Outputs


class DenseMotion(NamedTuple):
    """Outputs of :class:`DenseMotionNetwork` for B frames at volume size (D, H, W).

    Attributes:
        deformation: (B, D, H, W, 3) sampling grid into the source volume, (x, y, z) in [-1, 1].
        occlusion_map: (B, 1, H, W) in [0, 1].
        mask: (B, K + 1, D, H, W) softmax weights over the motions, before the 1e-3 threshold.
    """

    deformation: torch.Tensor
    occlusion_map: torch.Tensor
    mask: torch.Tensor


@dataclass
class GeneratorOutput:
    """Rendered frames with the intermediate tensors of the generator (for tests and debugging).

    Attributes:
        prediction: (B, 3, S, S) RGB in [0, 1].
        decoder_input: (B, 256, S/4, S/4) warped, projected, occlusion-weighted feature.
        deformation, occlusion_map, mask: see :class:`DenseMotion`.
    """

    prediction: torch.Tensor
    decoder_input: torch.Tensor
    deformation: torch.Tensor
    occlusion_map: torch.Tensor
    mask: torch.Tensor


# --------------------------------------------------------------------------------------------
# Building blocks


class SameBlock2d(nn.Module):
    """conv -> BatchNorm -> ReLU (or LeakyReLU), same resolution."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel_size: int = 3,
        leaky_slope: float | None = None,
        eps: float = 1e-5,
    ):
        super().__init__()
        self.conv = Conv2d(in_ch, out_ch, kernel_size, padding=kernel_size // 2)
        self.norm = nn.BatchNorm2d(out_ch, eps=eps)
        self.leaky_slope = leaky_slope

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.norm(self.conv(x))
        if self.leaky_slope is None:
            return F.relu(out)
        return F.leaky_relu(out, self.leaky_slope)


class ResBlock3d(nn.Module):
    """Pre-activation residual block: x + conv(relu(bn(conv(relu(bn(x))))))."""

    def __init__(self, channels: int, kernel_size: int = 3, eps: float = 1e-5):
        super().__init__()
        pad = kernel_size // 2
        self.conv1 = nn.Conv3d(channels, channels, kernel_size, padding=pad)
        self.conv2 = nn.Conv3d(channels, channels, kernel_size, padding=pad)
        self.norm1 = nn.BatchNorm3d(channels, eps=eps)
        self.norm2 = nn.BatchNorm3d(channels, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(F.relu(self.norm1(x)))
        out = self.conv2(F.relu(self.norm2(out)))
        return out + x


class HourglassEncoder(nn.Module):
    """3-D U-Net encoder: returns the input and every level's output (for the skips)."""

    def __init__(self, expansion: int, in_ch: int, num_blocks: int, cap: int, eps: float):
        super().__init__()
        self.down_blocks = nn.ModuleList(
            DownBlock3d(
                in_ch if i == 0 else min(cap, expansion * 2**i),
                min(cap, expansion * 2 ** (i + 1)),
                eps=eps,
            )
            for i in range(num_blocks)
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = [x]
        for block in self.down_blocks:
            outs.append(block(outs[-1]))
        return outs


class HourglassDecoder(nn.Module):
    """3-D U-Net decoder with concatenated skips, then conv3d + BatchNorm + ReLU."""

    def __init__(self, expansion: int, in_ch: int, num_blocks: int, cap: int, eps: float):
        super().__init__()
        blocks = []
        for i in reversed(range(num_blocks)):
            mult = 1 if i == num_blocks - 1 else 2  # deeper levels receive [up, skip]
            blocks.append(
                UpBlock3d(
                    mult * min(cap, expansion * 2 ** (i + 1)), min(cap, expansion * 2**i), eps=eps
                )
            )
        self.up_blocks = nn.ModuleList(blocks)
        self.out_channels = expansion + in_ch
        self.conv = nn.Conv3d(self.out_channels, self.out_channels, kernel_size=3, padding=1)
        self.norm = nn.BatchNorm3d(self.out_channels, eps=eps)

    def forward(self, skips: list[torch.Tensor]) -> torch.Tensor:
        out = skips[-1]
        for block, skip in zip(self.up_blocks, reversed(skips[:-1])):
            out = torch.cat([block(out), skip], dim=1)  # (B, C_up + C_skip, D, 2h, 2w)
        return F.relu(self.norm(self.conv(out)))


class Hourglass3d(nn.Module):
    """3-D hourglass: (B, C_in, D, H, W) -> (B, expansion + C_in, D, H, W)."""

    def __init__(self, expansion: int, in_ch: int, num_blocks: int, cap: int, eps: float = 1e-5):
        super().__init__()
        self.encoder = HourglassEncoder(expansion, in_ch, num_blocks, cap, eps)
        self.decoder = HourglassDecoder(expansion, in_ch, num_blocks, cap, eps)
        self.out_channels = self.decoder.out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


def _grid_sample_3d(volume: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Trilinear, zero-padded ``grid_sample`` (align_corners=False) of (N, C, D, H, W) volumes at
    (N, D', H', W', 3) grids -> (N, C, D', H', W').

    PyTorch's CPU kernel for 3-D grids parallelises over the batch only, so one frame runs on one
    core (16 % of a bf16 frame on a 16-thread Xeon). On CPU each item's grid is cut into chunks
    along D' that sample the same volume (a stride-0 view, no copy) as a batch: every point is
    computed by the same code, the result is bit-identical.
    """
    n, d = grid.shape[:2]
    threads = torch.get_num_threads()
    if volume.device.type != "cpu" or n >= threads or d == 1:
        return F.grid_sample(
            volume, grid, mode="bilinear", padding_mode="zeros", align_corners=False
        )
    chunks = max(k for k in range(1, min(threads // n, d) + 1) if d % k == 0)
    outs = []
    for item, item_grid in zip(volume.split(1), grid.split(1)):
        parts = F.grid_sample(
            item.expand(chunks, *item.shape[1:]),
            item_grid.reshape(chunks, d // chunks, *grid.shape[2:]),
            mode="bilinear",
            padding_mode="zeros",
            align_corners=False,
        )  # (chunks, C, D'/chunks, H', W')
        outs.append(parts.transpose(0, 1).reshape(1, parts.shape[1], d, *parts.shape[3:]))
    return outs[0] if n == 1 else torch.cat(outs)


def _sample_volume(volume: torch.Tensor, grids: torch.Tensor) -> torch.Tensor:
    """Trilinear ``grid_sample`` of one volume per batch item at M grids each, without copying it.

    Args:
        volume: (Bv, C, D, H, W) with Bv == B or Bv == 1 (then shared by all B items).
        grids: (B, M, D', H', W', 3) sampling coordinates (x, y, z) in [-1, 1].

    Returns:
        (B, C, M, D', H', W') samples (zeros outside; ``align_corners=False``). May be a view.
    """
    b, m, d, h, w, _ = grids.shape
    if volume.shape[0] == b:
        out = _grid_sample_3d(volume, grids.reshape(b, m * d, h, w, 3))  # (B, C, M*D', H', W')
        return out.view(b, -1, m, d, h, w)
    if volume.shape[0] != 1:
        raise ShapeError(
            f"Feature volume batch {volume.shape[0]} must be 1 or equal the keypoint batch {b}."
        )
    out = _grid_sample_3d(volume, grids.reshape(1, b * m * d, h, w, 3))  # (1, C, B*M*D', H', W')
    return out.view(-1, b, m, d, h, w).transpose(0, 1)  # -> (B, C, M, D', H', W')


def _gaussian_heatmaps(offsets: torch.Tensor, variance: float) -> torch.Tensor:
    """exp(-0.5 ||offset||² / variance) over the last axis: (..., 3) -> (...)."""
    return torch.exp(-0.5 * (offsets**2).sum(-1) / variance)


# --------------------------------------------------------------------------------------------
# Dense motion


class DenseMotionNetwork(nn.Module):
    """Keypoint motion -> dense 3-D deformation, motion mask and occlusion map."""

    def __init__(self, cfg: GeneratorConfig):
        super().__init__()
        mc = cfg.dense_motion
        self.cfg = mc
        self.num_kp = cfg.num_kp
        motions = cfg.num_kp + 1
        self.hourglass = Hourglass3d(
            mc.block_expansion,
            motions * (mc.compress + 1),
            mc.num_blocks,
            mc.max_features,
            cfg.norm_eps,
        )
        hc = self.hourglass.out_channels  # 112
        self.mask = nn.Conv3d(hc, motions, mc.mask_kernel, padding=mc.mask_kernel // 2)
        self.compress = nn.Conv3d(cfg.feature_channel, mc.compress, kernel_size=1)
        self.norm = nn.BatchNorm3d(mc.compress, eps=cfg.norm_eps)
        self.occlusion = Conv2d(
            hc * mc.reshape_depth, 1, mc.occlusion_kernel, padding=mc.occlusion_kernel // 2
        )

    def compress_volume(self, feature_3d: torch.Tensor) -> torch.Tensor:
        """(B, 32, D, H, W) -> (B, 4, D, H, W): the volume the sparse motions sample."""
        return F.relu(self.norm(self.compress(feature_3d)))

    def forward(
        self,
        feature_3d: torch.Tensor,
        kp_source: torch.Tensor,
        kp_driving: torch.Tensor,
        compressed: torch.Tensor | None = None,
    ) -> DenseMotion:
        """Estimate the dense motion from source to driving keypoints.

        Args:
            feature_3d: (1 or B, 32, D, H, W) source feature volume.
            kp_source: (1 or B, K, 3) source keypoints in [-1, 1].
            kp_driving: (B, K, 3) driving keypoints.
            compressed: optional precomputed :meth:`compress_volume` of ``feature_3d``.

        Returns:
            :class:`DenseMotion` for B frames.
        """
        b, k = kp_driving.shape[:2]
        if compressed is None:
            compressed = self.compress_volume(feature_3d)
        c, d, h, w = compressed.shape[1:]
        # Coordinates, motions, heatmaps and the deformation stay float32 under bf16/fp16
        # autocast: in bf16 a coordinate in [-1, 1] would be off by up to 1/4 of a volume voxel.
        grid = coordinate_grid(d, h, w, torch.float32, compressed.device)  # (D, H, W, 3)
        kp_driving, kp_source = kp_driving.float(), kp_source.float()

        # Sparse motions: identity, then per keypoint j: grid - kp_driving[j] + kp_source[j].
        to_driving = grid - kp_driving.view(b, k, 1, 1, 1, 3)  # (B, K, D, H, W, 3)
        kp_src = kp_source.view(-1, k, 1, 1, 1, 3)
        sparse = torch.empty(b, k + 1, d, h, w, 3, dtype=grid.dtype, device=grid.device)
        sparse[:, 0] = grid
        sparse[:, 1:] = to_driving + kp_src

        # Hourglass input: per motion m, channel 5m = heatmap, 5m+1..5m+4 = sampled feature.
        hour_in = torch.empty(b, k + 1, c + 1, d, h, w, dtype=grid.dtype, device=grid.device)
        hour_in[:, 0, 0] = 0
        heat_drv = _gaussian_heatmaps(to_driving, self.cfg.kp_variance)  # (B, K, D, H, W)
        heat_src = _gaussian_heatmaps(grid - kp_src, self.cfg.kp_variance)  # (1|B, K, D, H, W)
        hour_in[:, 1:, 0] = heat_drv - heat_src
        del to_driving, heat_drv, heat_src
        hour_in[:, :, 1:] = _sample_volume(compressed, sparse).transpose(1, 2)
        # (B, C, K+1, D, H, W) -> (B, K+1, C, D, H, W)
        prediction = self.hourglass(hour_in.view(b, (k + 1) * (c + 1), d, h, w))
        # (B, K+1, 5, D, H, W) -> (B, 80, D, H, W) -> (B, 112, D, H, W)
        del hour_in

        mask = F.softmax(self.mask(prediction).float(), dim=1)  # (B, K+1, D, H, W), float32
        kept = mask.masked_fill(mask < self.cfg.mask_threshold, 0)
        deformation = (sparse * kept.unsqueeze(-1)).sum(dim=1)
        # (B, K+1, D, H, W, 3) -> (B, D, H, W, 3)

        pb, pc, pd, ph, pw = prediction.shape
        occlusion = self.occlusion(prediction.view(pb, pc * pd, ph, pw))
        # (B, 112, 16, H, W) -> (B, 1792, H, W) -> (B, 1, H, W)
        return DenseMotion(deformation, torch.sigmoid(occlusion), mask)


# --------------------------------------------------------------------------------------------
# Generator


class OcclusionAwareSPADEGenerator(nn.Module):
    """Source image + source/driving keypoints -> rendered frame (face-vid2vid with SPADE decoder).

    State-dict keys equal the ``generator.*`` block of ``SadTalker_V0.0.2_{256,512}.safetensors``
    (prefix removed) and the ``generator`` section of ``facevid2vid_00189-model.pth.tar``.
    The same weights serve 256² and 512² inputs (the feature volume is S/4 on a side).

    Typical use: ``feature_3d = gen.encode_source(src)`` once per clip, then
    ``gen.animate(feature_3d, kp_source, kp_driving)`` per batch of frames.
    """

    def __init__(self, cfg: GeneratorConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or GeneratorConfig()
        eps = cfg.norm_eps
        self.dense_motion_network = DenseMotionNetwork(cfg)
        self.first = SameBlock2d(cfg.image_channel, cfg.block_expansion, 3, eps=eps)
        widths = [
            min(cfg.max_features, cfg.block_expansion * 2**i)
            for i in range(cfg.num_down_blocks + 1)
        ]
        self.down_blocks = nn.ModuleList(
            DownBlock2d(widths[i], widths[i + 1], 3, eps) for i in range(cfg.num_down_blocks)
        )
        self.second = Conv2d(widths[-1], cfg.max_features, kernel_size=1)
        self.resblocks_3d = nn.Sequential()
        for i in range(cfg.num_resblocks):
            self.resblocks_3d.add_module(f"3dr{i}", ResBlock3d(cfg.reshape_channel, 3, eps))
        mid = cfg.block_expansion * 2**cfg.num_down_blocks  # 256
        self.third = SameBlock2d(
            cfg.reshape_channel * cfg.reshape_depth, mid, 3, cfg.third_leaky_slope, eps
        )
        self.fourth = Conv2d(mid, mid, kernel_size=1)
        self.decoder = SPADEDecoder(cfg.decoder)

    def encode_source(self, source_image: torch.Tensor) -> torch.Tensor:
        """Encode the source image into the 3-D feature volume (once per clip).

        Args:
            source_image: (B, 3, S, S) RGB in [0, 1], S a multiple of 128 (256 or 512).

        Returns:
            (B, 32, 16, S/4, S/4) feature volume.
        """
        if source_image.dim() != 4 or source_image.shape[1] != self.cfg.image_channel:
            raise ShapeError(
                f"source_image must be (B, {self.cfg.image_channel}, H, W); "
                f"got {tuple(source_image.shape)}."
            )
        if source_image.shape[2] % 128 or source_image.shape[3] % 128:
            raise ShapeError(
                "source_image height and width must be multiples of 128 (256 or 512 for the "
                f"official weights); got {tuple(source_image.shape[2:])}."
            )
        out = self.first(source_image)  # (B, 3, S, S) -> (B, 64, S, S)
        for block in self.down_blocks:
            out = block(out)  # -> (B, 128, S/2, S/2) -> (B, 256, S/4, S/4)
        out = self.second(out)  # -> (B, 512, S/4, S/4)
        b, _, h, w = out.shape
        out = out.view(b, self.cfg.reshape_channel, self.cfg.reshape_depth, h, w)
        # (B, 512, h, w) -> (B, 32, 16, h, w)
        return self.resblocks_3d(out)

    def _check_animate_inputs(
        self, feature_3d: torch.Tensor, kp_source: torch.Tensor, kp_driving: torch.Tensor
    ) -> None:
        k = self.cfg.num_kp
        if feature_3d.dim() != 5 or feature_3d.shape[1:3] != (
            self.cfg.reshape_channel,
            self.cfg.reshape_depth,
        ):
            raise ShapeError(
                f"feature_3d must be (B, {self.cfg.reshape_channel}, {self.cfg.reshape_depth}, "
                f"H, W); got {tuple(feature_3d.shape)}."
            )
        if kp_driving.dim() != 3 or kp_driving.shape[1:] != (k, 3):
            raise ShapeError(f"kp_driving must be (B, {k}, 3); got {tuple(kp_driving.shape)}.")
        b = kp_driving.shape[0]
        if (
            kp_source.dim() != 3
            or kp_source.shape[1:] != (k, 3)
            or kp_source.shape[0] not in (1, b)
        ):
            raise ShapeError(f"kp_source must be (1 or {b}, {k}, 3); got {tuple(kp_source.shape)}.")
        if feature_3d.shape[0] not in (1, b):
            raise ShapeError(
                f"feature_3d batch {feature_3d.shape[0]} must be 1 or the keypoint batch {b}."
            )

    def _animate(
        self,
        feature_3d: torch.Tensor,
        kp_source: torch.Tensor,
        kp_driving: torch.Tensor,
        decoder: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> GeneratorOutput:
        self._check_animate_inputs(feature_3d, kp_source, kp_driving)
        motion = self.dense_motion_network(feature_3d, kp_source, kp_driving)
        b = kp_driving.shape[0]
        warped = _sample_volume(feature_3d, motion.deformation.unsqueeze(1))
        # (B, D, H, W, 3) grids -> (B, 32, 1, D, H, W) samples
        _, c, _, d, h, w = warped.shape
        out = warped.reshape(b, c * d, h, w)  # (B, 32, 1, 16, H, W) -> (B, 512, H, W)
        out = self.fourth(self.third(out))  # -> (B, 256, H, W)
        occlusion = motion.occlusion_map
        if occlusion.shape[2:] != out.shape[2:]:
            occlusion = F.interpolate(occlusion, size=out.shape[2:], mode="bilinear")
        decoder_input = out * occlusion
        decoder = self.decoder if decoder is None else decoder
        prediction = decoder(decoder_input)  # (B, 256, H, W) -> (B, 3, 4H, 4W)
        return GeneratorOutput(
            prediction=prediction,
            decoder_input=decoder_input,
            deformation=motion.deformation,
            occlusion_map=motion.occlusion_map,
            mask=motion.mask,
        )

    def animate(
        self,
        feature_3d: torch.Tensor,
        kp_source: torch.Tensor,
        kp_driving: torch.Tensor,
        decoder: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Render B frames from the source volume and keypoints.

        Args:
            feature_3d: (1 or B, 32, 16, S/4, S/4) from :meth:`encode_source`; a batch-1 volume
                is shared by all B frames without being copied.
            kp_source: (1 or B, 15, 3) transformed source keypoints, in [-1, 1].
            kp_driving: (B, 15, 3) transformed driving keypoints.
            decoder: runs in place of ``self.decoder`` (its compiled form, see ``compiled.py``).

        Returns:
            (B, 3, S, S) RGB frames in [0, 1].
        """
        return self._animate(feature_3d, kp_source, kp_driving, decoder).prediction

    def forward(
        self, source_image: torch.Tensor, kp_source: torch.Tensor, kp_driving: torch.Tensor
    ) -> torch.Tensor:
        """``animate(encode_source(source_image), ...)``: (B, 3, S, S) frames in [0, 1]."""
        return self.animate(self.encode_source(source_image), kp_source, kp_driving)


def build_generator(sd: dict) -> OcclusionAwareSPADEGenerator:
    """The un-loaded network of a ``generator`` state dict (models.registry.NETWORKS)."""
    return OcclusionAwareSPADEGenerator(GeneratorConfig())
