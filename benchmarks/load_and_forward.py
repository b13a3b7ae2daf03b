"""Load time per checkpoint file and one forward time per network, on the current device.

usage: python benchmarks/load_and_forward.py [--checkpoint-dir DIR] [--device cpu|cuda|mps]
                                             [--size 256|512|all] [--repeat N]

Without official weights in the searched folders, stand-ins in the official formats are generated
with ../shared/reference/make_weights.py (same shapes, so the same speed).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from _weights import find_weights

from sadtalker_core import models as registry
from sadtalker_core.config import SIZES


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()
    elif device.type == "mps":
        torch.mps.synchronize()


def _timed(fn, device, repeat: int) -> float:
    fn()  # warm-up (kernels, caches)
    _sync(device)
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--checkpoint-dir")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--size", choices=(*map(str, SIZES), "all"), default="all")
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    device = torch.device(args.device)
    folder = find_weights(args.checkpoint_dir)
    sizes = SIZES if args.size == "all" else (int(args.size),)
    print(
        f"torch {torch.__version__}, device {device}, threads {torch.get_num_threads()}, weights {folder}"
    )

    print("\n== load (cold: file opened, networks built and loaded strictly, moved to device)")
    for name, spec in registry.FILES.items():
        path = folder / name
        if not spec.sections or not path.exists():
            continue
        registry.clear_cache()
        t0 = time.perf_counter()
        for net in spec.sections:
            registry.network_ref(net, path, device).loaded()
        _sync(device)
        dt = time.perf_counter() - t0
        print(f"{name:<34} {dt:7.2f} s  ({', '.join(spec.sections)})")
    registry.clear_cache()

    print("\n== one forward per network (best of repeats)")
    rows = []
    with torch.inference_mode():
        st = folder / "SadTalker_V0.0.2_256.safetensors"
        recon = registry.network_ref("face_3drecon", st, device).loaded().module
        x = torch.rand(1, 3, 224, 224, device=device)
        rows.append(("face_3drecon 224", _timed(lambda: recon(x), device, args.repeat)))

        a2e = registry.network_ref("audio2exp", st, device).loaded().module
        mel = torch.rand(32, 1, 80, 16, device=device)
        ref = torch.rand(32, 64, device=device)
        blink = torch.zeros(32, 1, device=device)
        rows.append(
            ("audio2exp x32 frames", _timed(lambda: a2e(mel, ref, blink), device, args.repeat))
        )

        from sadtalker_core.coeffs.audio2pose.infer import predict_pose

        a2p = registry.network_ref("audio2pose", st, device).loaded().module
        mel_t = torch.rand(64, 80, 16)
        ref_pose = torch.zeros(6)
        rows.append(
            (
                "audio2pose 64 frames",
                _timed(lambda: predict_pose(a2p, mel_t, ref_pose, 0, 0), device, args.repeat),
            )
        )

        mapping = (
            registry.network_ref("mapping", folder / "mapping_00229-model.pth.tar", device)
            .loaded()
            .module
        )
        win = torch.rand(8, 70, 27, device=device)
        rows.append(("mapping x8 windows", _timed(lambda: mapping(win), device, args.repeat)))

        for size in sizes:
            st = folder / f"SadTalker_V0.0.2_{size}.safetensors"
            kp = registry.network_ref("kp_extractor", st, device).loaded().module
            gen = registry.network_ref("generator", st, device).loaded().module
            img = torch.rand(1, 3, size, size, device=device)
            rows.append(
                (
                    f"kp_extractor {size}",
                    _timed(lambda kp=kp, img=img: kp(img), device, args.repeat),
                )
            )
            rows.append(
                (
                    f"generator.encode_source {size}",
                    _timed(lambda gen=gen, img=img: gen.encode_source(img), device, args.repeat),
                )
            )
            feat = gen.encode_source(img)
            kps = torch.rand(1, 15, 3, device=device) * 0.5
            kpd = kps + 0.01
            t = _timed(lambda g=gen, f=feat, a=kps, b=kpd: g.animate(f, a, b), device, args.repeat)
            rows.append((f"generator.animate {size} (1 frame)", t))
            rows.append((f"  -> frames/s at {size}", 1.0 / t))
    for label, value in rows:
        unit = "" if label.strip().startswith("->") else " s"
        print(f"{label:<36} {value:9.3f}{unit}")


if __name__ == "__main__":
    main()
