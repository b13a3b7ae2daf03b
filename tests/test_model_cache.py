"""The one model cache: one instance per key across threads, offload/restore, eviction, bytes,
events, and stage handles that survive a host's offload or eviction."""

from __future__ import annotations

import gc
import threading
import time
import weakref

import pytest
import torch

from sadtalker_core.models import MODELS, ModelCache, network_ref

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _slow_build(counter: list, delay: float = 0.2):
    def build():
        counter.append(threading.get_ident())
        time.sleep(delay)  # both threads are inside get() while the first builds
        return torch.nn.Linear(4, 3)

    return build


def test_two_threads_get_one_instance():
    cache = ModelCache()
    builds: list = []
    got: list = []
    build = _slow_build(builds)
    threads = [
        threading.Thread(target=lambda: got.append(cache.get("net", build, "cpu")))
        for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(builds) == 1
    assert len(got) == 4 and all(m is got[0] for m in got)


def test_different_keys_build_in_parallel():
    cache = ModelCache()
    builds: list = []
    start = time.monotonic()
    threads = [
        threading.Thread(target=cache.get, args=(k, _slow_build(builds, 0.5), "cpu"))
        for k in ("a", "b")
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(builds) == 2 and len(cache) == 2
    assert time.monotonic() - start < 0.95  # not one after the other


def test_bytes_and_events():
    cache = ModelCache()
    events = []
    unsubscribe = cache.subscribe(lambda ev, e: events.append((ev, e.key)))
    m = cache.get("lin", lambda: torch.nn.Linear(10, 5), "cpu", name="a linear layer")
    (entry,) = cache.entries()
    assert entry.nbytes == (10 * 5 + 5) * 4 == cache.nbytes() == cache.nbytes("cpu")
    assert entry.name == "a linear layer" and entry.modules == [m]
    assert cache.get("lin", lambda: None, "cpu") is m  # cached: the builder is not called
    assert cache.evict(["lin"]) == entry.nbytes
    assert events == [("loaded", "lin"), ("evicted", "lin")]
    unsubscribe()
    cache.get("lin", lambda: torch.nn.Linear(1, 1), "cpu")
    assert events == [("loaded", "lin"), ("evicted", "lin")]


def test_a_failing_listener_does_not_break_loading():
    cache = ModelCache()
    cache.subscribe(lambda ev, e: 1 / 0)
    assert isinstance(cache.get("x", lambda: torch.nn.Linear(1, 1), "cpu"), torch.nn.Linear)


def test_offload_and_reload_give_identical_outputs(weights_dir):
    path = weights_dir / "mapping_00229-model.pth.tar"
    ref = network_ref("mapping", path, DEVICE)
    x = torch.randn(2, 70, 27, generator=torch.Generator().manual_seed(0)).to(DEVICE)
    with torch.inference_mode():
        out_before = ref()(x)
    key = ref.key  # the entry may have been loaded first through another path to the same file
    moved = MODELS.offload([key])
    entry = MODELS.entry(key)
    if DEVICE.type == "cpu":
        assert moved == 0 and not entry.offloaded  # nothing to move off a CPU
    else:
        assert moved == entry.nbytes > 0
        assert entry.offloaded and entry.current_device.type == "cpu"
    with torch.inference_mode():
        out_after = ref()(x)  # the handle moves it back first
    assert not entry.offloaded and entry.current_device.type == DEVICE.type
    for a, b in zip(_tensors(out_before), _tensors(out_after)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def _tensors(x):
    if isinstance(x, torch.Tensor):
        return [x]
    if isinstance(x, dict):
        return [v for k in sorted(x) for v in _tensors(x[k])]
    if isinstance(x, (tuple, list)):
        return [v for item in x for v in _tensors(item)]
    return [t for t in vars(x).values() if isinstance(t, torch.Tensor)]


def test_eviction_frees_the_network_and_a_handle_rebuilds_it(weights_dir):
    path = weights_dir / "mapping_00229-model.pth.tar"
    ref = network_ref("mapping", path, "cpu")
    module = ref()
    alive = weakref.ref(module)
    x = torch.randn(1, 70, 27, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        expected = _tensors(module(x))
    key = ref.key
    assert MODELS.evict([key]) > 0 and key not in MODELS
    del module
    gc.collect()
    assert alive() is None  # nobody else held it: the memory is gone
    rebuilt = ref()  # the handle loads it again
    assert key in MODELS and rebuilt is network_ref("mapping", path).loaded().module
    with torch.inference_mode():
        for a, b in zip(expected, _tensors(rebuilt(x))):
            torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_render_models_follow_an_eviction(weights_dir):
    from sadtalker_core.render.infer import RenderModels

    models = RenderModels.load(weights_dir, 256, "crop", "cpu")
    gen = models.generator
    keys = [e.key for e in MODELS.entries() if e.key[:2] == ("network", "generator")]
    MODELS.evict(keys)
    again = models.generator
    assert again is not gen and again.training is False
    for a, b in zip(gen.state_dict().values(), again.state_dict().values()):
        assert torch.equal(a, b)


def test_detectors_live_in_the_cache():
    pytest.importorskip("dlib")
    from sadtalker_core.face.detect import clear_detector_cache, get_detector

    det = get_detector("dlib", [], "cpu")
    assert get_detector("dlib", [], "cpu") is det
    assert ("detector", "dlib") in MODELS
    clear_detector_cache()
    assert ("detector", "dlib") not in MODELS
    assert get_detector("dlib", [], "cpu") is not det  # built again
