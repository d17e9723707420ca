"""The one way this project publishes a file: write a temporary sibling, fsync it, rename it over the target,
fsync the directory. A kill at any instant leaves the old file or the new one, never a partial one.

Temporary names are ``.<name>.tmp<pid>`` beside the target, so two processes never share one and a killed
writer's leftovers are recognisable (:func:`remove_stale_temporaries`).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable

__all__ = [
    "check_output_path",
    "durable_replace",
    "durable_unlink",
    "temporary_path",
    "write_atomic",
    "write_text_atomic",
    "write_json_atomic",
    "remove_stale_temporaries",
]


def check_output_path(path: Path, option: str, folder: bool = False) -> None:
    """Before any work: ``ValueError`` naming ``option`` and ``path`` when ``path`` cannot become the output file
    (``folder``: the output folder) it is meant to be, because it exists as the other kind or an existing ancestor
    is a file."""
    path = Path(path)
    wanted, other = ("folder", "file") if folder else ("file", "folder")
    if path.exists() and path.is_dir() != folder:
        raise ValueError(f"{option} {path}: is a {other}; give the path of the {wanted} to write")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ValueError(f"{option} {path}: cannot be created, {parent} is a file, not a folder")
            return


def temporary_path(final: Path) -> Path:
    """The temporary sibling this process writes before publishing ``final``."""
    final = Path(final)
    return final.with_name(f".{final.name}.tmp{os.getpid()}")


def _fsync_path(path: Path, flags: int = os.O_RDONLY) -> None:
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def durable_replace(tmp: Path, final: Path) -> None:
    """fsync ``tmp``, rename it onto ``final`` and fsync the directory: ``final`` is old or new, never partial."""
    _fsync_path(Path(tmp))
    os.replace(tmp, final)
    _fsync_path(Path(final).parent)


def durable_unlink(path: Path) -> None:
    """Remove ``path`` and fsync its directory, so the removal reaches the disk before any later operation."""
    Path(path).unlink()
    _fsync_path(Path(path).parent)


def write_atomic(final: Path, write: Callable[[Path], None]) -> None:
    """Publish ``final`` atomically: ``write(tmp)`` fills a temporary sibling, which then replaces ``final``.

    The parent folder is created when missing; on any error the temporary file is removed and the error
    re-raised, leaving ``final`` as it was.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(final)
    try:
        write(tmp)
        durable_replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text_atomic(final: Path, text: str) -> None:
    """Publish ``text`` (UTF-8) at ``final`` atomically."""
    write_atomic(final, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_json_atomic(final: Path, obj: Any, indent: int | None = None) -> None:
    """Publish ``obj`` as JSON at ``final`` atomically."""
    write_text_atomic(final, json.dumps(obj, indent=indent))


def remove_stale_temporaries(folder: Path, name: str) -> list[Path]:
    """Remove the temporaries that killed writers of ``folder/name`` left behind; returns what was removed."""
    removed = []
    for stale in Path(folder).glob(f".{name}.tmp*"):
        stale.unlink(missing_ok=True)
        removed.append(stale)
    return removed
