"""Batches beyond one machine (issue 22): real Ray clusters on this machine (``ray.init`` with two
CPU workers; ``ray start --head`` plus a second ``ray start --address`` node), the manifest and
resuming, a worker killed mid-clip, the avatar cache; and the thread engine on the same layer.

Every clip is one 256 px frame (0.05 s of speech at 25 fps), so a clip costs a few seconds on a
CPU; the clusters are stopped at the end of the module, also when a test fails.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import av
import pytest
import soundfile as sf

from sadtalker_core.batch.cache import EXTRACTED
from sadtalker_core.batch.jobs import DONE, SKIPPED, Job, read_jobs
from sadtalker_core.batch.local import run_local
from sadtalker_core.batch.manifest import Manifest
from sadtalker_core.batch.runner import RunnerSpec
from sadtalker_core.config import ExtractConfig, PipelineConfig, RenderConfig
from sadtalker_core.errors import MissingDependencyError

REPO = Path(__file__).resolve().parents[1]
CLIPS = 6
SECONDS = 0.05  # 0.05 s * 25 fps = 1 frame per clip
RAY_ENV = {"RAY_USAGE_STATS_ENABLED": "0"}


def spec_for(weights_dir: Path, **kw) -> RunnerSpec:
    cfg = PipelineConfig(
        extract=ExtractConfig(size=256, detector="dlib"), render=RenderConfig(batch_size=1)
    )
    return RunnerSpec((weights_dir,), cfg, **kw)


@pytest.fixture(scope="module")
def clips(tmp_path_factory, fixtures_dir) -> Path:
    """A folder with one photo, CLIPS different 1-frame speech files and jobs.csv (relative
    paths) of one clip each."""
    folder = tmp_path_factory.mktemp("ray_inputs")
    shutil.copy(fixtures_dir / "people_0.png", folder / "anna.png")
    wav, rate = sf.read(str(fixtures_dir / "RD_Radio31_000.wav"), dtype="float32")
    n = int(SECONDS * rate)
    rows = []
    for k in range(CLIPS):
        start = rate + k * n  # different speech in every clip
        sf.write(str(folder / f"s{k}.wav"), wav[start : start + n], rate)
        rows.append(["anna.png", f"s{k}.wav", f"out/clip{k}.mp4"])
    with open(folder / "jobs.csv", "w", newline="") as f:
        csv.writer(f).writerows([["image", "audio", "output"], *rows])
    return folder


def check_outputs(jobs: list[Job], manifest: Path) -> dict[str, dict]:
    """Every clip: one video frame at 256 px, an audio track, exactly one manifest line."""
    lines = [json.loads(line) for line in manifest.read_text().splitlines()]
    by_clip = {rec["clip"]: rec for rec in lines}
    assert len(by_clip) == len(lines) == len(jobs), lines
    for job in jobs:
        rec = by_clip[job.clip]
        assert rec["status"] == DONE and rec["error"] == "", rec
        assert rec["output"] == str(job.output) and rec["seconds"] > 0
        with av.open(str(job.output)) as c:
            assert len(c.streams.audio) == 1
            frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
        assert len(frames) == rec["frames"] == 1, job  # 0.05 s * 25 fps
        assert frames[0].shape == (256, 256, 3)
        assert rec["bytes"] == job.output.stat().st_size
    leftovers = [p.name for p in jobs[0].output.parent.iterdir() if p.name.startswith(".")]
    assert leftovers == [], leftovers  # no partial video, no marker file
    return by_clip


# --------------------------------------------------------------------------------------------
# One machine: the thread engine on the shared layer


def test_threads_write_manifest_and_resume(weights_dir, clips, tmp_path):
    jobs = [Job(j.image, j.audio, tmp_path / "out" / j.output.name) for j in read_jobs(
        clips / "jobs.csv", tmp_path)][:3]  # fmt: skip
    manifest = tmp_path / "jobs.manifest.jsonl"
    spec = spec_for(weights_dir, face_cache=tmp_path / "faces")
    states = []
    results = run_local(jobs, spec, ["cpu", "cpu"], Manifest(manifest), states.append)
    assert [r.status for r in results] == [DONE] * 3
    # two workers, one photo: one extraction, the other clips take the face from memory
    assert sorted(r.face for r in results) == [EXTRACTED, "memory", "memory"]
    assert len(list((tmp_path / "faces").glob("*.npz"))) == 1  # the on-disk cache
    check_outputs(jobs, manifest)
    last = states[-1]
    assert (last.clips_done, last.clips_total, last.written, last.failed) == (3, 3, 3, 0)
    assert last.frames_done == 3 and last.clips_per_min > 0 and last.eta_s == 0

    # rerun: nothing is redone; a deleted and a truncated output are made again, the face
    # coming from the disk cache (a new process would find it there too)
    jobs[0].output.unlink()
    with open(jobs[1].output, "r+b") as f:
        f.truncate(100)
    stamp = jobs[2].output.stat().st_mtime_ns
    results = run_local(jobs, spec, ["cpu"], Manifest(manifest))
    assert [r.status for r in results] == [DONE, DONE, SKIPPED]
    assert [r.face for r in results[:2]] == ["disk", "memory"]
    assert jobs[2].output.stat().st_mtime_ns == stamp
    lines = manifest.read_text().splitlines()
    assert len(lines) == 5  # 3 + the 2 clips made again (the last line of a clip wins)
    results = run_local(jobs, spec, ["cpu"], Manifest(manifest))
    assert [r.status for r in results] == [SKIPPED] * 3


def test_missing_ray_names_the_extra(monkeypatch):
    from sadtalker_core.batch import ray_batch

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(MissingDependencyError, match=r"pip install \.\[ray\]"):
        ray_batch.import_ray("local")


def test_only_the_ray_cluster_module_imports_ray():
    hits = [
        str(p.relative_to(REPO))
        for folder in ("sadtalker_core", "nodes", "sadtalker_webui", "scripts")
        for p in (REPO / folder).rglob("*.py")
        if "import ray" in p.read_text() or "from ray" in p.read_text()
    ]
    assert hits == ["sadtalker_core/batch/ray_cluster.py"], hits  # lazily, in import_ray()


# --------------------------------------------------------------------------------------------
# A real local cluster: ray.init with two CPU workers on 127.0.0.1


@pytest.fixture(scope="module")
def local_ray():
    settings = {**RAY_ENV, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    before = {k: os.environ.get(k) for k in settings}
    os.environ.update(settings)  # before ray is imported: loopback only, no usage stats
    import ray

    ray.init(
        address="local",  # a new cluster, never one `ray start` left running
        num_cpus=2,
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        log_to_driver=False,
    )
    try:
        assert {n["NodeManagerAddress"] for n in ray.nodes()} == {"127.0.0.1"}
        yield ray
    finally:
        ray.shutdown()
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def test_ray_batch_retries_a_killed_worker_and_resumes(local_ray, weights_dir, clips, tmp_path):
    from sadtalker_core.batch.ray_batch import RayBatch

    jobs = [Job(j.image, j.audio, tmp_path / "out" / j.output.name) for j in read_jobs(
        clips / "jobs.csv", tmp_path)]  # fmt: skip
    manifest = tmp_path / "jobs.manifest.jsonl"
    dispatched: list[tuple[str, int]] = []
    killed: list[int] = []

    def kill_third_clip(job: Job, worker: dict) -> None:
        dispatched.append((job.clip, worker["pid"]))
        if job == jobs[2] and not killed:  # a worker dies 1 s into this clip
            killed.append(worker["pid"])
            threading.Timer(1.0, os.kill, (worker["pid"], signal.SIGKILL)).start()

    batch = RayBatch(spec_for(weights_dir), retries=2, on_dispatch=kill_third_clip)
    results = batch.run(jobs, Manifest(manifest))
    assert [r.status for r in results] == [DONE] * CLIPS, [r.error for r in results]
    by_clip = check_outputs(jobs, manifest)
    assert batch.lost_workers == 1
    third = by_clip[jobs[2].clip]
    assert third["attempts"] == 2, third  # the killed try, then another worker
    tries = [pid for clip, pid in dispatched if clip == jobs[2].clip]
    assert len(tries) == 2 and tries[0] == killed[0] and tries[1] != killed[0], dispatched
    assert str(killed[0]) not in third["worker"]
    # two workers at a time on 2 CPUs, each its own process with one torch thread
    assert len({w["pid"] for w in batch.workers_info}) == 3  # 2 + the replacement
    assert all(w["torch_threads"] == 1 and w["device"] == "cpu" for w in batch.workers_info)
    # the avatar cache: one extraction for the six clips of one photo, across the workers
    assert sum(r.face == EXTRACTED for r in results) == 1, [r.face for r in results]
    assert {r.face for r in results} <= {EXTRACTED, "memory", "shared"}

    # rerun the same batch: nothing is redone, nothing is sent to a worker
    dispatched.clear()
    stamps = [j.output.stat().st_mtime_ns for j in jobs]
    results = RayBatch(spec_for(weights_dir), on_dispatch=kill_third_clip).run(
        jobs, Manifest(manifest)
    )
    assert [r.status for r in results] == [SKIPPED] * CLIPS
    assert dispatched == [] and [j.output.stat().st_mtime_ns for j in jobs] == stamps


def test_ray_failed_clip_is_retried_elsewhere_then_reported(
    local_ray, weights_dir, clips, tmp_path
):
    from sadtalker_core.batch.ray_batch import RayBatch

    good = Job(clips / "anna.png", clips / "s0.wav", tmp_path / "good.mp4")
    bad = Job(clips / "jobs.csv", clips / "s1.wav", tmp_path / "bad.mp4")  # not a picture
    seen: list[tuple[str, str]] = []
    batch = RayBatch(
        spec_for(weights_dir), retries=1, results="driver",
        on_dispatch=lambda job, w: seen.append((job.clip, w["worker"])),
    )  # fmt: skip
    results = batch.run([bad, good], Manifest(tmp_path / "m.jsonl"))
    assert [r.status for r in results] == ["failed", DONE]
    assert results[0].attempts == 2 and "jobs.csv" in results[0].error
    workers = [w for clip, w in seen if clip == bad.clip]
    assert len(workers) == 2 and workers[0] != workers[1]  # tried again on the other worker
    assert good.output.is_file() and not bad.output.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["good.mp4", "m.jsonl"]


# --------------------------------------------------------------------------------------------
# `ray start --head` + a second `ray start --address` node; the CLI as the driver


def _ray_cli(*args: str, env: dict) -> subprocess.CompletedProcess:
    ray_bin = Path(sys.executable).with_name("ray")
    return subprocess.run(
        [str(ray_bin), *args], env=env, capture_output=True, text=True, timeout=120
    )


def _stop_cluster(temp_dir: Path) -> None:
    """Stop the processes of the cluster whose session lives in ``temp_dir`` (by pid: never
    another Ray on this machine), then their children (Ray's workers)."""

    def procs() -> dict[int, tuple[int, str]]:
        out = {}
        for d in Path("/proc").iterdir():
            try:
                if d.name.isdigit():
                    cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                    ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
                    out[int(d.name)] = (ppid, cmd)
            except (OSError, ValueError):
                continue
        return out

    table = procs()
    ours = {pid for pid, (_, cmd) in table.items() if str(temp_dir) in cmd}
    ours |= {pid for pid, (ppid, _) in table.items() if ppid in ours}
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in ours:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        time.sleep(2)
    shutil.rmtree(temp_dir, ignore_errors=True)


def test_cli_batch_on_a_two_node_cluster(weights_dir, clips, tmp_path):
    port = 6300 + os.getpid() % 500
    temp_dir = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))  # short: Unix socket paths
    # the nodes and the driver share one token (Ray's token authentication)
    env = {**os.environ, **RAY_ENV, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": uuid.uuid4().hex}
    env.pop("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", None)  # a second node needs Ray's default
    address = f"127.0.0.1:{port}"
    common = ["--num-cpus", "1", "--node-ip-address", "127.0.0.1", "--disable-usage-stats"]
    try:
        head = _ray_cli(
            "start", "--head", "--port", str(port), "--include-dashboard", "false",
            "--temp-dir", str(temp_dir), *common, env=env,
        )  # fmt: skip
        assert head.returncode == 0, head.stderr
        node = _ray_cli("start", "--address", address, *common, env=env)
        assert node.returncode == 0, node.stderr
        table = tmp_path / "jobs.csv"
        rows = [[str(clips / "anna.png"), str(clips / f"s{k}.wav"), f"r/c{k}.mp4"] for k in (0, 1)]
        with open(table, "w", newline="") as f:
            csv.writer(f).writerows(rows)
        proc = subprocess.run(
            [sys.executable, "-m", "sadtalker_core", "--batch", str(table), "--ray", address]
            + ["--checkpoint_dir", str(weights_dir), "--detector", "dlib", "--batch_size", "1"]
            + ["--ray_results", "driver"],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-3000:]
        jobs = read_jobs(table, tmp_path)
        written = sorted(line.split()[0] for line in proc.stdout.splitlines())
        assert written == [str(j.output) for j in jobs], proc.stdout
        by_clip = check_outputs(jobs, tmp_path / "jobs.manifest.jsonl")
        assert len({rec["worker"] for rec in by_clip.values()}) == 2, by_clip  # both nodes
    finally:
        _stop_cluster(temp_dir)


def test_ctrl_c_on_the_driver_leaves_no_partial_file(weights_dir, clips, tmp_path):
    """SIGINT to `sadtalker --batch ... --ray local` while workers write their videos: exit 130,
    no partial video, no marker file, a manifest line only for each finished clip."""
    table = tmp_path / "jobs.csv"
    wav, rate = sf.read(str(clips / "s0.wav"), dtype="float32")
    long = tmp_path / "long.wav"
    sf.write(str(long), wav.repeat(8), rate)  # 0.4 s: 10 frames, written one by one
    with open(table, "w", newline="") as f:
        csv.writer(f).writerows(
            [[str(clips / "anna.png"), str(long), f"r/c{k}.mp4"] for k in range(4)]
        )
    env = {**os.environ, **RAY_ENV}
    proc = subprocess.Popen(
        [sys.executable, "-m", "sadtalker_core", "--batch", str(table), "--ray", "local"]
        + ["--checkpoint_dir", str(weights_dir), "--detector", "dlib", "--batch_size", "1"]
        + ["--ray_results", "shared", "--ray_workers", "2"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    out = tmp_path / "r"
    try:
        deadline = time.monotonic() + 400
        while not list(out.glob(".*.partial.mp4")) and time.monotonic() < deadline:
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.2)
        assert list(out.glob(".*.partial.mp4")), "no worker started writing"
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stderr[-3000:]
    assert "no partial video was kept" in stderr
    left = sorted(p.name for p in out.iterdir())
    assert all(not n.startswith(".") for n in left), left  # no partial file, no marker
    lines = [json.loads(x) for x in (tmp_path / "jobs.manifest.jsonl").read_text().splitlines()]
    assert sorted(Path(r["output"]).name for r in lines) == left
    assert all(r["status"] == DONE for r in lines) and len(left) < 4
