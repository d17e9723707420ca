"""mmaction2's ActivityNet annotation JSON (anet_anno_*.json), told apart from the official layout by content."""
import json
import shutil
from pathlib import Path

import pytest

from tal_common.annotations import AnnotationError, read_activitynet_json, read_annotations

DATA = Path(__file__).parent / "data" / "annotations"
MMA = DATA / "mmaction2_anet_anno_val_excerpt.json"
ANET = DATA / "activitynet_val_excerpt.json"


def test_mmaction_excerpt_values():
    ann = read_annotations(MMA)
    raw = json.loads(MMA.read_text())
    assert list(ann.videos) == list(raw)
    for vid, entry in raw.items():
        video = ann.videos[vid]
        assert video.subset == "validation"
        assert video.duration == entry["duration_second"]
        assert video.fps == entry["duration_frame"] / entry["duration_second"]
        assert [(s.start, s.end, s.label) for s in video.segments] == [
            (a["segment"][0], a["segment"][1], a["label"]) for a in entry["annotations"]
        ]
    assert ann.extra["feature_frame"] == {"v_--1DO2V4K74": 6336, "v_--6bJUbfpnQ": 624}
    assert ann.labels == ("Rock climbing", "Drinking beer")
    assert ann.subset("validation").videos.keys() == raw.keys()


def test_layouts_told_apart_by_content_not_name(tmp_path):
    """Both layouts under the same neutral name: each is read by its own rules."""
    official, mma = tmp_path / "a" / "gt.json", tmp_path / "b" / "gt.json"
    for src, dst in ((ANET, official), (MMA, mma)):
        dst.parent.mkdir()
        shutil.copy(src, dst)
    assert set(read_activitynet_json(official).videos) == set(json.loads(ANET.read_text())["database"])
    other = read_activitynet_json(mma)
    assert set(other.videos) == set(json.loads(MMA.read_text()))
    assert {v.subset for v in other.videos.values()} == {"full"}  # no train/val/test in the name


@pytest.mark.parametrize("name, subset", [("anet_anno_train.json", "training"), ("anet_anno_val.json", "validation"),
                                          ("anet_anno_test.json", "testing"), ("anet_anno_full.json", "full")])
def test_subset_from_file_name(tmp_path, name, subset):
    path = tmp_path / name
    shutil.copy(MMA, path)
    assert {v.subset for v in read_annotations(path).videos.values()} == {subset}


@pytest.mark.parametrize("field, value, match", [
    ("duration_frame", None, "missing field 'duration_frame'"),
    ("duration_second", "abc", "field 'duration_second': not a number"),
    ("duration_second", 0, "must be > 0"),
    ("annotations", [{"segment": [5, 1], "label": "x"}], "ends before it starts"),
])
def test_mmaction_malformed(tmp_path, field, value, match):
    data = json.loads(MMA.read_text())
    entry = data["v_--6bJUbfpnQ"]
    if value is None:
        del entry[field]
    else:
        entry[field] = value
    path = tmp_path / "anet_anno_val.json"
    path.write_text(json.dumps(data))
    with pytest.raises(AnnotationError, match=match) as err:
        read_annotations(path)
    assert str(path) in str(err.value) and "v_--6bJUbfpnQ" in str(err.value)
