"""The generator's SPADE decoder: the warped source feature map, modulated block by block, back
to an RGB frame (face-vid2vid's ``SPADEDecoder``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .conv import Conv2d, conv2d


@dataclass(frozen=True)
class SPADEDecoderConfig:
    """Hyper-parameters of :class:`SPADEDecoder` (fixed in upstream code)."""

    in_channels: int = 256  # decoder input (and SPADE label map) channels
    out_channels: int = 64  # channels of the last SPADE block
    hidden: int = 128  # SPADE mlp_shared width
    num_middle: int = 6  # 512-channel SPADE res blocks before upsampling
    image_channel: int = 3  # RGB output
    leaky_slope: float = 0.2  # LeakyReLU inside/after the SPADE blocks
    norm_eps: float = 1e-5  # InstanceNorm eps (no affine)


class SpectralNormConv2d(nn.Module):
    """Conv2d whose weight is ``weight_orig / sigma`` with sigma from the stored u and v.

    Matches a ``torch.nn.utils.spectral_norm`` conv in eval mode (no power iteration), so the
    checkpoint's ``weight_orig``, ``weight_u``, ``weight_v`` keys load directly.
    """

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, bias: bool = True):
        super().__init__()
        if bias:
            self.bias = nn.Parameter(torch.zeros(out_ch))
        else:
            self.register_parameter("bias", None)
        self.weight_orig = nn.Parameter(torch.empty(out_ch, in_ch, kernel_size, kernel_size))
        nn.init.kaiming_uniform_(self.weight_orig, a=5**0.5)
        self.register_buffer("weight_u", F.normalize(torch.randn(out_ch), dim=0, eps=1e-12))
        self.register_buffer(
            "weight_v", F.normalize(torch.randn(in_ch * kernel_size**2), dim=0, eps=1e-12)
        )
        self.padding = kernel_size // 2

    def weight(self) -> torch.Tensor:
        """Effective (out, in, k, k) weight."""
        w = self.weight_orig
        sigma = torch.dot(self.weight_u, torch.mv(w.flatten(1), self.weight_v))
        return w / sigma

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return conv2d(x, self.weight(), self.bias, self.padding)


class SPADE(nn.Module):
    """Spatially-adaptive norm: InstanceNorm(x) · (1 + γ(seg)) + β(seg).

    γ and β are two convolutions of the same hidden map; they run as one convolution with both
    weights stacked (the same sums per output channel, one pass over the input).
    """

    def __init__(self, channels: int, label_nc: int, hidden: int = 128, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.mlp_shared = nn.Sequential(
            Conv2d(label_nc, hidden, kernel_size=3, padding=1), nn.ReLU()
        )
        self.mlp_gamma = Conv2d(hidden, channels, kernel_size=3, padding=1)
        self.mlp_beta = Conv2d(hidden, channels, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor, seg: torch.Tensor) -> torch.Tensor:
        """x (B, C, H, W), seg (B, L, H, W) already at x's resolution -> (B, C, H, W)."""
        return self.modulate(x, self.mlp_shared(seg))

    def modulate(self, x: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
        """Normalise ``x`` and modulate it with γ and β computed from the hidden map."""
        gamma, beta = stacked_conv(hidden, (self.mlp_gamma, self.mlp_beta)).split(
            self.mlp_gamma.out_channels, dim=1
        )
        normalized = F.instance_norm(x, eps=self.eps)
        return torch.addcmul(beta, normalized, 1 + gamma)


def stacked_conv(x: torch.Tensor, convs: Sequence[nn.Conv2d]) -> torch.Tensor:
    """Several 'same' convolutions of one input (equal kernel size, all with bias) as one
    convolution with their weights stacked: their outputs, concatenated along channels."""
    weight = torch.cat([c.weight for c in convs])
    bias = torch.cat([c.bias for c in convs])
    return conv2d(x, weight, bias, convs[0].padding[0])


class SPADEResnetBlock(nn.Module):
    """SPADE residual block with spectral-normalised convs and a learned shortcut if C changes."""

    def __init__(self, fin: int, fout: int, cfg: SPADEDecoderConfig):
        super().__init__()
        fmid = min(fin, fout)
        self.slope = cfg.leaky_slope
        self.learned_shortcut = fin != fout
        self.conv_0 = SpectralNormConv2d(fin, fmid, 3)
        self.conv_1 = SpectralNormConv2d(fmid, fout, 3)
        if self.learned_shortcut:
            self.conv_s = SpectralNormConv2d(fin, fout, 1, bias=False)
        label_nc = cfg.in_channels
        self.norm_0 = SPADE(fin, label_nc, cfg.hidden, cfg.norm_eps)
        self.norm_1 = SPADE(fmid, label_nc, cfg.hidden, cfg.norm_eps)
        if self.learned_shortcut:
            self.norm_s = SPADE(fin, label_nc, cfg.hidden, cfg.norm_eps)

    def forward(self, x: torch.Tensor, seg: torch.Tensor) -> torch.Tensor:
        norms = [self.norm_0, self.norm_1] + ([self.norm_s] if self.learned_shortcut else [])
        # Every SPADE of the block reads the same label map: one convolution for their hidden maps.
        hidden = stacked_conv(seg, [n.mlp_shared[0] for n in norms]).relu_()
        hidden = hidden.split(norms[0].mlp_shared[0].out_channels, dim=1)
        x_s = self.conv_s(self.norm_s.modulate(x, hidden[2])) if self.learned_shortcut else x
        dx = self.conv_0(F.leaky_relu(self.norm_0.modulate(x, hidden[0]), self.slope))
        dx = self.conv_1(F.leaky_relu(self.norm_1.modulate(dx, hidden[1]), self.slope))
        return x_s + dx


class SPADEDecoder(nn.Module):
    """(B, 256, S/4, S/4) feature -> (B, 3, S, S) image; the feature is also the SPADE label map."""

    def __init__(self, cfg: SPADEDecoderConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or SPADEDecoderConfig()
        ic, oc = cfg.in_channels, cfg.out_channels
        self.fc = Conv2d(ic, 2 * ic, 3, padding=1)
        for i in range(cfg.num_middle):
            self.add_module(f"G_middle_{i}", SPADEResnetBlock(2 * ic, 2 * ic, cfg))
        self.up_0 = SPADEResnetBlock(2 * ic, ic, cfg)
        self.up_1 = SPADEResnetBlock(ic, oc, cfg)
        self.conv_img = Conv2d(oc, cfg.image_channel, 3, padding=1)

    def forward(self, feature: torch.Tensor) -> torch.Tensor:
        seg = feature
        x = self.fc(feature)  # (B, 256, h, w) -> (B, 512, h, w)
        for i in range(self.cfg.num_middle):
            x = getattr(self, f"G_middle_{i}")(x, seg)
        x = F.interpolate(x, scale_factor=2)  # (B, 512, h, w) -> (B, 512, 2h, 2w)
        x = self.up_0(x, F.interpolate(seg, size=x.shape[2:]))  # -> (B, 256, 2h, 2w)
        x = F.interpolate(x, scale_factor=2)  # -> (B, 256, 4h, 4w)
        x = self.up_1(x, F.interpolate(seg, size=x.shape[2:]))  # -> (B, 64, 4h, 4w)
        x = self.conv_img(F.leaky_relu(x, self.cfg.leaky_slope))  # -> (B, 3, 4h, 4w)
        return torch.sigmoid(x)
