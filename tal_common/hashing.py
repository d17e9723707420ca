"""File fingerprints recorded in outputs (weights, features, annotations): hex sha256, read in 1 MiB blocks."""
from __future__ import annotations

import hashlib
from pathlib import Path

__all__ = ["file_sha256"]


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of the file at ``path``, read in 1 MiB blocks (constant memory)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
