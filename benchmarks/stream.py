"""Live streaming figures: time to the first frame, sustained frames per second, and streamed vs
offline total time (SadTalkerPipeline.stream vs coefficients + iter_frames on the same audio).

The speech is fed in ``--chunk-ms`` pieces, at real time (``--pace realtime``, what a microphone
or a TTS engine does) or as fast as the stream takes it (``--pace fast``). The time to the first
frame counts from the first piece; at real time it includes the lookahead (speech the networks
need past the first frame: 0.63 s still, 1.43 s with head motion), which no hardware removes.

    python benchmarks/stream.py --device cpu --seconds 2 --precisions fp32 bf16
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from _weights import REPO, find_weights

from sadtalker_core.config import SIZES

FIXTURES = REPO.parent / "shared" / "fixtures"


def speech(seconds: float) -> tuple[np.ndarray, int]:
    """48 kHz speech (the shared fixture, looped), or a voiced tone when it is absent."""
    path = FIXTURES / "speech_48k_mono.wav"
    if path.exists():
        import soundfile as sf

        x, rate = sf.read(str(path), dtype="float32")
    else:
        rate = 48000
        t = np.arange(rate * 3) / rate
        x = (0.3 * np.sin(2 * np.pi * 140 * t) * (1 + np.sin(2 * np.pi * 3 * t))).astype("f4")
    n = int(round(seconds * rate))
    return np.concatenate([x] * (1 + n // len(x)))[:n], rate


def run(pipe, face, cfg, x, rate, chunk_ms: float, pace: str) -> dict:
    n = max(1, int(rate * chunk_ms / 1000))
    t0 = time.perf_counter()

    def chunks():
        for i in range(0, len(x), n):
            if pace == "realtime":  # wait until this piece has been "spoken"
                due = t0 + (i + n) / rate
                time.sleep(max(0.0, due - time.perf_counter()))
            yield x[i : i + n], rate

    first = last = None
    frames = 0
    for batch in pipe.stream(face, chunks(), cfg):
        now = time.perf_counter()
        first = now if first is None else first
        last = now
        frames = batch.stop
    total = last - t0
    first_batch = cfg.render.batch_size
    sustained = (frames - first_batch) / (last - first) if frames > first_batch else float("nan")
    return {"first": first - t0, "fps": sustained, "total": total, "frames": frames}


def offline(pipe, face, cfg, x, rate) -> float:
    t0 = time.perf_counter()
    coeffs = pipe.coefficients(face, (x, rate), cfg)
    for _ in pipe.iter_frames(face, coeffs, cfg):
        pass
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--checkpoint-dir", help="folder with the official checkpoints")
    parser.add_argument("--seconds", type=float, default=2.0, help="speech length")
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"])
    parser.add_argument("--chunk-ms", type=float, default=20.0, help="audio piece length")
    parser.add_argument("--pace", choices=("realtime", "fast"), default="realtime")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--size", type=int, default=SIZES[0], choices=SIZES)
    parser.add_argument("--pose", action="store_true", help="head motion (default: still)")
    args = parser.parse_args()

    import torch

    from sadtalker_core import SadTalkerPipeline
    from sadtalker_core.config import CoeffConfig, ExtractConfig, PipelineConfig, RenderConfig

    weights = find_weights(args.checkpoint_dir)
    pipe = SadTalkerPipeline(weights, args.device)
    photo = FIXTURES / "people_0.png"
    x, rate = speech(args.seconds)
    print(  # noqa: T201
        f"weights {weights}; device {args.device}, {torch.get_num_threads()} threads; "
        f"{args.seconds:g} s speech at {rate} Hz in {args.chunk_ms:g} ms pieces ({args.pace}); "
        f"{args.size} px, batch {args.batch_size}, {'head motion' if args.pose else 'still'}"
    )
    print(  # noqa: T201
        "precision | first frame s | sustained frames/s | streamed total s | offline total s "
        "| streamed / offline"
    )
    for precision in args.precisions:
        cfg = PipelineConfig(
            extract=ExtractConfig(size=args.size, detector="dlib"),
            coeffs=CoeffConfig(still=not args.pose, seed=0),
            render=RenderConfig(batch_size=args.batch_size, precision=precision, compile="off"),
        )
        face = pipe.extract(photo, cfg)
        off = offline(pipe, face, cfg, x, rate)  # also warms the networks up
        live = run(pipe, face, cfg, x, rate, args.chunk_ms, args.pace)
        print(  # noqa: T201
            f"{precision} | {live['first']:.2f} | {live['fps']:.2f} | {live['total']:.1f} | "
            f"{off:.1f} | {live['total'] / off:.2f}"
        )


if __name__ == "__main__":
    main()
