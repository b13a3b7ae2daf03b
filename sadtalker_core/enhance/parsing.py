"""Face-parsing network (ParseNet of PSFR-GAN, Chen et al. 2021) and the paste mask built from it.

The official enhancer (GFPGANer with facexlib's ``use_parse=True``) segments every restored
512 px face into 19 classes and pastes the face back only where the classes are skin, brows,
eyes, ears, nose, mouth, lips, hair or hat, with a wide soft edge. This module holds our own
definition of that network (parameter names follow ``parsing_parsenet.pth`` so the official file
loads strictly) and the mask rule, batched on the device.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UnsupportedCheckpointError
from ..models import read_state_dict
from ..models.checkpoint import load_strict

log = logging.getLogger(__name__)

PARSENET_FILE = "parsing_parsenet.pth"
NUM_CLASSES = 19  # CelebAMask-HQ labels: 0 background, 1-13 face parts, 14 neck, 15-18 ...
# Labels the restored texture is pasted over: 1-13 (skin ... hair) and 15; not 0 (background),
# 14 (neck), 16-18 (cloth and the rest), as facexlib's MASK_COLORMAP.
FACE_LABELS = (*range(1, 14), 15)
MASK_BLUR_SIZE, MASK_BLUR_SIGMA, MASK_BLUR_PASSES = 101, 11.0, 2  # cv2.GaussianBlur, twice
MASK_BORDER = 10  # pixels along each edge of the 512 mask set to 0 after blurring
LEAKY_SLOPE = 0.2


class _Norm(nn.Module):
    """Holder giving the ``<layer>.norm.norm.*`` key path of the official file."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x)


class _Conv(nn.Module):
    """3x3 convolution on a reflect-padded input, optionally after a nearest x2 enlargement or
    with stride 2, optionally followed by batch norm and a leaky ReLU.

    Batch norm replaces the convolution's bias (no ``conv2d.bias`` key when normalised).
    """

    def __init__(
        self,
        cin: int,
        cout: int,
        resample: str = "none",
        norm: bool = False,
        act: bool = False,
    ):
        super().__init__()
        self.up = resample == "up"
        stride = 2 if resample == "down" else 1
        self.conv2d = nn.Conv2d(cin, cout, 3, stride, 1, bias=not norm, padding_mode="reflect")
        self.norm = _Norm(cout) if norm else None
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.up:
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")  # (B, C, H, W) -> (..., 2H, 2W)
        x = self.conv2d(x)
        if self.norm is not None:
            x = self.norm(x)
        return F.leaky_relu(x, LEAKY_SLOPE) if self.act else x


class _ResBlock(nn.Module):
    """Two normalised convolutions plus a shortcut; ``resample`` halves (``down``, in the second
    convolution) or doubles (``up``, before the first) the resolution. The shortcut is the
    identity when neither the size nor the width changes, else one plain convolution."""

    def __init__(self, cin: int, cout: int, resample: str = "none"):
        super().__init__()
        first, second = {"down": ("none", "down"), "up": ("up", "none")}.get(
            resample, ("none", "none")
        )
        self.shortcut_func = (
            _Conv(cin, cout, resample) if resample != "none" or cin != cout else nn.Identity()
        )
        self.conv1 = _Conv(cin, cout, first, norm=True, act=True)
        self.conv2 = _Conv(cout, cout, second, norm=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shortcut_func(x) + self.conv2(self.conv1(x))


class ParseNet(nn.Module):
    """Encoder (one plain convolution, then stride-2 residual blocks), a residual body added to
    its input, a decoder of x2 residual blocks and two heads (label logits and an image, the
    latter unused for masks).

    Fully convolutional: any input whose sides are multiples of ``2 ** len(down)`` works; the
    official file was trained at 512.

    Args:
        down: (in, out) widths of the encoder's residual blocks.
        body_width, body_depth: width and count of the body's residual blocks.
        up: (in, out) widths of the decoder's residual blocks.
        num_classes: label logits (19).
    """

    def __init__(
        self,
        down: list[tuple[int, int]],
        body_width: int,
        body_depth: int,
        up: list[tuple[int, int]],
        num_classes: int = NUM_CLASSES,
        base_width: int = 64,
    ):
        super().__init__()
        self.encoder = nn.Sequential(
            _Conv(3, base_width), *(_ResBlock(i, o, "down") for i, o in down)
        )
        self.body = nn.Sequential(*(_ResBlock(body_width, body_width) for _ in range(body_depth)))
        self.decoder = nn.Sequential(*(_ResBlock(i, o, "up") for i, o in up))
        head = up[-1][1] if up else body_width
        self.out_img_conv = _Conv(head, 3)
        self.out_mask_conv = _Conv(head, num_classes)

    @classmethod
    def from_state_dict(cls, sd: dict[str, torch.Tensor]) -> ParseNet:
        """Sizes read from the tensors (widths, block counts, classes); names must match."""

        def blocks(prefix: str) -> list[int]:
            pat = re.compile(rf"^{prefix}\.(\d+)\.conv1\.conv2d\.weight$")
            return sorted(int(m.group(1)) for k in sd if (m := pat.match(k)))

        def widths(prefix: str, i: int) -> tuple[int, int]:
            w = sd[f"{prefix}.{i}.conv1.conv2d.weight"]  # (out, in, 3, 3)
            return int(w.shape[1]), int(w.shape[0])

        try:
            body = blocks("body")
            return cls(
                down=[widths("encoder", i) for i in blocks("encoder")],
                body_width=widths("body", body[0])[0] if body else 0,
                body_depth=len(body),
                up=[widths("decoder", i) for i in blocks("decoder")],
                num_classes=int(sd["out_mask_conv.conv2d.weight"].shape[0]),
                base_width=int(sd["encoder.0.conv2d.weight"].shape[0]),
            )
        except (KeyError, IndexError) as e:
            raise UnsupportedCheckpointError(
                f"not a ParseNet state dict (no {e} tensor); expected the keys of "
                f"{PARSENET_FILE} (encoder.*, body.*, decoder.*, out_mask_conv.*)."
            ) from e

    def forward(self, x: torch.Tensor, with_image: bool = False):
        """(B, 3, H, W) RGB normalised to [-1, 1] -> (B, num_classes, H, W) label logits
        (and the (B, 3, H, W) image head when ``with_image``)."""
        feat = self.encoder(x)  # (B, 3, H, W) -> (B, C, H / 2**n, W / 2**n)
        y = self.decoder(feat + self.body(feat))  # -> (B, C', H, W)
        logits = self.out_mask_conv(y)
        return (logits, self.out_img_conv(y)) if with_image else logits


def load_parsenet(path: str | os.PathLike, device: str | torch.device = "cpu") -> ParseNet:
    """``parsing_parsenet.pth`` (a bare state dict, read with ``weights_only``) -> ParseNet in
    eval mode on ``device``, loaded strictly.

    Raises:
        UnsupportedCheckpointError: the file is damaged or holds another network.
    """
    path = Path(path)
    sd = read_state_dict(path)
    try:
        model = ParseNet.from_state_dict(sd)
    except UnsupportedCheckpointError as e:
        raise UnsupportedCheckpointError(f"{path}: {e}") from e
    load_strict(model, sd, f"face-parsing network in {path}")
    log.info("loaded ParseNet from %s on %s", path.name, device)
    return model.to(device).eval().requires_grad_(False)


def _gaussian_taps(size: int, sigma: float, device: torch.device) -> torch.Tensor:
    """(size,) normalised Gaussian taps (cv2.getGaussianKernel with an explicit sigma)."""
    i = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(i * i) / (2 * sigma * sigma))
    return (g / g.sum()).to(device, torch.float32)


def mask_from_labels(labels: torch.Tensor) -> torch.Tensor:
    """The official paste mask of parsed faces.

    1 on ``FACE_LABELS``, 0 elsewhere; blurred twice with a 101-tap Gaussian (sigma 11, edges
    mirrored without repeating the edge pixel, as cv2's default border); ``MASK_BORDER`` pixels
    along every edge set to 0.

    Args:
        labels: (N, H, W) integer class per pixel, on any device; H, W > 50.

    Returns:
        (N, 1, H, W) float32 in [0, 1] on the same device.
    """
    dev = labels.device
    keep = torch.zeros(NUM_CLASSES, dtype=torch.float32, device=dev)
    keep[list(FACE_LABELS)] = 1.0
    m = keep[labels.long().clamp(0, NUM_CLASSES - 1)][:, None]  # (N, H, W) -> (N, 1, H, W)
    taps = _gaussian_taps(MASK_BLUR_SIZE, MASK_BLUR_SIGMA, dev)
    r = MASK_BLUR_SIZE // 2
    for _ in range(MASK_BLUR_PASSES):
        m = F.conv2d(F.pad(m, (r, r, 0, 0), mode="reflect"), taps.view(1, 1, 1, -1))
        m = F.conv2d(F.pad(m, (0, 0, r, r), mode="reflect"), taps.view(1, 1, -1, 1))
    b = MASK_BORDER
    m[..., :b, :] = 0
    m[..., -b:, :] = 0
    m[..., :, :b] = 0
    m[..., :, -b:] = 0
    return m.clamp_(0, 1)


@torch.inference_mode()
def parse_masks(parsenet: nn.Module, faces: torch.Tensor, batch_size: int = 4) -> torch.Tensor:
    """Paste masks of restored faces: ParseNet labels (argmax) -> ``mask_from_labels``.

    Args:
        parsenet: the network (on the faces' device or not: inputs are moved to it).
        faces: (N, 3, 512, 512) float RGB in [0, 1].
        batch_size: faces per network call.

    Returns:
        (N, 1, 512, 512) float32 in [0, 1], on the faces' device.
    """
    dev = next(parsenet.parameters()).device
    dtype = next(parsenet.parameters()).dtype
    out = []
    for chunk in faces.split(batch_size):
        logits = parsenet(chunk.to(dev, dtype) * 2 - 1)  # (n, 19, H, W)
        out.append(mask_from_labels(logits.argmax(1)).to(faces.device))
    return torch.cat(out) if out else faces.new_zeros((0, 1, *faces.shape[-2:]))
