"""GPU check of ``extract-features`` (driven by ``scripts/gpu_check.sh``): does CUDA extraction run, how fast, and does
it give the CPU's features?

On generated videos, with the ``hacs`` preset at full width (TAda2D-R50, 2048-d, random weights seeded as on CPU):

1. CPU fp32 on two of the videos: the reference;
2. CUDA fp32 and CUDA bf16 (the model runs channels_last on CUDA), one process, every video: clips/s and peak
   GPU memory;
3. ``torchrun --nproc_per_node=2`` in bf16 on the GPU(s) present (with one GPU both ranks share it);

then the max |diff| of every CUDA run against the CPU features of the same clips. Exit status 1 when a run fails
or a CUDA result is further from the CPU than bf16 allows (:data:`BF16_TOLERANCE`), 2 without CUDA.

``--cpu-dry-run`` does all of this on the CPU with a thin model and tiny videos ("cuda" runs become CPU runs),
so the script itself can be checked where there is no GPU (``tests/test_gpu_check.py`` runs it).
"""
from __future__ import annotations

import argparse
import contextlib
import io
import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import av
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from feature_extraction.cli import main as extract_main  # noqa: E402
from tal_common.h5 import FeatureFileError, FeatureReader  # noqa: E402


@dataclass(frozen=True)
class Tolerance:
    """How far a result may be from the reference: ``max|diff| <= rel * max|reference|`` and every row's cosine."""

    rel: float
    min_cosine: float


# bf16 keeps 8 significant bits (relative step 2**-8 = 0.4 %); through the ~50 layers of TAda2D-R50 under autocast
# the pooled features of a random-init model stay within a few percent of fp32 and point the same way.
BF16_TOLERANCE = Tolerance(rel=0.05, min_cosine=0.995)


@dataclass(frozen=True)
class Comparison:
    """``candidate`` against ``reference`` over the reference's videos: ``clips`` rows compared."""

    videos: int
    clips: int
    max_abs_diff: float
    scale: float  # max |reference|
    min_cosine: float

    @property
    def rel(self) -> float:
        return self.max_abs_diff / self.scale if self.scale > 0 else float("inf")

    def within(self, tol: Tolerance) -> bool:
        return self.rel <= tol.rel and self.min_cosine >= tol.min_cosine


def compare_features(reference: Path, candidate: Path) -> Comparison:
    """Compare every video of ``reference`` with the same video in ``candidate`` (rows ``(num_clips, dim)``).

    A video missing from ``candidate`` or with another shape is a ``FeatureFileError`` naming it and both files.
    """
    ref, cand = FeatureReader(reference), FeatureReader(candidate)
    try:
        ids = ref.video_ids()
        if not ids:
            raise FeatureFileError(f"{reference}: no videos to compare")
        max_abs, scale, min_cos, clips = 0.0, 0.0, 1.0, 0
        for vid in ids:
            if vid not in cand:
                raise FeatureFileError(f"{candidate}: video {vid!r} of {reference} is missing")
            a, _ = ref.read(vid)
            b, _ = cand.read(vid)
            if a.shape != b.shape:
                raise FeatureFileError(f"video {vid!r}: {reference} has {a.shape}, {candidate} has {b.shape}")
            a64, b64 = a.astype(np.float64), b.astype(np.float64)
            max_abs = max(max_abs, float(np.abs(a64 - b64).max()))
            scale = max(scale, float(np.abs(a64).max()))
            norms = np.linalg.norm(a64, axis=1) * np.linalg.norm(b64, axis=1)
            cos = np.where(norms > 0, (a64 * b64).sum(axis=1) / np.where(norms > 0, norms, 1.0), 1.0)
            min_cos = min(min_cos, float(cos.min()))
            clips += a.shape[0]
        return Comparison(len(ids), clips, max_abs, scale, min_cos)
    finally:
        ref.close()
        cand.close()


def write_video(path: Path, seconds: float, fps: int, size: tuple[int, int], seed: int) -> None:
    """An H.264 video of moving coloured blocks (features change along it), ``size`` = (width, height)."""
    width, height = size
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, (height // 16 + 2, width // 16 + 2, 3), dtype=np.uint8)
    base = np.kron(blocks, np.ones((16, 16, 1), dtype=np.uint8))
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for t in range(int(seconds * fps)):
            dy, dx = (t * 2) % 16, (t * 3) % 16
            img = np.ascontiguousarray(base[dy:dy + height, dx:dx + width])
            container.mux(stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
        container.mux(stream.encode())


@dataclass(frozen=True)
class Plan:
    """What to run: video sizes and lengths, extra config overrides, the device of the "cuda" runs."""

    videos: tuple[tuple[str, float, tuple[int, int]], ...]  # (id, seconds, (width, height))
    reference_videos: tuple[str, ...]
    overrides: tuple[str, ...]
    device: str


FULL = Plan(
    # about 340 clips in all, so clips/s is not only start-up; the CPU reference takes the two short ones (~27 clips)
    videos=(("land_a", 8.0, (640, 360)), ("portrait", 8.5, (360, 640)), ("land_b", 30.0, (640, 360)),
            ("land_c", 40.0, (640, 360)), ("land_d", 45.0, (480, 360)), ("land_e", 60.0, (640, 480))),
    reference_videos=("land_a", "portrait"),
    overrides=(),
    device="cuda",
)
# No portrait here: decord's decoder-side resize fails on small portrait frames (issue 11, item 1).
DRY_RUN = Plan(
    videos=(("land_a", 3.0, (96, 72)), ("land_b", 3.5, (80, 64)), ("land_c", 4.0, (96, 72))),
    reference_videos=("land_a", "land_b"),
    overrides=("model.base_width=8", "preprocess.short_side=64", "preprocess.crop_size=64", "run.batch_size=4",
               "run.probe_workers=2"),
    device="cpu",
)


@dataclass(frozen=True)
class Run:
    name: str
    output: Path
    rc: int
    seconds: float
    clips: int
    peak_gib: float | None  # peak GPU memory allocated (one-process CUDA runs)

    @property
    def clips_per_s(self) -> float:
        return self.clips / self.seconds if self.seconds > 0 else 0.0


def _clips(path: Path) -> int:
    if not path.is_file():
        return 0
    reader = FeatureReader(path)
    try:
        return sum(reader.read(vid)[0].shape[0] for vid in reader.video_ids())
    finally:
        reader.close()


def _common_args(videos: Path, out: Path, plan: Plan, workers: int) -> list[str]:
    args = [str(videos), "-o", str(out), "--preset", "hacs", "--weights", "random", "--workers", str(workers)]
    for override in plan.overrides:
        args += ["--set", override]
    return args


def run_in_process(name: str, args: list[str], out: Path, cuda: bool) -> Run:
    """One ``extract-features`` run in this process (so its peak GPU memory can be read)."""
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        rc = extract_main(args)
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else None
    return Run(name, out, rc, seconds, _clips(out), peak)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_torchrun(name: str, args: list[str], out: Path, nproc: int) -> Run:
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", f"--master_port={_free_port()}",
           "-m", "feature_extraction.cli", *args]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        print(done.stderr[-4000:], file=sys.stderr)
    return Run(name, out, done.returncode, seconds, _clips(out), None)


def check(plan: Plan, work: Path) -> int:
    """Generate the videos, run every extraction, compare with the CPU; returns the exit status."""
    t0 = time.perf_counter()
    cuda = plan.device == "cuda"
    videos = work / "videos"
    videos.mkdir(parents=True, exist_ok=True)
    for i, (vid, seconds, size) in enumerate(plan.videos):
        if not (videos / f"{vid}.mp4").exists():
            write_video(videos / f"{vid}.mp4", seconds, 30, size, seed=i)
    feats = work / "features"
    shutil.rmtree(feats, ignore_errors=True)  # every run starts from nothing (no resume)
    feats.mkdir()
    subset = work / "reference_videos.txt"
    subset.write_text("".join(f"{vid}\n" for vid in plan.reference_videos))
    workers = max(1, min(8, (os.cpu_count() or 2) - 2))
    gpus = torch.cuda.device_count() if cuda else 0
    print(f"gpu_check: {len(plan.videos)} videos in {videos}; device {plan.device}"
          + (f" ({gpus} x {torch.cuda.get_device_name(0)})" if cuda else " (dry run)") + f"; {workers} decode workers")

    def args(name: str, *extra: str) -> tuple[list[str], Path]:
        out = feats / f"{name}.h5"
        return _common_args(videos, out, plan, workers) + list(extra), out

    a, out = args("cpu_fp32", "--device", "cpu", "--set", "model.precision=fp32", "--video-list", str(subset))
    runs = [run_in_process("cpu fp32 (reference)", a, out, cuda=False)]
    a, out = args("cuda_fp32", "--device", plan.device, "--set", "model.precision=fp32")
    runs.append(run_in_process(f"{plan.device} fp32", a, out, cuda))
    a, out = args("cuda_bf16", "--device", plan.device, "--bf16")
    runs.append(run_in_process(f"{plan.device} bf16", a, out, cuda))
    a, out = args("torchrun2_bf16", "--device", plan.device, "--bf16")
    shared = f", {gpus} GPU(s) shared" if cuda and gpus < 2 else ""
    runs.append(run_torchrun(f"torchrun 2 ranks bf16{shared}", a, out, nproc=2))

    failed = False
    print(f"\n{'run':<36} {'rc':>3} {'clips':>6} {'s':>7} {'clips/s':>8} {'peak GiB':>9}")
    for run in runs:
        peak = f"{run.peak_gib:9.2f}" if run.peak_gib is not None else f"{'-':>9}"
        print(f"{run.name:<36} {run.rc:>3} {run.clips:>6} {run.seconds:7.1f} {run.clips_per_s:8.2f} {peak}")
        failed |= run.rc != 0
    if failed:
        print("gpu_check: FAILED: an extraction run did not succeed (see above)", file=sys.stderr)
        return 1

    reference = runs[0].output
    print(f"\nagainst {runs[0].name}, tolerance max|diff| <= {BF16_TOLERANCE.rel:g} x max|ref| and cosine >= "
          f"{BF16_TOLERANCE.min_cosine:g}:")
    for run in runs[1:]:
        c = compare_features(reference, run.output)
        verdict = "ok" if c.within(BF16_TOLERANCE) else "BEYOND bf16 TOLERANCE"
        print(f"  {run.name:<34} {c.clips} clips  max|diff| {c.max_abs_diff:.3g}  (scale {c.scale:.3g}, "
              f"rel {c.rel:.2e})  min cosine {c.min_cosine:.6f}  {verdict}")
        failed |= not c.within(BF16_TOLERANCE)
    c = compare_features(runs[2].output, runs[3].output)
    print(f"  torchrun vs one process (bf16): max|diff| {c.max_abs_diff:.3g} over {c.clips} clips")
    print(f"\ngpu_check: {'FAILED' if failed else 'passed'} in {time.perf_counter() - t0:.0f} s")
    return int(failed)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cpu-dry-run", action="store_true", help="run every step on the CPU with a thin model and tiny videos")
    p.add_argument("--work-dir", type=Path, default=ROOT / "gpu_check_out", help="videos and feature files go here")
    args = p.parse_args(argv)
    if not args.cpu_dry_run and not torch.cuda.is_available():
        print("gpu_check: no CUDA device is visible (torch.cuda.is_available() is False); on a machine without a GPU "
              "run scripts/gpu_check.sh --cpu-dry-run to check the script itself", file=sys.stderr)
        return 2
    return check(DRY_RUN if args.cpu_dry_run else FULL, args.work_dir)


if __name__ == "__main__":
    sys.exit(main())
