"""The extraction loop of one process: decode workers -> model -> one part file per video.

``extract_videos`` drives a DataLoader over a clip-level dataset spanning videos (batches mix videos);
``ExtractStep`` runs the model on each batch and streams rows into ``parts/<id>.h5``, committing a video's
part when its last clip is written; failures go to ``parts/failed/<id>.json``. A decode that hangs is
killed by the dataset's watchdog and the loader restarts on the videos not finished yet.
"""
from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from feature_extraction.backbones import BACKBONES, build_model
from feature_extraction.clips import ClipSampler
from feature_extraction.config import ExtractConfig
from feature_extraction.dataset import ClipBatch, ClipDataset, VideoWork, collate_chunks, interleaved_batches
from tal_common.atomic import durable_replace
from tal_common.h5 import VideoPartWriter


@dataclass
class Failure:
    """A video that could not be extracted, and why (one line of the failure manifest)."""

    video_id: str
    path: str
    reason: str


def record_failure(parts: Path, failure: Failure) -> None:
    """Publish ``failure`` as ``parts/failed/<id>.json`` (temporary name, fsync, rename)."""
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
        record_failure(self.parts, Failure(work.video_id, str(work.path), reason))
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
