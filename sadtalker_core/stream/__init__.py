"""Live: frames of the talking head while the speech is still arriving.

The package: :mod:`.speech_stream` turns PCM pieces into the official 16 kHz waveform and its
final mel windows; :class:`CoeffStream` (:mod:`.coeff_stream`, with the lookahead constants) is
the coefficient stage fed from it; :func:`stream_frames` (:mod:`.frame_stream`) renders its
rows batch by batch (``SadTalkerPipeline.stream``); both are re-exported here. Each output is
emitted as soon as it is *final*: no later audio can change it. The streamed clip is the
offline clip (:func:`~sadtalker_core.coeffs.generate.generate_coeffs` + ``iter_frames``) of the
same audio, with the exceptions listed under *Equality* below.

Lookahead (what the networks need past a frame before it can be computed, at 25 fps):

- mel window: frame i reads mel frames up to ``trunc(3.2 (i - 2)) + 15``, whose STFT reaches
  92.5 ms (2.3 frames) past the frame's end, plus up to half a frame (20 ms) because the clip's
  last frame is rounded (``round(duration * fps)``): 112.5 ms (:data:`MEL_LOOKAHEAD_MS`);
- ExpNet: none (frames are independent);
- blinks: a blink is known once the frame after it has arrived (it is dropped when it would
  reach the clip's last frame): its first frame waits for 5 more frames, plus the half frame
  of rounding, 220 ms (:data:`BLINK_LOOKAHEAD_MS`);
- PoseVAE: its decoder reads a whole 32-frame chunk at once, and the Savitzky-Golay smoothing
  6 frames on either side: a frame waits for the chunk holding the frame 6 later, i.e. 6 to 37
  frames;
- renderer: MappingNet reads 13 frames on either side (:data:`RENDER_RADIUS`).

:func:`stream_frames` runs the networks once per render batch of speech (``batch_size`` frames),
and only while the renderer needs rows: up to ``batch_size - 1`` frames more.

Input at another rate than 16 kHz adds the streaming resampler's delay (its kaiser_best filter
reaches 64 zero crossings ahead, and it works on 10 ms of input at least): at most
:data:`RESAMPLE_DELAY_MS`.

So the first frame needs 33 frames of speech (1.32 s) plus 112.5 ms, and each frame waits
19 to 50 frames (0.76 to 2.0 s) plus 112.5 ms of speech past itself; with ``still`` (no
PoseVAE) it is 13 frames + 112.5 ms = 632.5 ms, 740 ms when a blink starts 13 frames later
(:func:`lookahead_ms`).

Equality with the offline clip, same seed and same audio:

- exact (bit for bit) in the waveform at 16 kHz, the mel windows, the blink schedule (clips of
  5.6 s or more, see below), the PoseVAE latents, the pose smoothing, the frame-rate
  resampling, the frame count and the audio track; the renderer runs on the offline clip's
  batches (multiples of ``batch_size`` from frame 0), so equal rows give equal frames;
- to float rounding: other input rates go through the streaming form of the official
  resampler (within 1e-7 of the one-pass result), and ExpNet / the PoseVAE decoder run on
  other batch compositions than offline, which changes float32 summation order: coefficients
  agree within :data:`COEFF_TOLERANCE`, frames within :data:`FRAME_TOLERANCE` levels;
- the random blink schedule of the official code depends on the clip length when the clip is
  shorter than 140 frames (its gaps are drawn from ``[10, T // 2)``, no blinks at all up to 20
  frames). A stream cannot know its length in advance, so it always draws the long-clip gaps
  ``[10, 70)``: streams shorter than 5.6 s blink at other times than their offline clip (only
  the blink frames differ). ``blink=False`` or ``ref_eyeblink`` make short streams equal too;
- the coefficient stage refuses silent audio offline; a stream cannot wait for the end to
  decide, so silence streams (the mouth stays closed);
- not supported in a stream: idle mode and ``input_yaw/pitch/roll`` (their keyframes are spread
  over the whole clip) raise :class:`~sadtalker_core.errors.OptionError`; the compiled decoder
  (``compile='auto'`` renders eagerly; ``'on'`` compiles).

Memory is bounded in the clip length except for the coefficient rows (about 150 floats per
frame, 15 KB per second of speech): audio, mel frames, PoseVAE features and the renderer's rows
are dropped once no future frame needs them.
"""

from __future__ import annotations

from .coeff_stream import (
    BLINK_LONG_CLIP,
    BLINK_LOOKAHEAD_MS,
    COEFF_TOLERANCE,
    FRAME_TOLERANCE,
    MEL_LOOKAHEAD_MS,
    POSE_CHUNK,
    RENDER_RADIUS,
    RESAMPLE_DELAY_MS,
    SMOOTH_RADIUS,
    CoeffStream,
    check_stream_config,
    lookahead_ms,
)
from .frame_stream import Chunk, StreamBatch, stream_frames

__all__ = [
    "BLINK_LONG_CLIP",
    "BLINK_LOOKAHEAD_MS",
    "COEFF_TOLERANCE",
    "FRAME_TOLERANCE",
    "MEL_LOOKAHEAD_MS",
    "POSE_CHUNK",
    "RENDER_RADIUS",
    "RESAMPLE_DELAY_MS",
    "SMOOTH_RADIUS",
    "Chunk",
    "CoeffStream",
    "StreamBatch",
    "check_stream_config",
    "lookahead_ms",
    "stream_frames",
]
