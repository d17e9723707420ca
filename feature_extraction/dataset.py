"""A clip-level dataset spanning many videos, for DataLoader worker processes to decode in parallel.

Each item is a *chunk*: a few consecutive clips of one video, read with a single ``get_batch`` over
the union of their frames (overlapping clips share frames). Batches are lists of chunks, so they mix
videos. :func:`interleaved_batches` orders the batches so that DataLoader worker ``w`` (which gets
batches ``w, w + W, ...``) walks one contiguous run of the clip sequence: every worker keeps a single
video open and moves on to the next, and no reader outlives its video.

A chunk whose video fails to decode comes back with ``error`` set (the main process records the
video as failed); a decode that hangs past ``decode_timeout_s`` in a worker process leaves a marker
file named by the video id in ``hang_dir`` and kills that worker, so the caller can record the video
and restart the loader without it.
"""
from __future__ import annotations

import os
import signal
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, get_worker_info

from feature_extraction.clips import ClipSampler, frame_indices
from feature_extraction.video import VideoError, VideoInfo, frame_starts, open_video, read_frames, resized_size


@dataclass(frozen=True)
class VideoWork:
    """One video to extract: its id, file, probe result and number of clips."""

    video_id: str
    path: Path
    info: VideoInfo
    num_clips: int


class Chunk(NamedTuple):
    """Clips ``first_clip .. first_clip + num_clips - 1`` of video ``video_index``."""

    video_index: int
    first_clip: int
    num_clips: int


class DecodedChunk(NamedTuple):
    """A chunk's frames, uint8 ``(num_clips, crops, clip_len, crop, crop, 3)``, or the reason it failed."""

    chunk: Chunk
    frames: torch.Tensor | None
    error: str | None


class ClipBatch(NamedTuple):
    """Collated chunks: frames uint8 ``(N, crops, T, S, S, 3)`` of the clips that decoded, with their
    ``video_index``/``clip_index`` ``(N,)``, and ``(video_index, reason)`` for each chunk that failed."""

    frames: torch.Tensor
    video_index: torch.Tensor
    clip_index: torch.Tensor
    failures: list[tuple[int, str]]


def spatial_crops(frames: np.ndarray, crop_size: int, num_crops: int) -> np.ndarray:
    """Square crops of ``(..., H, W, 3)`` frames -> ``(num_crops, ..., crop, crop, 3)``.

    One crop is the centre; three are left/centre/right (top/centre/bottom for portrait frames).
    """
    height, width = frames.shape[-3:-1]
    if min(height, width) < crop_size:
        raise ValueError(f"crop {crop_size} is larger than the frames ({width}x{height})")
    top, left = (height - crop_size) // 2, (width - crop_size) // 2
    if num_crops == 1:
        offsets = [(top, left)]
    elif num_crops == 3:
        if width >= height:
            offsets = [(top, 0), (top, left), (top, width - crop_size)]
        else:
            offsets = [(0, left), (top, left), (height - crop_size, left)]
    else:
        raise ValueError(f"crops must be 1 or 3, got {num_crops}")
    return np.stack([frames[..., y : y + crop_size, x : x + crop_size, :] for y, x in offsets])


class ClipDataset(Dataset):
    """Chunks of up to ``chunk_clips`` clips over ``videos``; item ``i`` is ``chunks[i]`` decoded.

    Frames are resized by the decoder so the short side is ``short_side``, then cropped to
    ``crop_size`` squares (``crops`` of them); normalisation is left to the model's device.
    """

    def __init__(
        self,
        videos: Sequence[VideoWork],
        sampler: ClipSampler,
        *,
        short_side: int,
        crop_size: int,
        crops: int,
        chunk_clips: int,
        decode_timeout_s: float,
        hang_dir: Path,
    ) -> None:
        if crop_size > short_side:
            raise ValueError(f"crop_size {crop_size} exceeds short_side {short_side}")
        self.videos = list(videos)
        self.sampler = sampler
        self.short_side = short_side
        self.crop_size = crop_size
        self.crops = crops
        self.decode_timeout_s = decode_timeout_s
        self.hang_dir = Path(hang_dir)
        self.chunks = [
            Chunk(v, first, min(chunk_clips, work.num_clips - first))
            for v, work in enumerate(self.videos)
            for first in range(0, work.num_clips, chunk_clips)
        ]
        # One open reader per process (each DataLoader worker gets its own copy of this object).
        self._open: tuple[int, object, np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.chunks)

    def __getitem__(self, index: int) -> DecodedChunk:
        chunk = self.chunks[index]
        work = self.videos[chunk.video_index]
        watchdog = self._start_watchdog(work.video_id) if get_worker_info() is not None else None
        try:
            return DecodedChunk(chunk, torch.from_numpy(self._decode(chunk)), None)
        except VideoError as exc:
            self._open = None
            return DecodedChunk(chunk, None, str(exc))
        finally:
            if watchdog is not None:
                watchdog.cancel()

    def _decode(self, chunk: Chunk) -> np.ndarray:
        work = self.videos[chunk.video_index]
        if self._open is None or self._open[0] != chunk.video_index:
            self._open = None  # drop the previous video's reader before opening the next
            size = resized_size(work.info.width, work.info.height, self.short_side)
            reader = open_video(work.path, size)
            self._open = (chunk.video_index, reader, frame_starts(reader, work.path))
        _, reader, starts = self._open
        times = np.array(
            [
                [float(t) for t in self.sampler.clip(i, work.info.duration_s).frame_times_s]
                for i in range(chunk.first_clip, chunk.first_clip + chunk.num_clips)
            ]
        )
        indices = frame_indices(times, starts)
        frames = read_frames(reader, indices.reshape(-1), work.path)
        frames = frames.reshape(*indices.shape, *frames.shape[1:])
        crops = spatial_crops(frames, self.crop_size, self.crops)  # (crops, n, T, S, S, 3)
        if chunk.first_clip + chunk.num_clips == work.num_clips:
            self._open = None  # last chunk of this video: release the reader now
        return np.ascontiguousarray(crops.swapaxes(0, 1))

    def _start_watchdog(self, video_id: str) -> threading.Timer:
        timer = threading.Timer(self.decode_timeout_s, _abort_hung_decode, args=(self.hang_dir, video_id))
        timer.daemon = True
        timer.start()
        return timer


def _abort_hung_decode(hang_dir: Path, video_id: str) -> None:
    """Runs in a worker whose decode hangs: leave the video id for the main process, then die."""
    hang_dir.mkdir(parents=True, exist_ok=True)
    (hang_dir / video_id).write_text("decode timed out\n")
    os.kill(os.getpid(), signal.SIGKILL)


def collate_chunks(items: Sequence[DecodedChunk]) -> ClipBatch:
    """Concatenate decoded chunks into one :class:`ClipBatch`; failed chunks go to ``failures``."""
    ok = [item for item in items if item.frames is not None]
    failures = [(item.chunk.video_index, item.error or "unknown decode error") for item in items if item.frames is None]
    if ok:
        frames = torch.cat([item.frames for item in ok])
    else:
        frames = torch.empty((0,), dtype=torch.uint8)
    video_index = torch.tensor([item.chunk.video_index for item in ok for _ in range(item.chunk.num_clips)], dtype=torch.long)
    clip_index = torch.tensor(
        [c for item in ok for c in range(item.chunk.first_clip, item.chunk.first_clip + item.chunk.num_clips)], dtype=torch.long
    )
    return ClipBatch(frames, video_index, clip_index, failures)


def interleaved_batches(chunks: Sequence[Chunk], batch_size: int, num_streams: int) -> list[list[int]]:
    """Group chunk indices into batches of at most ``batch_size`` clips, interleaving ``num_streams`` runs.

    The chunk sequence is cut into ``num_streams`` contiguous runs of about equal clip counts; batch
    ``k`` of run ``s`` lands at position ``k * num_streams + s``, so DataLoader worker ``s`` (which
    receives every ``num_streams``-th batch) decodes one run from start to end.
    """
    if batch_size < 1 or num_streams < 1:
        raise ValueError(f"batch_size and num_streams must be >= 1, got {batch_size}, {num_streams}")
    total = sum(c.num_clips for c in chunks)
    streams: list[list[list[int]]] = [[] for _ in range(num_streams)]
    done = 0
    for index, chunk in enumerate(chunks):
        stream = streams[min(num_streams - 1, done * num_streams // max(total, 1))]
        if not stream or sum(chunks[i].num_clips for i in stream[-1]) + chunk.num_clips > batch_size:
            stream.append([])
        stream[-1].append(index)
        done += chunk.num_clips
    order = []
    for k in range(max(len(s) for s in streams)):
        order.extend(s[k] for s in streams if k < len(s))
    return order
