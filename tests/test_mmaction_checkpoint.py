"""mmaction2 BMN checkpoints from the command line: ``localize --checkpoint FILE --config CFG`` gives the same
proposals as the Python API, ``train-localizer --init-from`` starts from the weights, and an mmengine Runner file
(``tests/data/bmn/bmn_runner_T32_f48.pth``, written by mmengine itself) loads without running its pickled code."""
import json
import os
import pickle
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import yaml

from eval import cli as eval_cli
from localization import localize_cli, train_cli
from localization.bmn import BMN, load_bmn_checkpoint
from localization.postprocess import bmn_proposals
from tal_common.h5 import ClipTiming, write_file_attrs, write_video

DATA = Path(__file__).parent / "data" / "bmn"
RUNNER = DATA / "bmn_runner_T32_f48.pth"
PLAIN = DATA / "bmn_mmaction2_T32_f48_seed5.pt"
ROOT = Path(__file__).resolve().parents[1]
STRIDE_S = 0.5
DURATIONS = {"vid_a": 21.0, "vid_b": 27.5, "vid_c": 33.0}


def _fixture_bmn() -> BMN:
    """The fixture's architecture (T=32, feat_dim 48, hidden 32/16/64, mmaction2's N=32, 3 per bin, ratio 0.5)."""
    return BMN(48, 32, 32, num_samples=32, num_samples_per_bin=3, boundary_ratio=0.5,
               hidden_dim_1d=32, hidden_dim_2d=16, hidden_dim_3d=64)


def _features(tmp: Path, n_train: int = 0) -> tuple[Path, Path, dict[str, np.ndarray]]:
    """Features of three videos and an ActivityNet-style JSON (the first ``n_train`` in the training subset)."""
    rng = np.random.default_rng(3)
    feats, database = {}, {}
    path = tmp / "feats.h5"
    with h5py.File(path, "w") as f:
        write_file_attrs(f, "imported", "imported from mmaction2", "", "")
        for i, (vid, duration) in enumerate(DURATIONS.items()):
            n = int(duration / STRIDE_S)
            x = rng.random((n, 48), dtype=np.float32)
            feats[vid] = x
            timing = ClipTiming(source_fps=30.0, num_source_frames=int(duration * 30), duration_s=duration, sample_fps=30.0,
                                clip_len=15, frame_interval=1, stride=15, first_center_s=STRIDE_S / 2, stride_s=STRIDE_S, crops=1)
            write_video(f, vid, x, timing)
            database[vid] = {"subset": "training" if i < n_train else "validation", "duration": duration,
                             "annotations": [{"segment": [2.0, 9.0], "label": "jump"}]}
    ann = tmp / "ann.json"
    ann.write_text(json.dumps({"version": "test", "database": database}))
    return path, ann, feats


def _config(tmp: Path, **data: object) -> Path:
    cfg = yaml.safe_load((ROOT / "configs/localize/hacs_bmn.yaml").read_text())
    cfg["data"].update({"tscale": 32, "dscale": 32, "normalize": False, "num_workers": 0, **data})
    cfg["model"].update({"hidden_dim_1d": 32, "hidden_dim_2d": 16, "hidden_dim_3d": 64})
    path = tmp / "mm_bmn.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _expected(feats: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The Python API: mmaction2 weights in ``BMN``, each video linearly rescaled to 32 bins (np.interp per
    channel at the bin centres), mmaction2's post-processing, times in seconds."""
    model = _fixture_bmn()
    load_bmn_checkpoint(model, PLAIN)
    model.eval()
    out = {}
    for vid, x in feats.items():
        duration = DURATIONS[vid]
        centres = STRIDE_S / 2 + STRIDE_S * np.arange(len(x))
        bins = (np.arange(32) + 0.5) * duration / 32
        window = np.stack([np.interp(bins, centres, x[:, c]) for c in range(48)]).astype(np.float32)
        with torch.no_grad():
            conf, start, end = model(torch.from_numpy(window)[None])
        props = bmn_proposals(conf[0].numpy(), start[0].numpy(), end[0].numpy(), 0.5, 0.4, 0.5, 0.9, 100)
        props[:, :2] *= duration
        out[vid] = props
    return out


@pytest.mark.parametrize("checkpoint", [RUNNER, PLAIN], ids=["mmengine-runner", "state-dict"])
def test_localize_with_an_mmaction2_checkpoint_gives_the_python_api_proposals(tmp_path, checkpoint, capsys):
    feats_path, ann, feats = _features(tmp_path)
    out = tmp_path / "proposals.json"
    status = localize_cli.main(["--checkpoint", str(checkpoint), "--config", str(_config(tmp_path)), "--features", str(feats_path),
                                "--annotations", str(ann), "-o", str(out), "--device", "cpu"])
    assert status == 0, capsys.readouterr().err
    got = json.loads(out.read_text())
    assert got["version"] == "VERSION 1.3" and set(got["results"]) == set(DURATIONS)
    for vid, props in _expected(feats).items():
        rows = np.array([[*p["segment"], p["score"]] for p in got["results"][vid]])
        assert len(rows) == len(props) > 0
        np.testing.assert_allclose(rows, props, rtol=1e-5, atol=1e-6)
    # the proposal JSON is what `evaluate --task proposals` scores
    assert eval_cli.main(["--dataset", "activitynet", "--ground-truth", str(ann), "--predictions", str(out), "--task", "proposals",
                          "--subset", "validation", "--out", str(tmp_path / "report")]) == 0
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert 0.0 < report["AUC"] <= 100.0 and report["AR@100"] > 0.0


def test_runner_file_holds_more_than_tensors_and_still_loads_only_its_weights():
    with pytest.raises(pickle.UnpicklingError, match="HistoryBuffer"):
        torch.load(RUNNER, weights_only=True)  # what a plain weights-only load says about the Runner file
    runner = _fixture_bmn()
    from localization.model import RUNNER_GLOBALS, load_checkpoint_file
    state = load_checkpoint_file(RUNNER, "BMN checkpoint", stand_ins=RUNNER_GLOBALS)
    load_bmn_checkpoint(runner, state["state_dict"])
    plain = _fixture_bmn()
    load_bmn_checkpoint(plain, PLAIN)
    for (name, a), (_, b) in zip(runner.state_dict().items(), plain.state_dict().items()):
        assert torch.equal(a, b), name


def test_foreign_checkpoint_reads_raw_features_by_default(tmp_path, capsys):
    """mmaction2 trains BMN on raw features: for its checkpoints the default (checkpoint) is the same as none."""
    feats_path, ann, _ = _features(tmp_path)
    outs = []
    for norm in ("checkpoint", "none"):
        out = tmp_path / f"{norm}.json"
        assert localize_cli.main(["--checkpoint", str(RUNNER), "--config", str(_config(tmp_path)), "--features", str(feats_path),
                                  "--annotations", str(ann), "-o", str(out), "--feature-norm", norm]) == 0
        outs.append(json.loads(out.read_text())["results"])
    assert outs[0] == outs[1]


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("entry", ["top", "state_dict"])
def test_malicious_checkpoint_is_refused_without_running_it(tmp_path, capsys, entry):
    feats_path, ann, _ = _features(tmp_path, n_train=2)
    marker = tmp_path / "pwned"
    bad = tmp_path / "evil.pth"
    payload = _Payload(marker)
    torch.save(payload if entry == "top" else {"state_dict": {"x": payload}, "message_hub": {}}, bad)
    status = localize_cli.main(["--checkpoint", str(bad), "--config", str(_config(tmp_path)), "--features", str(feats_path),
                                "--annotations", str(ann), "-o", str(tmp_path / "o.json")])
    err = capsys.readouterr().err
    assert status == 2 and not marker.exists()
    assert str(bad) in err and "none of its code was run" in err and "Traceback" not in err and "weights_only" not in err
    status = train_cli.main(["--config", str(_config(tmp_path)), "--features", str(feats_path), "--annotations", str(ann),
                             "--work-dir", str(tmp_path / "run"), "--init-from", str(bad)])
    assert status == 2 and not marker.exists() and str(bad) in capsys.readouterr().err


def test_foreign_checkpoint_needs_a_config_and_must_fit_it(tmp_path, capsys):
    feats_path, ann, _ = _features(tmp_path)
    common = ["--features", str(feats_path), "--annotations", str(ann), "-o", str(tmp_path / "o.json")]
    assert localize_cli.main(["--checkpoint", str(RUNNER), *common]) == 2
    assert "pass --config" in capsys.readouterr().err
    wide = _config(tmp_path)
    wide.write_text(wide.read_text().replace("hidden_dim_1d: 32", "hidden_dim_1d: 64"))
    assert localize_cli.main(["--checkpoint", str(RUNNER), "--config", str(wide), *common]) == 2
    err = capsys.readouterr().err
    assert str(RUNNER) in err and "shapes do not match" in err and "x_1d_b.0.weight" in err and "Traceback" not in err
    # mmaction2 files that carry the BM layer's sample mask pin T: a config with another T is refused by name
    state = torch.load(PLAIN, weights_only=True)
    state["state_dict"]["sample_mask"] = _fixture_bmn().sample_mask().reshape(32, -1)
    with_mask = tmp_path / "with_mask.pth"
    torch.save(state, with_mask)
    assert localize_cli.main(["--checkpoint", str(with_mask), "--config", str(_config(tmp_path)), *common]) == 0
    assert localize_cli.main(["--checkpoint", str(with_mask), "--config", str(_config(tmp_path, tscale=16, dscale=16)), *common]) == 2
    err = capsys.readouterr().err
    assert str(with_mask) in err and "sample_mask" in err and "tscale=16" in err


def test_init_from_an_mmaction2_checkpoint_starts_the_head_from_its_weights(tmp_path, capsys):
    """With lr 0 training leaves the weights where --init-from put them: the run's head is the fixture's."""
    feats_path, ann, _ = _features(tmp_path, n_train=2)
    work = tmp_path / "run"
    status = train_cli.main(["--config", str(_config(tmp_path)), "--features", str(feats_path), "--annotations", str(ann),
                             "--work-dir", str(work), "--init-from", str(RUNNER), "--feature-norm", "none",
                             "--set", "train.epochs=1", "--set", "train.lr=0", "--set", "train.batch_size=2"])
    assert status == 0, capsys.readouterr().err
    head = torch.load(work / "checkpoints" / "last.pt", weights_only=True)["head"]
    reference = torch.load(PLAIN, weights_only=True)["state_dict"]
    for name, value in reference.items():
        assert torch.equal(head[f"bmn.{name}"], value), name
    assert "init_from" in (work / "config.yaml").read_text()
    assert "normalize: false" in (work / "config.yaml").read_text()
