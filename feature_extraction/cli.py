"""``extract-features``: videos -> one HDF5 file of clip features (see DESIGN.md, "HDF5 layout").

Usage::

    extract-features VIDEO_DIR [VIDEO_DIR ...] -o features.h5 --preset hacs [--weights PATH] ...
    extract-features inspect features.h5
    extract-features verify features.h5 --videos VIDEO_DIR

Run under ``torchrun --nproc_per_node=N -m feature_extraction.cli ...`` to shard the videos across
ranks. How a run survives crashes:

* every finished video is published as its own small file in ``<out>.parts/`` (written to a
  temporary name, fsynced, renamed), every failed one as a JSON record there;
* a rerun of the same command skips the videos already in ``<out>`` or in ``<out>.parts/`` and
  retries the failed ones;
* rank 0 assembles ``<out>`` from the previous ``<out>`` and the parts into ``<out>.tmp``, renames it
  onto ``<out>``, writes ``<out>.failures.jsonl`` and only then removes ``<out>.parts/``.

A ``kill -9`` at any instant therefore leaves the previous ``<out>`` (or none) plus complete parts.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import hashlib
import json
import os
import shutil
import sys
from dataclasses import dataclass, field, replace
from fractions import Fraction
from pathlib import Path
from typing import Iterator, Literal, Sequence

import h5py
import numpy as np
import torch
import torch.distributed as dist
import yaml
from torch.utils.data import DataLoader
from tqdm import tqdm

from feature_extraction.backbones import BACKBONES, build_model
from feature_extraction.clips import ClipSampler, to_fraction
from feature_extraction.dataset import ClipBatch, ClipDataset, VideoWork, collate_chunks, interleaved_batches
from feature_extraction.h5 import FeatureReader, VideoPartWriter, assemble_file, durable_replace
from feature_extraction.video import VIDEO_EXTENSIONS, VideoInfo, find_videos, probe_videos
from feature_extraction.weights import get_weights_spec
from tal_common.config import ConfigError, add_config_args, config_to_dict, config_to_yaml, load_config

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs" / "extract"
PRESETS = ("hacs", "ek100", "demo")
SUBCOMMANDS = ("extract", "inspect", "verify")


# --------------------------------------------------------------------------- configuration


@dataclass
class SamplingConfig:
    """Clip sampling on the source timeline; ``None`` takes the weights' value."""

    sample_fps: float | str = 30
    clip_len: int | None = None
    frame_interval: int | None = None
    stride: int = 16


@dataclass
class PreprocessConfig:
    """Frame preparation; ``None`` takes the weights' value. ``crops``: 1 (centre) or 3 (left/centre/right)."""

    short_side: int | None = None
    crop_size: int | None = None
    crops: Literal[1, 3] = 1
    mean: list[float] | None = None
    std: list[float] | None = None


@dataclass
class ModelConfig:
    """Backbone and named weights choice (``random`` builds ``base_width`` from ``seed``)."""

    backbone: Literal["tada2d_r50", "tadaconvnext_tiny"] = "tada2d_r50"
    weights: str = "official-k400"
    base_width: int | None = None
    precision: Literal["auto", "fp32", "fp16", "bf16"] = "auto"
    seed: int = 0


@dataclass
class RunConfig:
    """Execution knobs (they do not change the features)."""

    device: Literal["auto", "cpu", "cuda"] = "auto"
    batch_size: int = 32
    workers: int = 4
    chunk_clips: int = 4
    probe_workers: int = 4
    probe_timeout_s: float = 120.0
    decode_timeout_s: float = 600.0
    compression: str | None = None


@dataclass
class ExtractConfig:
    """A resolved extraction config (what the HDF5 file records)."""

    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    run: RunConfig = field(default_factory=RunConfig)


def preset_path(name: str) -> Path:
    """The YAML file of preset ``name`` in the package's ``configs/extract``."""
    path = CONFIG_DIR / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"preset {name!r} not found at {path}")
    return path


def resolve_config(cfg: ExtractConfig, cuda: bool) -> ExtractConfig:
    """Fill every ``None`` from the weights' preprocessing and ``auto`` precision from the device."""
    pre = get_weights_spec(cfg.model.backbone, cfg.model.weights).preprocessing
    sampling = replace(
        cfg.sampling,
        clip_len=cfg.sampling.clip_len or pre.clip_len,
        frame_interval=cfg.sampling.frame_interval or pre.frame_interval,
    )
    preprocess = replace(
        cfg.preprocess,
        short_side=cfg.preprocess.short_side or pre.short_side,
        crop_size=cfg.preprocess.crop_size or min(pre.crop_size, cfg.preprocess.short_side or pre.crop_size),
        mean=list(cfg.preprocess.mean or pre.mean),
        std=list(cfg.preprocess.std or pre.std),
    )
    precision = cfg.model.precision
    if precision == "auto":
        precision = "bf16" if cuda and torch.cuda.is_bf16_supported() else "fp32"
    if cfg.model.base_width is not None and (cfg.model.weights != "random" or cfg.model.backbone != "tada2d_r50"):
        raise ConfigError("model.base_width applies only to tada2d_r50 with weights 'random' (checkpoints fix their width)")
    resolved = replace(cfg, sampling=sampling, preprocess=preprocess, model=replace(cfg.model, precision=precision))
    if resolved.preprocess.crop_size > resolved.preprocess.short_side:
        raise ConfigError(f"preprocess.crop_size {resolved.preprocess.crop_size} exceeds preprocess.short_side {resolved.preprocess.short_side}")
    if len(resolved.preprocess.mean) != 3 or len(resolved.preprocess.std) != 3:
        raise ConfigError("preprocess.mean and preprocess.std need 3 values (RGB)")
    for name in ("batch_size", "workers", "chunk_clips", "probe_workers"):
        if getattr(cfg.run, name) < (0 if name == "workers" else 1):
            raise ConfigError(f"run.{name} must be positive, got {getattr(cfg.run, name)}")
    return resolved


def make_sampler(cfg: ExtractConfig) -> ClipSampler:
    """The clip sampler of a resolved config."""
    s = cfg.sampling
    return ClipSampler(to_fraction(s.sample_fps), int(s.clip_len), int(s.frame_interval), s.stride)


def feature_identity(cfg: ExtractConfig, weights_sha256: str) -> dict:
    """What must match for two runs' features to belong in one file (everything except ``run``)."""
    plain = config_to_dict(cfg)
    plain.pop("run")
    return {"config": plain, "weights_sha256": weights_sha256}


# --------------------------------------------------------------------------- argument parsing


def _extract_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="extract-features",
        description="Extract TAdaConv clip features from videos into one HDF5 file (resumable). "
        "Also: 'extract-features inspect F.h5', 'extract-features verify F.h5 --videos DIR'.",
    )
    p.add_argument("video_dirs", nargs="+", type=Path, metavar="VIDEO_DIR", help="folders searched recursively for videos")
    p.add_argument("-o", "--output", type=Path, required=True, help="output HDF5 file")
    p.add_argument("--preset", choices=PRESETS, required=True, help="extraction preset (configs/extract/PRESET.yaml)")
    add_config_args(p)
    p.add_argument("--weights", default=None, help="checkpoint file or folder for the preset's weights, or 'random'")
    p.add_argument("--video-list", type=Path, default=None, help="only these video ids / file names (one per line)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default=None)
    p.add_argument("--batch-size", type=int, default=None, help="clips per model batch")
    p.add_argument("--workers", type=int, default=None, help="decoding worker processes")
    precision = p.add_mutually_exclusive_group()
    precision.add_argument("--fp16", action="store_const", const="fp16", dest="precision")
    precision.add_argument("--bf16", action="store_const", const="bf16", dest="precision")
    return p


def _inspect_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="extract-features inspect", description="Summarise a feature file.")
    p.add_argument("features", type=Path)
    return p


def _verify_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="extract-features verify",
        description="Check every video is present with the clip count its duration implies (exit 1 otherwise).",
    )
    p.add_argument("features", type=Path)
    p.add_argument("--videos", nargs="+", type=Path, required=True, metavar="DIR")
    p.add_argument("--video-list", type=Path, default=None)
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--probe-timeout-s", type=float, default=120.0)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (0: every video done, 1: some failed, 2: usage/config error)."""
    args = list(sys.argv[1:] if argv is None else argv)
    command = args.pop(0) if args and args[0] in SUBCOMMANDS else "extract"
    try:
        if command == "inspect":
            return inspect_file(_inspect_parser().parse_args(args).features)
        if command == "verify":
            a = _verify_parser().parse_args(args)
            return verify_file(a.features, a.videos, a.video_list, a.workers, a.probe_timeout_s)
        return run_extract(_extract_parser().parse_args(args))
    except (ConfigError, FileNotFoundError, ValueError) as exc:
        print(f"extract-features: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("extract-features: interrupted; finished videos are kept, rerun the same command to resume", file=sys.stderr)
        return 130


# --------------------------------------------------------------------------- extraction


@dataclass
class _Failure:
    video_id: str
    path: str
    reason: str


class _Dist:
    """Rank/world of this process; a no-op for single-process runs."""

    def __init__(self, cuda: bool) -> None:
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if self.world > 1 and not dist.is_initialized():
            # Ranks wait for each other at the end: allow for shards that finish far apart.
            dist.init_process_group("nccl" if cuda else "gloo", timeout=dt.timedelta(hours=24))

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def gather(self, obj: object) -> list:
        if self.world == 1:
            return [obj]
        out: list = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def close(self) -> None:
        if self.world > 1 and dist.is_initialized():
            dist.destroy_process_group()


def run_extract(args: argparse.Namespace) -> int:
    """The ``extract`` command: configure, find/probe/shard videos, extract, assemble."""
    overrides = list(args.overrides)
    for key, value in (("run.device", args.device), ("run.batch_size", args.batch_size), ("run.workers", args.workers),
                       ("model.precision", args.precision)):
        if value is not None:
            overrides.append(f"{key}={value}")
    weights_path = args.weights
    if weights_path == "random":
        overrides.append("model.weights=random")
        weights_path = None
    cfg = load_config(ExtractConfig, args.config, overrides, base=preset_path(args.preset))
    cuda = _want_cuda(cfg.run.device)
    cfg = resolve_config(cfg, cuda)
    spec = get_weights_spec(cfg.model.backbone, cfg.model.weights)
    try:
        checkpoint = spec.locate(weights_path)
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"preset {args.preset!r}: {exc}; pass it with --weights PATH (or --weights random for a random init)") from exc
    videos = find_videos(args.video_dirs, args.video_list)  # duplicate ids fail here, before any work
    if not videos:
        raise ValueError(f"no videos ({', '.join(VIDEO_EXTENSIONS)}) found under {', '.join(map(str, args.video_dirs))}")
    sha = _sha256(checkpoint) if checkpoint is not None else ""
    provenance = (cfg.model.backbone, str(checkpoint) if checkpoint is not None else f"random (seed {cfg.model.seed})", sha)
    env = _Dist(cuda)
    try:
        return _extract(cfg, env, videos, args.output.resolve(), checkpoint, provenance)
    finally:
        env.close()


def _want_cuda(device: str) -> bool:
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("run.device=cuda but no CUDA device is available")
    return device == "cuda" or (device == "auto" and torch.cuda.is_available())


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _extract(cfg: ExtractConfig, env: _Dist, videos: dict[str, Path], out: Path, checkpoint: Path | None,
             provenance: tuple[str, str, str]) -> int:
    parts = out.with_name(out.name + ".parts")
    identity = feature_identity(cfg, provenance[2])
    if env.rank == 0:
        _prepare_workdir(out, parts, identity)
    env.barrier()
    done = _finished_ids(out, parts)
    todo = [vid for vid in videos if vid not in done]
    env.barrier()  # every rank has listed the finished videos before any new part appears

    sampler = make_sampler(cfg)
    probed = _probe_shard(todo[env.rank :: env.world], videos, cfg, parts)
    infos: dict[str, VideoInfo] = {}
    for shard in env.gather(probed):
        infos.update(shard)
    mine = shard_by_duration({vid: infos[vid].duration_s for vid in sorted(infos)}, env.world)[env.rank]
    work = [VideoWork(vid, videos[vid], infos[vid], sampler.num_clips(infos[vid].duration_s)) for vid in mine]
    if env.rank == 0:
        print(f"extract-features: {len(videos)} videos, {len(done)} already done, {len(todo)} to do "
              f"({len(todo) - len(infos)} failed probing), {env.world} rank(s)", file=sys.stderr)

    device = torch.device(f"cuda:{env.local_rank}" if _want_cuda(cfg.run.device) else "cpu")
    if device.type == "cpu" and "OMP_NUM_THREADS" not in os.environ:  # torchrun sets it for several ranks
        torch.set_num_threads(model_threads(cfg.run.workers))
    model = load_model(cfg, checkpoint, device)
    extract_videos(work, model, cfg, sampler, device, parts, show_progress=env.rank == 0)
    env.barrier()
    failed = 0
    if env.rank == 0:
        failed = _assemble(out, parts, videos, cfg, provenance)
    return int(max(env.gather(failed)) > 0)


def _prepare_workdir(out: Path, parts: Path, identity: dict) -> None:
    """Create ``parts``; refuse to mix features of another config/weights; drop stale temporary files."""
    stamp = parts / "run.json"
    if out.exists():
        previous = _file_identity(out)
        if previous != identity:
            raise ValueError(f"{out} exists with features of another config or weights; choose another -o or remove it")
    if stamp.exists():
        if json.loads(stamp.read_text()) != identity:
            raise ValueError(f"{parts} holds an unfinished run with another config or weights; remove it or use another -o")
    else:
        parts.mkdir(parents=True, exist_ok=True)
        (parts / "failed").mkdir(exist_ok=True)
        tmp = parts / "run.json.tmp"
        tmp.write_text(json.dumps(identity, indent=1, sort_keys=True))
        durable_replace(tmp, stamp)
    for stale in list(parts.glob("*.tmp")) + list(parts.glob("hung/*")):
        stale.unlink()
    for record in (parts / "failed").glob("*.json"):
        record.unlink()  # failed videos are retried


def _file_identity(out: Path) -> dict:
    reader = FeatureReader(out)
    attrs = reader.file_attrs()
    reader.close()
    try:
        plain = yaml.safe_load(attrs["config"])
        plain.pop("run", None)
        return {"config": plain, "weights_sha256": attrs["weights_sha256"]}
    except (KeyError, AttributeError, yaml.YAMLError) as exc:
        raise ValueError(f"{out}: not a feature file written by extract-features (no readable config attribute)") from exc


def _finished_ids(out: Path, parts: Path) -> set[str]:
    done = {p.name[: -len(".h5")] for p in parts.glob("*.h5")}
    if out.exists():
        reader = FeatureReader(out)
        done.update(reader.video_ids())
        reader.close()
    return done


def _probe_shard(ids: Sequence[str], videos: dict[str, Path], cfg: ExtractConfig, parts: Path) -> dict[str, VideoInfo]:
    """Probe this rank's share of the videos; failures are recorded in ``parts/failed``."""
    by_path = {videos[vid]: vid for vid in ids}
    infos: dict[str, VideoInfo] = {}
    for path, info, reason in probe_videos(list(by_path), workers=cfg.run.probe_workers, timeout_s=cfg.run.probe_timeout_s):
        if info is None:
            _record_failure(parts, _Failure(by_path[path], str(path), reason or "probe failed"))
        else:
            infos[by_path[path]] = info
    return infos


def shard_by_duration(durations: dict[str, float], world: int) -> list[list[str]]:
    """Split video ids across ``world`` ranks, greedy longest-first onto the least-loaded rank.

    Deterministic for a given input (ties broken by id, then by rank); each shard comes back sorted.
    """
    loads = [0.0] * world
    shards: list[list[str]] = [[] for _ in range(world)]
    for vid in sorted(durations, key=lambda v: (-durations[v], v)):
        rank = min(range(world), key=lambda r: (loads[r], r))
        shards[rank].append(vid)
        loads[rank] += durations[vid]
    return [sorted(s) for s in shards]


def _record_failure(parts: Path, failure: _Failure) -> None:
    tmp = parts / "failed" / f"{failure.video_id}.json.tmp"
    tmp.write_text(json.dumps({"video": failure.video_id, "path": failure.path, "reason": failure.reason}))
    durable_replace(tmp, tmp.with_suffix(""))


def model_threads(workers: int) -> int:
    """Torch threads for the model on CPU: the cores left once each decode worker has one.

    Decode workers and the model share the CPU; more threads than cores makes both spin and wait.
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores - workers)


def load_model(cfg: ExtractConfig, checkpoint: Path | None, device: torch.device) -> torch.nn.Module:
    """The backbone of a resolved config in eval mode on ``device`` (random init seeded by ``model.seed``)."""
    if checkpoint is None:
        torch.manual_seed(cfg.model.seed)
        kwargs = {"base_width": cfg.model.base_width} if cfg.model.base_width is not None else {}
        model = BACKBONES[cfg.model.backbone](**kwargs)
    else:
        model, _ = build_model(cfg.model.backbone, cfg.model.weights, weights_path=checkpoint)
    model = model.eval().to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last_3d)
    return model


class Normalizer:
    """uint8 ``(N, crops, T, S, S, 3)`` on any device -> normalised float ``(N * crops, 3, T, S, S)``."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], device: torch.device) -> None:
        self.mean = torch.tensor(mean, device=device).view(1, 3, 1, 1, 1) * 255
        self.scale = 1 / (torch.tensor(std, device=device).view(1, 3, 1, 1, 1) * 255)

    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        n, crops, t, h, w, c = frames.shape
        x = frames.reshape(n * crops, t, h, w, c).permute(0, 4, 1, 2, 3).float()
        return (x - self.mean) * self.scale


def extract_videos(work: list[VideoWork], model: torch.nn.Module, cfg: ExtractConfig, sampler: ClipSampler,
                    device: torch.device, parts: Path, show_progress: bool) -> None:
    """Extract every video of ``work`` into ``parts/<id>.h5``; failures into ``parts/failed``.

    A worker killed by the hang watchdog leaves the hung video's id in ``parts/hung``: that video is
    recorded as failed and the loader restarts on the videos not finished yet.
    """
    step = ExtractStep(model, Normalizer(cfg.preprocess.mean, cfg.preprocess.std, device), cfg, sampler, parts, device)
    step.bar = tqdm(total=sum(w.num_clips for w in work), unit="clip", disable=not show_progress,
                    dynamic_ncols=True, mininterval=1.0, desc="extract")
    remaining = list(work)
    try:
        while remaining:
            step.start(remaining)
            try:
                for batch in make_loader(remaining, cfg, sampler, parts, device):
                    step(batch)
                remaining = []
            except RuntimeError:
                hung = sorted(p.name for p in (parts / "hung").glob("*"))
                if not hung:
                    raise
                for work_item in remaining:
                    if work_item.video_id in hung:
                        step.fail(work_item, f"decode timed out after {cfg.run.decode_timeout_s:g} s")
                        (parts / "hung" / work_item.video_id).unlink()
                remaining = step.unfinished()
            finally:
                step.abort_open()
    finally:
        step.bar.close()
    if show_progress:
        print(f"extract-features: rank done: {step.committed} videos written, {step.failed} failed", file=sys.stderr)


def make_loader(work: list[VideoWork], cfg: ExtractConfig, sampler: ClipSampler, parts: Path,
            device: torch.device) -> DataLoader:
    """Decode ``work`` in ``run.workers`` processes; batches of ``run.batch_size`` clips mixing videos."""
    run = cfg.run
    dataset = ClipDataset(
        work, sampler, short_side=cfg.preprocess.short_side, crop_size=cfg.preprocess.crop_size,
        crops=cfg.preprocess.crops, chunk_clips=min(run.chunk_clips, run.batch_size),
        decode_timeout_s=run.decode_timeout_s, hang_dir=parts / "hung",
    )
    batches = interleaved_batches(dataset.chunks, run.batch_size, max(1, run.workers))
    return DataLoader(dataset, batch_sampler=batches, num_workers=run.workers, collate_fn=collate_chunks,
                      pin_memory=device.type == "cuda", prefetch_factor=4 if run.workers > 0 else None)


class ExtractStep:
    """Runs the model on decoded batches and streams each video's rows into its part file."""

    def __init__(self, model: torch.nn.Module, normalize: Normalizer, cfg: ExtractConfig, sampler: ClipSampler,
                 parts: Path, device: torch.device) -> None:
        self.model, self.normalize, self.cfg, self.sampler = model, normalize, cfg, sampler
        self.parts, self.device = parts, device
        self.dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(cfg.model.precision)
        self.bar: tqdm | None = None
        self.committed = self.failed = 0
        self._work: list[VideoWork] = []
        self._writers: dict[int, VideoPartWriter] = {}
        self._done: set[str] = set()
        self._counted: dict[str, int] = {}

    def start(self, work: list[VideoWork]) -> None:
        """Begin a loader pass over ``work`` (batch video indices refer to it)."""
        self._work = work

    def unfinished(self) -> list[VideoWork]:
        """Videos of the current pass neither written nor failed (their progress is rolled back)."""
        redo = [w for w in self._work if w.video_id not in self._done]
        self.bar.update(-sum(self._counted.pop(w.video_id, 0) for w in redo))
        return redo

    def abort_open(self) -> None:
        """Drop the partial part files of this pass."""
        for writer in self._writers.values():
            writer.abort()
        self._writers.clear()

    def fail(self, work: VideoWork, reason: str) -> None:
        """Record ``work`` as failed and drop anything written for it."""
        _record_failure(self.parts, _Failure(work.video_id, str(work.path), reason))
        self._done.add(work.video_id)
        self.failed += 1
        for index, writer in list(self._writers.items()):
            if writer.video_id == work.video_id:
                writer.abort()
                del self._writers[index]
        self.bar.update(work.num_clips - self._counted.pop(work.video_id, 0))

    def __call__(self, batch: ClipBatch) -> None:
        for index, reason in batch.failures:
            if self._work[index].video_id not in self._done:
                self.fail(self._work[index], reason)
        if batch.frames.numel() == 0:
            return
        feats = self.forward(batch.frames)
        videos = batch.video_index.numpy()
        clips = batch.clip_index.numpy()
        # Rows come as runs of consecutive clips of one video (whole chunks, in order).
        breaks = np.flatnonzero((np.diff(videos) != 0) | (np.diff(clips) != 1)) + 1
        for lo, hi in zip(np.r_[0, breaks], np.r_[breaks, len(videos)]):
            self._store(int(videos[lo]), int(clips[lo]), feats[lo:hi])

    def forward(self, frames: torch.Tensor) -> np.ndarray:
        """uint8 ``(N, crops, T, S, S, 3)`` -> float32 ``(N, crops * C)`` (crop features concatenated)."""
        n = frames.shape[0]
        with torch.inference_mode(), torch.autocast(self.device.type, dtype=self.dtype or torch.float32,
                                                    enabled=self.dtype is not None):
            x = self.normalize(frames.to(self.device, non_blocking=True))
            if self.device.type == "cuda":
                x = x.contiguous(memory_format=torch.channels_last_3d)
            out = self.model(x)
        return out.float().reshape(n, -1).cpu().numpy()

    def _store(self, index: int, first_clip: int, feats: np.ndarray) -> None:
        work = self._work[index]
        if work.video_id in self._done:
            return
        writer = self._writers.get(index)
        if writer is None:
            info = work.info
            timing = self.sampler.timing(info.fps, info.num_frames, info.duration_s, self.cfg.preprocess.crops)
            padded = self.sampler.clip(work.num_clips - 1, info.duration_s).padded
            writer = VideoPartWriter(self.parts / f"{work.video_id}.h5", work.video_id, work.num_clips, feats.shape[1],
                                     timing, padded, compression=self.cfg.run.compression)
            self._writers[index] = writer
        writer.write(first_clip, feats)
        self._counted[work.video_id] = self._counted.get(work.video_id, 0) + len(feats)
        self.bar.update(len(feats))
        if writer.complete:
            writer.commit()
            del self._writers[index]
            self._done.add(work.video_id)
            self._counted.pop(work.video_id)
            self.committed += 1
            self.bar.set_postfix(videos=f"{self.committed + self.failed}/{len(self._work)}", refresh=False)


def _assemble(out: Path, parts: Path, videos: dict[str, Path], cfg: ExtractConfig, provenance: tuple[str, str, str]) -> int:
    """Merge the previous ``out`` and the new parts into ``out``; write the failure manifest; remove ``parts``."""
    failures = [json.loads(p.read_text()) for p in sorted((parts / "failed").glob("*.json"))]
    new = {p.name[: -len(".h5")]: p for p in sorted(parts.glob("*.h5"))}
    kept: list[str] = []
    if out.exists():
        reader = FeatureReader(out)
        kept = [vid for vid in reader.video_ids() if vid not in new]
        reader.close()
    if new:
        sources = [(out, vid) for vid in kept] + [(path, vid) for vid, path in new.items()]
        assemble_file(out, sources, *provenance[:3], config_to_yaml(cfg))
    manifest = out.with_name(out.name + ".failures.jsonl")
    tmp = manifest.with_name(manifest.name + ".tmp")
    tmp.write_text("".join(json.dumps(f) + "\n" for f in failures))
    durable_replace(tmp, manifest)
    shutil.rmtree(parts)
    missing = len(set(videos) - set(kept) - set(new) - {f["video"] for f in failures})
    if missing:
        raise RuntimeError(f"{out}: {missing} videos neither extracted nor recorded as failed (internal error)")
    print(f"extract-features: wrote {out}: {len(kept) + len(new)} videos ({len(new)} new, {len(kept)} kept); "
          f"failures in {manifest}", file=sys.stderr)
    print(f"extract-features: {len(failures)} of {len(videos)} videos failed")
    return len(failures)


# --------------------------------------------------------------------------- inspect / verify


def _file_sampler(reader: FeatureReader) -> ClipSampler:
    """The sampler recorded in a feature file's resolved config."""
    try:
        sampling = yaml.safe_load(reader.file_attrs()["config"])["sampling"]
        return ClipSampler(to_fraction(sampling["sample_fps"]), sampling["clip_len"], sampling["frame_interval"], sampling["stride"])
    except (KeyError, TypeError, yaml.YAMLError) as exc:
        raise ValueError(f"{reader.path}: no readable sampling config in the file attributes ({exc})") from exc


def inspect_file(path: Path) -> int:
    """Print a summary of a feature file: provenance, videos, clips, dims, timing, padding, failures."""
    reader = FeatureReader(path)
    attrs = reader.file_attrs()
    ids = reader.video_ids()
    with h5py.File(path, "r") as f:
        shapes = np.array([f[v].shape for v in ids], dtype=np.int64).reshape(-1, 2)
        timings = [dict(f[v].attrs) for v in ids]
    print(f"file:      {path}")
    for key in ("format_version", "package_version", "created", "backbone", "weights", "weights_sha256"):
        print(f"{key + ':':<17}{attrs.get(key, '(missing)')}")
    print(f"videos:    {len(ids)}")
    if ids:
        clips = shapes[:, 0]
        print(f"clips:     {int(clips.sum())} (per video min {clips.min()}, median {int(np.median(clips))}, max {clips.max()})")
        print(f"dims:      {sorted(set(shapes[:, 1].tolist()))}")
        hours = sum(float(t["duration_s"]) for t in timings) / 3600
        print(f"duration:  {hours:.2f} h in total")
        for key in ("sample_fps", "clip_len", "frame_interval", "stride", "stride_s", "first_center_s", "crops"):
            values = sorted({round(float(t[key]), 6) for t in timings if key in t})
            print(f"{key + ':':<17}{', '.join(f'{v:g}' for v in values)}")
        padded = [v for v, t in zip(ids, timings) if bool(t.get("padded", False))]
        print(f"padded:    {len(padded)}" + (f" ({', '.join(padded[:5])}{' ...' if len(padded) > 5 else ''})" if padded else ""))
    manifest = path.with_name(path.name + ".failures.jsonl")
    failures = [json.loads(line) for line in manifest.read_text().splitlines() if line.strip()] if manifest.is_file() else []
    print(f"failures:  {len(failures)}" + ("" if manifest.is_file() else " (no manifest found)"))
    for failure in failures[:10]:
        print(f"  {failure['video']}: {failure['reason']}")
    if len(failures) > 10:
        print(f"  ... {len(failures) - 10} more in {manifest}")
    return 0


def verify_file(path: Path, video_dirs: Sequence[Path], video_list: Path | None, workers: int, timeout_s: float) -> int:
    """Check every video under ``video_dirs`` is in ``path`` with the clip count its duration implies.

    Returns 0 when all match, 1 otherwise (each problem is printed).
    """
    reader = FeatureReader(path)
    sampler = _file_sampler(reader)
    present = set(reader.video_ids())
    videos = find_videos(video_dirs, video_list)
    problems: list[str] = []
    with h5py.File(path, "r") as f:
        for video_path, info, reason in probe_videos(list(videos.values()), workers=workers, timeout_s=timeout_s):
            vid = video_path.stem
            if vid not in present:
                problems.append(f"{vid}: missing" + (f" (unreadable: {reason})" if info is None else ""))
            elif info is None:
                problems.append(f"{vid}: in the file but the video is unreadable now: {reason}")
            else:
                expected, got = sampler.num_clips(info.duration_s), f[vid].shape[0]
                if expected != got:
                    problems.append(f"{vid}: {got} clips, its duration {info.duration_s:.3f} s implies {expected}")
    for line in sorted(problems):
        print(line)
    print(f"verify: {len(videos) - len(problems)} of {len(videos)} videos OK, {len(problems)} problems")
    return int(bool(problems))


if __name__ == "__main__":
    sys.exit(main())
