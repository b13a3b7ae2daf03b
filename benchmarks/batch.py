"""Clips per minute of a batch on a local Ray cluster: 1 vs 2 CPU workers, with and without the
avatar cache (N clips of one photo, each with its own speech).

usage: python benchmarks/batch.py [--checkpoint-dir DIR] [--clips N] [--seconds S]
                                  [--workers 1 2] [--cpus N]

The cluster gets ``--cpus`` CPUs (default: all of this machine); W workers get cpus/W torch
threads each, so every configuration uses the same cores. The rate counts from the first clip
sent to a worker (network loading excluded) to the last written; the load time is printed
beside it. Each worker's CPU affinity (os.sched_getaffinity) and torch threads are printed.
Without official weights in the searched folders, the tests' generated stand-ins are used (same
shapes, so the same speed).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from _weights import find_weights

from sadtalker_core.batch.jobs import Job
from sadtalker_core.batch.runner import RunnerSpec
from sadtalker_core.config import ExtractConfig, PipelineConfig, RenderConfig

FIXTURES = REPO.parent / "shared" / "fixtures"


def make_inputs(folder: Path, clips: int, seconds: float) -> list[Job]:
    import soundfile as sf

    wav, rate = sf.read(str(FIXTURES / "RD_Radio31_000.wav"), dtype="float32")
    n = int(seconds * rate)
    jobs = []
    for k in range(clips):
        start = (rate // 2 + k * n) % max(1, len(wav) - n)
        sf.write(str(folder / f"s{k}.wav"), wav[start : start + n], rate)
        jobs.append(Job(FIXTURES / "people_0.png", folder / f"s{k}.wav", folder / f"c{k}.mp4"))
    return jobs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint-dir")
    ap.add_argument("--clips", type=int, default=6, help="clips of one photo per run")
    ap.add_argument("--seconds", type=float, default=0.08, help="speech per clip (25 fps)")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--cpus", type=int, default=len(os.sched_getaffinity(0)))
    args = ap.parse_args()

    from sadtalker_core.batch.ray_batch import RayBatch, connect, import_ray

    weights = find_weights(args.checkpoint_dir, ("generator", "mapping", "audio2exp"))
    cfg = PipelineConfig(extract=ExtractConfig(detector="dlib"), render=RenderConfig(batch_size=2))
    import torch

    print(f"torch {torch.__version__}, {args.cpus} CPUs for the cluster, weights {weights}")
    print(f"{args.clips} clips of one photo, {args.seconds} s of speech each (256 px, dlib)")
    ray = import_ray("local")
    connect("local", num_cpus=args.cpus)
    rows = []
    try:
        for workers in args.workers:
            for cache in (True, False):
                with tempfile.TemporaryDirectory() as tmp:
                    jobs = make_inputs(Path(tmp), args.clips, args.seconds)
                    spec = RunnerSpec((weights,), cfg, face_cache_enabled=cache)
                    first: list[float] = []
                    batch = RayBatch(
                        spec,
                        workers=workers,
                        cpus_per_worker=max(1, args.cpus // workers),
                        results="shared",
                        on_dispatch=lambda job, w, first=first: (
                            first or first.append(time.perf_counter())
                        ),
                    )
                    t0 = time.perf_counter()
                    results = batch.run(jobs)
                    t1 = time.perf_counter()
                    assert all(r.status == "done" for r in results), [r.error for r in results]
                    extracted = sum(r.face == "extracted" for r in results)
                    rate = len(jobs) / ((t1 - first[0]) / 60)
                    where = "; ".join(
                        f"pid {w['pid']}: cores {w['cores']}, {w['torch_threads']} torch threads"
                        for w in batch.workers_info
                    )
                    rows.append((workers, cache, rate, first[0] - t0, extracted, where))
                    print(
                        f"{workers} worker(s), cache {'on ' if cache else 'off'}: "
                        f"{rate:5.2f} clips/min (load {first[0] - t0:4.1f} s, "
                        f"{extracted} extractions) [{where}]",
                        flush=True,
                    )
    finally:
        ray.shutdown()
    print("\n| workers | avatar cache | clips/min | extractions | load s |")
    print("| --- | --- | --- | --- | --- |")
    for workers, cache, rate, load, extracted, _ in rows:
        print(f"| {workers} | {'on' if cache else 'off'} | {rate:.2f} | {extracted} | {load:.1f} |")


if __name__ == "__main__":
    main()
