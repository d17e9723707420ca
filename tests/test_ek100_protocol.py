"""The EK100 protocol functions against outputs of the TAdaConv repository's own code (tests/data/ek100_protocol)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from localization.ek100_protocol import (
    ek100_action_labels,
    ek100_proposals,
    ek100_soft_nms,
    ek100_windows,
    fuse_window_maps,
    fused_length,
    reference_centres,
    window_features,
    window_rows,
    window_segments,
    window_targets,
)
from localization.losses import bmn_loss, tadaconv_bmn_loss
from localization.postprocess import candidate_cells
from localization.targets import valid_proposal_mask

DATA = Path(__file__).parent / "data" / "ek100_protocol"
VIDEOS = ["F0", "F1", "F2"]


def _load(name: str) -> dict[str, np.ndarray]:
    with np.load(DATA / f"{name}.npz") as z:
        return {k: z[k] for k in z.files}


def test_windows_equal_reference_on_77_durations():
    ref = _load("windows")
    offset = 0
    for duration, count in zip(ref["durations"], ref["counts"]):
        ours = ek100_windows(float(duration))
        assert len(ours) == count, f"duration {duration}"
        assert np.array_equal(ours, ref["windows"][offset : offset + count]), f"duration {duration}"
        offset += count
    assert offset == len(ref["windows"])
    # the step is 100 bins of 2 x 0.13333333 s, windows 200 bins long
    assert np.allclose(np.diff(ek100_windows(100.0)[:, 0]), 26.666666, atol=1e-5)
    with pytest.raises(ValueError, match="duration"):
        ek100_windows(0.0)


def test_training_windows_and_label_policy_equal_reference():
    ref = _load("labels")
    windows, gts, labels = [], [], []
    for video, duration in enumerate(ref["durations"]):
        mine = ref["segment_video"] == video
        segs, labs = ref["segments"][mine], ref["segment_labels"][mine]
        for window in ek100_windows(float(duration)):
            kept = window_segments(segs, window)
            if len(kept.index):  # training/validation windows without a kept segment are dropped
                windows.append([video, *window])
                gts.append(segs[kept.index] - window[0])
                labels.append(labs[kept.index])
                length = window[1] - window[0]
                np.testing.assert_allclose(kept.segments * length, gts[-1].clip(0, length))
    assert np.array_equal(np.array(windows), ref["window"])
    assert np.array_equal(np.concatenate(gts), ref["window_gts"])
    assert np.array_equal(np.concatenate(labels), ref["window_gt_labels"])


def test_window_segments_keeps_only_fully_inside():
    window = [26.666666, 79.999998]
    segs = np.array([[26.6, 40.0], [30.0, 40.0], [79.99, 80.0], [50.0, 50.0], [0.0, 100.0]])
    kept = window_segments(segs, window)
    assert kept.index.tolist() == [1, 2]  # ioa 0.995, 1, 0.9998, nan (zero length), 0.53
    np.testing.assert_allclose(kept.segments[0], [(30.0 - window[0]) / 53.333332, (40.0 - window[0]) / 53.333332])
    np.testing.assert_allclose(kept.segments[1], [(79.99 - window[0]) / 53.333332, 1.0])  # clipped to the window
    assert window_segments(segs, window, min_ioa=0.99).index.tolist() == [0, 1, 2]


def test_window_targets_equal_reference():
    ref = _load("labels")
    owner = ref["window_gt_owner"]
    for i in range(6):
        window = ref["window"][i, 1:]
        kept = np.clip((ref["window_gts"][owner == i]) / (window[1] - window[0]), 0, 1)
        iou, start, end, label = window_targets(kept, ref["window_gt_labels"][owner == i])
        np.testing.assert_array_equal(iou, ref[f"iou_{i}"])
        np.testing.assert_allclose(start, ref[f"start_{i}"], atol=1e-6)
        np.testing.assert_allclose(end, ref[f"end_{i}"], atol=1e-6)
        np.testing.assert_array_equal(label, ref[f"label_{i}"])
    empty = window_targets(np.zeros((0, 2)), np.zeros((0, 2)))
    assert all(not m.any() for m in empty) and empty[3].shape == (2, 100, 200)


@pytest.mark.parametrize("video", VIDEOS)
def test_window_rows_and_features_equal_reference(video):
    ref = _load(f"window_features_{video}")
    n = len(ref["features"])
    centres = reference_centres(n)
    assert np.array_equal(ek100_windows(float(ref["duration"])), ref["windows"])
    for w, window in enumerate(ref["windows"]):
        rows = window_rows(centres, window)
        assert np.array_equal(rows, ref["masks"][w])
        assert rows.sum() == ref["feature_len"][w]
        ours = window_features(ref["features"], centres, window)
        np.testing.assert_allclose(ours.numpy(), ref["window_features"][w], atol=1e-6)


def _window_maps(video: int, num_windows: int) -> dict[str, list[np.ndarray]]:
    """The random window maps the fixture script drew (same generator, same order of draws)."""
    g = np.random.default_rng(200 + video)
    valid = valid_proposal_mask(200, 100).astype(np.float32)
    maps: dict[str, list[np.ndarray]] = {"conf": [], "start": [], "end": [], "verb": []}
    for _ in range(num_windows):
        maps["conf"].append(g.random((2, 100, 200), dtype=np.float32) * valid)
        maps["start"].append(g.random(200, dtype=np.float32))
        maps["end"].append(g.random(200, dtype=np.float32))
        maps["verb"].append(g.random((3, 100, 200), dtype=np.float32) * valid)
        g.random((2, 100, 200), dtype=np.float32)  # the noun map, not kept in the fixture
    return maps


@pytest.mark.parametrize("video", range(len(VIDEOS)))
def test_fusion_equals_reference(video):
    feats, ref = _load(f"window_features_{VIDEOS[video]}"), _load(f"fusion_{VIDEOS[video]}")
    masks = [window_rows(reference_centres(len(feats["features"])), w) for w in feats["windows"]]
    maps = _window_maps(video, len(masks))
    valid = valid_proposal_mask(200, 100)
    assert fused_length(len(masks[0])) == len(ref["fused_start"])
    np.testing.assert_allclose(fuse_window_maps(maps["start"], masks), ref["fused_start"], atol=1e-6)
    np.testing.assert_allclose(fuse_window_maps(maps["end"], masks), ref["fused_end"], atol=1e-6)
    np.testing.assert_allclose(fuse_window_maps(maps["conf"], masks, valid), ref["fused_conf"], atol=1e-6)
    np.testing.assert_allclose(fuse_window_maps(maps["verb"], masks, valid), ref["fused_verb"], atol=1e-6)


@pytest.mark.parametrize("video", range(len(VIDEOS)))
def test_proposals_and_detections_equal_reference(video):
    ref = _load(f"fusion_{VIDEOS[video]}")
    conf, start, end, duration = ref["fused_conf"], ref["fused_start"], ref["fused_end"], float(ref["duration"])
    length = len(start)
    d, s = candidate_cells(conf, start, end)
    cands = np.stack([s / length, (s + d + 1) / length, conf[1, d, s], conf[0, d, s]], axis=1)
    assert np.array_equal(cands, ref["candidates"])

    props = ek100_proposals(conf, start, end, duration)
    assert len(props.scores) == min(int(duration) + 1, len(ref["det_score"]) // 5)
    np.testing.assert_array_equal(props.segments, ref["det_segment"][::5])

    g = np.random.default_rng(300 + video)  # the class maps the fixture script parsed with
    verb_map = g.random((10, 100, length), dtype=np.float32)
    noun_map = g.random((30, 100, length), dtype=np.float32)
    for j, ((cd, cs), score) in enumerate(zip(props.cells, props.scores)):
        verbs, nouns, pair = ek100_action_labels(verb_map[:, cd, cs], noun_map[:, cd, cs])
        assert verbs.tolist() == ref["det_verb"][5 * j : 5 * j + 5].tolist()
        assert nouns.tolist() == ref["det_noun"][5 * j : 5 * j + 5].tolist()
        np.testing.assert_allclose(score * pair.astype(np.float64), ref["det_score"][5 * j : 5 * j + 5], rtol=1e-12)


def test_ek100_soft_nms_rules():
    props = np.array([[0.1, 0.5, 0.9], [0.12, 0.5, 0.8], [0.3, 0.7, 0.7], [0.8, 0.9, 0.6]])
    rows, index = ek100_soft_nms(props, max_proposals=10)
    # threshold 0.25 + 0.65 * 0.4 = 0.51 after the best: [0.12, 0.5] (IoU 0.95) is decayed to 0.084, [0.3, 0.7]
    # (IoU 0.33) is not; the last proposal left, the decayed one, is never picked
    assert index.tolist() == [0, 2, 3]
    np.testing.assert_allclose(rows, [[0.1, 0.5, 0.9], [0.3, 0.7, 0.7], [0.8, 0.9, 0.6]])
    rows, index = ek100_soft_nms(props[:1], max_proposals=10)
    assert index.tolist() == [0] and rows.shape == (1, 3)


def test_ek100_soft_nms_breaks_ties_as_the_reference():
    """The reference's ``tal_tools.soft_nms`` (pandas order) and re-sort, run on heavily tied scores."""
    ref = _load("tadaconv_soft_nms_ties")
    for case in range(2):
        rows, index = ek100_soft_nms(ref[f"props_{case}"], max_proposals=60)
        assert np.array_equal(index, ref[f"index_{case}"])
        assert np.array_equal(rows, ref[f"rows_{case}"])


def test_window_rows_include_both_ends():
    assert window_rows(np.array([0.5, 1.0, 2.0, 3.0, 3.5]), [1.0, 3.0]).tolist() == [False, True, True, True, False]


def test_action_labels_pair_best_verbs_and_nouns():
    verbs = np.linspace(0.0, 1.0, 12, dtype=np.float32)
    verbs[10] = 0.99
    nouns = np.linspace(0.0, 1.0, 31, dtype=np.float32)[::-1].copy()
    v, n, score = ek100_action_labels(verbs, nouns, top_k=3)
    assert v.tolist() == [11, 10, 11] and n.tolist() == [0, 0, 1]
    np.testing.assert_allclose(score, [verbs[11] * nouns[0], verbs[10] * nouns[0], verbs[11] * nouns[1]])
    with pytest.raises(ValueError, match="noun"):
        ek100_action_labels(verbs, nouns[:5])


def _loss_inputs() -> tuple[torch.Tensor, ...]:
    ref = _load("losses")
    g = torch.Generator().manual_seed(5)  # the predictions the fixture script drew
    b = len(ref["gt_start"])
    start, end = torch.rand(b, 200, generator=g), torch.rand(b, 200, generator=g)
    conf = torch.rand(b, 2, 100, 200, generator=g)
    gt_iou, gt_start, gt_end = (torch.from_numpy(ref[k]) for k in ("gt_iou", "gt_start", "gt_end"))
    return conf, start, end, gt_iou, gt_start, gt_end


def test_tadaconv_losses_equal_reference():
    ref = _load("losses")
    conf, start, end, gt_iou, gt_start, gt_end = _loss_inputs()
    for case, iou in (("real", gt_iou), ("low", gt_iou * 0.5)):
        out = tadaconv_bmn_loss(conf, start, end, iou, gt_start, gt_end, generator=torch.Generator().manual_seed(123))
        np.testing.assert_allclose(out.tem.item(), ref[f"{case}_tem"], rtol=1e-6)
        np.testing.assert_allclose(out.pem_cls.item(), ref[f"{case}_pem_cls"], rtol=1e-6, atol=1e-7)
        if case == "real":  # "low" has no regression sample: the reference's 0/0 is NaN, ours 0
            np.testing.assert_allclose(out.pem_reg.item(), ref["real_pem_reg"], rtol=1e-6)
        else:
            assert np.isnan(ref["low_pem_reg"]) and out.pem_reg.item() == 0.0
    mm = bmn_loss(conf, start, end, gt_iou, gt_start, gt_end, generator=torch.Generator().manual_seed(123))
    assert abs(mm.pem_cls.item() - ref["real_pem_cls"]) > 1e-4  # mmaction2's clamp and eps do differ


def test_proposals_of_empty_maps_and_bad_inputs():
    rng = np.random.default_rng(0)
    props = ek100_proposals(np.zeros((2, 100, 150), np.float32), rng.random(150), rng.random(150), 40.0)
    assert props.segments.shape == (0, 2) and props.scores.shape == (0,)  # every score is 0, none > min_score
    with pytest.raises(ValueError, match="row mask"):
        fuse_window_maps([np.zeros(200)], [np.zeros(10, bool), np.zeros(10, bool)])
    with pytest.raises(ValueError, match="N = 4"):
        window_features(np.zeros((5, 3)), np.zeros(4), [0.0, 1.0])
