"""Face detector of the official SadTalker pipeline: RetinaFace with a ResNet-50 trunk (Deng et al. 2020).

A single-shot detector: ResNet-50 stages 2-4 -> feature pyramid -> SSH context modules -> per-anchor
class / box / 5-point heads on three strides (8, 16, 32). Module names follow the official
``detection_Resnet50_Final.pth`` (a plain state dict, DataParallel ``module.`` prefix stripped), so the
file loads strictly. ``detect_retinaface`` reproduces the official inference (facexlib
``detect_faces`` at the original image size): mean subtraction without scaling, prior boxes, box and
landmark decoding, confidence threshold, score sort and greedy NMS.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ShapeError
from .recon3dmm import ResNetBackbone

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetinaFaceConfig:
    """Architecture, anchors and decoding of the official ResNet-50 RetinaFace."""

    layers: tuple[int, int, int, int] = (3, 4, 6, 3)  # ResNet-50 bottleneck blocks per stage
    stem_channels: int = 64  # channels of the 7x7 stem (and stage-1 bottleneck width)
    expansion: int = 4  # bottleneck output channels = expansion * width
    pyramid_channels: int = 256  # FPN / SSH / head input channels ("out_channel")
    leaky: float = 0.0  # LeakyReLU slope in FPN and SSH (0.1 only when pyramid_channels <= 64)
    anchor_sizes: tuple[tuple[int, int], ...] = ((16, 32), (64, 128), (256, 512))  # pixels/level
    steps: tuple[int, int, int] = (8, 16, 32)  # anchor stride of each pyramid level, pixels
    variance: tuple[float, float] = (0.1, 0.2)  # SSD encoding variances: centre, log-size
    mean_bgr: tuple[float, float, float] = (104.0, 117.0, 123.0)  # subtracted from channels 0..2

    @property
    def anchors_per_cell(self) -> int:
        return len(self.anchor_sizes[0])


def _conv_bn(in_ch: int, out_ch: int, kernel: int, leaky: float | None) -> nn.Sequential:
    """Conv (no bias) + BN [+ LeakyReLU(leaky)]; keys ``0.weight`` and ``1.*``."""
    mods: list[nn.Module] = [
        nn.Conv2d(in_ch, out_ch, kernel, stride=1, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(out_ch),
    ]
    if leaky is not None:
        mods.append(nn.LeakyReLU(negative_slope=leaky, inplace=True))
    return nn.Sequential(*mods)


class _FPN(nn.Module):
    """Top-down feature pyramid: 1x1 lateral convs, nearest upsampling, 3x3 merge convs."""

    def __init__(self, in_channels: list[int], out_channels: int, leaky: float):
        super().__init__()
        self.output1 = _conv_bn(in_channels[0], out_channels, 1, leaky)
        self.output2 = _conv_bn(in_channels[1], out_channels, 1, leaky)
        self.output3 = _conv_bn(in_channels[2], out_channels, 1, leaky)
        self.merge1 = _conv_bn(out_channels, out_channels, 3, leaky)
        self.merge2 = _conv_bn(out_channels, out_channels, 3, leaky)

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        p3, p4, p5 = self.output1(feats[0]), self.output2(feats[1]), self.output3(feats[2])
        p4 = self.merge2(p4 + F.interpolate(p5, size=p4.shape[-2:], mode="nearest"))
        p3 = self.merge1(p3 + F.interpolate(p4, size=p3.shape[-2:], mode="nearest"))
        return [p3, p4, p5]


class _SSH(nn.Module):
    """Single-stage headless context module: parallel 3x3, 5x5 and 7x7 receptive fields (as
    stacked 3x3 convs) with out/2, out/4, out/4 channels, concatenated and rectified."""

    def __init__(self, channels: int, leaky: float):
        super().__init__()
        half, quarter = channels // 2, channels // 4
        self.conv3X3 = _conv_bn(channels, half, 3, None)
        self.conv5X5_1 = _conv_bn(channels, quarter, 3, leaky)
        self.conv5X5_2 = _conv_bn(quarter, quarter, 3, None)
        self.conv7X7_2 = _conv_bn(quarter, quarter, 3, leaky)
        self.conv7x7_3 = _conv_bn(quarter, quarter, 3, None)  # lower-case x as in the file

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, C, H, W)."""
        mid = self.conv5X5_1(x)
        out = torch.cat(
            (self.conv3X3(x), self.conv5X5_2(mid), self.conv7x7_3(self.conv7X7_2(mid))), dim=1
        )  # (B, C/2 + C/4 + C/4, H, W)
        return F.relu(out)


class _Head(nn.Module):
    """1x1 conv predicting ``values`` numbers per anchor, flattened to (B, H*W*anchors, values)."""

    def __init__(self, channels: int, anchors: int, values: int):
        super().__init__()
        self.values = values
        self.conv1x1 = nn.Conv2d(channels, anchors * values, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1x1(x).permute(0, 2, 3, 1)  # (B, A*V, H, W) -> (B, H, W, A*V)
        return out.reshape(out.shape[0], -1, self.values)  # -> (B, H*W*A, V)


class RetinaFace(nn.Module):
    """RetinaFace network; keys equal the official ``detection_Resnet50_Final.pth`` (no ``module.``).

    Args:
        config: architecture; defaults match the official file.
    """

    def __init__(self, config: RetinaFaceConfig | None = None):
        super().__init__()
        self.config = cfg = config or RetinaFaceConfig()
        self.body = ResNetBackbone(cfg.layers, cfg.stem_channels, cfg.expansion)
        c = cfg.stem_channels * cfg.expansion  # 256: stage-1 output
        in_channels = [c * 2, c * 4, c * 8]  # stages 2-4: 512, 1024, 2048
        p = cfg.pyramid_channels
        self.fpn = _FPN(in_channels, p, cfg.leaky)
        self.ssh1 = _SSH(p, cfg.leaky)
        self.ssh2 = _SSH(p, cfg.leaky)
        self.ssh3 = _SSH(p, cfg.leaky)
        a = cfg.anchors_per_cell
        n = len(cfg.steps)
        self.ClassHead = nn.ModuleList(_Head(p, a, 2) for _ in range(n))
        self.BboxHead = nn.ModuleList(_Head(p, a, 4) for _ in range(n))
        self.LandmarkHead = nn.ModuleList(_Head(p, a, 10) for _ in range(n))

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Raw per-anchor predictions.

        Args:
            image: (B, 3, H, W) float, mean-subtracted 0..255 values (see ``preprocess``).

        Returns:
            loc (B, N, 4) encoded boxes, conf (B, N, 2) softmax [background, face], landm (B, N, 10)
            encoded 5 points; N = sum over levels of ceil(H/s) * ceil(W/s) * 2 anchors, ordered by
            level, row, column, anchor size (the order of ``prior_boxes``).
        """
        if image.ndim != 4 or image.shape[1] != 3:
            raise ShapeError(f"RetinaFace expects (B, 3, H, W) images; got {tuple(image.shape)}.")
        pyramid = self.fpn(self.body.stages(image)[1:])  # stages 2-4: strides 8, 16, 32
        feats = [self.ssh1(pyramid[0]), self.ssh2(pyramid[1]), self.ssh3(pyramid[2])]
        loc = torch.cat([h(f) for h, f in zip(self.BboxHead, feats)], dim=1)
        conf = torch.cat([h(f) for h, f in zip(self.ClassHead, feats)], dim=1)
        landm = torch.cat([h(f) for h, f in zip(self.LandmarkHead, feats)], dim=1)
        return loc, F.softmax(conf, dim=-1), landm


@lru_cache(maxsize=16)
def _prior_boxes(
    height: int, width: int, steps: tuple[int, ...], sizes: tuple[tuple[int, ...], ...]
) -> torch.Tensor:
    levels = []
    for step, level_sizes in zip(steps, sizes):
        rows, cols = -(-height // step), -(-width // step)  # ceil
        cx = (np.arange(cols) + 0.5) * step / width  # (cols,)
        cy = (np.arange(rows) + 0.5) * step / height  # (rows,)
        s = np.asarray(level_sizes, dtype=np.float64)
        grid = np.empty((rows, cols, len(level_sizes), 4))
        grid[..., 0] = cx[None, :, None]
        grid[..., 1] = cy[:, None, None]
        grid[..., 2] = s / width
        grid[..., 3] = s / height
        levels.append(grid.reshape(-1, 4))  # (rows, cols, A, 4) -> (rows*cols*A, 4)
    return torch.from_numpy(np.concatenate(levels).astype(np.float32))


def prior_boxes(height: int, width: int, config: RetinaFaceConfig) -> torch.Tensor:
    """Anchor boxes of an image size, in the order of the network outputs (cached per size).

    Convention: (cx, cy, w, h) as fractions of the image width/height; computed in float64 and
    rounded to float32, as the official code does.

    Returns:
        (N, 4) float32 CPU tensor, shared by every caller: do not modify it in place.
    """
    return _prior_boxes(height, width, config.steps, config.anchor_sizes)


def decode_boxes(
    loc: torch.Tensor, priors: torch.Tensor, variance: tuple[float, float]
) -> torch.Tensor:
    """SSD box decoding: (N, 4) offsets + (N, 4) priors (cx, cy, w, h) -> (N, 4) (x0, y0, x1, y1),
    in image fractions."""
    center = priors[:, :2] + loc[:, :2] * variance[0] * priors[:, 2:]
    size = priors[:, 2:] * torch.exp(loc[:, 2:] * variance[1])
    x0y0 = center - size / 2
    return torch.cat((x0y0, size + x0y0), dim=1)


def decode_landmarks(
    pre: torch.Tensor, priors: torch.Tensor, variance: tuple[float, float]
) -> torch.Tensor:
    """5-point decoding: (N, 10) offsets + (N, 4) priors -> (N, 10) (x, y) x 5, image fractions."""
    offsets = pre.reshape(-1, 5, 2)  # (N, 10) -> (N, 5, 2)
    points = priors[:, None, :2] + offsets * variance[0] * priors[:, None, 2:]
    return points.reshape(-1, 10)  # (N, 5, 2) -> (N, 10)


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy non-maximum suppression (same result as ``torchvision.ops.nms``).

    Boxes are visited by descending score (stable for ties); a box is dropped when its IoU with an
    already kept box exceeds ``iou_threshold``. IoU uses areas (x1 - x0) * (y1 - y0).

    Args:
        boxes: (N, 4) float (x0, y0, x1, y1).
        scores: (N,) float.
        iou_threshold: IoU above which the lower-scored box is suppressed.

    Returns:
        (K,) int64 indices into ``boxes`` of the kept boxes, by descending score.
    """
    order = torch.sort(scores, descending=True, stable=True).indices
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    keep = []
    remaining = order
    while remaining.numel() > 0:
        i = remaining[0]
        keep.append(i)
        rest = remaining[1:]
        lo = torch.maximum(boxes[rest, :2], boxes[i, :2])
        hi = torch.minimum(boxes[rest, 2:], boxes[i, 2:])
        wh = (hi - lo).clamp(min=0)
        inter = wh[:, 0] * wh[:, 1]
        iou = inter / (areas[i] + areas[rest] - inter)
        # Compare in float64 like torchvision's C++ (float IoU vs double threshold); MPS has none.
        iou = iou.to(torch.float32 if iou.device.type == "mps" else torch.float64)
        remaining = rest[~(iou > iou_threshold)]
    if not keep:
        return torch.zeros(0, dtype=torch.int64, device=boxes.device)
    return torch.stack(keep)


def preprocess(
    image: np.ndarray, config: RetinaFaceConfig, device: torch.device | str
) -> torch.Tensor:
    """Network input: (H, W, 3) uint8 -> (1, 3, H, W) float32 minus ``mean_bgr`` on ``device``.

    The official pipeline passes SadTalker's RGB frames to a detector whose mean is in BGR order, so
    the channels are used as given (no reordering, no scaling), exactly as officially.
    """
    t = torch.from_numpy(np.ascontiguousarray(image)).to(device)
    t = t.permute(2, 0, 1)[None].float()  # (H, W, 3) -> (1, 3, H, W)
    mean = torch.tensor(config.mean_bgr, dtype=torch.float32, device=t.device)
    return t - mean[None, :, None, None]


@dataclass(frozen=True)
class RetinaFaceDetections:
    """Faces found by ``detect_retinaface``, by descending score.

    Attributes:
        boxes: (K, 4) float32 (x0, y0, x1, y1) in input pixels.
        scores: (K,) float32 face probability.
        points: (K, 5, 2) float32 (x, y) of eyes, nose tip, mouth corners in input pixels.
    """

    boxes: np.ndarray
    scores: np.ndarray
    points: np.ndarray


def decode_detections(
    loc: torch.Tensor,
    conf: torch.Tensor,
    landm: torch.Tensor,
    image_size: tuple[int, int],
    config: RetinaFaceConfig,
    conf_threshold: float = 0.8,
    nms_threshold: float = 0.4,
) -> RetinaFaceDetections:
    """Detections from the raw outputs of one image, as the official ``detect_faces``.

    Args:
        loc, conf, landm: (N, 4), (N, 2), (N, 10) outputs of ``RetinaFace`` for one image.
        image_size: (H, W) of the network input, pixels.
        config: anchors and variances.
        conf_threshold: keep anchors whose face probability is strictly above this.
        nms_threshold: IoU above which overlapping detections are suppressed.

    Returns:
        The kept detections, by descending score.
    """
    h, w = image_size
    loc, conf, landm = loc.float(), conf.float(), landm.float()
    priors = prior_boxes(h, w, config).to(loc.device)
    var = config.variance
    scale = torch.tensor([w, h], dtype=torch.float32, device=loc.device)
    boxes = (decode_boxes(loc, priors, var).reshape(-1, 2, 2) * scale).reshape(-1, 4)
    points = decode_landmarks(landm, priors, var).reshape(-1, 5, 2) * scale  # (N, 5, 2)
    scores = conf[:, 1].cpu().numpy()
    # Threshold and sort on the CPU with numpy, as officially (tie order included).
    inds = np.where(scores > conf_threshold)[0]
    order = inds[scores[inds].argsort()[::-1]]
    sel = torch.from_numpy(order.copy()).to(loc.device)
    boxes, points = boxes[sel].cpu(), points[sel].cpu()  # NMS on the CPU, as officially
    kept = nms(boxes, torch.from_numpy(scores[order].copy()), nms_threshold)
    return RetinaFaceDetections(
        boxes=boxes[kept].numpy(), scores=scores[order][kept.numpy()], points=points[kept].numpy()
    )


@torch.no_grad()
def detect_retinaface(
    net: RetinaFace,
    image: np.ndarray,
    conf_threshold: float = 0.8,
    nms_threshold: float = 0.4,
) -> RetinaFaceDetections:
    """Detect faces at the image's own size, as the official ``detect_faces`` does.

    Args:
        net: a loaded ``RetinaFace`` in eval mode.
        image: (H, W, 3) uint8 image (the official pipeline gives RGB, see ``preprocess``).
        conf_threshold: keep anchors whose face probability is strictly above this (SadTalker: 0.97).
        nms_threshold: IoU above which overlapping detections are suppressed.

    Returns:
        The kept detections, by descending score.
    """
    if image.ndim != 3 or image.shape[2] != 3:
        raise ShapeError(f"expected an (H, W, 3) image; got {image.shape}.")
    param = next(net.parameters())
    loc, conf, landm = net(preprocess(image, net.config, param.device).to(param.dtype))
    return decode_detections(
        loc[0], conf[0], landm[0], image.shape[:2], net.config, conf_threshold, nms_threshold
    )
