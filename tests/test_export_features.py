"""extract-features export: the files load with ActionFormer's and OpenTAD's conventions (plain loaders written here
from their dataset code) into the same arrays, and the printed settings put every clip at our clip times."""
import json
import re
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import yaml

from feature_extraction.cli import main
from tal_common.h5 import ClipTiming, FeatureReader, write_file_attrs, write_video


def _timing(duration: float, first_center_s: float, stride: int = 16, fps: float = 30.0) -> ClipTiming:
    return ClipTiming(source_fps=29.97, num_source_frames=int(duration * 29.97), duration_s=duration, sample_fps=fps,
                      clip_len=8, frame_interval=8, stride=stride, first_center_s=first_center_s, stride_s=stride / fps)


def _features(path: Path, timings: dict[str, ClipTiming], lengths: dict[str, int]) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    feats = {vid: rng.normal(size=(lengths[vid], 6)).astype(np.float32) for vid in timings}
    with h5py.File(path, "w") as f:
        write_file_attrs(f, "tada2d_r50", "w.pyth", "abc", "x: 1\n")
        for vid, t in timings.items():
            write_video(f, vid, feats[vid], t)
    return feats


def _actionformer_load(folder: Path, prefix: str, vid: str, ext: str) -> np.ndarray:
    """ActionFormer libs/datasets/anet.py (thumos14.py alike) / epic_kitchens.py: T x C file -> C x T."""
    filename = folder / f"{prefix}{vid}{ext}"
    if ext == ".npz":
        with np.load(filename) as data:
            feats = data["feats"].astype(np.float32)
    else:
        feats = np.load(filename).astype(np.float32)
    return np.ascontiguousarray(feats.transpose())


def _opentad_load(data_path: Path, vid: str, feat_format: str, sample_stride: int) -> np.ndarray:
    """OpenTAD LoadFeats: f"{prefix}{video_name}{suffix}.{feat_format}", then feats[::sample_stride]; T x C."""
    file_path = data_path / f"{vid}.{feat_format}"
    if feat_format == "pt":
        feats = torch.load(file_path).float().numpy()
    elif feat_format == "npz":
        feats = np.load(file_path)["feats"].astype(np.float32)
    else:
        feats = np.load(file_path).astype(np.float32)
    return feats[::sample_stride] if sample_stride > 1 else feats


def _snippets(text: str) -> tuple[dict, dict]:
    lines = text.splitlines()
    af = yaml.safe_load(lines[lines.index("# ActionFormer (dataset section of the YAML config)") + 1])["dataset"]
    ot_line = next(line for line in lines if line.startswith("dict(data_path="))
    ot = {k: yaml.safe_load(v) for k, v in re.findall(r"(\w+)=('[^']*'|[^,)]+)", ot_line.split("), dict(")[0])}
    return af, ot


@pytest.mark.parametrize("fmt", ["npy", "npz", "pt"])
def test_export_round_trips_through_peer_conventions(tmp_path, capsys, fmt):
    timings = {"v_a": _timing(20.0, 8 * 8 / 2 / 30), "b": _timing(9.5, 8 * 8 / 2 / 30)}
    feats = _features(tmp_path / "f.h5", timings, {"v_a": 36, "b": 16})
    out = tmp_path / "export"
    assert main(["export", str(tmp_path / "f.h5"), "--format", fmt, "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    af, ot = _snippets(printed)
    index = json.loads((out / "features.json").read_text())
    assert sorted(p.name for p in out.iterdir()) == sorted([f"v_a.{fmt}", f"b.{fmt}", "features.json"])
    for vid, t in timings.items():
        n = len(feats[vid])
        assert index[vid] == {**t.to_attrs(), "num_clips": n, "feature_dim": 6}
        ours = t.centers(n)
        if fmt != "pt":  # ActionFormer reads .npy / .npz
            assert af["file_ext"] == f".{fmt}" and af["feat_folder"] == str(out) and af["file_prefix"] == ""
            np.testing.assert_array_equal(_actionformer_load(Path(af["feat_folder"]), af["file_prefix"], vid, af["file_ext"]),
                                          feats[vid].T)
            # ActionFormer: time -> grid is t * fps / feat_stride - 0.5 * num_frames / feat_stride
            seconds = (np.arange(n) + 0.5 * af["num_frames"] / af["feat_stride"]) * af["feat_stride"] / af["default_fps"]
            np.testing.assert_allclose(seconds, ours, rtol=0, atol=1e-9)
        else:
            assert "ActionFormer reads .npy / .npz only" in printed
        loaded = _opentad_load(Path(ot["data_path"]), vid, fmt, ot["sample_stride"])
        np.testing.assert_array_equal(loaded, feats[vid])
        # OpenTAD: grid = (frame - offset_frames) / (feature_stride * sample_stride), frame = t * fps
        frames = np.arange(n) * ot["feature_stride"] * ot["sample_stride"] + ot["offset_frames"]
        np.testing.assert_allclose(frames / ot["fps"], ours, rtol=0, atol=1e-9)
    assert (af["default_fps"], af["feat_stride"], af["num_frames"]) == (30, 16, 64)
    assert (ot["fps"], ot["feature_stride"], ot["sample_stride"], ot["offset_frames"]) == (30, 16, 1, 32)


def test_export_of_tadaconv_timing(tmp_path, capsys):
    """TAdaConv's centres (15 + 16 k) / 30: num_frames 30 for ActionFormer, offset_frames 15 for OpenTAD."""
    _features(tmp_path / "f.h5", {"x": _timing(10.0, 15 / 30)}, {"x": 18})
    assert main(["export", str(tmp_path / "f.h5"), "--format", "npy", "-o", str(tmp_path / "out")]) == 0
    af, ot = _snippets(capsys.readouterr().out)
    assert (af["num_frames"], ot["offset_frames"]) == (30, 15)


def test_mixed_timings_point_to_features_json(tmp_path, capsys):
    _features(tmp_path / "f.h5", {"x": _timing(10.0, 15 / 30), "y": _timing(10.0, 15 / 30, stride=8)}, {"x": 18, "y": 30})
    assert main(["export", str(tmp_path / "f.h5"), "--format", "npy", "-o", str(tmp_path / "out")]) == 0
    assert "different timings" in capsys.readouterr().out
    reader = FeatureReader(tmp_path / "f.h5")
    index = json.loads((tmp_path / "out" / "features.json").read_text())
    assert ClipTiming.from_attrs(index["y"]) == reader.read("y")[1]
    reader.close()


def test_export_of_a_missing_file_is_a_clear_error(tmp_path, capsys):
    assert main(["export", str(tmp_path / "none.h5"), "--format", "npy", "-o", str(tmp_path / "out")]) == 2
    assert f"feature file not found: {tmp_path / 'none.h5'}" in capsys.readouterr().err
