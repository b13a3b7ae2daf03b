"""Benchmark of the coefficient stage: speed (s of coefficients per s of compute) and peak memory.

Each clip length runs in a fresh process so that its peak resident memory is its own.

    python benchmarks/coeffs.py                          # 10 s and 10 min on the CPU
    python benchmarks/coeffs.py --device cuda --durations 10 600
    python benchmarks/coeffs.py --file                   # decode a 44.1 kHz stereo WAV too
    python benchmarks/coeffs.py --random-weights         # no checkpoint needed (same speed)
    python benchmarks/coeffs.py --resample-only          # only the 48 kHz -> 16 kHz line

The last line times the official resampler (resampy kaiser_best, sadtalker_core.io.resample)
on 10 minutes of generated 48 kHz audio, next to the coefficient stage's time for 10 minutes.

Not a test: prints figures only.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

FIXTURE = REPO.parent / "shared" / "fixtures" / "RD_Radio31_000.wav"
TEST_WEIGHTS = Path.home() / ".cache" / "sadtalker_core" / "test-weights"


def _rss_mb() -> float:
    """Current resident memory in MB (Linux /proc; falls back to the peak elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return _peak_mb()


def _peak_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def _speech(seconds: float, rate: int):
    """Speech-like audio of any length: the fixture tiled, or amplitude-modulated noise."""
    import numpy as np

    n = int(round(seconds * rate))
    if FIXTURE.is_file():
        from scipy.io import wavfile

        src_rate, data = wavfile.read(FIXTURE)
        x = (data.astype(np.float32) / 32768).mean(axis=1, dtype=np.float32)
        if src_rate != rate:
            from scipy.signal import resample_poly

            x = resample_poly(x, rate, src_rate).astype(np.float32)
        return np.resize(x, n)
    rng = np.random.default_rng(0)
    t = np.arange(n) / rate
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 3.0 * t)  # ~3 syllables per second
    return (0.2 * envelope * rng.standard_normal(n)).astype(np.float32)


def _models(args):
    import torch

    from sadtalker_core.coeffs.audio2exp import Audio2ExpNet
    from sadtalker_core.coeffs.audio2pose import Audio2PoseNet
    from sadtalker_core.coeffs.generate import CoeffModels

    if args.random_weights:
        torch.manual_seed(0)
        exp, pose = Audio2ExpNet(), Audio2PoseNet()
        return CoeffModels(
            exp.to(args.device).eval().requires_grad_(False),
            pose.to(args.device).eval().requires_grad_(False),
        )
    dirs = [Path(args.checkpoint_dir)] if args.checkpoint_dir else [TEST_WEIGHTS]
    return CoeffModels.load(dirs, device=args.device)


def child(args) -> None:
    """Run one clip length and print one JSON line of figures."""
    import numpy as np
    import torch

    from sadtalker_core.coeffs.generate import CoeffConfig, generate_coeffs

    models = _models(args)
    src = np.zeros(70, np.float32)
    src[64:70] = (0.05, -0.1, 0.02, 0.01, 0.02, 9.5)  # a plausible source pose
    warm = generate_coeffs(src, (_speech(2.0, 16000), 16000), CoeffConfig(), models=models)
    del warm
    if args.file:
        from scipy.io import wavfile

        path = Path(args.tmp) / f"speech_{args.child:g}.wav"
        if not path.exists():
            x = _speech(args.child, 44100)
            stereo = (np.stack([x, 0.8 * x], axis=1) * 32767).astype(np.int16)  # (N, 2)
            wavfile.write(path, 44100, stereo)
            del x, stereo
        audio = str(path)
    else:
        audio = (_speech(args.child, 16000), 16000)
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    base = _rss_mb()
    start = time.perf_counter()
    out = generate_coeffs(src, audio, CoeffConfig(seed=1), models=models)
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    figures = {
        "audio_s": args.child,
        "frames": out.num_frames,
        "compute_s": round(seconds, 3),
        "realtime": round(out.duration / seconds, 2),
        "rss_before_mb": round(base, 1),
        "rss_peak_mb": round(_peak_mb(), 1),
        "input": "44.1 kHz stereo wav file" if args.file else "16 kHz array",
    }
    if args.device.startswith("cuda"):
        figures["cuda_peak_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    print(json.dumps(figures), flush=True)  # noqa: T201


def resample_line(coeff_s_per_audio_s: float | None) -> str:
    """Time 10 min of generated 48 kHz audio -> 16 kHz with the official resampler."""
    import numpy as np

    from sadtalker_core.io.resample import resample, sinc_table

    rate, seconds = 48000, 600.0
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * rate)) / rate
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 3.0 * t)  # ~3 syllables per second
    x = (0.2 * envelope * rng.standard_normal(t.shape[0])).astype(np.float32)
    del t, envelope
    sinc_table()  # build the filter table once, as any later call finds it cached
    start = time.perf_counter()
    y = resample(x, rate, 16000)
    took = time.perf_counter() - start
    line = (
        f"resample {seconds / 60:.0f} min of 48 kHz audio -> {y.shape[0]} samples at 16 kHz "
        f"(resampy kaiser_best numerics): {took:.2f} s"
    )
    if coeff_s_per_audio_s:
        stage = coeff_s_per_audio_s * seconds
        line += f" vs {stage:.1f} s for the coefficient stage on 10 min ({took / stage:.1%})"
    return line


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--durations", type=float, nargs="+", default=[10.0, 600.0])
    parser.add_argument("--checkpoint-dir", help="folder with the official checkpoints")
    parser.add_argument("--random-weights", action="store_true", help="untrained networks")
    parser.add_argument("--file", action="store_true", help="decode a WAV file, not an array")
    parser.add_argument(
        "--resample-only", action="store_true", help="only time the 48 kHz resampling"
    )
    parser.add_argument("--child", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--tmp", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        child(args)
        return
    if args.resample_only:
        print(resample_line(None))  # noqa: T201
        return
    import torch

    print(
        f"coefficient stage on {args.device} (torch {torch.__version__}, "  # noqa: T201
        f"{torch.get_num_threads()} threads)"
    )
    per_audio_s = None  # compute seconds per audio second, from the longest clip
    with tempfile.TemporaryDirectory() as tmp:
        for seconds in sorted(args.durations):
            cmd = [
                sys.executable,
                __file__,
                "--child",
                str(seconds),
                "--tmp",
                tmp,
                "--device",
                args.device,
            ]
            if args.checkpoint_dir:
                cmd += ["--checkpoint-dir", args.checkpoint_dir]
            cmd += ["--random-weights"] if args.random_weights else []
            cmd += ["--file"] if args.file else []
            line = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            f = json.loads(line.strip().splitlines()[-1])
            extra = f", CUDA peak {f['cuda_peak_mb']} MB" if "cuda_peak_mb" in f else ""
            print(  # noqa: T201
                f"{seconds:7.0f} s of audio ({f['input']}): {f['frames']} frames in "
                f"{f['compute_s']:.2f} s = {f['realtime']:.1f} s of coefficients per second; "
                f"RSS {f['rss_before_mb']:.0f} MB before, peak {f['rss_peak_mb']:.0f} MB "
                f"(+{f['rss_peak_mb'] - f['rss_before_mb']:.0f} MB){extra}"
            )
            per_audio_s = f["compute_s"] / seconds
    print(resample_line(per_audio_s))  # noqa: T201


if __name__ == "__main__":
    main()
