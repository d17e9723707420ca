"""A clip-level dataset spanning many videos, for DataLoader worker processes to decode in parallel.

Each item is a *chunk*: a few consecutive clips of one video, read with a single decoder call over
the union of their frames (overlapping clips share frames). Batches are lists of chunks, so they mix
videos. :func:`scheduled_batches` orders the batches so that all DataLoader workers decode the same few
videos at once, each walking forward through its own slice with a single reader open: videos are
finished (and committed by the main process) in order, a few at a time, from the start of the run.

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

from feature_extraction.clips import ClipSampler
from feature_extraction.transform import resized_size
from feature_extraction.video import VideoError, VideoInfo, VideoReader, open_video


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
    """A chunk's frames, uint8 ``(num_clips, clip_len, H, W, 3)`` RGB, or the reason it failed.

    ``H x W`` is the source size, or the resized size when the decoder resizes.
    """

    chunk: Chunk
    frames: torch.Tensor | None
    error: str | None


class ClipBatch(NamedTuple):
    """Collated chunks: ``frames`` holds one uint8 ``(n, T, H, W, 3)`` tensor per chunk that decoded (sizes
    differ between videos), ``video_index``/``clip_index`` ``(N,)`` the clips of those chunks in order, and
    ``failures`` ``(video_index, reason)`` for each chunk that failed."""

    frames: list[torch.Tensor]
    video_index: torch.Tensor
    clip_index: torch.Tensor
    failures: list[tuple[int, str]]


class ClipDataset(Dataset):
    """Chunks of up to ``chunk_clips`` clips over ``videos``; item ``i`` is ``chunks[i]`` decoded.

    Frames are decoded at the source size (``resize_short_side=None``: resizing, cropping and
    normalising happen on the model's device) or resized by decord so the short side is
    ``resize_short_side`` (the approximate fast path).
    """

    def __init__(
        self,
        videos: Sequence[VideoWork],
        sampler: ClipSampler,
        *,
        chunk_clips: int,
        decode_timeout_s: float,
        hang_dir: Path,
        resize_short_side: int | None = None,
        decoder: str = "decord",
        decode_device: str = "cpu",
    ) -> None:
        self.videos = list(videos)
        self.sampler = sampler
        self.resize_short_side = resize_short_side
        self.decoder = decoder
        self.decode_device = decode_device
        self.decode_timeout_s = decode_timeout_s
        self.hang_dir = Path(hang_dir)
        self.chunks = [
            Chunk(v, first, min(chunk_clips, work.num_clips - first))
            for v, work in enumerate(self.videos)
            for first in range(0, work.num_clips, chunk_clips)
        ]
        # One open reader per process (each DataLoader worker gets its own copy of this object).
        self._open: tuple[int, VideoReader, np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.chunks)

    def __getitem__(self, index: int) -> DecodedChunk:
        chunk = self.chunks[index]
        work = self.videos[chunk.video_index]
        watchdog = self._start_watchdog(work.video_id) if get_worker_info() is not None else None
        try:
            return DecodedChunk(chunk, self._decode(chunk), None)
        except VideoError as exc:
            self._open = None
            return DecodedChunk(chunk, None, str(exc))
        finally:
            if watchdog is not None:
                watchdog.cancel()

    def _decode(self, chunk: Chunk) -> torch.Tensor:
        work = self.videos[chunk.video_index]
        if self._open is None or self._open[0] != chunk.video_index:
            self._open = None  # drop the previous video's reader before opening the next
            size = None
            if self.resize_short_side is not None:
                size = resized_size(work.info.width, work.info.height, self.resize_short_side)
            reader = open_video(work.path, size, decoder=self.decoder, device=self.decode_device)
            self._open = (chunk.video_index, reader, reader.frame_starts())
        _, reader, starts = self._open
        clips = np.arange(chunk.first_clip, chunk.first_clip + chunk.num_clips)
        indices = self.sampler.frame_indices(clips, starts, work.info.fps)
        frames = reader.read(indices.reshape(-1))
        if chunk.first_clip + chunk.num_clips == work.num_clips:
            self._open = None  # last chunk of this video: release the reader now
        return frames.reshape(*indices.shape, *frames.shape[1:])

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
    """Collect decoded chunks into one :class:`ClipBatch`; failed chunks go to ``failures``."""
    ok = [item for item in items if item.frames is not None]
    failures = [(item.chunk.video_index, item.error or "unknown decode error") for item in items if item.frames is None]
    frames = [item.frames for item in ok]
    video_index = torch.tensor([item.chunk.video_index for item in ok for _ in range(item.chunk.num_clips)], dtype=torch.long)
    clip_index = torch.tensor(
        [c for item in ok for c in range(item.chunk.first_clip, item.chunk.first_clip + item.chunk.num_clips)], dtype=torch.long
    )
    return ClipBatch(frames, video_index, clip_index, failures)


SLICE_BATCHES = 4
"""A video is split across decode workers in slices of at least about this many batches (each slice costs a seek)."""


def scheduled_batches(chunks: Sequence[Chunk], batch_size: int, num_streams: int) -> list[list[int]]:
    """Batches of chunk indices (at most ``batch_size`` clips each) that commit videos early and in order.

    DataLoader worker ``s`` receives batches ``s, s + W, ...`` (``W = num_streams``). Consecutive whole
    videos are grouped into *windows* of at least ``W * SLICE_BATCHES * batch_size`` clips (a longer video
    is a window of its own); each window is cut into ``W`` contiguous runs of about equal clip counts, run
    ``s`` going to worker ``s``, and shorter runs are padded with empty batches so every worker starts the
    next window at the same batch position. So all workers decode the same few videos at once (each
    keeping one reader open, moving forward through it), every video of a window is complete by the
    window's last batch, and an interrupt loses at most the windows in flight.
    """
    if batch_size < 1 or num_streams < 1:
        raise ValueError(f"batch_size and num_streams must be >= 1, got {batch_size}, {num_streams}")
    target = num_streams * SLICE_BATCHES * batch_size
    order: list[list[int]] = []
    window: list[int] = []
    clips = 0
    for index, chunk in enumerate(chunks):
        window.append(index)
        clips += chunk.num_clips
        video_ends = index + 1 == len(chunks) or chunks[index + 1].video_index != chunk.video_index
        if video_ends and (clips >= target or index + 1 == len(chunks)):
            order.extend(_window_batches(chunks, window, batch_size, num_streams))
            window, clips = [], 0
    return order


def _window_batches(chunks: Sequence[Chunk], window: list[int], batch_size: int, num_streams: int) -> list[list[int]]:
    """One window's batches: ``num_streams`` contiguous runs interleaved round by round, padded with ``[]``."""
    total = sum(chunks[i].num_clips for i in window)
    streams: list[list[list[int]]] = [[] for _ in range(num_streams)]
    done = 0
    for index in window:
        stream = streams[min(num_streams - 1, done * num_streams // total)]
        if not stream or sum(chunks[i].num_clips for i in stream[-1]) + chunks[index].num_clips > batch_size:
            stream.append([])
        stream[-1].append(index)
        done += chunks[index].num_clips
    rounds = max(len(s) for s in streams)
    return [s[k] if k < len(s) else [] for k in range(rounds) for s in streams]
