"""Weights-only reading of real-world .pth files: numpy scalars and dtypes, OrderedDict, old
(non-zip) pickles are read; any other Python global is refused with a message naming it."""

from __future__ import annotations

import collections
import pickle

import numpy as np
import pytest
import torch

from sadtalker_core.errors import UnsupportedCheckpointError
from sadtalker_core.models.checkpoint import _torch_load


def state_dict() -> collections.OrderedDict:
    return collections.OrderedDict(
        [("conv.weight", torch.arange(6.0).view(2, 3)), ("conv.bias", torch.ones(2))]
    )


def save(obj: object, path, zip_format: bool) -> None:
    torch.save(obj, path, _use_new_zipfile_serialization=zip_format)


@pytest.mark.parametrize("zip_format", [True, False])
def test_numpy_scalars_dtypes_and_ordered_dicts_are_read(tmp_path, zip_format):
    path = tmp_path / "model.pth"
    top = {
        "params_ema": state_dict(),
        "epoch": np.int64(300),
        "best_psnr": np.float64(27.5),
        "flag": np.bool_(True),
        "dtype": np.dtype("float32"),
        "dtype_class": type(np.dtype("float64")),  # numpy.dtypes.Float64DType
        "history": collections.OrderedDict(step=np.float32(0.25)),
    }
    save(top, path, zip_format)
    with pytest.raises(pickle.UnpicklingError):  # what torch alone does with such a file
        torch.load(path, weights_only=True)
    got = _torch_load(path)
    assert got["epoch"] == 300 and got["best_psnr"] == 27.5 and got["flag"]
    assert got["dtype"] == np.float32 and got["dtype_class"] is type(np.dtype("float64"))
    assert got["history"]["step"] == np.float32(0.25)
    torch.testing.assert_close(got["params_ema"]["conv.weight"], torch.arange(6.0).view(2, 3))


def test_old_numpy_module_names_of_numpy_1_files(tmp_path):
    # numpy 1.x wrote scalars as numpy.core.multiarray.scalar; an old (non-zip) torch file keeps
    # the pickle as plain bytes, so the name can be set back to numpy 1's here.
    path = tmp_path / "old.pth"
    save({"model": state_dict(), "epoch": np.int64(20)}, path, zip_format=False)
    raw = path.read_bytes()
    assert b"numpy._core.multiarray" in raw
    path.write_bytes(raw.replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))
    got = _torch_load(path)
    assert got["epoch"] == 20 and set(got["model"]) == {"conv.weight", "conv.bias"}


class Hook:
    """Stands for arbitrary code a pickle could run."""

    def __reduce__(self):
        return (print, ("side effect",))


@pytest.mark.parametrize("zip_format", [True, False])
@pytest.mark.parametrize(
    ("payload", "refused"),
    [
        (Hook(), "builtins.print|print"),
        (np.zeros(3), "numpy._core.multiarray._reconstruct"),  # arrays are not scalars
    ],
)
def test_any_other_global_is_refused_by_name(tmp_path, zip_format, payload, refused, capsys):
    path = tmp_path / "bad.pth"
    save({"state_dict": state_dict(), "epoch": np.int64(1), "extra": payload}, path, zip_format)
    with pytest.raises(UnsupportedCheckpointError) as e:
        _torch_load(path)
    msg = str(e.value)
    assert str(path) in msg and "re-save only its tensors" in msg
    assert any(f"'{r}'" in msg for r in refused.split("|")), msg
    assert "side effect" not in capsys.readouterr().out  # nothing ran


def test_damaged_files_still_fail_as_damaged(tmp_path):
    path = tmp_path / "cut.pth"
    save(state_dict(), path, zip_format=False)
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises((pickle.UnpicklingError, EOFError, RuntimeError)):
        _torch_load(path)
