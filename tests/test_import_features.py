"""extract-features import: each format from small files written here in that format, against fixtures from the
reference loaders (mmaction2 CSV, TAdaConv EK100 chunks), and bad input (NaN, ragged, gaps, malicious pickles)."""
import json
import pickle
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from feature_extraction.cli import main
from feature_extraction.import_features import ImportInputError, load_array_file
from tal_common.h5 import FeatureReader

DATA = Path(__file__).parent / "data" / "features"


def _hacs_json(path: Path, durations: dict[str, float]) -> Path:
    database = {vid: {"subset": "validation", "duration": d, "annotations": []} for vid, d in durations.items()}
    path.write_text(json.dumps({"version": "test", "database": database}))
    return path


def _video_info(path: Path, rows: dict[str, tuple[float, float]]) -> Path:
    path.write_text("video_id,duration,fps,resolution\n" + "".join(f"{v},{d},{f},456x256\n" for v, (d, f) in rows.items()))
    return path


def _read(path: Path) -> dict:
    reader = FeatureReader(path)
    out = {vid: reader.read(vid) for vid in reader.video_ids()}
    out["_attrs"] = reader.file_attrs()
    reader.close()
    return out


def _arrays(rng, shapes):
    return [rng.normal(size=s).astype(np.float32) for s in shapes]


@pytest.mark.parametrize("fmt", ["npy", "pt", "pkl"])
def test_per_video_files_with_command_line_timing(tmp_path, fmt):
    rng = np.random.default_rng(0)
    src = tmp_path / "src"
    src.mkdir()
    feats = dict(zip(["a", "v_b"], _arrays(rng, [(7, 5), (12, 5)])))
    for vid, arr in feats.items():
        path = src / f"{vid}.{fmt}"
        if fmt == "npy":
            np.save(path, arr)
        elif fmt == "pt":
            torch.save({"feats": torch.from_numpy(arr)}, path)  # a mapping with one tensor is accepted
        else:
            path.write_bytes(pickle.dumps(arr, protocol=4))
    ann = _hacs_json(tmp_path / "gt.json", {"a": 4.1, "b": 6.6})  # 'v_b' matches 'b'
    out = tmp_path / "f.h5"
    assert main(["import", str(src), "-o", str(out), "--format", fmt, "--annotations", str(ann),
                 "--fps", "30", "--clip-len", "8", "--frame-interval", "2", "--stride", "15"]) == 0
    got = _read(out)
    for vid, arr in feats.items():
        np.testing.assert_array_equal(got[vid][0], arr)
        t = got[vid][1]
        duration = {"a": 4.1, "v_b": 6.6}[vid]
        assert (t.sample_fps, t.clip_len, t.frame_interval, t.stride, t.crops) == (30.0, 8, 2, 15, 1)
        assert t.stride_s == 15 / 30 and t.first_center_s == 8 * 2 / 2 / 30  # half a 16-frame window
        assert (t.duration_s, t.source_fps, t.num_source_frames) == (duration, 30.0, round(duration * 30))
    assert got["_attrs"]["weights"] == f"imported from {src} ({fmt})"
    assert f"format: {fmt}" in got["_attrs"]["config"]


def test_channels_first_and_video_info_fps(tmp_path):
    arr = np.arange(12, dtype=np.float32).reshape(3, 4)  # (C, T)
    src = tmp_path / "src"
    src.mkdir()
    np.save(src / "P01_01.npy", arr)
    info = _video_info(tmp_path / "info.csv", {"P01_01": (2.5, 59.94)})
    out = tmp_path / "f.h5"
    assert main(["import", str(src), "-o", str(out), "--format", "npy", "--video-info", str(info), "--channels-first",
                 "--fps", "60", "--clip-len", "8", "--frame-interval", "8", "--stride", "8", "--crops", "3"]) == 0
    feats, t = _read(out)["P01_01"]
    np.testing.assert_array_equal(feats, arr.T)
    assert (t.source_fps, t.num_source_frames, t.crops, t.first_center_s) == (59.94, round(2.5 * 59.94), 3, 32 / 60)


def test_tsp_flat_h5(tmp_path, capsys):
    rng = np.random.default_rng(1)
    src = tmp_path / "tsp.h5"
    feats = dict(zip(["v1", "v2"], _arrays(rng, [(4, 3), (9, 3)])))
    with h5py.File(src, "w") as f:
        for vid, arr in feats.items():
            f.create_dataset(vid, data=arr)  # no attributes, as TSP writes them
    out = tmp_path / "f.h5"
    ann = _hacs_json(tmp_path / "gt.json", {"v1": 3.0, "v2": 5.0})
    assert main(["import", str(src), "-o", str(out), "--format", "tsp-h5", "--annotations", str(ann),
                 "--fps", "15", "--clip-len", "16", "--frame-interval", "1", "--stride", "8"]) == 0
    got = _read(out)
    for vid, arr in feats.items():
        np.testing.assert_array_equal(got[vid][0], arr)
        assert got[vid][1].stride_s == 8 / 15 and got[vid][1].first_center_s == 8 / 15
    with h5py.File(src, "a") as f:
        f["v2"][3, 1] = np.inf
    assert main(["import", str(src), "-o", str(out), "--format", "tsp-h5", "--annotations", str(ann),
                 "--fps", "15", "--clip-len", "16", "--frame-interval", "1", "--stride", "8"]) == 2
    assert f"{src}: video 'v2': features contain NaN or inf" in capsys.readouterr().err


def test_mmaction_csv_matches_mmaction2_loader(tmp_path):
    """mmaction2's own test CSVs: our (T, C) is the transpose of what its loader returns; timing from feature_frame."""
    src = DATA / "mmaction2"
    out = tmp_path / "f.h5"
    ann = json.loads((src / "anet_anno_test.json").read_text())
    assert main(["import", str(src / "v_test1.csv"), str(src / "v_test2.csv"), "-o", str(out), "--format", "mmaction-csv",
                 "--annotations", str(src / "anet_anno_test.json")]) == 0
    got = _read(out)
    for vid in ("v_test1", "v_test2"):
        reference = np.load(src / f"{vid}_mmaction2_raw_feature.npy")  # (C, T)
        feats, t = got[vid]
        np.testing.assert_array_equal(feats, reference.T)
        e = ann[vid]
        span = e["feature_frame"] / e["duration_frame"] * e["duration_second"]  # mmaction2's corrected_second
        np.testing.assert_allclose(t.centers(len(feats)), np.arange(5) / 5 * span)  # position i at i / T of the span
        assert (t.duration_s, t.source_fps) == (e["duration_second"], e["duration_frame"] / e["duration_second"])


def test_mmaction_csv_refuses_timing_options_and_ragged_rows(tmp_path, capsys):
    src = tmp_path / "src"
    src.mkdir()
    (src / "v_x.csv").write_text("f0,f1,f2\n1,2,3\n4,5\n")
    ann = DATA / "mmaction2" / "anet_anno_test.json"
    assert main(["import", str(src), "-o", str(tmp_path / "f.h5"), "--format", "mmaction-csv", "--annotations", str(ann),
                 "--fps", "30"]) == 2
    assert "timing comes from each video's duration" in capsys.readouterr().err
    assert main(["import", str(src), "-o", str(tmp_path / "f.h5"), "--format", "mmaction-csv", "--annotations", str(ann)]) == 2
    err = capsys.readouterr().err
    assert str(src / "v_x.csv") in err and "rows of equal length" in err
    assert not (tmp_path / "f.h5").exists()


def test_tadaconv_hacs_pkl(tmp_path):
    rng = np.random.default_rng(2)
    src = tmp_path / "features_s16_fps30_val"
    src.mkdir()
    arr = rng.normal(size=(20, 6)).astype(np.float32)
    torch.save(torch.from_numpy(arr), src / "v_abc.pkl")
    out = tmp_path / "f.h5"
    assert main(["import", str(src), "-o", str(out), "--format", "tadaconv-hacs",
                 "--annotations", str(_hacs_json(tmp_path / "gt.json", {"abc": 11.0}))]) == 0
    got = _read(out)
    feats, t = got["v_abc"]
    np.testing.assert_array_equal(feats, arr)
    # TAdaConv's clip k at (clip_interval - 1 + k * clip_interval) / fps, clip interval 16 at 30 fps
    np.testing.assert_allclose(t.centers(20), (15 + 16 * np.arange(20)) / 30)
    assert (t.sample_fps, t.clip_len, t.frame_interval, t.stride) == (30.0, 8, 8, 16)
    assert got["_attrs"]["backbone"] == "tada2d_r50 (imported)"


def _ek_import(tmp_path, chunk_dir, duration=61.7):
    info = _video_info(tmp_path / "info.csv", {"P01_99": (duration, 59.94)})
    out = tmp_path / "ek.h5"
    rc = main(["import", str(chunk_dir), "-o", str(out), "--format", "tadaconv-ek100", "--video-info", str(info)])
    return rc, out


def test_tadaconv_ek100_chunks_match_tadaconv_windows(tmp_path):
    """Every sliding window TAdaConv's loader builds from the chunks equals the clips we place in that window."""
    rc, out = _ek_import(tmp_path, DATA / "tadaconv_ek100" / "chunks")
    assert rc == 0
    feats, t = _read(out)["P01_99"]
    np.testing.assert_array_equal(feats[:, 0], np.arange(len(feats)))  # time order, the extra last row dropped
    assert (t.sample_fps, t.stride, t.crops, t.duration_s) == (60.0, 8, 3, 61.7)
    ref = np.load(DATA / "tadaconv_ek100" / "tadaconv_windows.npz")
    centers = t.centers(len(feats))
    for w in range(3):
        seg = ref[f"window{w}_seg"]
        inside = (centers >= seg[0]) & (centers <= seg[1])
        expected = np.zeros((400, feats.shape[1]), np.float32)
        expected[: inside.sum()] = feats[inside]
        assert int(ref[f"window{w}_feature_len"]) == inside.sum()
        np.testing.assert_array_equal(ref[f"window{w}_feature"].T, expected)


def _chunk_copy(tmp_path) -> Path:
    dst = tmp_path / "chunks"
    shutil.copytree(DATA / "tadaconv_ek100" / "chunks", dst)
    return dst


def test_ek100_missing_chunk(tmp_path, capsys):
    chunks = _chunk_copy(tmp_path)
    (chunks / "P01_99_0025000_0030000.pkl").unlink()
    assert _ek_import(tmp_path, chunks)[0] == 2
    err = capsys.readouterr().err
    assert "missing chunk between P01_99_0020000_0025000.pkl and P01_99_0030000_0035000.pkl" in err
    assert "[25, 30] s" in err


def test_ek100_missing_first_and_last_chunks(tmp_path, capsys):
    chunks = _chunk_copy(tmp_path)
    (chunks / "P01_99_0000000_0005000.pkl").rename(tmp_path / "first.pkl")
    assert _ek_import(tmp_path, chunks)[0] == 2
    assert "missing chunk before P01_99_0005000_0010000.pkl" in capsys.readouterr().err
    (tmp_path / "first.pkl").rename(chunks / "P01_99_0000000_0005000.pkl")
    assert _ek_import(tmp_path, chunks, duration=70.0)[0] == 2
    assert "chunks end at 61.7 s (P01_99_0060000_0061700.pkl) but the video lasts 70 s" in capsys.readouterr().err


def test_ek100_overlap_and_wrong_row_count(tmp_path, capsys):
    chunks = _chunk_copy(tmp_path)
    block = load_array_file(chunks / "P01_99_0005000_0010000.pkl")
    torch.save(block, chunks / "P01_99_0004000_0010000.pkl")
    (chunks / "P01_99_0005000_0010000.pkl").unlink()
    assert _ek_import(tmp_path, chunks)[0] == 2
    assert "chunks overlap: P01_99_0000000_0005000.pkl ends at 5 s, P01_99_0004000_0010000.pkl starts at 4 s" in capsys.readouterr().err
    (chunks / "P01_99_0004000_0010000.pkl").rename(chunks / "P01_99_0005000_0010000.pkl")
    torch.save(block[:-1], chunks / "P01_99_0005000_0010000.pkl")
    assert _ek_import(tmp_path, chunks)[0] == 2
    err = capsys.readouterr().err
    assert "P01_99_0005000_0010000.pkl: 37 rows, but 38 clips are centred in [5, 10] s" in err


def test_nan_and_ragged_dims_name_the_file(tmp_path, capsys):
    src = tmp_path / "src"
    src.mkdir()
    np.save(src / "a.npy", np.ones((3, 4), np.float32))
    bad = np.ones((3, 4), np.float32)
    bad[1, 2] = np.nan
    np.save(src / "b.npy", bad)
    ann = _hacs_json(tmp_path / "gt.json", {"a": 3.0, "b": 3.0})
    args = ["import", str(src), "-o", str(tmp_path / "f.h5"), "--format", "npy", "--annotations", str(ann),
            "--fps", "30", "--clip-len", "8", "--frame-interval", "1", "--stride", "8"]
    assert main(args) == 2
    assert f"{src / 'b.npy'}: features contain NaN or inf" in capsys.readouterr().err
    np.save(src / "b.npy", np.ones((3, 5), np.float32))
    assert main(args) == 2
    assert "video 'b': 5 channels, but video 'a' has 4 (ragged feature dims)" in capsys.readouterr().err
    np.save(src / "b.npy", np.ones((2, 3, 4), np.float32))
    assert main(args) == 2
    assert f"{src / 'b.npy'}: expected a 2-D (T, C) array, got shape (2, 3, 4)" in capsys.readouterr().err
    assert not (tmp_path / "f.h5").exists() and not list(tmp_path.glob(".f.h5.tmp*"))


def test_failed_import_keeps_previous_output(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    np.save(src / "a.npy", np.ones((3, 4), np.float32))
    ann = _hacs_json(tmp_path / "gt.json", {"a": 3.0})
    out = tmp_path / "f.h5"
    args = ["import", str(src), "-o", str(out), "--format", "npy", "--annotations", str(ann),
            "--fps", "30", "--clip-len", "8", "--frame-interval", "1", "--stride", "8"]
    assert main(args) == 0
    before = out.read_bytes()
    np.save(src / "z.npy", np.ones((3, 4), np.float32))  # no duration for 'z'
    assert main(args) == 2
    assert out.read_bytes() == before and not list(tmp_path.glob(".f.h5.tmp*"))


def test_missing_timing_and_durations_are_usage_errors(tmp_path, capsys):
    src = tmp_path / "src"
    src.mkdir()
    np.save(src / "a.npy", np.ones((3, 4), np.float32))
    assert main(["import", str(src), "-o", str(tmp_path / "f.h5"), "--format", "npy", "--fps", "30"]) == 2
    assert "give the clip timing with --preset or --clip-len --frame-interval --stride" in capsys.readouterr().err
    assert main(["import", str(src), "-o", str(tmp_path / "f.h5"), "--format", "npy", "--preset", "tadaconv-hacs"]) == 2
    assert "durations are needed" in capsys.readouterr().err
    ann = _hacs_json(tmp_path / "gt.json", {"other": 3.0})
    assert main(["import", str(src), "-o", str(tmp_path / "f.h5"), "--format", "npy", "--preset", "tadaconv-hacs",
                 "--annotations", str(ann)]) == 2
    assert f"{src / 'a.npy'}: video 'a' has no duration in {ann}" in capsys.readouterr().err


class _Payload:
    """Unpickling this would create ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",))


@pytest.mark.parametrize("fmt, save", [
    ("pkl", lambda obj, path: path.write_bytes(pickle.dumps(obj))),
    ("tadaconv-hacs", lambda obj, path: torch.save(obj, path)),
    ("pt", lambda obj, path: torch.save({"feats": obj}, path)),
    ("tadaconv-ek100", lambda obj, path: torch.save(obj, path, _use_new_zipfile_serialization=False)),
])
def test_malicious_pickle_is_refused_without_running(tmp_path, capsys, fmt, save):
    marker = tmp_path / "pwned.txt"
    src = tmp_path / "src"
    src.mkdir()
    name = "P01_99_0000000_0005000" if fmt == "tadaconv-ek100" else "v_abc"
    path = src / f"{name}.{'pt' if fmt == 'pt' else 'pkl'}"
    save(_Payload(marker), path)
    info = _video_info(tmp_path / "info.csv", {"P01_99": (5.0, 60.0), "v_abc": (5.0, 30.0)})
    args = ["import", str(src), "-o", str(tmp_path / "f.h5"), "--format", fmt, "--video-info", str(info)]
    if fmt in ("pkl", "pt"):
        args += ["--preset", "tadaconv-hacs"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "refused or unreadable" in err
    assert not marker.exists()
    assert not (tmp_path / "f.h5").exists()


def test_plain_pickle_of_an_array_still_loads(tmp_path):
    """The restricted unpickler accepts numpy arrays in every protocol (and numpy-1 module names)."""
    arr = np.arange(6, dtype=np.float16).reshape(2, 3)
    for protocol in (2, 4, 5):
        path = tmp_path / f"p{protocol}.pkl"
        path.write_bytes(pickle.dumps(arr, protocol=protocol))
        np.testing.assert_array_equal(load_array_file(path), arr.astype(np.float32))
    old = tmp_path / "numpy1.pkl"
    old.write_bytes(pickle.dumps(arr, protocol=2).replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))
    np.testing.assert_array_equal(load_array_file(old), arr.astype(np.float32))
    with pytest.raises(ImportInputError, match="expected a tensor or a numeric array, got list"):
        (tmp_path / "list.pkl").write_bytes(pickle.dumps([1, 2]))
        load_array_file(tmp_path / "list.pkl")


def test_preset_fixes_the_timing(tmp_path, capsys):
    src = tmp_path / "src"
    src.mkdir()
    np.save(src / "a.npy", np.ones((3, 4), np.float32))
    ann = _hacs_json(tmp_path / "gt.json", {"a": 3.0})
    assert main(["import", str(src), "-o", str(tmp_path / "f.h5"), "--format", "npy", "--preset", "tadaconv-ek100",
                 "--stride", "4", "--annotations", str(ann)]) == 2
    assert "preset 'tadaconv-ek100' fixes the clip timing; drop --stride" in capsys.readouterr().err
    assert main(["import", str(src), "-o", str(tmp_path / "f.h5"), "--format", "npy", "--preset", "tadaconv-ek100",
                 "--crops", "1", "--annotations", str(ann)]) == 0
    _, t = _read(tmp_path / "f.h5")["a"]
    assert (t.crops, t.first_center_s, t.stride_s) == (1, 7 / 60, 8 / 60)


def test_mmaction_csv_span_is_the_feature_frames(tmp_path):
    """Features covering 24 of 30 frames (``feature_frame`` < ``duration_frame``) span 0.8 s of the 1 s video."""
    ann = json.loads((DATA / "mmaction2" / "anet_anno_test.json").read_text())
    ann["v_test1"]["feature_frame"] = 24
    path = tmp_path / "anet_anno_val.json"
    path.write_text(json.dumps(ann))
    out = tmp_path / "f.h5"
    assert main(["import", str(DATA / "mmaction2" / "v_test1.csv"), "-o", str(out), "--format", "mmaction-csv",
                 "--annotations", str(path)]) == 0
    _, t = _read(out)["v_test1"]
    np.testing.assert_allclose(t.centers(5), np.arange(5) / 5 * (24 / 30 * 1.0))
    assert t.duration_s == 1.0
