"""Audio->head-pose network (PoseVAE, a conditional VAE) of SadTalker, Zhang et al. 2023.

At test time only the mel encoder and the CVAE decoder run: a Gaussian latent plus a learned
per-style bias, the reference pose and 32 frames of audio features are decoded into 32 frames
of pose motion. The CVAE encoder and the motion discriminator exist only so that the official
checkpoints load strictly; inference never calls them.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from ..audio2exp.net import build_mel_encoder

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Audio2PoseConfig:
    """Sizes of the pose CVAE; defaults are those of ``auido2pose_00140-model.pth``."""

    seq_len: int = 32  # frames decoded per latent (one chunk)
    latent_dim: int = 64  # CVAE latent size
    num_styles: int = 46  # pose-style classes (rows of classbias); valid pose_style is 0..45
    audio_dim: int = 512  # mel-encoder feature size per frame
    audio_proj_dim: int = 6  # per-frame audio projection fed to the MLP (seq_len * 6 = 192)
    pose_dim: int = 6  # pose coefficients: 3 angles (rad) + 3 translations
    hidden_dim: int = 128  # MLP hidden width of encoder and decoder
    resunet_filters: tuple[int, int, int, int] = (32, 64, 128, 256)  # ResUnet channel widths
    disc_channels: tuple[int, int, int] = (256, 512, 1024)  # motion discriminator widths

    @classmethod
    def from_state_dict(cls, sd: Mapping[str, torch.Tensor]) -> Audio2PoseConfig:
        """Infer the sizes from an ``audio2pose`` state dict (prefix removed)."""
        num_styles, latent_dim = sd["netG.decoder.classbias"].shape
        proj, audio_dim = sd["netG.decoder.linear_audio.weight"].shape
        pose_dim = sd["netG.decoder.pose_linear.weight"].shape[0]
        out_dim, hidden = sd["netG.decoder.MLP.L1.weight"].shape
        return cls(
            seq_len=out_dim // pose_dim,
            latent_dim=latent_dim,
            num_styles=num_styles,
            audio_dim=audio_dim,
            audio_proj_dim=proj,
            pose_dim=pose_dim,
            hidden_dim=hidden,
        )


class MelSequenceEncoder(nn.Module):
    """Per-frame mel encoder of the pose branch: (B, T, 1, 80, 16) -> (B, T, 512)."""

    def __init__(self):
        super().__init__()
        self.audio_encoder = build_mel_encoder()

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        """Encode each frame's mel window independently.

        Args:
            mel: (B, T, 1, 80, 16) normalised log-mel windows.

        Returns:
            (B, T, 512) audio features. (The official code is only correct for B = 1; this
            version keeps each sample's frames together for any B.)
        """
        b, t = mel.shape[:2]
        feat = self.audio_encoder(mel.reshape(b * t, *mel.shape[2:]))  # (B*T, 512, 1, 1)
        return feat.reshape(b, t, -1)  # (B*T, 512, 1, 1) -> (B, T, 512)


class ResidualConv(nn.Module):
    """Pre-activation residual unit: BN-ReLU-conv(stride)-BN-ReLU-conv + conv(stride)-BN skip."""

    def __init__(self, cin: int, cout: int, stride: int | tuple[int, int]):
        super().__init__()
        self.conv_block = nn.Sequential(
            nn.BatchNorm2d(cin),
            nn.ReLU(),
            nn.Conv2d(cin, cout, 3, stride=stride, padding=1),
            nn.BatchNorm2d(cout),
            nn.ReLU(),
            nn.Conv2d(cout, cout, 3, padding=1),
        )
        self.conv_skip = nn.Sequential(
            nn.Conv2d(cin, cout, 3, stride=stride, padding=1), nn.BatchNorm2d(cout)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_block(x) + self.conv_skip(x)


class TimeUpsample(nn.Module):
    """Transposed conv doubling the time (height) axis: kernel (2, 1), stride (2, 1)."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.upsample = nn.ConvTranspose2d(cin, cout, kernel_size=(2, 1), stride=(2, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.upsample(x)


class ResUnet(nn.Module):
    """Residual U-Net over a (1, time, pose) "image", halving/doubling only the time axis.

    (B, 1, 32, 6) -> (B, 1, 32, 6) in (0, 1) (sigmoid output). The time length must be a
    multiple of 8.
    """

    def __init__(self, filters: tuple[int, int, int, int] = (32, 64, 128, 256)):
        super().__init__()
        f0, f1, f2, f3 = filters
        self.input_layer = nn.Sequential(
            nn.Conv2d(1, f0, 3, padding=1),
            nn.BatchNorm2d(f0),
            nn.ReLU(),
            nn.Conv2d(f0, f0, 3, padding=1),
        )
        self.input_skip = nn.Sequential(nn.Conv2d(1, f0, 3, padding=1))
        self.residual_conv_1 = ResidualConv(f0, f1, stride=(2, 1))
        self.residual_conv_2 = ResidualConv(f1, f2, stride=(2, 1))
        self.bridge = ResidualConv(f2, f3, stride=(2, 1))
        self.upsample_1 = TimeUpsample(f3, f3)
        self.up_residual_conv1 = ResidualConv(f3 + f2, f2, stride=1)
        self.upsample_2 = TimeUpsample(f2, f2)
        self.up_residual_conv2 = ResidualConv(f2 + f1, f1, stride=1)
        self.upsample_3 = TimeUpsample(f1, f1)
        self.up_residual_conv3 = ResidualConv(f1 + f0, f0, stride=1)
        self.output_layer = nn.Sequential(nn.Conv2d(f0, 1, 1, 1), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.input_layer(x) + self.input_skip(x)  # (B, 32, L, 6)
        x2 = self.residual_conv_1(x1)  # (B, 64, L/2, 6)
        x3 = self.residual_conv_2(x2)  # (B, 128, L/4, 6)
        x4 = self.bridge(x3)  # (B, 256, L/8, 6)
        x = torch.cat([self.upsample_1(x4), x3], dim=1)  # (B, 256 + 128, L/4, 6)
        x = self.up_residual_conv1(x)  # (B, 128, L/4, 6)
        x = torch.cat([self.upsample_2(x), x2], dim=1)  # (B, 128 + 64, L/2, 6)
        x = self.up_residual_conv2(x)  # (B, 64, L/2, 6)
        x = torch.cat([self.upsample_3(x), x1], dim=1)  # (B, 64 + 32, L, 6)
        x = self.up_residual_conv3(x)  # (B, 32, L, 6)
        return self.output_layer(x)  # (B, 1, L, 6)


class PoseEncoder(nn.Module):
    """CVAE encoder (training only): pose motion + audio + style -> latent mean/log-variance.

    Present so that ``netG.encoder.*`` keys load strictly; SadTalker inference never runs it,
    so it has no forward.
    """

    def __init__(self, c: Audio2PoseConfig):
        super().__init__()
        self.resunet = ResUnet(c.resunet_filters)
        in_dim = c.pose_dim + c.seq_len * c.pose_dim + c.seq_len * c.audio_proj_dim + c.latent_dim
        self.MLP = nn.Sequential()
        self.MLP.add_module("L0", nn.Linear(in_dim, c.hidden_dim))  # 6 + 192 + 192 + 64 = 454
        self.MLP.add_module("A0", nn.ReLU())
        self.linear_means = nn.Linear(c.hidden_dim, c.latent_dim)
        self.linear_logvar = nn.Linear(c.hidden_dim, c.latent_dim)
        self.linear_audio = nn.Linear(c.audio_dim, c.audio_proj_dim)
        self.classbias = nn.Parameter(torch.zeros(c.num_styles, c.latent_dim))


class PoseDecoder(nn.Module):
    """CVAE decoder: latent + style bias + reference pose + audio features -> pose motion."""

    def __init__(self, c: Audio2PoseConfig):
        super().__init__()
        self.seq_len = c.seq_len
        self.pose_dim = c.pose_dim
        self.resunet = ResUnet(c.resunet_filters)
        in_dim = c.pose_dim + c.latent_dim + c.seq_len * c.audio_proj_dim  # 6 + 64 + 192 = 262
        self.MLP = nn.Sequential()
        self.MLP.add_module("L0", nn.Linear(in_dim, c.hidden_dim))
        self.MLP.add_module("A0", nn.ReLU())
        self.MLP.add_module("L1", nn.Linear(c.hidden_dim, c.seq_len * c.pose_dim))
        self.MLP.add_module("sigmoid", nn.Sigmoid())
        self.pose_linear = nn.Linear(c.pose_dim, c.pose_dim)
        self.linear_audio = nn.Linear(c.audio_dim, c.audio_proj_dim)
        self.classbias = nn.Parameter(torch.zeros(c.num_styles, c.latent_dim))

    def forward(
        self, z: torch.Tensor, style: torch.Tensor, ref_pose: torch.Tensor, audio: torch.Tensor
    ) -> torch.Tensor:
        """Decode B chunks of pose motion.

        Args:
            z: (B, 64) latents, standard normal.
            style: (B,) int64 pose-style ids in [0, num_styles).
            ref_pose: (B, 6) reference pose (source angles in radians, translation).
            audio: (B, 32, 512) mel-encoder features of the chunk's frames.

        Returns:
            (B, 32, 6) pose motion relative to ``ref_pose``.
        """
        b = z.shape[0]
        audio = self.linear_audio(audio).reshape(b, -1)  # (B, 32, 512) -> (B, 32, 6) -> (B, 192)
        z = z + self.classbias[style]  # (B, 64)
        x = self.MLP(torch.cat([ref_pose, z, audio], dim=-1))  # (B, 262) -> (B, 192)
        x = x.reshape(b, 1, self.seq_len, self.pose_dim)  # (B, 192) -> (B, 1, 32, 6)
        x = self.resunet(x).squeeze(1)  # (B, 1, 32, 6) -> (B, 32, 6)
        return self.pose_linear(x)


class CVAE(nn.Module):
    """Container matching the official ``netG`` keys: ``encoder`` (unused) and ``decoder``."""

    def __init__(self, c: Audio2PoseConfig):
        super().__init__()
        self.encoder = PoseEncoder(c)
        self.decoder = PoseDecoder(c)


class ConvNormReLU1d(nn.Module):
    """Conv1d (no bias) + BatchNorm1d + ReLU block of the motion discriminator."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, padding: int):
        super().__init__()
        self.conv = nn.Conv1d(cin, cout, kernel, stride, padding, bias=False)
        self.norm = nn.BatchNorm1d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.norm(self.conv(x)))


class PoseSequenceDiscriminator(nn.Module):
    """Motion discriminator used only in training; kept so ``netD_motion.*`` loads strictly.

    (B, T, 6) pose sequence -> (B, T/4) realism logits.
    """

    def __init__(self, c: Audio2PoseConfig):
        super().__init__()
        d0, d1, d2 = c.disc_channels
        self.seq = nn.Sequential(
            ConvNormReLU1d(c.pose_dim, d0, 4, 2, 1),
            ConvNormReLU1d(d0, d1, 4, 2, 1),
            ConvNormReLU1d(d1, d2, 3, 1, 1),
            nn.Conv1d(d2, 1, 3, 1, 1),
        )

    def forward(self, pose: torch.Tensor) -> torch.Tensor:
        x = pose.reshape(pose.shape[0], pose.shape[1], -1).transpose(1, 2)  # (B, T, 6) -> (B, 6, T)
        return self.seq(x).squeeze(1)  # (B, 1, T/4) -> (B, T/4)


class Audio2PoseNet(nn.Module):
    """PoseVAE: mel windows + reference pose + style id + latent -> head-pose motion.

    State-dict keys equal the ``audio2pose.`` block of ``SadTalker_V0.0.2_*.safetensors`` with
    the prefix removed, and the ``model`` entry of ``auido2pose_00140-model.pth``.
    """

    def __init__(self, config: Audio2PoseConfig | None = None):
        super().__init__()
        self.config = config or Audio2PoseConfig()
        c = self.config
        if c.audio_dim != 512:
            raise ValueError(f"audio_dim must be 512 (mel encoder layout), got {c.audio_dim}.")
        if c.seq_len % 8:
            raise ValueError(f"seq_len must be a multiple of 8 (ResUnet depth), got {c.seq_len}.")
        self.audio_encoder = MelSequenceEncoder()
        self.netG = CVAE(c)
        self.netD_motion = PoseSequenceDiscriminator(c)

    def encode_audio(self, mel: torch.Tensor) -> torch.Tensor:
        """(B, T, 1, 80, 16) mel windows -> (B, T, 512) audio features (frames independent)."""
        return self.audio_encoder(mel)

    def decode(
        self, z: torch.Tensor, style: torch.Tensor, ref_pose: torch.Tensor, audio: torch.Tensor
    ) -> torch.Tensor:
        """(B, 64) z, (B,) style, (B, 6) ref, (B, 32, 512) audio -> (B, 32, 6) motion."""
        return self.netG.decoder(z, style, ref_pose, audio)

    def forward(
        self, mel: torch.Tensor, z: torch.Tensor, style: torch.Tensor, ref_pose: torch.Tensor
    ) -> torch.Tensor:
        """Decode one chunk per batch row.

        Args:
            mel: (B, 32, 1, 80, 16) mel windows of the chunk's frames.
            z: (B, 64) latents.
            style: (B,) int64 pose-style ids.
            ref_pose: (B, 6) reference pose.

        Returns:
            (B, 32, 6) pose motion.
        """
        return self.decode(z, style, ref_pose, self.encode_audio(mel))


def build_pose_net(sd: dict) -> Audio2PoseNet:
    """The un-loaded network of an ``audio2pose`` state dict (models.registry.NETWORKS)."""
    return Audio2PoseNet(Audio2PoseConfig())
