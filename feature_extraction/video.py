"""Video files: finding them, probing them, and reading frames with decord.

Frames are always read by index in small batches (``VideoReader.get_batch``), never the whole
video, and resized by the decoder itself so a 1080p source costs no more memory than its resized
frames. Probing runs in killable worker processes with a per-video timeout, so a file that hangs or
crashes the decoder becomes a recorded failure instead of a stalled run.
"""
from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

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


def resized_size(width: int, height: int, short_side: int) -> tuple[int, int]:
    """``(width, height)`` scaled so the shorter side is ``short_side``, aspect ratio kept."""
    scale = short_side / min(width, height)
    return max(short_side, round(width * scale)), max(short_side, round(height * scale))


def open_video(path: str | Path, size: tuple[int, int] | None = None):  # -> decord.VideoReader
    """A single-threaded decord reader that decodes to ``size`` = ``(width, height)`` (source size if None)."""
    import decord

    width, height = size if size is not None else (-1, -1)
    try:
        return decord.VideoReader(str(path), ctx=decord.cpu(0), width=width, height=height, num_threads=1)
    except (RuntimeError, decord.DECORDError) as exc:
        raise VideoError(f"{path}: cannot open video ({_first_line(exc)})") from exc


def frame_starts(reader, path: str | Path) -> np.ndarray:
    """Presentation time of every frame in seconds from the first frame, shape ``(num_frames,)``, ascending."""
    import decord

    try:
        stamps = reader.get_frame_timestamp(np.arange(len(reader)))
    except (RuntimeError, decord.DECORDError) as exc:
        raise VideoError(f"{path}: cannot read frame timestamps ({_first_line(exc)})") from exc
    starts = np.asarray(stamps, dtype=np.float64).reshape(-1, 2)[:, 0]
    return starts - starts[0]


def read_frames(reader, indices: np.ndarray, path: str | Path) -> np.ndarray:
    """Frames at ``indices`` (any order, repeats allowed) as uint8 ``(len(indices), H, W, 3)``.

    Each distinct frame is decoded once, in ascending order.
    """
    import decord

    unique, inverse = np.unique(np.asarray(indices, dtype=np.int64), return_inverse=True)
    try:
        frames = reader.get_batch(unique.tolist()).asnumpy()
    except (RuntimeError, decord.DECORDError) as exc:
        raise VideoError(f"{path}: cannot decode frames {unique[0]}..{unique[-1]} ({_first_line(exc)})") from exc
    return frames[inverse]


def probe_video(path: str | Path) -> VideoInfo:
    """Open ``path``, read its timestamps and decode its first and last frames.

    Raises :class:`VideoError` for zero-byte, non-video, truncated or zero-frame files.
    """
    path = Path(path)
    if path.stat().st_size == 0:
        raise VideoError(f"{path}: empty file (0 bytes)")
    reader = open_video(path)
    num_frames = len(reader)
    if num_frames == 0:
        raise VideoError(f"{path}: no video frames")
    starts = frame_starts(reader, path)
    first = read_frames(reader, np.array([0, num_frames - 1]), path)[0]
    fps = float(reader.get_avg_fps())
    # The last frame lasts as long as the ones before it, on average.
    duration = float(starts[-1] + (starts[-1] / (num_frames - 1) if num_frames > 1 else 1.0 / fps))
    if not np.isfinite(duration) or duration <= 0:
        raise VideoError(f"{path}: invalid duration {duration!r} from {num_frames} frames at {fps} fps")
    height, width = first.shape[:2]
    return VideoInfo(num_frames=num_frames, fps=fps, duration_s=duration, width=int(width), height=int(height))


def probe_videos(
    paths: Sequence[Path], *, workers: int, timeout_s: float
) -> Iterator[tuple[Path, VideoInfo | None, str | None]]:
    """Probe ``paths`` in ``workers`` processes; yields ``(path, info, None)`` or ``(path, None, reason)``.

    A probe running longer than ``timeout_s`` seconds has its process killed and is reported as a
    failure, as is a decoder crash; results come in completion order.
    """
    ctx = multiprocessing.get_context("fork")
    todo = deque(paths)
    idle: list[_ProbeWorker] = []
    busy: dict[multiprocessing.connection.Connection, tuple[_ProbeWorker, Path, float]] = {}
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
                    yield path, None, f"decoder crashed (exit code {worker.process.exitcode})"
                    continue
                idle.append(worker)
                yield path, info, reason
            now = time.monotonic()
            for conn, (worker, path, started) in list(busy.items()):
                if now - started >= timeout_s:
                    del busy[conn]
                    worker.kill()
                    yield path, None, f"probe timed out after {timeout_s:g} s"
    finally:
        for worker in idle + [w for w, _, _ in busy.values()]:
            worker.kill()


class _ProbeWorker:
    """One probing process fed paths over a pipe; killed (not asked) when it hangs."""

    def __init__(self, ctx) -> None:
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=_probe_loop, args=(child,), daemon=True)
        self.process.start()
        child.close()

    def kill(self) -> None:
        if self.process.is_alive():
            self.process.kill()
        self.process.join()
        self.conn.close()


def _probe_loop(conn: multiprocessing.connection.Connection) -> None:
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
