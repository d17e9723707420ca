"""``tal-annotations from-csv``: a CSV of actions -> the HACS/ActivityNet JSON every tool reads, bad rows named."""
from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from loc_synth import timing
from tal_common.annotations import read_annotations
from tal_common.annotations_cli import CsvAnnotationError, csv_to_activitynet, main, parse_time, read_durations
from tal_common.h5 import write_file_attrs, write_video


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_parse_time_seconds_and_clock():
    assert parse_time("12.5") == 12.5
    assert parse_time(" 01:02.25 ") == 62.25
    assert parse_time("01:00:02.50") == 3602.5
    for bad in ("abc", "-1", "1:-2", "nan", "inf", "1:2:3:4", ""):
        with pytest.raises(ValueError):
            parse_time(bad)


def test_csv_to_json_with_durations_from_a_csv(tmp_path, capsys):
    labels = _write(tmp_path / "labels.csv", "video,start,end,label,subset,notes\n"
                    "a,1.5,4,jump,training,first\n"
                    "a,00:00:06.00,9.5,run,training,\n"
                    "b,0,2,jump,validation,x\n"
                    "c,,,,validation,no actions\n")
    durations = _write(tmp_path / "durations.csv", "video,duration\na,10\nb,3.5\nc,00:01:00\nunused,5\n")
    out = tmp_path / "ann.json"
    assert main(["from-csv", str(labels), "--durations", str(durations), "-o", str(out)]) == 0
    expected = {
        "a": {"subset": "training", "duration": 10.0,
              "annotations": [{"segment": [1.5, 4.0], "label": "jump"}, {"segment": [6.0, 9.5], "label": "run"}]},
        "b": {"subset": "validation", "duration": 3.5, "annotations": [{"segment": [0.0, 2.0], "label": "jump"}]},
        "c": {"subset": "validation", "duration": 60.0, "annotations": []},
    }
    assert json.loads(out.read_text())["database"] == expected
    read = read_annotations(out)
    assert read.labels == ("jump", "run") and read.videos["c"].segments == ()
    assert "3 videos (1 training, 2 validation), 3 actions, 2 classes" in capsys.readouterr().out


def test_duration_column_and_default_subset(tmp_path):
    labels = _write(tmp_path / "l.csv", "label,end,start,video,duration\nswim,3,1,v1,7.25\nswim,6,4,v1,7.25\n")
    data = csv_to_activitynet(labels, default_subset="testing")
    assert data["database"] == {"v1": {"subset": "testing", "duration": 7.25, "annotations": [
        {"segment": [1.0, 3.0], "label": "swim"}, {"segment": [4.0, 6.0], "label": "swim"}]}}


def test_durations_from_a_feature_file(tmp_path):
    features = tmp_path / "f.h5"
    with h5py.File(features, "w") as f:
        write_file_attrs(f, "synthetic", "random", "", "synthetic: true\n")
        write_video(f, "v1", np.zeros((20, 4), np.float32), timing(10.3))
    assert read_durations(features) == {"v1": 10.3}
    labels = _write(tmp_path / "l.csv", "video,start,end,label\nv1,1,2,x\nv2,1,2,x\n")
    with pytest.raises(CsvAnnotationError, match=r"line 3: video 'v2': no duration \(not in .*f\.h5\)"):
        csv_to_activitynet(labels, read_durations(features), str(features))


def test_every_bad_row_is_named_and_nothing_is_written(tmp_path, capsys):
    labels = _write(tmp_path / "bad.csv", "video,start,end,label,subset\n"
                    "a,1,2,jump,training\n"          # line 2: fine
                    "a,x,3,jump,training\n"          # 3
                    "a,5,3,jump,training\n"          # 4
                    ",1,2,jump,training\n"           # 5
                    "a,1,2,,training\n"              # 6
                    "a,1,2,jump,train\n"             # 7
                    "a,1,2,jump,training,extra\n")   # 8
    out = tmp_path / "ann.json"
    assert main(["from-csv", str(labels), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert not out.exists() and "Traceback" not in err
    assert f"{labels}: 6 bad row(s):" in err
    for expected in ("line 3: video 'a': field 'start' is not a time in seconds (or HH:MM:SS.ss) >= 0: 'x'",
                     "line 4: video 'a': the action ends before it starts (start 5 s, end 3 s)",
                     "line 5: field 'video' is empty",
                     "line 6: video 'a': field 'label' is empty",
                     "line 7: video 'a': field 'subset' must be one of training, validation, testing, got 'train'",
                     "line 8: more fields than the header names"):
        assert expected in err, expected


def test_video_level_errors(tmp_path):
    labels = _write(tmp_path / "v.csv", "video,start,end,label,subset,duration\n"
                    "a,1,2,x,training,10\n"
                    "a,3,4,x,validation,10\n"     # another subset for a
                    "b,1,2,x,training,10\n"
                    "b,3,4,x,training,11\n"       # another duration for b
                    "c,1,2,x,training,\n"         # no duration for c
                    "d,5,30,x,training,10\n"      # ends long after the video: seconds vs frames?
                    "e,8,10.9,x,training,10\n")   # within a second after the end: kept
    with pytest.raises(CsvAnnotationError) as caught:
        csv_to_activitynet(labels)
    message = str(caught.value)
    assert "4 bad row(s)" in message
    assert "line 3: video 'a': subset 'validation', but 'training' on line 2 (one subset per video)" in message
    assert "line 4: video 'b': rows give different durations [10.0, 11.0]" in message
    assert "line 6: video 'c': no duration (no duration column and no --durations)" in message
    assert "line 7: video 'd': the action [5, 30] s lies past the video's end (10 s); are the times in seconds?" in message


def test_file_level_errors(tmp_path, capsys):
    assert main(["from-csv", str(tmp_path / "missing.csv"), "-o", str(tmp_path / "a.json")]) == 2
    assert "missing.csv: file not found" in capsys.readouterr().err
    header = _write(tmp_path / "h.csv", "video,begin,end\na,1,2\n")
    assert main(["from-csv", str(header), "-o", str(tmp_path / "a.json")]) == 2
    assert "missing column(s) start, label; the header must name video,start,end,label" in capsys.readouterr().err
    empty = _write(tmp_path / "e.csv", "video,start,end,label\n")
    assert main(["from-csv", str(empty), "-o", str(tmp_path / "a.json")]) == 2
    assert "no rows under the header" in capsys.readouterr().err
    labels = _write(tmp_path / "l.csv", "video,start,end,label\na,1,2,x\n")
    bad_durations = _write(tmp_path / "d.csv", "video,duration\na,0\n")
    assert main(["from-csv", str(labels), "--durations", str(bad_durations), "-o", str(tmp_path / "a.json")]) == 2
    assert "line 2: video 'a': field 'duration' must be a time > 0, got '0'" in capsys.readouterr().err
