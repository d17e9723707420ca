"""Synthetic demo dataset: decodable videos, matching HACS/EK100 annotations, determinism, validation."""
import shutil
import subprocess
import sys
from pathlib import Path

import decord
import numpy as np
import pytest

from tal_common.annotations import read_activitynet_json, read_ek100_csv
from tal_common.demo_dataset import (
    NOUNS,
    VERBS,
    DemoConfig,
    DemoDatasetError,
    ek100_dir,
    hacs_path,
    make_demo_dataset,
    plan_dataset,
    validate_demo_dataset,
    video_path,
)

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "make_demo_dataset.py"
TINY = DemoConfig(train_videos=2, val_videos=1, seed=3, duration_range=(6.0, 8.0))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("demo")
    make_demo_dataset(root, TINY, workers=1)
    return root


def _annotation_files(root: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((root / "annotations").rglob("*")) if p.is_file()}


def _all_frames(path: Path) -> np.ndarray:
    reader = decord.VideoReader(str(path))
    return reader.get_batch(list(range(len(reader)))).asnumpy()


def test_videos_decode_with_annotated_frame_count_and_fps(tiny):
    hacs = read_activitynet_json(hacs_path(tiny))
    assert len(hacs.videos) == 3
    for vid, video in hacs.videos.items():
        reader = decord.VideoReader(str(video_path(tiny, vid)))
        assert len(reader) == round(video.duration * TINY.fps)
        assert reader.get_avg_fps() == pytest.approx(TINY.fps)
        assert reader[0].shape == (TINY.height, TINY.width, 3)


def test_hacs_and_ek100_describe_the_same_actions(tiny):
    hacs = read_activitynet_json(hacs_path(tiny))
    info = ek100_dir(tiny) / "EPIC_100_video_info.csv"
    train = read_ek100_csv(ek100_dir(tiny) / "EPIC_100_train.csv", video_info=info)
    val = read_ek100_csv(ek100_dir(tiny) / "EPIC_100_validation.csv", video_info=info)
    assert set(hacs.subset("training").videos) == set(train.videos)
    assert set(hacs.subset("validation").videos) == set(val.videos)
    for vid, ek in {**train.videos, **val.videos}.items():
        h = hacs.videos[vid]
        assert ek.duration == pytest.approx(h.duration, abs=1e-9) and ek.fps == TINY.fps
        assert [b for s in ek.segments for b in (s.start, s.end)] == pytest.approx(
            [b for s in h.segments for b in (s.start, s.end)]
        )
        assert [s.label for s in h.segments] == [f"{VERBS[s.verb].name} {NOUNS[s.noun].name}" for s in ek.segments]
        assert 0 < h.segments[0].start and h.segments[-1].end < h.duration  # background at both ends


def test_ek100_csv_layout_matches_the_real_files(tiny):
    lines = (ek100_dir(tiny) / "EPIC_100_train.csv").read_text().splitlines()
    assert lines[0].split(",") == [
        "narration_id", "participant_id", "video_id", "narration_timestamp", "start_timestamp",
        "stop_timestamp", "start_frame", "stop_frame", "narration", "verb", "verb_class", "noun",
        "noun_class", "all_nouns", "all_noun_classes",
    ]
    fields = lines[1].split(",")
    assert fields[0] == f"{fields[2]}_0" and fields[2].startswith(fields[1] + "_")
    assert len(fields[4]) == len("00:00:01.20") and fields[13].startswith("['") and fields[14].startswith("[")


def test_the_object_is_on_screen_exactly_during_the_actions(tiny):
    hacs = read_activitynet_json(hacs_path(tiny))
    for vid, video in hacs.videos.items():
        frames = _all_frames(video_path(tiny, vid)).astype(np.int16)
        saturated = ((frames.max(-1) - frames.min(-1)) > 60).mean(axis=(1, 2))
        active = np.zeros(len(frames), dtype=bool)
        for seg in video.segments:
            active[round(seg.start * TINY.fps):round(seg.end * TINY.fps)] = True
        assert saturated[active].min() > 0.03, vid
        assert saturated[~active].max() < 0.002, vid


def test_same_seed_gives_identical_annotations_and_frames(tiny, tmp_path):
    again = tmp_path / "again"
    make_demo_dataset(again, TINY, workers=2)
    assert _annotation_files(again) == _annotation_files(tiny)
    for path in sorted((tiny / "videos").glob("*.mp4")):
        np.testing.assert_array_equal(_all_frames(again / "videos" / path.name), _all_frames(path))


def test_plan_of_the_default_dataset():
    config = DemoConfig()
    plans = plan_dataset(config)
    assert [p.subset for p in plans].count("validation") == 12 and len(plans) == 44
    assert len({p.video_id for p in plans}) == 44
    assert {(p.verb, p.noun) for p in plans if p.subset == "validation"} == {
        (v, n) for v in range(len(VERBS)) for n in range(len(NOUNS))
    }
    gap = config.min_gap * config.fps
    for p in plans:
        assert 20 * config.fps <= p.num_frames <= 60 * config.fps
        bounds = [0, *[b for seg in p.segments for b in seg], p.num_frames]
        assert all(after - before >= gap for before, after in zip(bounds[0::2], bounds[1::2]))
        for start, stop in p.segments:
            assert 2 * config.fps <= stop - start <= 15 * config.fps


def test_too_short_videos_are_rejected():
    with pytest.raises(ValueError, match="cannot hold"):
        plan_dataset(DemoConfig(duration_range=(2.0, 3.0)))


def test_validation_names_a_truncated_video(tiny, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(tiny, broken)
    victim = sorted((broken / "videos").glob("*.mp4"))[1]
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
    with pytest.raises(DemoDatasetError, match=victim.stem):
        validate_demo_dataset(broken)


def test_validation_names_a_video_shorter_than_annotated(tiny, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(tiny, broken)
    info = ek100_dir(broken) / "EPIC_100_video_info.csv"
    lines = info.read_text().splitlines()
    vid = lines[1].split(",")[0]
    hacs = hacs_path(broken)
    duration = read_activitynet_json(hacs).videos[vid].duration
    longer = f"{duration + 1:.2f}"
    hacs.write_text(hacs.read_text().replace(f'"duration": "{duration:.2f}"', f'"duration": "{longer}"', 1))
    info.write_text(info.read_text().replace(f"{vid},{duration:.6f}", f"{vid},{duration + 1:.6f}"))
    with pytest.raises(DemoDatasetError, match=f"{vid}.*frames, expected"):
        validate_demo_dataset(broken)


def test_cli_validates_an_existing_dataset(tiny):
    done = subprocess.run([sys.executable, str(SCRIPT), "-o", str(tiny), "--validate"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "valid: 3 videos (2 training, 1 validation)" in done.stdout


def test_generation_refuses_a_folder_holding_other_videos(tmp_path):
    (tmp_path / "videos").mkdir()
    (tmp_path / "videos" / "stranger.mp4").write_bytes(b"")
    with pytest.raises(DemoDatasetError, match="stranger.mp4"):
        make_demo_dataset(tmp_path, TINY, workers=1)
