"""Render stage: streaming batches match the official batched data path; angles, cancel, progress."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sadtalker_core.errors import CancelledError
from sadtalker_core.io.frames import to_uint8
from sadtalker_core.render.infer import (
    RenderConfig,
    coefficient_windows,
)

ATOL_IMG_MAX, ATOL_IMG_MEAN = 2e-3, 1e-4  # goldens/README: rendered images


@pytest.fixture(scope="module")
def e2e(golden):
    return golden("facerender_e2e")


def _stream(renderer, g, precision="auto", **kwargs):
    return renderer.stream(
        torch.from_numpy(g["source_image"][:1]),
        g["first_coeff"][0, :70],
        g["coeffs"],
        RenderConfig(batch_size=int(g["batch_size"]), precision=precision),
        **kwargs,
    )


# auto on CPU: Winograd convolutions where they pay on this machine; fp32: direct, exact.
@pytest.mark.parametrize("precision", ["auto", "fp32"])
def test_streamed_clip_matches_official_batched_path(renderer, e2e, precision):
    done = []
    batches = list(_stream(renderer, e2e, precision, progress=lambda d, t: done.append((d, t))))
    assert [b.shape[0] for b in batches] == [2, 2, 1]  # 5 frames in batches of 2
    assert done == [(2, 5), (4, 5), (5, 5)]
    frames = torch.cat(batches).cpu().numpy()
    err = np.abs(frames.astype(np.float64) - e2e["frames_float"])
    assert err.max() < ATOL_IMG_MAX and err.mean() < ATOL_IMG_MEAN, (err.max(), err.mean())
    u8 = to_uint8(torch.cat(batches))
    diff = np.abs(u8.astype(int) - e2e["frames_u8"].astype(int))
    # float deviations of ~1e-5 flip a rounding boundary in a fraction of a percent of pixels
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-2


def test_windows_are_edge_padded_like_the_official(e2e):
    seq = torch.from_numpy(e2e["coeffs"])  # (5, 70)
    win = coefficient_windows(seq, torch.arange(5))  # (5, 70, 27)
    target = e2e["target_semantics_list"].reshape(-1, 70, 27)[:5]  # batch rows hold frames 0-2, 3-5
    order = [0, 1, 2, 3, 4]
    np.testing.assert_array_equal(win.numpy(), target[order])


def test_cancel_stops_before_the_next_batch(renderer, e2e):
    calls = []

    def cancel():
        calls.append(1)
        return len(calls) > 1

    gen = _stream(renderer, e2e, should_cancel=cancel)
    assert next(gen).shape[0] == 2
    with pytest.raises(CancelledError, match="after 2 of 5 frames"):
        next(gen)


def test_user_angles_replace_the_predicted_pose(renderer, e2e):
    yaw = np.full(5, 30.0, np.float32)
    turned = torch.cat(list(_stream(renderer, e2e, yaw_deg=yaw))).cpu().numpy()
    assert np.abs(turned - e2e["frames_float"]).mean() > 1e-3
