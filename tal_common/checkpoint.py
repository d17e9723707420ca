"""Reading a torch checkpoint file safely: ``torch.load(weights_only=True)`` with errors that name the file.

Pickled code is never run, and a refused file gets our message, never torch's advice to turn the protection off.
Used for the extraction backbone's ``--weights`` and for train-localizer's checkpoints.
"""
from __future__ import annotations

import pickle
import re
import zipfile
from pathlib import Path
from typing import Any, Sequence

import torch

__all__ = ["CheckpointError", "load_checkpoint_file"]


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used; the message names the file and what was expected."""


class _Discarded:
    """Stand-in for a checkpoint object that is not needed (see ``stand_ins``): takes any arguments and state."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        pass


def load_checkpoint_file(path: Path, what: str = "train-localizer checkpoint", stand_ins: Sequence[str] = ()) -> dict[str, Any]:
    """``torch.load(path, weights_only=True)`` with errors that name the file and what was expected.

    Pickled code is never executed: a file that needs anything beyond tensors and plain containers is refused,
    except the globals named in ``stand_ins`` (full dotted names), which load as inert placeholders that run no code.
    """
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path}: is a folder, expected a {what} file")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file (expected a {what})")
    try:
        with torch.serialization.safe_globals([(_Discarded, name) for name in stand_ins]):
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))
        if found is None and not zipfile.is_zipfile(path):
            raise CheckpointError(f"{path}: not a readable {what} (not a file written by torch.save)") from None
        what_else = f" (e.g. {found.group(1)})" if found else ""
        raise CheckpointError(
            f"{path}: not a {what}: it holds objects other than tensors and plain containers{what_else}; "
            "it was not loaded and none of its code was run"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a readable {what} ({type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: not a {what} (holds a {type(state).__name__}, expected a dict)")
    return state
