"""98-point WFLW landmark network of the official SadTalker pipeline: AWing FAN (Wang et al. 2019).

The network is a stack of four CoordConv hourglasses whose last heatmap channel is a face-boundary map
that feeds the next stack. Module names follow the official ``alignment_WFLW_4HG.pth`` state dict
(stored under its ``state_dict`` entry), so the file loads strictly.

Pre/post-processing reproduce the official ``get_landmarks`` of SadTalker (identical to facexlib's):
the face crop is resized to 256x256 with bilinear interpolation, flipped RGB -> BGR, divided by 255; the
98 points are the heatmap arg-maxima of the last stack, nudged a quarter cell towards the larger
neighbour and scaled back to the crop. ``landmarks_98_to_68`` converts WFLW-98 to the iBUG-68 layout.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ShapeError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AWingConfig:
    """Architecture and pre/post-processing of the official AWing net (``alignment_WFLW_4HG.pth``)."""

    num_stacks: int = 4  # stacked hourglasses ("4HG"); only the last one's heatmaps are used
    num_landmarks: int = 98  # WFLW points; the net predicts one more channel (face boundary)
    hourglass_depth: int = 4  # recursion levels of each hourglass (64 -> 4 px at the bottom)
    features: int = 256  # channels inside the hourglasses
    stem_channels: int = 64  # channels of the 7x7 CoordConv stem
    input_size: int = 256  # side of the network input, pixels; the coordinate channels assume it
    heatmap_size: int = 64  # side of the predicted heatmaps (input_size / 4)
    boundary_threshold: float = 0.05  # boundary-map value above which boundary coordinates are kept
    quarter_offset: float = 0.25  # sub-cell nudge towards the larger neighbour, heatmap cells
    center_offset: float = 0.5  # heatmap index -> cell centre, heatmap cells


def _conv3x3(in_channels: int, out_channels: int) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, stride=1, padding=1, bias=False)


class ConvBlock(nn.Module):
    """Pre-activation multi-scale residual block: three 3x3 convs of widths out/2, out/4, out/4.

    Their outputs are concatenated (out channels) and added to the input, which goes through a
    BN-ReLU-1x1 projection when the channel count changes.
    """

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        half, quarter = out_channels // 2, out_channels // 4
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = _conv3x3(in_channels, half)
        self.bn2 = nn.BatchNorm2d(half)
        self.conv2 = _conv3x3(half, quarter)
        self.bn3 = nn.BatchNorm2d(quarter)
        self.conv3 = _conv3x3(quarter, quarter)
        self.downsample: nn.Sequential | None = None
        if in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.BatchNorm2d(in_channels),
                nn.ReLU(inplace=True),
                nn.Conv2d(in_channels, out_channels, 1, bias=False),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in, H, W) -> (B, out, H, W)."""
        a = self.conv1(F.relu(self.bn1(x)))
        b = self.conv2(F.relu(self.bn2(a)))
        c = self.conv3(F.relu(self.bn3(b)))
        residual = x if self.downsample is None else self.downsample(x)
        out = torch.cat((a, b, c), dim=1)  # (B, out/2) + (B, out/4) + (B, out/4) -> (B, out, H, W)
        return out + residual


class _CoordCache:
    """Normalised coordinate channels per (size, device, dtype), computed once.

    ``u`` runs along the rows (height) and ``v`` along the columns, both from -1 to 1, and ``r`` is
    their radius divided by its maximum — the channel order of the official CoordConv.
    """

    def __init__(self):
        self._cache: dict[tuple, torch.Tensor] = {}

    def get(
        self, height: int, width: int, device: torch.device, dtype: torch.dtype
    ) -> torch.Tensor:
        key = (height, width, str(device), dtype)
        coords = self._cache.get(key)
        if coords is None:
            u = torch.arange(height, dtype=torch.float32, device=device) / (height - 1) * 2 - 1
            v = torch.arange(width, dtype=torch.float32, device=device) / (width - 1) * 2 - 1
            u = u[:, None].expand(height, width)  # (H,) -> (H, W)
            v = v[None, :].expand(height, width)  # (W,) -> (H, W)
            r = torch.sqrt(u.pow(2) + v.pow(2))
            r = r / r.max()
            coords = torch.stack((u, v, r))[None].to(dtype)  # 3 x (H, W) -> (1, 3, H, W)
            self._cache[key] = coords
        return coords


_COORDS = _CoordCache()


class CoordConv(nn.Module):
    """Convolution over the input plus coordinate channels (u, v, r) and, when a previous heatmap
    stack is given, the coordinates masked by its boundary channel (u·[b>t], v·[b>t]).

    Args:
        in_channels: channels of the feature input (coordinates excluded).
        out_channels: output channels.
        with_boundary: whether boundary-masked coordinates are appended (all stacks but the first).
        boundary_threshold: boundary-map threshold of the mask.
        **conv: kernel_size, stride, padding of the convolution.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        with_boundary: bool,
        boundary_threshold: float = 0.05,
        **conv,
    ):
        super().__init__()
        self.with_boundary = with_boundary
        self.boundary_threshold = boundary_threshold
        extra = 3 + (2 if with_boundary else 0)
        self.conv = nn.Conv2d(in_channels + extra, out_channels, **conv)

    def forward(self, x: torch.Tensor, heatmaps: torch.Tensor | None = None) -> torch.Tensor:
        """(B, C, H, W) [+ previous heatmaps (B, K+1, H, W)] -> (B, out, H', W')."""
        b, _, h, w = x.shape
        coords = _COORDS.get(h, w, x.device, x.dtype).expand(b, -1, -1, -1)  # (B, 3, H, W)
        parts = [x, coords]
        if self.with_boundary:
            if heatmaps is None:
                raise ShapeError("CoordConv with boundary channels needs the previous heatmaps.")
            boundary = heatmaps[:, -1:].clamp(0.0, 1.0)  # (B, K+1, H, W) -> (B, 1, H, W)
            inside = boundary > self.boundary_threshold
            parts.append(torch.where(inside, coords[:, :2], torch.zeros_like(coords[:, :2])))
        return self.conv(torch.cat(parts, dim=1))  # (B, C + 3 [+ 2], H, W) -> (B, out, H', W')


class Hourglass(nn.Module):
    """Recursive hourglass preceded by a 1x1 CoordConv.

    At each level ``l`` (depth .. 1): ``b1_l`` keeps the resolution, ``b2_l`` works on the 2x
    average-pooled input, the next level (or ``b2_plus_1`` at the bottom) and ``b3_l`` follow, and
    the result is upsampled 2x (nearest) and added to the ``b1_l`` branch.
    """

    def __init__(self, depth: int, features: int, first: bool, boundary_threshold: float):
        super().__init__()
        self.depth = depth
        self.coordconv = CoordConv(
            features,
            features,
            with_boundary=not first,
            boundary_threshold=boundary_threshold,
            kernel_size=1,
            stride=1,
            padding=0,
        )
        for level in range(depth, 0, -1):
            self.add_module(f"b1_{level}", ConvBlock(features, features))
            self.add_module(f"b2_{level}", ConvBlock(features, features))
            self.add_module(f"b3_{level}", ConvBlock(features, features))
        self.add_module("b2_plus_1", ConvBlock(features, features))

    def _level(self, level: int, x: torch.Tensor) -> torch.Tensor:
        upper = self._modules[f"b1_{level}"](x)
        lower = self._modules[f"b2_{level}"](F.avg_pool2d(x, 2, stride=2))  # (B, C, H/2, W/2)
        bottom = self._modules["b2_plus_1"]
        lower = self._level(level - 1, lower) if level > 1 else bottom(lower)
        lower = self._modules[f"b3_{level}"](lower)
        return upper + F.interpolate(lower, scale_factor=2, mode="nearest")  # (B, C, H, W)

    def forward(self, x: torch.Tensor, heatmaps: torch.Tensor | None) -> torch.Tensor:
        """(B, C, 64, 64) features [+ previous heatmaps] -> (B, C, 64, 64)."""
        return self._level(self.depth, self.coordconv(x, heatmaps))


class AWingFAN(nn.Module):
    """AWing face alignment network: CoordConv stem + stacked boundary-aware hourglasses.

    State-dict keys equal the ``state_dict`` entry of the official ``alignment_WFLW_4HG.pth``.

    Args:
        config: architecture; defaults match the official file.
    """

    def __init__(self, config: AWingConfig | None = None):
        super().__init__()
        self.config = cfg = config or AWingConfig()
        f = cfg.features
        self.conv1 = CoordConv(
            3, cfg.stem_channels, with_boundary=False, kernel_size=7, stride=2, padding=3
        )
        self.bn1 = nn.BatchNorm2d(cfg.stem_channels)
        self.conv2 = ConvBlock(cfg.stem_channels, 128)
        self.conv3 = ConvBlock(128, 128)
        self.conv4 = ConvBlock(128, f)
        k = cfg.num_landmarks + 1  # + boundary channel
        for i in range(cfg.num_stacks):
            self.add_module(
                f"m{i}", Hourglass(cfg.hourglass_depth, f, i == 0, cfg.boundary_threshold)
            )
            self.add_module(f"top_m_{i}", ConvBlock(f, f))
            self.add_module(f"conv_last{i}", nn.Conv2d(f, f, 1))
            self.add_module(f"bn_end{i}", nn.BatchNorm2d(f))
            self.add_module(f"l{i}", nn.Conv2d(f, k, 1))
            if i < cfg.num_stacks - 1:
                self.add_module(f"bl{i}", nn.Conv2d(f, f, 1))
                self.add_module(f"al{i}", nn.Conv2d(k, f, 1))

    def forward(self, image: torch.Tensor) -> list[torch.Tensor]:
        """Heatmaps of every stack.

        Args:
            image: (B, 3, 256, 256) float BGR in [0, 1] (see ``preprocess_crops``).

        Returns:
            ``num_stacks`` tensors (B, 99, 64, 64): 98 landmark heatmaps + the boundary map; the
            last one is the prediction.
        """
        if image.ndim != 4 or image.shape[1] != 3:
            raise ShapeError(f"AWingFAN expects (B, 3, H, W) images; got {tuple(image.shape)}.")
        x = F.relu(self.bn1(self.conv1(image)))  # (B, 3, 256, 256) -> (B, 64, 128, 128)
        x = F.avg_pool2d(self.conv2(x), 2, stride=2)  # -> (B, 128, 64, 64)
        x = self.conv4(self.conv3(x))  # -> (B, 256, 64, 64)
        previous = x
        heatmaps: torch.Tensor | None = None
        outputs = []
        for i in range(self.config.num_stacks):
            y = self._modules[f"m{i}"](previous, heatmaps)
            y = self._modules[f"top_m_{i}"](y)
            y = F.relu(self._modules[f"bn_end{i}"](self._modules[f"conv_last{i}"](y)))
            heatmaps = self._modules[f"l{i}"](y)  # (B, 256, 64, 64) -> (B, 99, 64, 64)
            outputs.append(heatmaps)
            if i < self.config.num_stacks - 1:
                previous = previous + self._modules[f"bl{i}"](y) + self._modules[f"al{i}"](heatmaps)
        return outputs


def preprocess_crops(
    crops_rgb: list[np.ndarray], config: AWingConfig, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """Network input from face crops, as the official ``get_landmarks`` builds it.

    Args:
        crops_rgb: list of (h, w, 3) uint8 RGB face crops (any size, h, w >= 1).

    Returns:
        (B, 3, 256, 256) float32 BGR in [0, 1] on ``device``.
    """
    size = config.input_size
    resized = [cv2.resize(c, (size, size), interpolation=cv2.INTER_LINEAR) for c in crops_rgb]
    batch = np.stack(resized)[..., ::-1]  # B x (256, 256, 3) -> (B, 256, 256, 3), RGB -> BGR
    t = torch.from_numpy(np.ascontiguousarray(batch)).to(device)
    return t.permute(0, 3, 1, 2).float() / 255.0  # (B, 256, 256, 3) -> (B, 3, 256, 256)


def heatmaps_to_points(heatmaps: np.ndarray, config: AWingConfig | None = None) -> np.ndarray:
    """Heatmap arg-maxima refined by a quarter cell, in heatmap-cell units (official decoding).

    For each map the arg-max cell (x, y) is moved by ±0.25 towards the larger of its two horizontal
    and two vertical neighbours, then by +0.5. Neighbours are read from the flattened map, so the
    horizontal ones wrap across rows. Two official quirks are kept: if ANY point of a face lies in the
    last row, the lower neighbour of EVERY point of that face is the map's last value, and if any lies
    in the first row (or at flat index W), every upper neighbour is the map's first value.
    Deviation: an arg-max at the very last cell reads its right neighbour clamped to that cell (the
    official code raises IndexError there).

    Args:
        heatmaps: (B, N, H, W) float32 landmark heatmaps of B faces (boundary channel removed).

    Returns:
        (B, N, 2) float64 (x, y) in heatmap cells, pixel-edge origin (0..W).
    """
    config = config or AWingConfig()
    b, n, h, w = heatmaps.shape
    hw = h * w
    flat = heatmaps.reshape(b, n, hw)  # (B, N, H, W) -> (B, N, HW)
    idx = flat.argmax(axis=2)  # (B, N)
    points = np.stack((idx % w, idx // w), axis=2).astype(np.float64)  # (B, N, 2)

    def read(index: np.ndarray) -> np.ndarray:
        return np.take_along_axis(flat, index[..., None], axis=2)[..., 0]

    right = read(np.minimum(idx + 1, hw - 1))
    left = read((idx - 1) % hw)  # index -1 wraps to the last cell, as numpy does officially
    last_row = ((idx + w) >= hw).any(axis=1, keepdims=True)  # (B, 1): per face
    first_row = ((idx - w) <= 0).any(axis=1, keepdims=True)
    below = np.where(last_row, flat[:, :, hw - 1], read(np.minimum(idx + w, hw - 1)))
    above = np.where(first_row, flat[:, :, 0], read(np.maximum(idx - w, 0)))
    nudge = np.sign(np.stack((right - left, below - above), axis=2)) * config.quarter_offset
    return points + nudge + config.center_offset


# iBUG-68 point i = mean of WFLW-98 points _MAP_98_TO_68[i] (a pair, or the same point twice).
_MAP_98_TO_68 = np.array(
    [(2 * i, 2 * i) for i in range(17)]  # jaw: every second contour point
    + [(33, 33), (34, 41), (35, 40), (36, 39), (37, 38)]  # right brow (image left)
    + [(42, 50), (43, 49), (44, 48), (45, 47), (46, 46)]  # left brow
    + [(i, i) for i in range(51, 60)]  # nose bridge and nostrils
    + [(60, 60), (61, 61), (63, 63), (64, 64), (65, 65), (67, 67)]  # right eye
    + [(68, 68), (69, 69), (71, 71), (72, 72), (73, 73), (75, 75)]  # left eye
    + [(i, i) for i in range(76, 96)],  # outer and inner lips
    dtype=np.int64,
)  # (68, 2)


def landmarks_98_to_68(points98: np.ndarray) -> np.ndarray:
    """WFLW-98 landmarks -> iBUG-68 layout, exactly as the official conversion (facexlib).

    Brow points are averages of the upper and lower WFLW brow contours; eyes drop the 4 extra WFLW
    eyelid points; jaw keeps every second contour point.

    Args:
        points98: (98, 2) or (B, 98, 2) points.

    Returns:
        (68, 2) or (B, 68, 2) float32 (averages computed in the input precision, then rounded).
    """
    p = np.asarray(points98)
    if p.shape[-2:] != (98, 2):
        raise ShapeError(f"expected (..., 98, 2) landmarks; got {p.shape}.")
    a = p[..., _MAP_98_TO_68[:, 0], :]
    b = p[..., _MAP_98_TO_68[:, 1], :]
    same = (_MAP_98_TO_68[:, 0] == _MAP_98_TO_68[:, 1])[:, None]
    return np.where(same, a, (a + b) / 2).astype(np.float32)


@torch.no_grad()
def predict_landmarks98(net: AWingFAN, crops_rgb: list[np.ndarray]) -> np.ndarray:
    """98 landmarks of each face crop, in that crop's pixel frame.

    Args:
        net: a loaded ``AWingFAN`` (eval mode).
        crops_rgb: list of (h, w, 3) uint8 RGB face crops.

    Returns:
        (B, 98, 2) float64 (x, y); a point in heatmap cell units is scaled by (w / 64, h / 64).
    """
    if not crops_rgb:
        return np.zeros((0, net.config.num_landmarks, 2))
    param = next(net.parameters())
    inp = preprocess_crops(crops_rgb, net.config, param.device).to(param.dtype)
    heatmaps = net(inp)[-1][:, :-1]  # (B, 99, 64, 64) -> (B, 98, 64, 64), boundary dropped
    cells = heatmaps_to_points(heatmaps.float().cpu().numpy(), net.config)  # (B, 98, 2)
    hm = net.config.heatmap_size
    scale = np.array([[c.shape[1] / hm, c.shape[0] / hm] for c in crops_rgb])  # (B, 2): w, h
    return cells * scale[:, None, :]
