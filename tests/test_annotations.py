"""Annotation readers on real excerpts (tests/data/annotations) and on malformed inputs."""
import json
from pathlib import Path

import pytest

from tal_common.annotations import (
    AnnotationError,
    read_activitynet_json,
    read_annotations,
    read_ek100_classes,
    read_ek100_csv,
)

DATA = Path(__file__).parent / "data" / "annotations"
ANET = DATA / "activitynet_val_excerpt.json"
EK = DATA / "EPIC_100_validation_excerpt.csv"
EK_INFO = DATA / "EPIC_100_video_info_excerpt.csv"


def test_activitynet_excerpt_keeps_quirks():
    ann = read_activitynet_json(ANET)
    raw = json.loads(ANET.read_text())["database"]
    assert set(ann.videos) == set(raw)
    for vid, entry in raw.items():
        video = ann.videos[vid]
        assert video.subset == "validation"
        assert video.duration == pytest.approx(float(entry["duration"]))
        assert [(s.start, s.end, s.label) for s in video.segments] == [
            (float(a["segment"][0]), float(a["segment"][1]), a["label"]) for a in entry["annotations"]
        ]
    zero = [s for v in ann.videos.values() for s in v.segments if s.start == s.end]
    past = [s for v in ann.videos.values() for s in v.segments if s.end > v.duration]
    assert len(zero) >= 3 and len(past) >= 3
    assert ann.labels[0] == raw[next(iter(raw))]["annotations"][0]["label"]


def test_hacs_string_durations_and_subsets(tmp_path):
    data = {
        "version": "HACS Segments v1.1.1",
        "taxonomy": [],
        "database": {
            "a": {"subset": "training", "duration": "31.07", "url": "u", "annotations": [{"label": "X", "segment": ["1.5", 3]}]},
            "b": {"subset": "validation", "duration": "12.0", "annotations": [{"label": "Y", "segment": [0, 2]}]},
        },
    }
    path = tmp_path / "hacs.json"
    path.write_text(json.dumps(data))
    ann = read_annotations(path)
    assert ann.videos["a"].duration == 31.07 and ann.videos["a"].segments[0].start == 1.5
    val = ann.subset("validation")
    assert list(val.videos) == ["b"] and val.labels == ("Y",)
    with pytest.raises(AnnotationError, match="testing.*training"):
        ann.subset("testing")


def test_ek100_excerpt_timestamps_and_video_info():
    ann = read_ek100_csv(EK, video_info=EK_INFO)
    assert set(ann.videos) == {"P01_11", "P02_12"}
    first = ann.videos["P01_11"].segments[0]
    # row P01_11_0: 00:00:00.00 -> 00:00:01.89, take (0) plate (2)
    assert (first.start, first.end, first.label, first.verb, first.noun) == (0.0, 1.89, "0,2", 0, 2)
    assert ann.videos["P01_11"].subset == "validation"
    assert ann.videos["P01_11"].fps == pytest.approx(59.94, abs=0.01)
    assert all(s.end <= v.duration + 1e-6 for v in ann.videos.values() for s in v.segments)
    # P02_12 has rows with an empty narration_timestamp; they are read like the others
    roll = [s for s in ann.videos["P02_12"].segments if s.start == pytest.approx(17 * 60 + 47.56)]
    assert roll and roll[0].label == "47,25"


def test_ek100_without_video_info_uses_last_stop():
    ann = read_ek100_csv(EK)
    video = ann.videos["P01_11"]
    assert video.duration == max(s.end for s in video.segments) and video.fps is None


def test_ek100_class_tables():
    verbs = read_ek100_classes(DATA / "EPIC_100_verb_classes.csv")
    nouns = read_ek100_classes(DATA / "EPIC_100_noun_classes.csv")
    assert (len(verbs), len(nouns)) == (97, 300)
    assert verbs[0] == "take" and nouns[2] == "plate"


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda d: d.pop("database"), "database"),
        (lambda d: d["database"]["v1"].pop("subset"), "'v1'.*'subset'"),
        (lambda d: d["database"]["v1"]["annotations"][0].pop("segment"), "'v1'.*'segment'"),
        (lambda d: d["database"]["v1"]["annotations"][0].update(segment=[5, 1]), "'v1'.*ends before"),
        (lambda d: d["database"]["v1"]["annotations"][0].update(segment=["a", 1]), "'v1'.*not a number"),
        (lambda d: d["database"]["v1"].update(duration="long"), "'v1'.*duration"),
        (lambda d: d["database"]["v1"]["annotations"][0].update(segment=[1]), "'v1'.*\\[start, end\\]"),
    ],
)
def test_activitynet_malformed(tmp_path, mutate, match):
    data = {"version": "x", "taxonomy": [], "database": {
        "v1": {"subset": "validation", "duration": 10.0, "annotations": [{"label": "A", "segment": [1, 2]}]}}}
    mutate(data)
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(data))
    with pytest.raises(AnnotationError, match=match) as err:
        read_activitynet_json(path)
    assert str(path) in str(err.value)


def test_activitynet_not_json(tmp_path):
    path = tmp_path / "gt.json"
    path.write_text("{not json")
    with pytest.raises(AnnotationError, match="not valid JSON"):
        read_activitynet_json(path)


def test_ek100_malformed(tmp_path):
    header = EK.read_text().splitlines()[0]
    good = "P01_11_0,P01,P01_11,00:00:00.560,00:00:00.00,00:00:01.89,1,113,take plate,take,0,plate,2,['plate'],[2]"
    cases = {
        good.replace("00:00:01.89", "1:xx"): "P01_11.*stop_timestamp",
        good.replace(",take,0,", ",take,zero,"): "P01_11.*verb_class",
        good.replace("00:00:00.00,00:00:01.89", "00:00:02.00,00:00:01.89"): "P01_11.*ends before",
    }
    for row, match in cases.items():
        path = tmp_path / "EPIC_100_validation.csv"
        path.write_text(header + "\n" + row + "\n")
        with pytest.raises(AnnotationError, match=match):
            read_ek100_csv(path)
    path.write_text("video_id,start_timestamp\nP01_11,00:00:00.00\n")
    with pytest.raises(AnnotationError, match="missing column"):
        read_ek100_csv(path)
    info = tmp_path / "info.csv"
    info.write_text("video_id,duration,fps,resolution\nP99_01,10,50,1920x1080\n")
    path.write_text(header + "\n" + good + "\n")
    with pytest.raises(AnnotationError, match="P01_11.*no row"):
        read_ek100_csv(path, video_info=info)


def test_unknown_extension(tmp_path):
    with pytest.raises(AnnotationError, match="unknown annotation format"):
        read_annotations(tmp_path / "gt.txt")
