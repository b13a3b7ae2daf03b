"""Render-stage speed and memory: frames/s for render, paste-back and encode; peak RSS vs clip length.

usage:
  python benchmarks/render.py [--device cuda] [--sizes 256 512] [--batch-sizes 1 2 4 8]
                              [--frames N] [--precisions auto fp32 tf32 fp16 bf16]
                              [--compile auto on off]
                              [--rss-seconds 5 60] [--e2e-seconds 10]
                              [--validate bf16 auto] [--lipsync-seconds 4]
                              [--reference PATH_TO_OFFICIAL_SADTALKER_CHECKOUT]

Prints figures, never asserts. With --reference, the official renderer (its own modules and
make_animation, imported from the checkout, never copied here) runs on the same generated
weights, inputs and machine, and our speed is printed as a ratio of theirs.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from _weights import find_weights

from sadtalker_core.config import SIZES
from sadtalker_core.io.frames import resize_frames, to_uint8
from sadtalker_core.io.video import VideoWriter
from sadtalker_core.paste import PasteBack
from sadtalker_core.render.infer import (
    RenderConfig,
    Renderer,
    RenderModels,
)
from sadtalker_core.types import Coeffs, Face

FIXTURES = Path(os.environ.get("SADTALKER_SHARED", REPO.parent / "shared")) / "fixtures"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def synthetic_face(
    size: int, preprocess: str = "crop", image_hw: tuple[int, int] = (768, 640)
) -> Face:
    """A Face with a textured crop and plausible coefficients (no detector needed for speed runs)."""
    from sadtalker_core.face.align import compute_crop_info, load_lm3d_std_68

    rng = np.random.default_rng(0)
    h, w = image_hw
    image = (rng.random((h, w, 3)) * 255).astype(np.uint8)
    lm = (
        load_lm3d_std_68()[:, :2] * np.array([1, -1]) * 0.25 * min(h, w) + np.array([w / 2, h / 2])
    ).astype(np.float32)
    info = (
        None
        if preprocess == "resize"
        else compute_crop_info(lm, (w, h), extended=preprocess.startswith("ext"))
    )
    crop = (rng.random((size, size, 3)) * 255).astype(np.uint8)
    row = np.concatenate([rng.normal(0, 0.2, 70), [1.25, 0.5, -0.25]]).astype(np.float32)
    return Face(
        image,
        None,
        crop,
        info,
        lm,
        np.zeros(257, np.float32),
        row,
        np.zeros(5, np.float32),
        preprocess,
        size,
    )


def synthetic_coeffs(face: Face, frames: int, fps: float = 25.0) -> Coeffs:
    rng = np.random.default_rng(1)
    rows = np.repeat(face.coeff_3dmm[None, :70], frames, 0) + rng.normal(
        0, 0.05, (frames, 70)
    ).astype(np.float32)
    audio = np.zeros(int(round(frames / fps * 16000)), np.float32)
    return Coeffs(rows.astype(np.float32), fps, audio)


def bench_render(
    models: RenderModels,
    face: Face,
    frames: int,
    batch: int,
    precision: str,
    compile_mode: str = "auto",
) -> float:
    renderer = Renderer(models)
    coeffs = synthetic_coeffs(face, frames + batch)  # first batch is warm-up (and compilation)
    cfg = RenderConfig(batch_size=batch, precision=precision, compile=compile_mode)
    it = renderer.iter_batches(face, coeffs, cfg)
    next(it)
    _sync(renderer.device)
    t0 = time.perf_counter()
    n = 0
    for b in it:
        n += b.shape[0]
        b.cpu()  # frames leave the device, as in the pipeline
    _sync(renderer.device)
    return n / (time.perf_counter() - t0)


def bench_paste_encode(
    face: Face, device: torch.device, frames: int, batch: int
) -> tuple[float, float]:
    paste = PasteBack(face, device)
    x = torch.rand(batch, 3, face.size, face.size, device=device)
    paste(x)
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(max(1, frames // batch)):
        full = paste(x)
    paste_fps = max(1, frames // batch) * batch / (time.perf_counter() - t0)
    crop_frames = to_uint8(resize_frames(x, (face.size, face.size)))
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        with VideoWriter(Path(tmp) / "enc.mp4", fps=25, audio=np.zeros(16000, np.float32)) as w:
            for _ in range(max(1, frames // batch)):
                w.write(crop_frames)
        enc_fps = max(1, frames // batch) * batch / (time.perf_counter() - t0)
    del full
    return paste_fps, enc_fps


def rss_child(args: argparse.Namespace, seconds: float) -> dict:
    """Run one streaming render+encode of ``seconds`` in a fresh process; report its peak memory."""
    cmd = [
        sys.executable,
        __file__,
        "--rss-child",
        str(seconds),
        "--device",
        args.device,
        "--weights",
        str(args.weights_path),
        "--rss-batch",
        str(args.rss_batch),
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def rss_child_main(args: argparse.Namespace) -> None:
    device = torch.device(args.device)
    models = RenderModels.load(args.weights, 256, "crop", device)
    face = synthetic_face(256)
    coeffs = synthetic_coeffs(face, int(args.rss_child * 25))
    renderer = Renderer(models)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    with (
        tempfile.TemporaryDirectory() as tmp,
        VideoWriter(Path(tmp) / "x.mp4", 25, coeffs.audio) as w,
    ):
        for b in renderer.iter_batches(face, coeffs, RenderConfig(batch_size=args.rss_batch)):
            w.write(to_uint8(b))
    res = {
        "seconds": args.rss_child,
        "frames": coeffs.num_frames,
        "wall_s": time.perf_counter() - t0,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "peak_gpu_mib": torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else 0.0,
    }
    print(json.dumps(res))


def bench_e2e(
    weights: Path, device: torch.device, seconds: float, face_npz: Path | None, batch: int
) -> None:
    """Speech -> MP4 with the real pipeline at 256 (crop, batch 8); extraction too unless a
    pre-extracted face .npz is given (machines without the offline detector)."""
    from sadtalker_core.face.extract import ExtractConfig
    from sadtalker_core.pipeline import PipelineConfig, SadTalkerPipeline

    wav = _speech(seconds)
    pipe = SadTalkerPipeline(weights, device)
    cfg = PipelineConfig(
        extract=ExtractConfig(detector="dlib"), render=RenderConfig(batch_size=batch)
    )

    def once(audio, out):
        times = {}
        t0 = time.perf_counter()
        face = Face.load(face_npz) if face_npz else pipe.extract(FIXTURES / "people_0.png", cfg)
        times["face"] = time.perf_counter() - t0
        t1 = time.perf_counter()
        coeffs = pipe.coefficients(face, audio, cfg)
        times["coefficients"] = time.perf_counter() - t1
        t1 = time.perf_counter()
        for _ in pipe.iter_frames(face, coeffs, cfg):  # render + paste, frames to host memory
            pass
        times["frames only"] = time.perf_counter() - t1
        t1 = time.perf_counter()
        pipe.render_to_file(face, coeffs, out, cfg)
        times["frames + encode"] = time.perf_counter() - t1
        times["total"] = times["face"] + times["coefficients"] + times["frames + encode"]
        return times

    with tempfile.TemporaryDirectory() as tmp:
        once((wav[:2000], 16000), Path(tmp) / "warm.mp4")
        t = once((wav, 16000), Path(tmp) / "e2e.mp4")
    what = (
        "coefficients + render + encode" if face_npz else "extract + coefficients + render + encode"
    )
    parts = ", ".join(f"{k} {v:.2f} s" for k, v in t.items() if k != "total")
    print(
        f"end to end ({what}), {seconds:.0f} s of speech at 256, batch {batch}: {t['total']:.1f} s "
        f"-> {seconds / t['total']:.2f}x real time ({parts})"
    )


def _speech(seconds: float) -> np.ndarray:
    """``seconds`` of 16 kHz speech: the fixture clip repeated (or the bundled example)."""
    from sadtalker_core.io.audio import load_audio

    path = FIXTURES / "RD_Radio31_000.wav"
    clip = load_audio(path if path.exists() else REPO / "examples" / "speech.wav")
    reps = int(np.ceil(seconds * 16000 / len(clip.waveform)))
    return np.tile(clip.waveform, reps)[: int(seconds * 16000)]


def lipsync_proxy(
    weights: Path, device: torch.device, seconds: float, precisions: list[str], compile_mode: str
) -> None:
    """Does a reduced precision keep the lips moving with the speech as fp32 does?

    Speech -> coefficients (the real audio networks) -> frames in exact fp32 and in each given
    precision. Per frame: mouth opening = mean absolute change of the mouth box from the first
    frame; speech energy = RMS of the frame's 40 ms of audio. Prints the correlation of the two
    per precision (same for the reduced precision as for fp32 = lip sync kept) and the
    correlation of each precision's mouth signal with fp32's. With generated weights the faces
    are noise, so only the comparison between precisions means something.
    """
    from sadtalker_core.pipeline import PipelineConfig, SadTalkerPipeline

    wav = _speech(seconds)
    face = synthetic_face(256)
    coeffs = SadTalkerPipeline(weights, device).coefficients(face, (wav, 16000), PipelineConfig())
    hop = int(round(coeffs.sample_rate / coeffs.fps))
    n = len(coeffs.coeffs)
    audio = np.pad(coeffs.audio, (0, max(0, n * hop - len(coeffs.audio))))[: n * hop]
    energy = np.sqrt((audio.reshape(n, hop).astype(np.float64) ** 2).mean(1))
    renderer = Renderer(RenderModels.load(weights, 256, "crop", device))
    y0, y1, x0, x1 = (int(f * 256) for f in MOUTH_BOX)
    mouth = {}
    for p in ["fp32", *[q for q in precisions if q != "fp32"]]:
        cfg = RenderConfig(
            batch_size=4, precision=p, compile="off" if p == "fp32" else compile_mode
        )
        frames = torch.cat([b.float().cpu() for b in renderer.iter_batches(face, coeffs, cfg)])
        box = frames[..., y0:y1, x0:x1]
        mouth[p] = (box - box[:1]).abs().mean(dim=(1, 2, 3)).double().numpy()
        r_audio = np.corrcoef(mouth[p], energy)[0, 1]
        r_fp32 = np.corrcoef(mouth[p], mouth["fp32"])[0, 1]
        print(
            f"lip-sync proxy {p:<5} ({n} frames, compile {cfg.compile}): mouth opening vs speech "
            f"energy r = {r_audio:+.3f}; mouth signal vs fp32's r = {r_fp32:.4f}"
        )


def bench_reference(checkout: Path, weights: Path, frames: int) -> float:
    """Frames/s of the official renderer on the same weights and inputs (imported from the
    checkout). Runs before ours, so that its allocations meet a fresh process heap."""
    import yaml

    sys.path.insert(0, str(checkout))
    from safetensors import safe_open
    from src.facerender.modules.generator import OcclusionAwareSPADEGenerator as OffGen
    from src.facerender.modules.keypoint_detector import KPDetector as OffKP
    from src.facerender.modules.make_animation import make_animation
    from src.facerender.modules.mapping import MappingNet as OffMap

    with open(checkout / "src" / "config" / "facerender.yaml") as f:
        cfg = yaml.safe_load(f)
    mp = cfg["model_params"]
    gen = OffGen(**mp["generator_params"], **mp["common_params"])
    kp = OffKP(**mp["kp_detector_params"], **mp["common_params"])
    mapping = OffMap(**mp["mapping_params"])
    with safe_open(str(weights / "SadTalker_V0.0.2_256.safetensors"), "pt") as f:
        for module, prefix in ((gen, "generator."), (kp, "kp_extractor.")):
            sd = {k[len(prefix) :]: f.get_tensor(k) for k in f.keys() if k.startswith(prefix)}  # noqa: SIM118
            module.load_state_dict(sd, strict=True)
    mapping.load_state_dict(
        torch.load(weights / "mapping_00229-model.pth.tar", weights_only=True)["mapping"]
    )
    for m in (gen, kp, mapping):
        m.eval()
    face = synthetic_face(256)
    src = torch.from_numpy(face.crop).permute(2, 0, 1)[None].float() / 255
    rng = np.random.default_rng(1)
    src_sem = torch.from_numpy(np.repeat(face.coeff_3dmm[None, :70, None], 27, 2))
    tgt = torch.from_numpy(rng.normal(0, 0.2, (1, frames, 70, 27)).astype(np.float32))
    with torch.no_grad():
        make_animation(src, src_sem, tgt[:, :1], gen, kp, None, mapping, use_exp=True)  # warm-up
        t0 = time.perf_counter()
        make_animation(src, src_sem, tgt, gen, kp, None, mapping, use_exp=True)
        dt = time.perf_counter() - t0
    ref_fps = frames / dt
    print(f"official render 256 (batch 1, fp32): {ref_fps:.3f} frames/s")
    return ref_fps


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--checkpoint-dir")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--sizes", type=int, nargs="*", default=list(SIZES))
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 2, 4, 8])
    ap.add_argument("--precisions", nargs="+", default=["auto", "fp32"])
    ap.add_argument("--frames", type=int, default=8, help="frames timed per configuration")
    ap.add_argument(
        "--compile",
        nargs="+",
        default=["auto"],
        choices=["auto", "on", "off"],
        help="decoder compilation modes to time (auto compiles only clips of 100+ frames)",
    )
    ap.add_argument("--rss-seconds", type=float, nargs="*", default=[], help="e.g. 5 60")
    ap.add_argument("--e2e-seconds", type=float, default=0.0)
    ap.add_argument("--e2e-batch", type=int, nargs="+", default=[4])
    ap.add_argument("--rss-batch", type=int, default=4)
    ap.add_argument("--face", type=Path, help="pre-extracted face .npz for the end-to-end run")
    ap.add_argument(
        "--validate", nargs="*", default=[], help="precisions to check against fp32 (256)"
    )
    ap.add_argument("--reference", type=Path, help="official SadTalker checkout to compare with")
    ap.add_argument(
        "--lipsync-seconds",
        type=float,
        default=0.0,
        help="speech length of the lip-sync proxy for the --validate precisions (e.g. 4)",
    )
    ap.add_argument("--rss-child", type=float, help=argparse.SUPPRESS)
    ap.add_argument("--weights", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.rss_child is not None:
        rss_child_main(args)
        return
    device = torch.device(args.device)
    weights = find_weights(args.checkpoint_dir)
    args.weights_path = weights
    print(
        f"torch {torch.__version__}, device {device}"
        f"{' (' + torch.cuda.get_device_name() + ')' if device.type == 'cuda' else ''}, "
        f"threads {torch.get_num_threads()}, weights {weights}"
    )
    ref_fps = bench_reference(args.reference, weights, args.frames) if args.reference else None
    best = {}
    for size in args.sizes:
        models = RenderModels.load(weights, size, "crop", device)
        face = synthetic_face(size)
        for precision, mode, batch in itertools.product(
            args.precisions, args.compile, args.batch_sizes
        ):
            label = precision if mode == "auto" else f"{precision}/compile {mode}"
            try:
                fps = bench_render(models, face, args.frames, batch, precision, mode)
            except RuntimeError as e:
                print(f"render {size} {label} batch {batch}: failed ({str(e).splitlines()[0]})")
                continue
            best[(size, label)] = max(best.get((size, label), 0), fps)
            print(f"render {size} {label:<5} batch {batch}: {fps:8.3f} frames/s")
        full = synthetic_face(size, "full")
        p_fps, e_fps = bench_paste_encode(full, device, max(args.frames, 16), 8)
        print(
            f"paste-back {size} -> {full.image.shape[1]}x{full.image.shape[0]}: {p_fps:8.1f} frames/s; "
            f"encode {size}: {e_fps:8.1f} frames/s"
        )
    for s in args.rss_seconds:
        r = rss_child(args, s)
        print(
            f"streaming {r['seconds']:.0f} s clip ({r['frames']} frames, render+encode): peak RSS "
            f"{r['peak_rss_mib']:.0f} MiB, peak GPU {r['peak_gpu_mib']:.0f} MiB, {r['wall_s']:.1f} s"
        )
    if args.e2e_seconds:
        for b in args.e2e_batch:
            bench_e2e(weights, device, args.e2e_seconds, args.face, b)
    for precision in args.validate:
        face = synthetic_face(256)
        r = compare_precision(
            Renderer(RenderModels.load(weights, 256, "crop", device)),
            face,
            synthetic_coeffs(face, args.frames),
            precision,
            args.frames,
            args.compile[0],
        )
        print(
            f"{precision} (compile {args.compile[0]}) vs fp32 ({args.frames} frames): max {r['max_abs']:.2e}, mean {r['mean_abs']:.2e}, "
            f"mouth motion {r['mouth_motion']:.4f} vs {r['mouth_motion_fp32']:.4f} "
            f"(ratio {r['mouth_motion_ratio']:.3f})"
        )
    if args.lipsync_seconds:
        lipsync_proxy(weights, device, args.lipsync_seconds, args.validate, args.compile[0])
    if ref_fps is not None:
        print(f"official render 256 (batch 1, fp32, measured first): {ref_fps:.3f} frames/s")
        ours = {p: fps for (size, p), fps in best.items() if size == 256}
        for precision, fps in ours.items():
            print(f"  ours {precision:<5} {fps:.3f} frames/s -> {fps / ref_fps:.2f}x the official")


# Mouth region of an FFHQ-style face crop (fractions of height, width): below the nose, between
# the mouth corners' typical extent.
MOUTH_BOX = (0.60, 0.85, 0.30, 0.70)


def compare_precision(
    renderer, face, coeffs, precision: str, frames: int = 8, compile_mode: str = "auto"
) -> dict[str, float]:
    """Validate an opt-in precision (rendered with ``compile_mode``) against exact fp32 on the
    first ``frames`` frames of a clip.

    Returns:
        ``max_abs`` / ``mean_abs``: deviation of the frames in [0, 1];
        ``mouth_motion_fp32`` / ``mouth_motion``: mean over pixels of the standard deviation over
        time inside ``MOUTH_BOX`` (how much the lips move); ``mouth_motion_ratio``: their ratio,
        which should stay close to 1 (lip motion preserved).
    """
    clip = Coeffs(
        coeffs.coeffs[:frames], coeffs.fps, coeffs.audio, coeffs.sample_rate, coeffs.options
    )
    runs = {}
    for p in ("fp32", precision):
        cfg = RenderConfig(
            batch_size=min(frames, 4),
            precision=p,
            compile=compile_mode if p == precision else "off",
        )
        runs[p] = torch.cat([b.float().cpu() for b in renderer.iter_batches(face, clip, cfg)])
    ref, test = runs["fp32"], runs[precision]
    h, w = ref.shape[-2:]
    y0, y1, x0, x1 = (
        int(MOUTH_BOX[0] * h),
        int(MOUTH_BOX[1] * h),
        int(MOUTH_BOX[2] * w),
        int(MOUTH_BOX[3] * w),
    )
    motion_ref = ref[..., y0:y1, x0:x1].std(dim=0).mean().item()
    motion = test[..., y0:y1, x0:x1].std(dim=0).mean().item()
    diff = (test - ref).abs()
    return {
        "max_abs": diff.max().item(),
        "mean_abs": diff.mean().item(),
        "mouth_motion_fp32": motion_ref,
        "mouth_motion": motion,
        "mouth_motion_ratio": motion / motion_ref if motion_ref > 0 else float("nan"),
    }


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
