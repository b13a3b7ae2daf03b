"""Checkpoint layer: safe reading, strict loading of every official file, cache, check-weights CLI."""

from __future__ import annotations

import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from sadtalker_core import models as registry
from sadtalker_core.cli.main import main as cli_main
from sadtalker_core.errors import ModelNotFoundError, UnsupportedCheckpointError
from sadtalker_core.models import checkpoint as weights

REPO = Path(__file__).resolve().parents[1]

# (file, network) for every network section of every official file in the registry.
SECTIONS = [(f.name, net) for f in registry.FILES.values() for net in f.sections]


@pytest.fixture(autouse=True)
def _fresh_cache():
    registry.clear_cache()
    yield
    registry.clear_cache()


def _link(src: Path, dst_dir: Path, name: str | None = None) -> Path:
    dst = dst_dir / (name or src.name)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)
    return dst


def test_registry_knows_every_official_file():
    names = set(registry.FILES)
    for expected in (
        "SadTalker_V0.0.2_256.safetensors",
        "SadTalker_V0.0.2_512.safetensors",
        "mapping_00109-model.pth.tar",
        "mapping_00229-model.pth.tar",
        "epoch_20.pth",
        "auido2exp_00300-model.pth",
        "auido2pose_00140-model.pth",
        "facevid2vid_00189-model.pth.tar",
        "GFPGANv1.4.pth",
    ):
        assert expected in names
    for f in registry.FILES.values():
        assert f.url.startswith("https://") and f.url.endswith(f.name)
        assert f.size_mb > 0 and f.role


@pytest.mark.parametrize(("name", "network"), SECTIONS, ids=[f"{n}:{k}" for n, k in SECTIONS])
def test_every_official_network_loads_strictly(weights_dir, name, network):
    loaded = registry.network_ref(network, weights_dir / name).loaded()
    expected = registry.open_checkpoint(weights_dir / name).state_dict(
        registry.FILES[name].sections[network]
    )
    got = loaded.module.state_dict()
    assert set(got) == set(expected)
    for k, v in expected.items():
        assert torch.equal(got[k], v.reshape(got[k].shape)), k
    assert not loaded.module.training
    assert all(not p.requires_grad for p in loaded.module.parameters())
    assert loaded.size == registry.FILES[name].size


@pytest.mark.parametrize(
    ("network", "legacy"),
    [
        ("face_3drecon", "epoch_20.pth"),
        ("audio2exp", "auido2exp_00300-model.pth"),
        ("audio2pose", "auido2pose_00140-model.pth"),
        ("kp_extractor", "facevid2vid_00189-model.pth.tar"),
        ("generator", "facevid2vid_00189-model.pth.tar"),
    ],
)
def test_old_split_files_hold_the_same_networks(weights_dir, network, legacy):
    new = (
        registry.network_ref(network, weights_dir / "SadTalker_V0.0.2_256.safetensors")
        .loaded()
        .module
    )
    old = registry.network_ref(network, weights_dir / legacy).loaded().module
    a, b = new.state_dict(), old.state_dict()
    # Same architecture; the stand-in values differ because make_weights seeds by the full key.
    assert a.keys() == b.keys()
    assert all(a[k].shape == b[k].shape and a[k].dtype == b[k].dtype for k in a)


def test_mapping_variants_have_their_input_width(weights_dir):
    m229 = (
        registry.network_ref("mapping", weights_dir / "mapping_00229-model.pth.tar").loaded().module
    )
    m109 = (
        registry.network_ref("mapping", weights_dir / "mapping_00109-model.pth.tar").loaded().module
    )
    assert m229.state_dict()["first.0.weight"].shape[1] == 70
    assert m109.state_dict()["first.0.weight"].shape[1] == 73
    assert registry.mapping_file_for("full") == "mapping_00109-model.pth.tar"
    assert registry.mapping_file_for("extfull") == "mapping_00109-model.pth.tar"
    assert registry.mapping_file_for("crop") == "mapping_00229-model.pth.tar"


def test_combined_file_is_opened_once_and_modules_are_cached(weights_dir, monkeypatch):
    opened = []
    real_init = weights.Checkpoint.__init__

    def counting_init(self, path, fix_hint=""):
        opened.append(Path(path).name)
        real_init(self, path, fix_hint)

    monkeypatch.setattr(weights.Checkpoint, "__init__", counting_init)
    path = weights_dir / "SadTalker_V0.0.2_256.safetensors"
    first = registry.network_ref("audio2exp", path).loaded()
    registry.network_ref("audio2pose", path).loaded()
    registry.network_ref("kp_extractor", path).loaded()
    assert registry.network_ref("audio2exp", path).loaded() is first
    assert opened == ["SadTalker_V0.0.2_256.safetensors"]


def test_other_dtype_is_a_separate_cache_entry(weights_dir):
    path = weights_dir / "mapping_00229-model.pth.tar"
    f32 = registry.network_ref("mapping", path).loaded()
    f16 = registry.network_ref("mapping", path, dtype=torch.float16).loaded()
    assert f32 is not f16
    assert next(f16.module.parameters()).dtype == torch.float16
    assert registry.network_ref("mapping", path, dtype=torch.float16).loaded() is f16


def test_real_pth_tar_with_optimizer_and_discriminator_entries_loads(weights_dir, tmp_path):
    data = torch.load(weights_dir / "mapping_00229-model.pth.tar", weights_only=True)
    data["discriminator"] = {"block.weight": torch.ones(3, 3)}
    data["optimizer_mapping"] = {
        "state": {0: {"exp_avg": torch.zeros(2)}},
        "param_groups": [{"lr": 2e-4}],
    }
    torch.save(data, tmp_path / "mapping_00229-model.pth.tar")
    loaded = registry.network_ref("mapping", tmp_path / "mapping_00229-model.pth.tar").loaded()
    assert set(loaded.module.state_dict()) == set(data["mapping"])


@pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning")
def test_pickle_that_would_run_code_is_refused(tmp_path):
    class Exploit:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    path = tmp_path / "mapping_00229-model.pth.tar"
    with open(path, "wb") as f:
        pickle.dump({"mapping": Exploit(), "epoch": 1}, f)
    with pytest.raises(UnsupportedCheckpointError, match="mapping_00229-model.pth.tar"):
        registry.network_ref("mapping", path).loaded()


def test_canonicalize_unwraps_and_strips_module_prefix():
    sd = {"params_ema": {"module.conv.weight": torch.zeros(1)}, "step": 3}
    assert list(weights.canonicalize(sd)) == ["conv.weight"]


def test_truncated_safetensors_names_file_and_fix(weights_dir, tmp_path):
    src = weights_dir / "SadTalker_V0.0.2_256.safetensors"
    dst = tmp_path / src.name
    with open(src, "rb") as f, open(dst, "wb") as g:
        g.write(f.read(20_000_000))
    with pytest.raises(
        UnsupportedCheckpointError,
        match=r"(?s)SadTalker_V0.0.2_256.safetensors.*truncated.*Download",
    ):
        registry.network_ref("generator", dst).loaded()


def test_truncated_pth_tar_names_file(weights_dir, tmp_path):
    src = weights_dir / "mapping_00109-model.pth.tar"
    dst = tmp_path / src.name
    dst.write_bytes(src.read_bytes()[: src.stat().st_size // 2])
    with pytest.raises(UnsupportedCheckpointError, match=r"mapping_00109-model.pth.tar.*truncated"):
        registry.network_ref("mapping", dst).loaded()


def test_wrong_mapping_variant_is_reported_with_shapes(weights_dir, tmp_path):
    wrong = _link(
        weights_dir / "mapping_00229-model.pth.tar", tmp_path, "mapping_00109-model.pth.tar"
    )
    with pytest.raises(
        UnsupportedCheckpointError,
        match=r"first.0.weight \[1024, 70, 7\] \(expected \[1024, 73, 7\]\)",
    ):
        registry.network_ref("mapping", wrong).loaded()


def test_file_without_the_expected_section_is_reported(weights_dir, tmp_path):
    wrong = _link(weights_dir / "epoch_20.pth", tmp_path, "auido2exp_00300-model.pth")
    with pytest.raises(
        UnsupportedCheckpointError, match=r"has no 'model' entry \(it has: net_recon\)"
    ):
        registry.network_ref("audio2exp", wrong).loaded()


def test_missing_file_error_lists_folders_and_download(tmp_path):
    with pytest.raises(
        ModelNotFoundError, match=r"(?s)mapping_00229-model.pth.tar.*Searched.*Download"
    ):
        registry.require_file("mapping_00229-model.pth.tar", [tmp_path])


def test_discovery_order(tmp_path, monkeypatch):
    a, b = tmp_path / "a", tmp_path / "b"
    monkeypatch.setenv(registry.ENV_CHECKPOINTS, f"{a}{os.pathsep}{b}")
    dirs = registry.default_checkpoint_dirs(tmp_path / "explicit")
    assert dirs[:3] == [tmp_path / "explicit", a, b]
    (b / "gfpgan" / "weights").mkdir(parents=True)
    (b / "gfpgan" / "weights" / "GFPGANv1.4.pth").write_bytes(b"x")
    a.mkdir()
    (a / "GFPGANv1.4.pth").write_bytes(b"y")
    assert registry.find_file("GFPGANv1.4.pth", dirs) == a / "GFPGANv1.4.pth"


def test_host_model_folders_are_searched(tmp_path, monkeypatch):
    """The library knows no host layout; a command run from a pack inside a host searches the
    host's model folder (after --checkpoint_dir and the variable, before the pack's own)."""
    from argparse import Namespace

    from sadtalker_core.cli import common

    monkeypatch.delenv(registry.ENV_CHECKPOINTS, raising=False)
    monkeypatch.delenv(registry.ENV_DEFAULT_CHECKPOINTS)  # the user's defaults (conftest.py)
    assert all(p.name == "checkpoints" for p in registry.default_checkpoint_dirs())
    for host, models in (("custom_nodes", "sadtalker"), ("extensions", "SadTalker")):
        pack = tmp_path / host / "ComfyUI-SadTalker"
        assert common.host_model_dirs(pack) == [tmp_path / "models" / models]
        monkeypatch.setattr(common, "PACK", pack)
        dirs = common.checkpoint_dirs(Namespace(checkpoint_dir=str(tmp_path / "mine")))
        assert dirs[:2] == [tmp_path / "mine", tmp_path / "models" / models]
        assert dirs[-1] == registry.default_checkpoint_dirs()[-1]


def _weights_folder(weights_dir: Path, dst: Path, names) -> Path:
    dst.mkdir()
    for n in names:
        _link(weights_dir / n, dst)
    return dst


def test_check_weights_reports_found_truncated_and_wrong_architecture(
    weights_dir, tmp_path, capsys
):
    folder = _weights_folder(
        weights_dir,
        tmp_path / "ckpt",
        ["SadTalker_V0.0.2_256.safetensors", "mapping_00229-model.pth.tar"],
    )
    # A truncated download and a file of the wrong architecture under an official name.
    src = weights_dir / "SadTalker_V0.0.2_512.safetensors"
    with open(src, "rb") as f:
        (folder / src.name).write_bytes(f.read(1_000_000))
    _link(weights_dir / "mapping_00229-model.pth.tar", folder, "mapping_00109-model.pth.tar")
    save_file({"conv1.weight": torch.zeros(4, 3, 3, 3)}, str(folder / "not_a_model.safetensors"))
    os.replace(folder / "not_a_model.safetensors", folder / "epoch_20.pth")

    rc = cli_main(["check-weights", str(folder)])
    out = capsys.readouterr().out
    assert rc == 1
    lines = {ln.split()[0]: ln for ln in out.splitlines() if ln and not ln.startswith(" ")}
    assert "found" in lines["SadTalker_V0.0.2_256.safetensors"]
    assert "found" in lines["mapping_00229-model.pth.tar"]
    assert "invalid" in lines["SadTalker_V0.0.2_512.safetensors"]
    assert "invalid" in lines["mapping_00109-model.pth.tar"]
    assert "invalid" in lines["epoch_20.pth"]
    assert "missing" in lines["GFPGANv1.4.pth"]
    assert "truncated" in out
    assert "first.0.weight [1024, 70, 7] (expected [1024, 73, 7])" in out
    assert "Ready to render at: 256 px" in out


def test_check_weights_all_good_exit_zero(weights_dir, tmp_path, capsys):
    folder = _weights_folder(weights_dir, tmp_path / "ckpt", list(registry.FILES)[:4])
    assert cli_main(["check-weights", str(folder)]) == 0
    out = capsys.readouterr().out
    assert "Ready to render at: 256 px, 512 px" in out
    assert "invalid" not in out


def test_check_weights_empty_folder_exit_two_with_download_hint(tmp_path, monkeypatch):
    monkeypatch.delenv(registry.ENV_CHECKPOINTS, raising=False)
    proc = subprocess.run(
        [sys.executable, "-m", "sadtalker_core", "check-weights", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert "Not ready" in proc.stdout
    assert "SadTalker_V0.0.2_256.safetensors" in proc.stdout and str(tmp_path) in proc.stdout


def test_check_weights_accepts_the_old_split_set(weights_dir, tmp_path, capsys):
    folder = _weights_folder(
        weights_dir, tmp_path / "old", [*registry.LEGACY_SET, "mapping_00229-model.pth.tar"]
    )
    assert cli_main(["check-weights", str(folder)]) == 0
    assert "Ready to render at: 256 px" in capsys.readouterr().out


def test_detector_files_are_recognised_through_their_wrappers(tmp_path):
    # facexlib's files: RetinaFace saved from DataParallel ('module.'), AWing under 'state_dict'.
    torch.save(
        {"module.body.conv1.weight": torch.zeros(2)}, tmp_path / "detection_Resnet50_Final.pth"
    )
    torch.save(
        {"state_dict": {"conv1.conv.weight": torch.zeros(2), "l3.weight": torch.zeros(1)}},
        tmp_path / "alignment_WFLW_4HG.pth",
    )
    torch.save({"params_ema": {"conv1.weight": torch.zeros(1)}}, tmp_path / "GFPGANv1.4.pth")
    status = {r.spec.name: (r.status, r.reason) for r in registry.check_weights([tmp_path])}
    assert status["detection_Resnet50_Final.pth"] == ("found", "")
    assert status["alignment_WFLW_4HG.pth"] == ("found", "")
    assert status["GFPGANv1.4.pth"][0] == "invalid"
    assert "missing toRGB.0.weight" in status["GFPGANv1.4.pth"][1]


def test_a_host_replacing_torch_load_does_not_affect_loading(weights_dir, monkeypatch):
    """A1111 swaps ``torch.load`` for its pickle checker, which returns None for files it does
    not like; our weights-only reads go to torch's own loader."""
    refused = []
    monkeypatch.setattr(torch, "load", lambda path, *a, **k: refused.append(path))
    registry.clear_cache()
    loaded = registry.network_ref("mapping", weights_dir / "mapping_00229-model.pth.tar").loaded()
    assert refused == [] and loaded.module.cfg.coeff_nc == 70
