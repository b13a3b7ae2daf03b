"""Frames/s of the enhance stage: face restoration, parsing paste and background upscaling.

    python benchmarks/enhance.py                     # CPU, 256 and 512 renders, upscale 1 and 2
    python benchmarks/enhance.py --device cuda --frames 32
    python benchmarks/enhance.py --sizes 256 --upscales 2 --official DIR   # + the official path

``--official DIR``: a folder where the official enhancer's packages import from, made with
``pip install --target DIR --no-deps --no-build-isolation gfpgan==1.3.8 basicsr==1.4.2
realesrgan==0.3.0 facexlib==0.3.0 filterpy addict yapf lmdb``; its GFPGANer (+ RealESRGANer)
then runs on the same frames and weights, as SadTalker's face_enhancer.py calls it.

Uses the checkpoint folders when they hold GFPGANv1.4.pth, parsing_parsenet.pth and
RealESRGAN_x2plus.pth, else official-format stand-ins with seeded values (same shapes, so the same
speed). One face per frame at a known place (the render's own geometry, no detector). Prints one
line per measurement; not a test.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from sadtalker_core.config import SIZES  # noqa: E402
from sadtalker_core.devices import reused_cpu_memory  # noqa: E402
from sadtalker_core.enhance.landmarks import FACE_TEMPLATE  # noqa: E402
from sadtalker_core.enhance.parsing import PARSENET_FILE  # noqa: E402
from sadtalker_core.enhance.restore import EnhanceConfig, FaceEnhancer  # noqa: E402
from sadtalker_core.enhance.upscale import REALESRGAN_FILE, BackgroundUpscaler  # noqa: E402
from sadtalker_core.models import default_checkpoint_dirs, find_file  # noqa: E402

CACHE = Path.home() / ".cache" / "sadtalker_core"


def weights_dir(explicit: str | None) -> Path:
    """A folder with the three files: the given one if complete, else generated stand-ins."""
    names = ("GFPGANv1.4.pth", PARSENET_FILE, REALESRGAN_FILE)
    dirs = default_checkpoint_dirs(explicit)
    found = {n: find_file(n, dirs) for n in names}
    if all(found.values()) and len({p.parent for p in found.values()}) == 1:
        return next(iter(found.values())).parent
    sys.path.insert(0, str(REPO / "tests"))
    from _support import REFERENCE, generate_restorer_weights

    dest = CACHE / "bench-enhance"
    dest.mkdir(parents=True, exist_ok=True)
    gfp = generate_restorer_weights(CACHE / "test-enhancer") / "GFPGANv1.4.pth"
    if not (dest / gfp.name).exists():
        os.symlink(gfp, dest / gfp.name)
    for name in (PARSENET_FILE, REALESRGAN_FILE):
        if not (dest / name).exists():
            spec = importlib.util.spec_from_file_location("mw", REFERENCE / "make_weights.py")
            mw = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(mw)
            meta, arrays = mw.generate(str(REFERENCE / "keys" / f"{name}.tsv"))
            mw.save(meta, arrays, str(dest / name))
    print(f"using official-format stand-in weights in {dest}")  # noqa: T201
    return dest


def timed(device: torch.device, repeats: int, fn, *args) -> float:
    """Seconds per call of ``fn(*args)`` (one warm-up call, then the mean of ``repeats``)."""
    fn(*args)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t = time.perf_counter()
    for _ in range(repeats):
        fn(*args)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - t) / repeats


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--checkpoint_dir")
    ap.add_argument("--frames", type=int, default=4, help="frames per measured batch")
    ap.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    ap.add_argument("--upscales", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--batch_size", type=int, default=4, help="faces per restorer call")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--official", type=Path, help="folder the official gfpgan packages import from")
    args = ap.parse_args(argv)
    dev = torch.device(args.device)
    torch.set_grad_enabled(False)
    folder = weights_dir(args.checkpoint_dir)
    n = args.frames
    print(f"device {dev}, {n} frames per batch, torch {torch.__version__}")  # noqa: T201

    def line(what: str, seconds: float) -> None:
        print(f"{what:<58} {n / seconds:8.2f} frames/s  ({seconds / n * 1000:7.1f} ms/frame)")  # noqa: T201

    for up in args.upscales:
        cfg = EnhanceConfig(upscale=up, batch_size=args.batch_size, background="realesrgan")
        enh = FaceEnhancer(folder, dev, cfg)
        # the enhancer's handles on the parsing net and the upscaler, swapped per variant below
        parsenet, background = enh._parsenet, enh._background
        for size in args.sizes:
            g = torch.Generator().manual_seed(size)
            frames = torch.rand(n, 3, size, size, generator=g).to(dev)
            # the face where a render has it: the 512 template scaled to the frame
            pts = np.repeat((FACE_TEMPLATE * size / 512)[None], n, 0)
            faces = torch.rand(n, 3, 512, 512, generator=g).to(dev)
            tag = f"{size} px render, upscale {up}"
            if up == args.upscales[0]:  # independent of the upscale
                with reused_cpu_memory(dev):  # as inside enhance()
                    line(
                        f"restore ({size} px frames: 512 px faces)",
                        timed(dev, args.repeats, enh.restore, faces),
                    )
                    line(
                        "parsing masks (ParseNet + blur)",
                        timed(dev, args.repeats, enh.paste_masks, faces),
                    )
            with reused_cpu_memory(dev):
                line(
                    f"background Real-ESRGAN x2 -> x{up}, {size} px",
                    timed(dev, args.repeats, enh.background, frames, up),
                )
            for label, pn, bg in (
                ("square mask, bicubic", None, None),
                ("parsing mask, bicubic", parsenet, None),
                ("parsing mask, Real-ESRGAN", parsenet, background),
            ):
                enh._parsenet, enh._background = pn, bg
                line(
                    f"enhance {tag}: {label}",
                    timed(dev, args.repeats, enh.enhance_tensor, frames, pts),
                )
            enh._parsenet, enh._background = parsenet, background
    if isinstance(enh.background, BackgroundUpscaler):
        print(f"background tiles: {cfg.background_tile} px + {cfg.background_tile_pad} px context")  # noqa: T201
    if args.official is not None:
        for size in args.sizes:
            compare_official(args.official, folder, dev, size, args.upscales[-1], n, line)


def compare_official(
    packages: Path, folder: Path, dev: torch.device, size: int, up: int, n: int, line
) -> None:
    """The official GFPGANer (+ RealESRGANer) against ours on the same uint8 frames and weights.

    Both are told where the face is (the render's geometry): the official's RetinaFace would
    find nothing in noise frames, and ours skips detection on rendered frames anyway.
    """
    import tempfile

    import torchvision.transforms._functional_tensor as functional_tensor

    sys.path.insert(0, str(packages))
    # basicsr 1.4.2 imports a torchvision module that was renamed (the usual user workaround)
    sys.modules.setdefault("torchvision.transforms.functional_tensor", functional_tensor)
    from basicsr.archs.rrdbnet_arch import RRDBNet
    from facexlib.detection.retinaface import RetinaFace
    from gfpgan import GFPGANer
    from realesrgan import RealESRGANer

    g = np.random.default_rng(size)
    frames = (g.random((n, size, size, 3)) * 255).astype(np.uint8)
    pts = (FACE_TEMPLATE * size / 512).astype(np.float32)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        weights = Path(tmp) / "gfpgan" / "weights"  # GFPGANer's relative model_rootpath
        weights.mkdir(parents=True)
        torch.manual_seed(0)
        torch.save(
            RetinaFace("resnet50", device="cpu").state_dict(),
            weights / "detection_Resnet50_Final.pth",
        )
        os.symlink(folder / PARSENET_FILE, weights / PARSENET_FILE)
        cwd = os.getcwd()
        os.chdir(tmp)
        try:
            for label, with_bg in (("bicubic", False), ("Real-ESRGAN", True)):
                bg = None
                if with_bg:
                    rrdb = RRDBNet(
                        num_in_ch=3,
                        num_out_ch=3,
                        num_feat=64,
                        num_block=23,
                        num_grow_ch=32,
                        scale=2,
                    )
                    bg = RealESRGANer(
                        scale=2,
                        model_path=str(folder / REALESRGAN_FILE),
                        model=rrdb,
                        tile=400,
                        tile_pad=10,
                        pre_pad=0,
                        half=dev.type == "cuda",
                        device=dev,
                    )
                official = GFPGANer(
                    str(folder / "GFPGANv1.4.pth"), upscale=up, bg_upsampler=bg, device=dev
                )
                helper = official.face_helper

                def known_face(*_a, helper=helper, **_k):
                    helper.all_landmarks_5 = [pts.copy()]
                    return 1

                helper.get_face_landmarks_5 = known_face

                def run_official(official=official):
                    for f in frames:
                        official.enhance(f[..., ::-1].copy(), paste_back=True)

                results[label] = timed(dev, 1, run_official)
                ours = FaceEnhancer(
                    folder,
                    dev,
                    EnhanceConfig(upscale=up, background="realesrgan" if with_bg else None),
                )
                mine = timed(dev, 1, ours.enhance, frames, np.repeat(pts[None], n, 0))
                line(f"official GFPGANer {size} px, upscale {up}, {label}", results[label])
                line(f"  ours, same frames and weights ({results[label] / mine:.2f}x)", mine)
        finally:
            os.chdir(cwd)


if __name__ == "__main__":
    main()
