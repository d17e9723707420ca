"""One-line notices: weights that bring another preprocessing than the preset's, videos slower than sample_fps."""
from fractions import Fraction

from feature_extraction.cli import main
from feature_extraction.config import ExtractConfig, preset_path
from feature_extraction.notices import low_fps_notice, weights_notice
from feature_extraction.video import VideoInfo
from tal_common.config import load_config
from test_extract_cli import write_video


def given(preset: str, *overrides: str) -> ExtractConfig:
    return load_config(ExtractConfig, None, list(overrides), base=preset_path(preset))


def test_random_weights_on_hacs_say_what_changed():
    notice = weights_notice("hacs", given("hacs", "model.weights=random"), cuda=False)
    # The official Kinetics-400 checkpoint: centre 256 crop, the TAdaConv interval rule, full-frame resize on the
    # model device; the random init: 224 crop, nominal spacing, decoder resize (feature_extraction/weights.py).
    assert notice == ("weights 'random' come with their own preprocessing, not that of preset 'hacs' (weights 'official-k400'): "
                      "sampling.rule tadaconv -> nominal, preprocess.crop_size 256 -> 224, preprocess.resize device -> decoder "
                      "(set a key with --set to keep the preset's value)")
    kept = weights_notice("hacs", given("hacs", "model.weights=random", "preprocess.crop_size=256",
                                        "sampling.rule=tadaconv", "preprocess.resize=device"), cuda=False)
    assert kept is None


def test_the_presets_own_weights_say_nothing():
    assert weights_notice("hacs", given("hacs"), cuda=False) is None
    assert weights_notice("demo", given("demo"), cuda=False) is None  # demo's own weights are the random init


def info(fps: float) -> VideoInfo:
    return VideoInfo(num_frames=100, fps=fps, duration_s=100 / fps, width=32, height=24)


def test_low_fps_names_the_videos_slower_than_sample_fps():
    infos = {"d": info(12.0), "a": info(15.0), "ntsc": info(30000 / 1001), "b": info(30.0), "c": info(60.0)}
    assert low_fps_notice(infos, 30.0) == (
        "warning: 2 of 5 videos have fewer frames per second than sampling.sample_fps=30, so their frames repeat "
        "on the sampling timeline: a (15 fps), d (12 fps)"
    )
    assert low_fps_notice(infos, 60.0).startswith("warning: 4 of 5 videos") and "and 1 more" in low_fps_notice(infos, 60.0)
    assert low_fps_notice(infos, 12.0) is None


def test_extract_features_prints_each_notice_once(tmp_path, capsys):
    videos = tmp_path / "videos"
    videos.mkdir()
    write_video(videos / "slow.mp4", 40, Fraction(15))
    write_video(videos / "fast.mp4", 80, Fraction(30))
    out = tmp_path / "f.h5"
    rc = main([str(videos), "-o", str(out), "--preset", "hacs", "--weights", "random", "--set", "model.base_width=8",
               "--set", "preprocess.short_side=32", "--set", "preprocess.crop_size=32", "--set", "run.workers=1",
               "--set", "run.probe_workers=1", "--set", "run.batch_size=4"])
    err = capsys.readouterr().err
    assert rc == 0, err
    lines = err.splitlines()
    weights = [line for line in lines if "their own preprocessing" in line]
    assert weights == ["extract-features: weights 'random' come with their own preprocessing, not that of preset 'hacs' "
                       "(weights 'official-k400'): sampling.rule tadaconv -> nominal, preprocess.resize device -> decoder "
                       "(set a key with --set to keep the preset's value)"]
    fps = [line for line in lines if "sample_fps" in line]
    assert fps == ["extract-features: warning: 1 of 2 videos have fewer frames per second than sampling.sample_fps=30, "
                   "so their frames repeat on the sampling timeline: slow (15 fps)"]
