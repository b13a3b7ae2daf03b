"""Per-image time of the 3DMM extract stage per detector backend and preprocess mode, split into
detection (every detector call: the source picture and the re-detection on the crop),
reconstruction (alignment + ResNet-50) and the rest (decode, crop, resize); plus a reference video.

usage: python benchmarks/extract.py [--checkpoint-dir DIR] [--device cpu|cuda|mps]
                                    [--image PATH ...] [--size 256|512|all] [--repeat N]
                                    [--video PATH] [--video-frames N]

Backends whose weights or package are missing are listed as skipped. Without official 3DMM weights
in the searched folders, stand-ins in the official formats are generated with
../shared/reference/make_weights.py (same shapes, so the same speed).
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from _weights import find_weights

from sadtalker_core.config import PREPROCESS_MODES, SIZES
from sadtalker_core.errors import SadTalkerError
from sadtalker_core.face.detect import DETECTORS, available_detectors
from sadtalker_core.face.extract import ExtractConfig, FaceExtractor
from sadtalker_core.io.image import load_image

FIXTURES = REPO.parent / "shared" / "fixtures"
PACKAGES = {"official": None, "face_alignment": "face_alignment", "dlib": "dlib"}


class _Timers:
    """Accumulates the time spent in the detector and in the reconstruction of one extractor."""

    def __init__(self, extractor: FaceExtractor, detector):
        self.detect = self.recon = 0.0
        real_detect, real_recon = detector.detect, extractor._reconstruct

        def detect(rgb):
            t0 = time.perf_counter()
            try:
                return real_detect(rgb)
            finally:
                self.detect += time.perf_counter() - t0

        def recon(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return real_recon(*args, **kwargs)  # ends with .cpu(): device work included
            finally:
                self.recon += time.perf_counter() - t0

        detector.detect = detect
        extractor._reconstruct = recon

    def reset(self) -> None:
        self.detect = self.recon = 0.0


def _bench_image(extractor, timers, image, cfg: ExtractConfig, repeat: int):
    """Best-of-``repeat`` (total, detect, recon) seconds of one extract() call."""
    extractor.extract(image, cfg)  # warm-up
    best = None
    for _ in range(repeat):
        timers.reset()
        t0 = time.perf_counter()
        extractor.extract(image, cfg)
        total = time.perf_counter() - t0
        if best is None or total < best[0]:
            best = (total, timers.detect, timers.recon)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--checkpoint-dir")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument(
        "--image",
        nargs="+",
        default=[str(FIXTURES / "people_0.png"), str(FIXTURES / "full_body_1.png")],
    )
    ap.add_argument("--size", choices=(*map(str, SIZES), "all"), default=str(SIZES[0]))
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--video", default=str(FIXTURES / "WDA_KatieHill_000.mp4"))
    ap.add_argument("--video-frames", type=int, default=25)
    args = ap.parse_args()
    device = torch.device(args.device)
    folder = find_weights(args.checkpoint_dir, ("face_3drecon",))
    sizes = SIZES if args.size == "all" else (int(args.size),)
    print(
        f"torch {torch.__version__}, device {device}, threads {torch.get_num_threads()}, "
        f"weights {folder}"
    )

    extractor = FaceExtractor(folder, device)
    t0 = time.perf_counter()
    extractor.recon  # noqa: B018 - builds and loads the 3DMM net
    print(f"3DMM net load: {1000 * (time.perf_counter() - t0):.0f} ms")
    images = [load_image(p) for p in args.image]  # decoded once; decode time is not measured

    found = set(available_detectors(extractor.dirs))
    for name in DETECTORS:
        print(f"\n== detector '{name}'")
        if name not in found:
            pkg = PACKAGES[name]
            why = (
                "package missing"
                if pkg and importlib.util.find_spec(pkg) is None
                else "weights missing"
            )
            print(f"skipped: {why}")
            continue
        t0 = time.perf_counter()
        det = extractor.detector(name)
        print(f"build: {1000 * (time.perf_counter() - t0):.0f} ms")
        timers = _Timers(extractor, det)
        print(
            f"{'image':<18} {'WxH':>10} {'mode':<8} {'size':>4} {'total ms':>9} "
            f"{'detect ms':>9} {'recon ms':>9} {'other ms':>9}"
        )
        for src in images:
            w, h = src.size
            for size in sizes:
                for mode in PREPROCESS_MODES:
                    cfg = ExtractConfig(preprocess=mode, size=size, detector=name)
                    try:
                        total, det_s, rec_s = _bench_image(
                            extractor, timers, src.rgb, cfg, args.repeat
                        )
                    except SadTalkerError as e:
                        print(f"{src.name:<18} {mode:<8} failed: {str(e).splitlines()[0]}")
                        continue
                    print(
                        f"{src.name[:18]:<18} {f'{w}x{h}':>10} {mode:<8} {size:>4} "
                        f"{1000 * total:>9.0f} {1000 * det_s:>9.0f} {1000 * rec_s:>9.0f} "
                        f"{1000 * (total - det_s - rec_s):>9.0f}"
                    )
        if args.video and args.video_frames > 0 and Path(args.video).is_file():
            timers.reset()
            t0 = time.perf_counter()
            rows, _ = extractor.extract_video(
                args.video, ExtractConfig(detector=name), max_frames=args.video_frames
            )
            total = time.perf_counter() - t0
            n = len(rows)
            print(
                f"video {Path(args.video).name}: {n} frames, {1000 * total / n:.0f} ms/frame "
                f"(detect {1000 * timers.detect / n:.0f}, recon {1000 * timers.recon / n:.0f}), "
                f"{n / total:.1f} frames/s"
            )


if __name__ == "__main__":
    main()
