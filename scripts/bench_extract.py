"""Benchmark extract-features on generated videos: is the pipeline as fast as its slowest stage?

Prints clips/s end to end (decode workers + model + part writing), model only (the same batches
already in memory), decode only (the DataLoader drained without a model), then the peak RSS of a
full CLI run on a short and on a long video (each in a fresh subprocess), and last
``pipeline_efficiency: X.XX`` = end-to-end / min(model-only, decode-only) (target >= 0.85).

In the same run it also times the loop a researcher would write (one decord ``get_batch`` per clip,
the same model and transform one clip at a time, one ``torch.save`` per video) and prints
``speedup_vs_reference_loop`` = end-to-end / that loop; and, model only on the same frames, full-width
TAda2D-R50 against torchvision's ResNet-50 run per frame (``tada2d_vs_resnet50`` = clips/s ratio;
TAda2D-R50 costs about 1.3x the FLOPs, so about 0.75 is the backbone's physical limit).

On CPU every stage runs with the share of the cores that extract-features gives it: ``run.workers`` decode
processes (one core each) and ``feature_extraction.pipeline.model_threads`` torch threads for the model, so model-only
and decode-only are the rates the two stages can reach side by side.

    python scripts/bench_extract.py                      # demo preset, 6 x 120 s videos, 1 and 10 min RSS
    python scripts/bench_extract.py --videos 3 --seconds 10 --rss-minutes 0.25 2.5   # quick
    python scripts/bench_extract.py --preset hacs --set model.weights=random --size 320 240 --fps 30   # official transform
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import av
import decord
import numpy as np
import torch
import torchvision

from feature_extraction.backbones import BACKBONES
from feature_extraction.config import ExtractConfig, make_sampler, preset_path, resolve_config
from feature_extraction.pipeline import ExtractStep, decode_workers, extract_videos, load_model, make_loader, make_transform, model_threads
from feature_extraction.dataset import VideoWork
from feature_extraction.transform import resized_size
from feature_extraction.video import probe_videos
from tal_common.config import load_config

ROOT = Path(__file__).resolve().parents[1]


def write_video(path: Path, seconds: float, fps: int, width: int, height: int) -> Path:
    """A moving gradient (cheap to encode, realistic to decode), ``seconds`` long."""
    x = np.linspace(0, 255, width, dtype=np.float32)[None, :, None]
    y = np.linspace(0, 255, height, dtype=np.float32)[:, None, None]
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(int(seconds * fps)):
            img = ((x + y * 0.5 + 7 * i + np.array([0, 85, 170])) % 256).astype(np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
        container.mux(stream.encode())
    return path


def _rate(clips: int, seconds: float) -> float:
    return clips / max(seconds, 1e-9)


def reference_loop(work: list[VideoWork], model: torch.nn.Module, cfg: ExtractConfig, sampler, out: Path) -> float:
    """Clips/s of the plain loop: per video a decord reader, per clip one ``get_batch`` + transform + forward,
    then one ``torch.save`` of the video's features (same sampling, transform and model as the pipeline)."""
    transform = make_transform(cfg, torch.device("cpu"))
    out.mkdir()
    clips = 0
    start = time.perf_counter()
    for w in work:
        size = resized_size(w.info.width, w.info.height, cfg.preprocess.short_side) if cfg.preprocess.resize == "decoder" else (-1, -1)
        reader = decord.VideoReader(str(w.path), ctx=decord.cpu(0), width=size[0], height=size[1])
        starts = reader.get_frame_timestamp(np.arange(len(reader)))[:, 0]
        feats = []
        for i in range(w.num_clips):
            index = sampler.frame_indices(np.array([i]), starts - starts[0], w.info.fps)[0]
            frames = torch.from_numpy(reader.get_batch(index.tolist()).asnumpy())
            with torch.inference_mode():
                feats.append(model(transform(frames[None])).reshape(-1))
        torch.save(torch.stack(feats), out / f"{w.video_id}.pt")
        clips += w.num_clips
    return _rate(clips, time.perf_counter() - start)


def backbone_ratio(frames: list, cfg: ExtractConfig, batches: int) -> float:
    """Clips/s of full-width TAda2D-R50 over torchvision ResNet-50 (per frame) on the same model inputs."""
    transform = make_transform(cfg, torch.device("cpu"))
    inputs = [torch.cat([transform(chunk) for chunk in batch]) for batch in frames[:batches]]
    tada = BACKBONES["tada2d_r50"]().eval()
    resnet = torchvision.models.resnet50().eval()

    def per_frame(x: torch.Tensor) -> torch.Tensor:
        n, c, t, h, w = x.shape
        return resnet(x.transpose(1, 2).reshape(n * t, c, h, w))

    rates = []
    for net in (tada, per_frame):
        with torch.inference_mode():
            net(inputs[0])  # warm-up
            start = time.perf_counter()
            for x in inputs:
                net(x)
        rates.append(_rate(sum(len(x) for x in inputs), time.perf_counter() - start))
    print(f"model_only_full_width: tada2d_r50 {rates[0]:.2f} clips/s, resnet50 per frame {rates[1]:.2f} clips/s "
          f"({len(inputs)} batches)")
    return rates[0] / rates[1]


def bench_throughput(args: argparse.Namespace, root: Path) -> tuple[float, float, float, float, float]:
    paths = [write_video(root / f"v{i}.mp4", args.seconds, args.fps, *args.size) for i in range(args.videos)]
    overrides = [f"run.batch_size={args.batch_size}", "run.device=cpu", *args.set]
    if args.workers is not None:
        overrides.append(f"run.workers={args.workers}")
    cfg = resolve_config(load_config(ExtractConfig, None, overrides, base=preset_path(args.preset)), cuda=False)
    torch.set_num_threads(model_threads(cfg.run.workers))  # the split of cores extract-features makes on CPU
    sampler = make_sampler(cfg)
    work = []
    for path, info, reason in sorted(probe_videos(paths, workers=2, timeout_s=120), key=lambda r: r[0].name):
        if info is None:
            raise RuntimeError(reason)
        work.append(VideoWork(path.stem, path, info, sampler.num_clips(info.duration_s)))
    total = sum(w.num_clips for w in work)
    device = torch.device("cpu")
    model = load_model(cfg, None, device)
    parts = root / "parts"
    parts.mkdir()
    (parts / "failed").mkdir()

    start = time.perf_counter()
    frames = [batch.frames for batch in make_loader(work, cfg, sampler, parts, device, decode_workers(cfg, device))]
    decode = _rate(total, time.perf_counter() - start)

    step = ExtractStep(model, make_transform(cfg, device), cfg, sampler, parts, device)
    for batch in frames:  # warm-up: the backend builds its kernels once per batch shape
        step.forward(batch)
    start = time.perf_counter()
    for batch in frames:
        step.forward(batch)
    model_only = _rate(total, time.perf_counter() - start)
    ratio = backbone_ratio(frames, cfg, args.ratio_batches)
    del frames

    start = time.perf_counter()
    extract_videos(work, model, cfg, sampler, device, parts, show_progress=False)
    end_to_end = _rate(total, time.perf_counter() - start)
    print(f"videos: {len(work)} x {args.seconds:g} s at {args.size[0]}x{args.size[1]}/{args.fps} fps, {total} clips, "
          f"preset {args.preset}, batch {cfg.run.batch_size}, workers {cfg.run.workers}, torch threads {torch.get_num_threads()}")
    print(f"end_to_end_clips_per_s: {end_to_end:.1f}")
    print(f"model_only_clips_per_s: {model_only:.1f}")
    print(f"decode_only_clips_per_s: {decode:.1f}")
    threads = torch.get_num_threads()
    torch.set_num_threads(len(os.sched_getaffinity(0)))  # the plain loop decodes in-process: the model gets every core
    loop = reference_loop(work, model, cfg, sampler, root / "loop")
    torch.set_num_threads(threads)
    print(f"reference_loop_clips_per_s: {loop:.1f}")
    return end_to_end, model_only, decode, loop, ratio


def peak_rss_mib(video: Path, args: argparse.Namespace, out: Path) -> tuple[float, float]:
    """Peak RSS (MiB) of a fresh CLI process on ``video``, and of its largest child (decode/probe worker)."""
    code = (
        "import resource, sys\n"
        "from feature_extraction.cli import main\n"
        f"rc = main([{str(video.parent)!r}, '-o', {str(out)!r}, '--preset', {args.preset!r}, '--device', 'cpu', "
        f"'--batch-size', '{args.batch_size}', *{(['--workers', str(args.workers)] if args.workers is not None else [])!r}, "
        f"'--video-list', {str(out) + '.list'!r}, *{args.set!r}])\n"
        "own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024\n"
        "kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024\n"
        "print(f'{own} {kids}'); sys.exit(rc)\n"
    )
    Path(str(out) + ".list").write_text(video.stem + "\n")
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT)
    if done.returncode != 0:
        raise RuntimeError(f"RSS run on {video} failed:\n{done.stderr[-2000:]}")
    own, kids = map(float, done.stdout.split()[-2:])
    return own, kids


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="demo")
    p.add_argument("--videos", type=int, default=6, help="generated videos for the throughput runs")
    p.add_argument("--seconds", type=float, default=120.0, help="length of each throughput video")
    p.add_argument("--size", type=int, nargs=2, default=(160, 120), metavar=("W", "H"))
    p.add_argument("--fps", type=int, default=15)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--workers", type=int, default=None, help="decode workers (default: the preset's run.workers)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override (repeatable)")
    p.add_argument("--rss-minutes", type=float, nargs=2, default=(1.0, 10.0), metavar=("SHORT", "LONG"))
    p.add_argument("--skip-rss", action="store_true")
    p.add_argument("--ratio-batches", type=int, default=2, help="batches for the full-width TAda2D / ResNet-50 ratio")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench_extract_") as tmp:
        root = Path(tmp)
        (root / "tp").mkdir()
        end_to_end, model_only, decode, loop, ratio = bench_throughput(args, root / "tp")
        if not args.skip_rss:
            peaks = []
            for minutes in args.rss_minutes:
                folder = root / f"rss_{minutes:g}"
                folder.mkdir()
                video = write_video(folder / f"long_{minutes:g}min.mp4", minutes * 60, args.fps, *args.size)
                own, kids = peak_rss_mib(video, args, root / f"rss_{minutes:g}.h5")
                peaks.append(own)
                print(f"peak_rss_{minutes:g}min: main {own:.0f} MiB, largest worker {kids:.0f} MiB")
            print(f"peak_rss_ratio_long_over_short: {peaks[1] / peaks[0]:.2f}")
    print(f"speedup_vs_reference_loop: {end_to_end / loop:.2f}")
    print(f"tada2d_vs_resnet50: {ratio:.2f}")
    print(f"pipeline_efficiency: {end_to_end / min(model_only, decode):.2f}")


if __name__ == "__main__":
    main()
