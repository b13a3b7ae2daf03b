"""The coefficient stage of a stream (:class:`CoeffStream`): speech in piece by piece (its mel
windows from :class:`~.speech_stream.SpeechStream`), blinks, ExpNet, PoseVAE chunks and pose
smoothing run as far as they are final, each coefficient row out once no later audio can change
it; the lookahead constants and
:func:`lookahead_ms` (see :mod:`sadtalker_core.stream` for the figures and the equality with the
offline clip)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from ..coeffs.audio2exp import predict_expression
from ..coeffs.audio2pose import smooth_pose
from ..coeffs.blink import BLINK_MAX_GAP, BLINK_MIN_GAP, BLINK_SHAPE
from ..coeffs.generate import (
    EXP_DIM,
    MODEL_FPS,
    POSE_SLICE,
    CoeffModels,
    _reference_rows,
    frame_counts,
    source_row,
)
from ..config import CoeffConfig
from ..errors import InvalidAudioError, OptionError
from ..io.audio import TARGET_RATE
from ..render.infer import SEMANTIC_RADIUS
from ..types import Face
from .speech_stream import SpeechStream, _Tail

MEL_LOOKAHEAD_MS = 112.5  # speech past a frame's end its mel window needs (incl. rounding)
BLINK_LOOKAHEAD_MS = 220.0  # speech past a blink's first frame before it is known (5.5 frames)
RESAMPLE_DELAY_MS = 30.0  # extra wait at rates other than 16 kHz (measured <= 25.5 ms at 22.05k)
RENDER_RADIUS = SEMANTIC_RADIUS  # frames of coefficients the renderer reads on either side
POSE_CHUNK = 32  # frames the PoseVAE decodes at once
SMOOTH_RADIUS = 6  # half of the 13-frame Savitzky-Golay window
COEFF_TOLERANCE = 1e-4  # max |streamed - offline| coefficient (float32 batch-order rounding)
FRAME_TOLERANCE = 2  # max |streamed - offline| frame level (0..255) from that rounding
BLINK_LONG_CLIP = 2 * BLINK_MAX_GAP  # 140 frames: from here the offline gaps are [10, 70)


def lookahead_ms(still: bool = False, fps: float = MODEL_FPS) -> tuple[float, float]:
    """(least, most) speech in ms past a frame's end before that frame can be rendered: at 25
    fps ``still`` 632.5 to 740 ms, else 872.5 to 2112.5 ms (see the module text). The renderer's
    13 frames are output frames (at ``fps``); the networks' lookahead is at 25 fps."""
    frame_ms = 1000.0 / MODEL_FPS
    render_ms = RENDER_RADIUS * 1000.0 / float(fps)
    if still:
        return render_ms + MEL_LOOKAHEAD_MS, render_ms + BLINK_LOOKAHEAD_MS
    least = render_ms + SMOOTH_RADIUS * frame_ms + MEL_LOOKAHEAD_MS
    return least, least + (POSE_CHUNK - 1) * frame_ms


def check_stream_config(cfg: CoeffConfig) -> None:
    """Refuse coefficient options a stream cannot honour.

    Raises:
        OptionError: idle mode, or ``input_yaw/pitch/roll`` keyframes.
    """
    if cfg.idle_seconds is not None:
        raise OptionError(
            "idle_seconds does not apply to a stream: a stream is driven by the speech it "
            "receives. Send silence for idle motion, or render idle clips offline."
        )
    for axis in ("yaw", "pitch", "roll"):
        if getattr(cfg, f"input_{axis}"):
            raise OptionError(
                f"input_{axis} is not supported in a stream: its keyframes are spread over the "
                "whole clip, whose length a stream does not know. Leave it empty, or render "
                "offline."
            )


class CoeffStream:
    """The coefficient stage, fed speech piece by piece: returns each row once it is final.

    ``push`` and ``finish`` return the (k, 70) float32 rows at ``config.fps`` that became final;
    all of them together equal ``generate_coeffs`` of the whole audio (see the module text for
    the tolerance and the short-clip blink rule). ``audio(a, b)`` gives the output audio
    samples.

    Args:
        face: the source :class:`Face` or its (70,) / (73,) coefficient row.
        sample_rate: Hz of the pushed samples (any rate; resampled to 16 kHz as officially).
        config: coefficient options (``check_stream_config`` rules apply).
        models: the loaded coefficient networks.
        ref_eyeblink, ref_pose: reference-video rows as for ``generate_coeffs``.
        step_frames: the networks run once at least this many new 25 fps frames of speech have
            arrived (and at the end): each network call has a fixed cost (about 0.1 s on a CPU),
            so steps of a few frames trade that much latency for throughput. Values are the
            same for every step.

    Raises:
        OptionError: options a stream cannot honour.
        ValueError: a non-positive sample rate.
    """

    def __init__(
        self,
        face: Face | np.ndarray,
        sample_rate: int,
        config: CoeffConfig | None = None,
        *,
        models: CoeffModels,
        ref_eyeblink: np.ndarray | None = None,
        ref_pose: np.ndarray | None = None,
        step_frames: int = 1,
    ):
        cfg = config or CoeffConfig()
        check_stream_config(cfg)
        self._speech = SpeechStream(sample_rate)
        self.cfg, self.models = cfg, models
        self.fps = float(cfg.fps)
        self.sample_rate = self._speech.sample_rate
        src = source_row(face)
        self._src_exp, self._src_pose = src[:EXP_DIM], src[POSE_SLICE]
        self._blink_rows = (
            None if ref_eyeblink is None else _reference_rows(ref_eyeblink, "ref_eyeblink", EXP_DIM)
        )
        self._pose_rows = None if ref_pose is None else _reference_rows(ref_pose, "ref_pose", 70)
        self._step = max(1, int(step_frames)) * (TARGET_RATE // MODEL_FPS)  # in 16 kHz samples
        self._advanced_at = 0  # 16 kHz samples held at the last network step
        self._exp = _Tail(EXP_DIM)  # expression rows at 25 fps (scaled)
        self._raw_pose = _Tail(6)  # unsmoothed pose at 25 fps
        self._pose = _Tail(6)  # final pose at 25 fps
        self._rows = _Tail(70)  # rows at 25 fps
        self._feats: torch.Tensor | None = None  # PoseVAE audio features, frames _feat_start..
        self._feat_start = 1
        self._feat_stop = 1
        self._chunks = 0  # full PoseVAE chunks decoded
        self._latents = torch.Generator(device="cpu").manual_seed(int(cfg.seed))
        self._blink_starts = np.zeros(0, np.int64)
        self._out_done = 0  # output rows returned
        self._audio_done = 0  # output audio samples handed out
        self._finished = False
        self.out_frames: int | None = None  # T, known after finish()
        self.model_frames: int | None = None
        self.audio_samples: int | None = None

    # ---- lengths
    def _lengths(self) -> tuple[int, int, int, int]:
        """(t_out, t_model, n_out, model_len): final after finish(), else the least they can be
        (more audio only makes them larger)."""
        duration = self._speech.seconds
        t_out = int(math.floor(duration * self.fps + 0.5))
        if t_out < 1:
            return 0, 0, 0, 0
        t_out, t_model = frame_counts(duration, self.fps)
        n_out = int(round(t_out * TARGET_RATE / self.fps))
        model_len = int(t_model * (TARGET_RATE / MODEL_FPS))  # crop_or_pad's length
        return t_out, t_model, n_out, model_len

    # ---- input
    def push(self, samples: Any, advance: bool = True) -> np.ndarray:
        """Add speech: (n,) or (n, channels) float or integer PCM at ``sample_rate``; with
        ``advance=False`` it is only kept (a consumer that needs no rows yet saves network
        calls: one later call covers all of it).

        Returns:
            (k, 70) float32 output rows that became final (k may be 0).

        Raises:
            InvalidAudioError: NaN/inf samples or more than 16 channels.
            RuntimeError: after ``finish()``.
        """
        if self._finished:
            raise RuntimeError("CoeffStream.push after finish().")
        if not self._speech.push(samples):
            return np.zeros((0, 70), np.float32)
        held = self._speech.wav.stop
        if not advance or held - self._advanced_at < self._step:
            return np.zeros((0, 70), np.float32)
        self._advanced_at = held
        return self._advance()

    def finish(self) -> np.ndarray:
        """The end of the speech: returns the remaining rows.

        Raises:
            InvalidAudioError: less than one frame of speech in all.
        """
        if self._finished:
            raise RuntimeError("CoeffStream.finish called twice.")
        t_out, t_model, n_out, model_len = self._lengths()
        if t_out < 1:
            raise InvalidAudioError(
                f"The stream held {self._speech.seconds:.3f} s of audio, shorter "
                f"than one video frame ({1.0 / self.fps:.3f} s at {self.fps:g} fps)."
            )
        self._finished = True
        self._speech.finish()
        self.out_frames, self.model_frames, self.audio_samples = t_out, t_model, n_out
        return self._advance()

    def audio(self, a: int, b: int) -> np.ndarray:
        """Output audio samples [a, b) at 16 kHz (the offline ``Coeffs.audio``), float32;
        request in increasing order (earlier samples are forgotten)."""
        out = self._speech.audio(a, b)
        self._audio_done = b
        self._forget()
        return out

    # ---- the stage, step by step
    def _advance(self) -> np.ndarray:
        t_out, t_model, n_out, model_len = self._lengths()
        if t_out < 1:
            return np.zeros((0, 70), np.float32)
        self._speech.extend_mel(n_out, model_len)
        windows_final = self._speech.windows_final(t_model)
        self._run_expnet(windows_final, t_model)
        self._run_pose(windows_final, t_model)
        self._join_rows()
        rows = self._output_rows(t_out, t_model)
        self._forget()
        return rows

    def _blink(self, a: int, b: int, t_model: int) -> tuple[np.ndarray, int]:
        """Blink ratio of frames [a, b) and how many of them are final (from a)."""
        if self._blink_rows is not None or not self.cfg.blink:
            return np.zeros(b - a, np.float32), b - a
        need = b // (BLINK_MIN_GAP + len(BLINK_SHAPE)) + 2
        if self._blink_starts.shape[0] < need:
            # one draw of the long-clip gaps: its prefix does not depend on its size
            count = max(need, 2 * self._blink_starts.shape[0])
            gaps = np.random.default_rng(self.cfg.seed).integers(
                BLINK_MIN_GAP, BLINK_MAX_GAP, size=count
            )
            self._blink_starts = np.cumsum(gaps) + len(BLINK_SHAPE) * np.arange(count)
        ratio = np.zeros(b - a, np.float32)
        final = b - a
        shape = np.asarray(BLINK_SHAPE, np.float32)
        for s in self._blink_starts[self._blink_starts < b]:
            s = int(s)
            if s + len(shape) <= a:
                continue
            kept = s + len(shape) <= t_model - 1
            if not kept and not self._finished:
                final = min(final, max(0, s - a))  # known once the clip is long enough
                continue
            if kept:
                lo, hi = max(s, a), min(s + len(shape), b)
                ratio[lo - a : hi - a] = shape[lo - s : hi - s]
        return ratio, final

    def _run_expnet(self, windows_final: int, t_model: int) -> None:
        a = self._exp.stop
        if windows_final <= a:
            return
        ratio, final = self._blink(a, windows_final, t_model)
        b = a + final
        if b <= a:
            return
        if self._blink_rows is None:
            ref = self._src_exp
        else:
            ref = self._blink_rows[np.arange(a, b) % len(self._blink_rows), :EXP_DIM]
        exp = predict_expression(
            self.models.exp_net,
            torch.from_numpy(self._speech.windows(a, b, t_model)),
            ref,
            ratio[: b - a],
            self.cfg.chunk_frames,
        )
        exp = exp.float().cpu().numpy()  # (b - a, 64)
        if self.cfg.expression_scale != 1.0:
            exp = self._src_exp + np.float32(self.cfg.expression_scale) * (exp - self._src_exp)
        self._exp.append(exp)

    def _run_pose(self, windows_final: int, t_model: int) -> None:
        if self.cfg.still:
            a = self._pose.stop
            b = self._exp.stop
            self._pose.append(np.broadcast_to(self._src_pose, (b - a, 6)))
            return
        net = self.models.pose_net
        c = net.config
        # audio features of frames 1 .. windows_final - 1
        if windows_final > self._feat_stop:
            a, b = self._feat_stop, windows_final
            mel = torch.from_numpy(self._speech.windows(a, b, t_model))
            param = next(net.parameters())
            mel = mel.to(param.device, param.dtype).unsqueeze(1)  # (n, 80, 16) -> (n, 1, 80, 16)
            with torch.no_grad():
                feats = net.encode_audio(mel.unsqueeze(0))[0]  # (n, 512)
            self._feats = feats if self._feats is None else torch.cat([self._feats, feats])
            self._feat_stop = b
        if self._raw_pose.stop == 0:
            self._raw_pose.append(self._src_pose[None])  # frame 0: the reference pose
        ref = torch.as_tensor(self._src_pose)
        # full chunks: frames 1 + 32k .. 32 (k + 1), once the clip is known to be longer
        while True:
            first = 1 + self._chunks * c.seq_len
            last = first + c.seq_len  # exclusive
            if last > self._feat_stop or last > t_model:
                break
            feats = self._feats[first - self._feat_start : last - self._feat_start]
            self._raw_pose.append(self._decode(feats, ref))
            self._chunks += 1
        if self._finished and self._raw_pose.stop < t_model:
            n = t_model - 1
            rem = n - (self._raw_pose.stop - 1)
            tail = self._feats[max(0, n - c.seq_len + 1 - self._feat_start) :]
            tail = tail[-min(n, c.seq_len) :]
            if tail.shape[0] < c.seq_len:
                pad = tail[:1].expand(c.seq_len - tail.shape[0], c.audio_dim)
                tail = torch.cat([pad, tail], dim=0)  # left-pad to (32, 512)
            self._raw_pose.append(self._decode(tail, ref)[-rem:])
        self._smooth(t_model)
        self._trim_feats()

    def _decode(self, feats: torch.Tensor, ref: torch.Tensor) -> np.ndarray:
        """One PoseVAE chunk: (32, 512) features -> (32, 6) raw pose, with the next latent."""
        net = self.models.pose_net
        c = net.config
        param = next(net.parameters())
        z = torch.randn(1, c.latent_dim, generator=self._latents, device="cpu")
        z = z.to(param.device, param.dtype)
        style = torch.full((1,), int(self.cfg.pose_style), device=param.device, dtype=torch.long)
        ref_d = ref.to(param.device, param.dtype)
        with torch.no_grad():
            pred = net.decode(z, style, ref_d[None], feats[None])[0]  # (32, 6)
            raw = ref_d + pred  # as predict_pose: reference + motion
        return raw.float().cpu().numpy()

    def _trim_feats(self) -> None:
        if self._feats is None:
            return
        keep_from = max(self._feat_start, self._feat_stop - self.models.pose_net.config.seq_len)
        keep_from = min(keep_from, 1 + self._chunks * self.models.pose_net.config.seq_len)
        if keep_from > self._feat_start:
            self._feats = self._feats[keep_from - self._feat_start :]
            self._feat_start = keep_from

    def _smooth(self, t_model: int) -> None:
        raw_stop = self._raw_pose.stop
        s0 = self._pose.stop
        if self._finished:
            s1 = t_model if raw_stop == t_model else s0
        else:
            s1 = raw_stop - SMOOTH_RADIUS if raw_stop >= 2 * SMOOTH_RADIUS + 1 else 0
        if s1 <= s0:
            return
        start = max(0, min(s0 - SMOOTH_RADIUS, raw_stop - (2 * SMOOTH_RADIUS + 1)))
        raw = self._raw_pose.get(start, raw_stop)
        pose = np.asarray(smooth_pose(raw), np.float32)[s0 - start : s1 - start]  # (k, 6)
        if self._pose_rows is not None:
            rows = self._pose_rows[:, POSE_SLICE]
            ref = rows[np.arange(s0, s1) % len(rows)]  # tile_rows(rows, s1)[s0:s1]
            pose = pose + (ref - self._pose_rows[0, POSE_SLICE])
        if self.cfg.head_motion_scale != 1.0:
            src = self._src_pose
            pose = src + np.float32(self.cfg.head_motion_scale) * (pose - src)
        self._pose.append(pose)

    def _join_rows(self) -> None:
        a, b = self._rows.stop, min(self._exp.stop, self._pose.stop)
        if b > a:
            rows = np.concatenate([self._exp.get(a, b), self._pose.get(a, b)], axis=1)
            self._rows.append(rows.astype(np.float32))

    def _output_rows(self, t_out: int, t_model: int) -> np.ndarray:
        a = self._out_done
        r = self._rows.stop
        if self.fps == MODEL_FPS:
            b = r
            out = self._rows.get(a, b) if b > a else np.zeros((0, 70), np.float32)
        else:
            ratio = MODEL_FPS / self.fps
            if self._finished:
                b = t_out
            else:  # output frame j reads model frames floor(j * ratio) and the one after
                b = min(t_out, int(math.ceil((r - 1) / ratio - 1e-9)))
                while b > 0 and int(math.floor((b - 1) * ratio)) + 1 > r - 1:
                    b -= 1
            if b <= a:
                return np.zeros((0, 70), np.float32)
            pos = np.minimum(np.arange(b, dtype=np.float64)[a:] * ratio, t_model - 1)
            i0 = np.floor(pos).astype(np.int64)
            i1 = np.minimum(i0 + 1, t_model - 1)
            w = (pos - i0)[:, None]
            lo = int(i0.min())
            rows = self._rows.get(lo, int(i1.max()) + 1).astype(np.float64)
            out = ((1.0 - w) * rows[i0 - lo] + w * rows[i1 - lo]).astype(np.float32)
        self._out_done = max(a, b)
        return out

    def _forget(self) -> None:
        """Drop audio and mel frames no future output needs."""
        first = self._exp.stop if self.cfg.still else min(self._exp.stop, self._feat_stop)
        self._speech.forget(first, self._audio_done)
        self._exp.forget_before(self._rows.stop)
        self._pose.forget_before(self._rows.stop)
        self._raw_pose.forget_before(
            min(self._pose.stop - SMOOTH_RADIUS, self._raw_pose.stop - (2 * SMOOTH_RADIUS + 1))
        )
        ratio = MODEL_FPS / self.fps
        self._rows.forget_before(int(math.floor(self._out_done * ratio)) - 1)
