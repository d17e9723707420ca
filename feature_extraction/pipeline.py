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
from feature_extraction.transform import ClipTransform
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
        torch.backends.cudnn.benchmark = True  # every batch has the same clip shape: pick the fastest kernels once
    return model


def make_transform(cfg: ExtractConfig, device: torch.device) -> ClipTransform:
    """The frames -> model input transform of a resolved config, run on ``device``."""
    pre = cfg.preprocess
    return ClipTransform(short_side=pre.short_side, crop_size=pre.crop_size, crops=pre.crops, mean=pre.mean,
                         std=pre.std, resize=pre.resize == "device", device=device)


def extract_videos(work: list[VideoWork], model: torch.nn.Module, cfg: ExtractConfig, sampler: ClipSampler,
                    device: torch.device, parts: Path, show_progress: bool) -> None:
    """Extract every video of ``work`` into ``parts/<id>.h5``; failures into ``parts/failed``.

    A worker killed by the hang watchdog leaves the hung video's id in ``parts/hung``: that video is
    recorded as failed and the loader restarts on the videos not finished yet.
    """
    step = ExtractStep(model, make_transform(cfg, device), cfg, sampler, parts, device)
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
    """Decode ``work`` in ``run.workers`` processes; batches of ``run.batch_size`` clips mixing videos.

    torchcodec on a CUDA device decodes on NVDEC in this process (CUDA does not survive a fork).
    """
    run = cfg.run
    nvdec = run.decoder == "torchcodec" and device.type == "cuda"
    workers = 0 if nvdec else run.workers
    dataset = ClipDataset(
        work, sampler, chunk_clips=min(run.chunk_clips, run.batch_size), decode_timeout_s=run.decode_timeout_s,
        hang_dir=parts / "hung", resize_short_side=cfg.preprocess.short_side if cfg.preprocess.resize == "decoder" else None,
        decoder=run.decoder, decode_device=str(device) if nvdec else "cpu",
    )
    batches = interleaved_batches(dataset.chunks, run.batch_size, max(1, workers))
    return DataLoader(dataset, batch_sampler=batches, num_workers=workers, collate_fn=collate_chunks,
                      pin_memory=device.type == "cuda" and not nvdec, prefetch_factor=4 if workers > 0 else None)


class ExtractStep:
    """Runs the model on decoded batches and streams each video's rows into its part file."""

    def __init__(self, model: torch.nn.Module, transform: ClipTransform, cfg: ExtractConfig, sampler: ClipSampler,
                 parts: Path, device: torch.device) -> None:
        self.model, self.transform, self.cfg, self.sampler = model, transform, cfg, sampler
        self.parts, self.device = parts, device
        self.dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(cfg.model.precision)
        self.bar: tqdm | None = None
        self.committed = self.failed = 0
        self._work: list[VideoWork] = []
        self._writers: dict[int, VideoPartWriter] = {}
        self._done: set[str] = set()
        self._counted: dict[str, int] = {}
        self.max_batch: int | None = None  # lowered after a CUDA out-of-memory error

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
        if not batch.frames:
            return
        feats = self.forward(batch.frames)
        videos = batch.video_index.numpy()
        clips = batch.clip_index.numpy()
        # Rows come as runs of consecutive clips of one video (whole chunks, in order).
        breaks = np.flatnonzero((np.diff(videos) != 0) | (np.diff(clips) != 1)) + 1
        for lo, hi in zip(np.r_[0, breaks], np.r_[breaks, len(videos)]):
            self._store(int(videos[lo]), int(clips[lo]), feats[lo:hi])

    def forward(self, frames: Sequence[torch.Tensor]) -> np.ndarray:
        """Chunks of uint8 frames ``(n, T, H, W, 3)`` -> float32 ``(sum n, crops * C)`` (crop features concatenated).

        A CUDA out-of-memory error halves the model batch and retries (said once on stderr); the
        smaller batch is kept for the rest of the run.
        """
        with torch.inference_mode():
            x = torch.cat([self.transform(chunk) for chunk in frames])
            rows = len(x) // self.cfg.preprocess.crops
            out = []
            start = 0
            while start < len(x):
                size = len(x) - start if self.max_batch is None else min(self.max_batch, len(x) - start)
                try:
                    out.append(self._model(x[start : start + size]))
                except torch.OutOfMemoryError:
                    if size <= self.cfg.preprocess.crops:
                        raise
                    if self.device.type == "cuda":
                        torch.cuda.empty_cache()
                    if self.max_batch is None:
                        print(f"extract-features: out of memory on {self.device} with {size // self.cfg.preprocess.crops} "
                              "clips; halving the model batch", file=sys.stderr)
                    self.max_batch = max(self.cfg.preprocess.crops, size // 2 // self.cfg.preprocess.crops * self.cfg.preprocess.crops)
                    continue
                start += size
        return torch.cat(out).float().reshape(rows, -1).cpu().numpy()

    def _model(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(self.device.type, dtype=self.dtype or torch.float32, enabled=self.dtype is not None):
            if self.device.type == "cuda":
                x = x.contiguous(memory_format=torch.channels_last_3d)
            return self.model(x)

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
