"""Video files: finding them, probing them, and reading frames with decord or torchcodec.

Frames are always read by index in small batches, never the whole video. Readers decode full
frames (resizing happens on the model's device, see ``feature_extraction.transform``); decord can
also resize in the decoder, the approximate fast path. Probing (decord) runs in killable worker
processes with a per-video timeout, so a file that hangs or crashes the decoder becomes a recorded
failure instead of a stalled run.
"""
from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import sys
import time
from abc import ABC, abstractmethod
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from tqdm import tqdm

from tal_common.workers import exit_with_parent

VIDEO_EXTENSIONS = (".mp4", ".mkv", ".webm", ".avi", ".mov")


class VideoError(RuntimeError):
    """A video that cannot be decoded; the message names the file and the reason."""


@dataclass(frozen=True)
class VideoInfo:
    """What probing learned about one video (sizes of the source, before any resize)."""

    num_frames: int
    fps: float
    duration_s: float
    width: int
    height: int


def find_videos(dirs: Sequence[str | Path], video_list: str | Path | None = None) -> dict[str, Path]:
    """Video files under ``dirs`` (recursively), keyed by video id (the file stem), sorted by id.

    ``video_list`` (one id or file name per line, ``#`` comments allowed) restricts the result and
    must name only videos that exist. Two files with the same stem are an error.
    """
    found: dict[str, Path] = {}
    for root in map(Path, dirs):
        if not root.is_dir():
            raise FileNotFoundError(f"video directory not found: {root}")
        for path in sorted(root.rglob("*")):
            if path.suffix.lower() not in VIDEO_EXTENSIONS or not path.is_file():
                continue
            if path.stem in found:
                raise ValueError(f"duplicate video id {path.stem!r}: {found[path.stem]} and {path}")
            found[path.stem] = path
    if video_list is not None:
        wanted = _read_video_list(Path(video_list))
        missing = sorted(wanted - found.keys())
        if missing:
            shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
            raise ValueError(f"{video_list}: {len(missing)} listed videos not found under {list(map(str, dirs))}: {shown}")
        found = {k: v for k, v in found.items() if k in wanted}
    return dict(sorted(found.items()))


def _read_video_list(path: Path) -> set[str]:
    if not path.is_file():
        raise FileNotFoundError(f"video list not found: {path}")
    ids = set()
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name = Path(line).name
            ids.add(Path(name).stem if Path(name).suffix.lower() in VIDEO_EXTENSIONS else name)
    return ids


DECODERS = ("decord", "torchcodec")


def open_video(path: str | Path, size: tuple[int, int] | None = None, *, decoder: str = "decord",
               device: str = "cpu") -> "VideoReader":
    """A reader of ``path`` decoding to ``size`` = ``(width, height)`` (full frames if ``None``).

    ``decoder`` is ``decord`` (CPU, one thread) or ``torchcodec`` (FFmpeg; ``device="cuda"`` decodes on
    NVDEC). Decoder-side resizing (``size``) exists only for decord.
    """
    if decoder == "decord":
        return DecordReader(path, size)
    if decoder == "torchcodec":
        if size is not None:
            raise ValueError("decoder-side resizing needs decoder 'decord' (torchcodec decodes full frames)")
        return TorchcodecReader(path, device)
    raise ValueError(f"unknown decoder {decoder!r}; choose one of {DECODERS}")


def check_decoder(decoder: str) -> None:
    """Raise ``ValueError`` saying how to install ``decoder`` when it cannot be imported here."""
    if decoder not in DECODERS:
        raise ValueError(f"unknown decoder {decoder!r}; choose one of {DECODERS}")
    if decoder == "torchcodec":
        try:
            from torchcodec.decoders import VideoDecoder  # noqa: F401
        except (ImportError, RuntimeError, OSError) as exc:  # FFmpeg's missing libraries fail the import too
            raise ValueError(
                f"decoder 'torchcodec' is not usable ({_first_line(exc)}); install it with "
                "pip install 'tadaloc[gpu-decode]' and FFmpeg's shared libraries (e.g. apt-get install ffmpeg)"
            ) from exc


class VideoReader(ABC):
    """Frames of one video by index: ``len(reader)``, :meth:`frame_starts`, :meth:`read` (one subclass per decoder)."""

    path: Path

    @abstractmethod
    def __len__(self) -> int:
        """The number of frames."""

    @abstractmethod
    def frame_starts(self) -> np.ndarray:
        """Presentation time of every frame in seconds from the first frame, ``(num_frames,)``, ascending."""

    def read(self, indices: np.ndarray) -> torch.Tensor:
        """Frames at ``indices`` (any order, repeats allowed) as uint8 ``(len(indices), H, W, 3)`` RGB.

        Each distinct frame is decoded once, in ascending order.
        """
        unique, inverse = np.unique(np.asarray(indices, dtype=np.int64), return_inverse=True)
        frames = self._read_sorted(unique)
        return frames[torch.from_numpy(inverse).to(frames.device)]

    @abstractmethod
    def _read_sorted(self, unique: np.ndarray) -> torch.Tensor:
        """Frames at ascending distinct ``unique`` indices, uint8 ``(len(unique), H, W, 3)``."""


class DecordReader(VideoReader):
    """decord ``VideoReader`` on the CPU, one thread, optionally resizing to ``size`` (swscale bilinear).

    decord's ``get_batch`` fails for some frame sizes (2-pixel-wide, 48x32, ...: "DECORDArrayCopyFromTo:
    The size must exactly match"); such a video is then decoded with PyAV at full size instead.
    """

    def __init__(self, path: str | Path, size: tuple[int, int] | None = None) -> None:
        import decord

        self.path = Path(path)
        self._fallback: _PyAVFrames | None = None
        width, height = size if size is not None else (-1, -1)
        try:
            self._reader = decord.VideoReader(str(path), ctx=decord.cpu(0), width=width, height=height, num_threads=1)
        except (RuntimeError, decord.DECORDError) as exc:
            if "cannot find video stream" in str(exc):
                raise VideoError(f"{path}: cannot open video: {_stream_problem(path)}") from exc
            raise VideoError(f"{path}: cannot open video ({_first_line(exc)})") from exc

    def __len__(self) -> int:
        return len(self._reader)

    @property
    def fps(self) -> float:
        """The container's average frame rate."""
        return float(self._reader.get_avg_fps())

    def frame_starts(self) -> np.ndarray:
        import decord

        try:
            stamps = self._reader.get_frame_timestamp(np.arange(len(self._reader)))
        except (RuntimeError, decord.DECORDError) as exc:
            raise VideoError(f"{self.path}: cannot read frame timestamps ({_first_line(exc)})") from exc
        starts = np.asarray(stamps, dtype=np.float64).reshape(-1, 2)[:, 0]
        return starts - starts[0]

    def _read_sorted(self, unique: np.ndarray) -> torch.Tensor:
        import decord

        if self._fallback is not None:
            return self._fallback._read_sorted(unique)
        try:
            return torch.from_numpy(self._reader.get_batch(unique.tolist()).asnumpy())
        except (RuntimeError, decord.DECORDError) as exc:
            if "DECORDArrayCopyFromTo" in str(exc):
                self._fallback = _PyAVFrames(self.path)
                return self._fallback._read_sorted(unique)
            raise VideoError(f"{self.path}: cannot decode frames {unique[0]}..{unique[-1]} ({_first_line(exc)})") from exc


def _stream_problem(path: Path) -> str:
    """Why decord found no video stream: the file has none, or its codec is one decord's FFmpeg lacks (e.g. AV1)."""
    import av

    try:
        with av.open(str(path)) as container:
            kinds = [stream.type for stream in container.streams]
            video = container.streams.video
            tag = video[0].codec_context.codec_tag if video else ""
    except av.FFmpegError as exc:
        return f"no readable video stream ({_first_line(exc)})"
    if not video:
        return f"the file has no video stream (streams: {', '.join(kinds) or 'none'})"
    return (f"its video codec ({tag!r}) is not in decord's FFmpeg build (AV1, for one, is not); re-encode it, "
            f"e.g. ffmpeg -i {path.name} -c:v libx264 {path.stem}_h264.mp4")


class _PyAVFrames:
    """Full RGB frames decoded in order with PyAV (decord's fallback); ascending reads continue one decode."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._frames: Iterator | None = None
        self._next = 0
        self._container = None

    def _read_sorted(self, unique: np.ndarray) -> torch.Tensor:
        import av

        if self._frames is None or unique[0] < self._next:
            if self._container is not None:
                self._container.close()
            try:
                self._container = av.open(str(self.path))
            except av.FFmpegError as exc:
                raise VideoError(f"{self.path}: cannot open video ({_first_line(exc)})") from exc
            self._frames, self._next = self._container.decode(video=0), 0
        out = []
        try:
            for wanted in unique.tolist():
                while self._next <= wanted:
                    frame = next(self._frames)
                    self._next += 1
                out.append(frame.to_ndarray(format="rgb24"))
        except (StopIteration, av.FFmpegError) as exc:
            raise VideoError(f"{self.path}: cannot decode frames {unique[0]}..{unique[-1]} (PyAV: {exc!r})") from exc
        return torch.from_numpy(np.stack(out))


class TorchcodecReader(VideoReader):
    """torchcodec ``VideoDecoder`` (exact seeking, NHWC) on the CPU or on NVDEC (``device="cuda"``).

    Frame timestamps come from the packets (PyAV demuxing, no decoding), sorted into presentation order.
    """

    def __init__(self, path: str | Path, device: str = "cpu") -> None:
        check_decoder("torchcodec")
        from torchcodec.decoders import VideoDecoder

        self.path = Path(path)
        try:
            self._decoder = VideoDecoder(str(path), dimension_order="NHWC", seek_mode="exact", device=device)
        except (RuntimeError, ValueError) as exc:
            raise VideoError(f"{path}: cannot open video ({_first_line(exc)})") from exc

    def __len__(self) -> int:
        return int(self._decoder.metadata.num_frames)

    def frame_starts(self) -> np.ndarray:
        import av

        try:
            with av.open(str(self.path)) as container:
                stream = container.streams.video[0]
                pts = [p.pts for p in container.demux(stream) if p.pts is not None and p.size > 0]
                base = float(stream.time_base)
        except (av.FFmpegError, IndexError) as exc:
            raise VideoError(f"{self.path}: cannot read frame timestamps ({_first_line(exc)})") from exc
        starts = np.sort(np.asarray(pts, dtype=np.float64))[: len(self)] * base
        if starts.size != len(self):
            raise VideoError(f"{self.path}: {starts.size} packet timestamps for {len(self)} frames")
        return starts - starts[0]

    def _read_sorted(self, unique: np.ndarray) -> torch.Tensor:
        try:
            return self._decoder.get_frames_at(unique.tolist()).data
        except (RuntimeError, IndexError) as exc:
            raise VideoError(f"{self.path}: cannot decode frames {unique[0]}..{unique[-1]} ({_first_line(exc)})") from exc


def probe_video(path: str | Path) -> VideoInfo:
    """Open ``path``, read its timestamps and decode its first and last frames.

    Raises :class:`VideoError` for zero-byte, non-video, truncated or zero-frame files.
    """
    path = Path(path)
    if path.stat().st_size == 0:
        raise VideoError(f"{path}: empty file (0 bytes)")
    reader = DecordReader(path)
    num_frames = len(reader)
    if num_frames == 0:
        raise VideoError(f"{path}: no video frames")
    starts = reader.frame_starts()
    first = reader.read(np.array([0, num_frames - 1]))[0]
    fps = reader.fps
    # The last frame lasts as long as the ones before it, on average.
    duration = float(starts[-1] + (starts[-1] / (num_frames - 1) if num_frames > 1 else 1.0 / fps))
    if not np.isfinite(duration) or duration <= 0:
        raise VideoError(f"{path}: invalid duration {duration!r} from {num_frames} frames at {fps} fps")
    height, width = first.shape[:2]
    return VideoInfo(num_frames=num_frames, fps=fps, duration_s=duration, width=int(width), height=int(height))


def probe_videos(
    paths: Sequence[Path], *, workers: int, timeout_s: float, progress: bool | None = None
) -> Iterator[tuple[Path, VideoInfo | None, str | None]]:
    """Probe ``paths`` in ``workers`` processes; yields ``(path, info, None)`` or ``(path, None, reason)``.

    A probe running longer than ``timeout_s`` seconds has its process killed and is reported as a
    failure, as is a decoder crash; results come in completion order. ``progress`` shows a bar on stderr
    (``None``: only when stderr is a terminal). The probe processes die with this one.
    """
    ctx = multiprocessing.get_context("fork")
    todo = deque(paths)
    idle: list[_ProbeWorker] = []
    busy: dict[multiprocessing.connection.Connection, tuple[_ProbeWorker, Path, float]] = {}
    bar = tqdm(total=len(paths), desc="probe", unit="video", disable=True if not paths else None if progress is None else not progress,
               dynamic_ncols=True, mininterval=1.0, file=sys.stderr)
    try:
        while todo or busy:
            while todo and len(busy) < max(1, workers):
                worker = idle.pop() if idle else _ProbeWorker(ctx)
                path = todo.popleft()
                worker.conn.send(path)
                busy[worker.conn] = (worker, path, time.monotonic())
            deadline = min(started for _, _, started in busy.values()) + timeout_s
            ready = multiprocessing.connection.wait(list(busy), timeout=max(0.0, deadline - time.monotonic()))
            for conn in ready:
                worker, path, _ = busy.pop(conn)
                try:
                    info, reason = conn.recv()
                except EOFError:
                    worker.kill()
                    bar.update()
                    yield path, None, f"decoder crashed (exit code {worker.process.exitcode})"
                    continue
                idle.append(worker)
                bar.update()
                yield path, info, reason
            now = time.monotonic()
            for conn, (worker, path, started) in list(busy.items()):
                if now - started >= timeout_s:
                    del busy[conn]
                    worker.kill()
                    bar.update()
                    yield path, None, f"probe timed out after {timeout_s:g} s"
    finally:
        bar.close()
        for worker in idle + [w for w, _, _ in busy.values()]:
            worker.kill()


class _ProbeWorker:
    """One probing process fed paths over a pipe; killed (not asked) when it hangs."""

    def __init__(self, ctx) -> None:
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=_probe_loop, args=(child, os.getpid()), daemon=True)
        self.process.start()
        child.close()

    def kill(self) -> None:
        if self.process.is_alive():
            self.process.kill()
        self.process.join()
        self.conn.close()


def _probe_loop(conn: multiprocessing.connection.Connection, parent_pid: int) -> None:
    """Probe the paths sent over ``conn`` until it closes; the process dies with ``parent_pid``.

    The process is forked from one whose torch thread pool may be running: with one thread torch never enters
    that (fork-unsafe) pool here.
    """
    torch.set_num_threads(1)
    exit_with_parent(parent_pid)
    while True:
        try:
            path = conn.recv()
        except EOFError:
            return
        try:
            conn.send((probe_video(path), None))
        except (VideoError, OSError) as exc:
            conn.send((None, str(exc)))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
