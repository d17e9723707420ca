"""The extraction loop of one process: decode workers -> model -> one part file per video.

``extract_videos`` drives a DataLoader over a clip-level dataset spanning videos, scheduled so that videos
finish in order from the start of the run (:func:`feature_extraction.dataset.scheduled_batches`);
``ExtractStep`` regroups the decoded clips into full model batches and streams rows into ``parts/<id>.h5``,
committing a video's part when its last clip is written; failures go to ``parts/failed/<id>.json``. A decode
that hangs is killed by the dataset's watchdog and the loader restarts on the videos not finished yet.
"""
from __future__ import annotations

import functools
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from feature_extraction.backbones import BACKBONES, build_model
from feature_extraction.clips import ClipSampler
from feature_extraction.config import ExtractConfig
from feature_extraction.dataset import ClipBatch, ClipDataset, VideoWork, collate_chunks, scheduled_batches
from feature_extraction.transform import ClipTransform
from tal_common.atomic import durable_replace
from tal_common.h5 import VideoPartWriter
from tal_common.workers import clamp_workers, exit_with_parent, usable_cores


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
    return max(1, usable_cores() - workers)


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
    workers = decode_workers(cfg, device, say=_say)
    step.bar = tqdm(total=sum(w.num_clips for w in work), unit="clip", disable=not show_progress or not work,
                    dynamic_ncols=True, mininterval=1.0, desc="extract")
    remaining = list(work)
    try:
        while remaining:
            step.start(remaining)
            try:
                for batch in make_loader(remaining, cfg, sampler, parts, device, workers):
                    step(batch)
                step.flush()
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


def _say(message: str) -> None:
    print(f"extract-features: {message}", file=sys.stderr)


def _nvdec(cfg: ExtractConfig, device: torch.device) -> bool:
    return cfg.run.decoder == "torchcodec" and device.type == "cuda"


def decode_workers(cfg: ExtractConfig, device: torch.device, say: Callable[[str], None] = _say) -> int:
    """Decode worker processes for ``cfg``: ``run.workers`` capped at the cores present (``say`` is told when
    capped), or 0 when torchcodec decodes on NVDEC in this process (CUDA does not survive a fork)."""
    return 0 if _nvdec(cfg, device) else clamp_workers(cfg.run.workers, "run.workers", say)


def make_loader(work: list[VideoWork], cfg: ExtractConfig, sampler: ClipSampler, parts: Path,
                device: torch.device, workers: int) -> DataLoader:
    """Decode ``work`` in ``workers`` processes (see :func:`decode_workers`) in the order of
    :func:`scheduled_batches`: batches of ``run.batch_size`` clips, videos finished in order.

    Each worker dies with this process (no orphan decoders after a ``kill -9``).
    """
    run = cfg.run
    nvdec = _nvdec(cfg, device)
    dataset = ClipDataset(
        work, sampler, chunk_clips=min(run.chunk_clips, run.batch_size), decode_timeout_s=run.decode_timeout_s,
        hang_dir=parts / "hung", resize_short_side=cfg.preprocess.short_side if cfg.preprocess.resize == "decoder" else None,
        decoder=run.decoder, decode_device=str(device) if nvdec else "cpu",
    )
    batches = scheduled_batches(dataset.chunks, run.batch_size, max(1, workers))
    return DataLoader(dataset, batch_sampler=batches, num_workers=workers, collate_fn=collate_chunks,
                      pin_memory=device.type == "cuda" and not nvdec, prefetch_factor=4 if workers > 0 else None,
                      worker_init_fn=functools.partial(_worker_init, os.getpid()) if workers > 0 else None)


def _worker_init(parent_pid: int, worker_id: int) -> None:
    exit_with_parent(parent_pid)


class ExtractStep:
    """Runs the model on decoded batches and streams each video's rows into its part file.

    Decoded chunks are regrouped so the model always sees exactly ``run.batch_size`` clips (the last batch of a
    pass padded with zeros): a clip's features then do not depend on which clips share its batch (CPU kernels
    round differently for other batch sizes), so an interrupted and resumed run writes the same bits as an
    uninterrupted one, whatever the decode schedule.
    """

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
        self._pending: list[tuple[int, int, torch.Tensor]] = []  # (video index, first clip, frames) awaiting the model
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
        """Drop the partial part files and the clips not yet through the model of this pass."""
        for writer in self._writers.values():
            writer.abort()
        self._writers.clear()
        self._pending.clear()

    def fail(self, work: VideoWork, reason: str) -> None:
        """Record ``work`` as failed and drop anything written for it."""
        record_failure(self.parts, Failure(work.video_id, str(work.path), reason))
        self._done.add(work.video_id)
        self.failed += 1
        self._pending = [p for p in self._pending if self._work[p[0]].video_id != work.video_id]
        for index, writer in list(self._writers.items()):
            if writer.video_id == work.video_id:
                writer.abort()
                del self._writers[index]
        self.bar.update(work.num_clips - self._counted.pop(work.video_id, 0))

    def __call__(self, batch: ClipBatch) -> None:
        """Take one decoded batch; run the model on every full batch of clips now pending."""
        for index, reason in batch.failures:
            if self._work[index].video_id not in self._done:
                self.fail(self._work[index], reason)
        offset = 0
        for frames in batch.frames:  # chunk k's clips start at row sum(len(frames[:k])) of the indices
            self._pending.append((int(batch.video_index[offset]), int(batch.clip_index[offset]), frames))
            offset += len(frames)
        while sum(len(f) for _, _, f in self._pending) >= self.cfg.run.batch_size:
            self._run_model(self.cfg.run.batch_size)

    def flush(self) -> None:
        """Run the model on the clips still pending (the end of a loader pass), padded to a full batch."""
        pending = sum(len(f) for _, _, f in self._pending)
        if pending:
            self._run_model(pending)

    def _run_model(self, clips: int) -> None:
        """The first ``clips`` pending clips through the model (as one ``run.batch_size`` batch), into their parts."""
        taken: list[tuple[int, int, torch.Tensor]] = []
        while clips > 0:
            video, first, frames = self._pending.pop(0)
            if len(frames) > clips:  # split the chunk: its tail waits for the next batch
                self._pending.insert(0, (video, first + clips, frames[clips:]))
                frames = frames[:clips]
            taken.append((video, first, frames))
            clips -= len(frames)
        feats = self.forward([f for _, _, f in taken], pad_to=self.cfg.run.batch_size)
        row = 0
        for video, first, frames in taken:
            self._store(video, first, feats[row : row + len(frames)])
            row += len(frames)

    def forward(self, frames: Sequence[torch.Tensor], pad_to: int | None = None) -> np.ndarray:
        """Chunks of uint8 frames ``(n, T, H, W, 3)`` -> float32 ``(sum n, crops * C)`` (crop features concatenated).

        ``pad_to`` clips: fewer clips are padded with zero inputs to that many (their outputs dropped). A CUDA
        out-of-memory error halves the model batch and retries (said once on stderr); the smaller batch is
        kept for the rest of the run.
        """
        with torch.inference_mode():
            x = torch.cat([self.transform(chunk) for chunk in frames])
            rows = len(x) // self.cfg.preprocess.crops
            missing = (pad_to or 0) * self.cfg.preprocess.crops - len(x)
            if missing > 0:
                x = torch.cat([x, x.new_zeros((missing, *x.shape[1:]))])
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
        return torch.cat(out)[: rows * self.cfg.preprocess.crops].float().reshape(rows, -1).cpu().numpy()

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
