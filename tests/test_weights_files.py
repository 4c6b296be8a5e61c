"""Damaged, mismatched or other-renderer perception weights: errors name the file and how to restore it;
weights from another renderer warn, naming both."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import gymnasium
import pytest
import torch

import kai_drive  # noqa: F401
from kai_drive.perception import weights as W
from kai_drive.perception.spec import SpecMismatchError
from kai_drive.perception.weights import RendererMismatchWarning, WeightsError, load_encoder, read_manifest

SHIPPED = Path(W.__file__).resolve().parent / "weights"


@pytest.fixture(scope="module")
def space():
    env = gymnasium.make("KaiDrive/LaneKeep-v0")
    try:
        return env.observation_space
    finally:
        env.close()


@pytest.fixture
def shipped_copy(tmp_path, monkeypatch) -> Path:
    """The shipped lane-keep weights in a scratch WEIGHTS_DIR (the real files stay untouched)."""
    folder = tmp_path / "weights"
    folder.mkdir()
    for ext in (".pt", ".json"):
        shutil.copyfile(SHIPPED / f"lane-keep{ext}", folder / f"lane-keep{ext}")
    monkeypatch.setattr(W, "WEIGHTS_DIR", folder)
    return folder


def test_shipped_manifest_records_tinyrenderer_and_loads_silently(space):
    assert read_manifest("lane-keep")["renderer"] == "tiny"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_encoder(space, "lane-keep", renderer="tiny")


def test_truncated_weights_name_the_file_and_the_fix(space, shipped_copy):
    pt = shipped_copy / "lane-keep.pt"
    pt.write_bytes(pt.read_bytes()[:5000])
    with pytest.raises(WeightsError) as exc:
        load_encoder(space, "lane-keep")
    msg = str(exc.value)
    assert str(pt) in msg and "git checkout kai_drive/perception/weights/" in msg and "reinstall" in msg


def test_malformed_manifest_names_the_file_and_the_fix(space, shipped_copy):
    js = shipped_copy / "lane-keep.json"
    js.write_text(js.read_text()[:300])  # cut mid-object
    with pytest.raises(WeightsError) as exc:
        load_encoder(space, "lane-keep")
    msg = str(exc.value)
    assert str(js) in msg and "not valid JSON" in msg and "git checkout kai_drive/perception/weights/" in msg
    js.write_text(json.dumps({"env": "KaiDrive/LaneKeep-v0"}))  # valid JSON, keys gone
    with pytest.raises(WeightsError, match="lacks.*observation_spec"):
        read_manifest("lane-keep")


def test_manifest_that_does_not_describe_the_weights(space, shipped_copy):
    js = shipped_copy / "lane-keep.json"
    manifest = json.loads(js.read_text())
    manifest["encoder_config"]["camera_channels"] = 16  # another architecture than the .pt holds
    js.write_text(json.dumps(manifest))
    with pytest.raises(WeightsError) as exc:
        load_encoder(space, "lane-keep")
    msg = str(exc.value)
    assert str(shipped_copy / "lane-keep.pt") in msg and "lane-keep.json" in msg and "do not belong together" in msg
    assert "git checkout kai_drive/perception/weights/" in msg
    # an edited observation spec: the spec error says which shape differs and how to restore the manifest
    manifest = json.loads((SHIPPED / "lane-keep.json").read_text())
    manifest["observation_spec"]["lidar"]["shape"] = [32]
    js.write_text(json.dumps(manifest))
    with pytest.raises(SpecMismatchError) as exc:
        load_encoder(space, "lane-keep")
    msg = str(exc.value)
    assert "lidar" in msg and str(js) in msg and "git checkout kai_drive/perception/weights/" in msg


def test_user_weights_errors_point_to_pretraining(space, tmp_path):
    pt = tmp_path / "encoder.pt"
    shutil.copyfile(SHIPPED / "lane-keep.pt", pt)
    shutil.copyfile(SHIPPED / "lane-keep.json", tmp_path / "encoder.json")
    pt.write_bytes(b"not a torch file")
    with pytest.raises(WeightsError) as exc:
        load_encoder(space, tmp_path)
    assert str(pt) in str(exc.value) and "python -m kai_drive.pretrain" in str(exc.value)


def test_weights_from_another_renderer_warn_naming_both(space, tmp_path):
    shutil.copyfile(SHIPPED / "lane-keep.pt", tmp_path / "encoder.pt")
    manifest = json.loads((SHIPPED / "lane-keep.json").read_text())
    manifest["renderer"] = "egl"
    (tmp_path / "encoder.json").write_text(json.dumps(manifest))
    with pytest.warns(RendererMismatchWarning) as rec:
        load_encoder(space, tmp_path, renderer="tiny")
    msg = str(rec[0].message)
    assert "'egl'" in msg and "'tiny'" in msg and str(tmp_path / "encoder.pt") in msg and "world.renderer=egl" in msg
    with pytest.warns(RendererMismatchWarning):
        assert W.check_weights_renderer(tmp_path, "tiny") is True
    # a manifest from before the key means TinyRenderer
    del manifest["renderer"]
    (tmp_path / "encoder.json").write_text(json.dumps(manifest))
    assert W.manifest_renderer(read_manifest(tmp_path)) == "tiny"
    with pytest.warns(RendererMismatchWarning, match="'tiny'.*'egl'"):
        W.check_weights_renderer(tmp_path, "egl")


def test_save_weights_is_atomic_and_records_the_renderer(space, tmp_path):
    encoder = load_encoder(space, "lane-keep")
    path = W.save_weights(encoder, tmp_path / "out" / "encoder.pt", {"env": "KaiDrive/LaneKeep-v0", "renderer": "egl"})
    assert sorted(p.name for p in path.parent.iterdir()) == ["encoder.json", "encoder.pt"]  # no temporaries left
    assert read_manifest(path)["renderer"] == "egl"
    state = torch.load(path, weights_only=True)
    for k, v in encoder.state_dict().items():
        torch.testing.assert_close(state[k], v)
    # a failing write leaves the previous file intact
    before = path.read_bytes()

    def boom(tmp):
        tmp.write_bytes(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError):
        W.atomic_write(path, boom)
    assert path.read_bytes() == before and sorted(p.name for p in path.parent.iterdir()) == ["encoder.json", "encoder.pt"]


def test_pretraining_data_files_are_atomic_and_damage_is_named(tmp_path):
    import numpy as np

    from kai_drive.perception.pretrain_data import PretrainError, loadz as _loadz, savez as _savez

    data = {"episode": np.arange(5), "camera": np.zeros((5, 4, 4, 3), np.uint8), "renderer": np.asarray("tiny")}
    _savez(tmp_path / "data.npz", data)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.npz"]  # the exact name, no temporaries
    back = _loadz(tmp_path / "data.npz")
    assert str(back["renderer"]) == "tiny" and np.array_equal(back["episode"], data["episode"])
    raw = (tmp_path / "data.npz").read_bytes()
    (tmp_path / "data.npz").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(PretrainError) as exc:
        _loadz(tmp_path / "data.npz")
    assert str(tmp_path / "data.npz") in str(exc.value) and "delete it" in str(exc.value)
