"""Device choice for every stage: ``auto`` / ``cpu`` / ``cuda`` on the command line, and under ``torchrun`` the
GPU of this process (``LOCAL_RANK``) bound before any collective or CUDA work.

One rule for extraction, training, ``localize`` and ``detect``: a rank with ``LOCAL_RANK`` r uses ``cuda:r``, or
``cuda:r % count`` when ranks outnumber the node's GPUs (several ranks then share a GPU).
"""
from __future__ import annotations

import os

import torch

__all__ = ["want_cuda", "cuda_index", "bind_cuda", "local_device"]


def want_cuda(choice: str) -> bool:
    """Whether ``choice`` (``auto``, ``cpu`` or ``cuda``) means running on CUDA here; ``cuda`` without a GPU is an error."""
    if choice not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be auto, cpu or cuda, got {choice!r}")
    if choice == "cuda" and not torch.cuda.is_available():
        raise ValueError("device cuda was asked for but no CUDA device is available (use --device cpu or auto)")
    return choice == "cuda" or (choice == "auto" and torch.cuda.is_available())


def cuda_index(local_rank: int, device_count: int) -> int:
    """The GPU of a rank: ``LOCAL_RANK`` itself, or ``LOCAL_RANK % device_count`` when ranks outnumber GPUs."""
    if device_count < 1:
        raise ValueError("no CUDA device to place this rank on")
    return local_rank % device_count


def bind_cuda() -> torch.device:
    """Make this rank's GPU, ``cuda:cuda_index(LOCAL_RANK)``, the current device and return it."""
    index = cuda_index(int(os.environ.get("LOCAL_RANK", "0")), torch.cuda.device_count())
    torch.cuda.set_device(index)
    return torch.device("cuda", index)


def local_device(choice: str) -> torch.device:
    """This process's device for ``choice`` (``auto``, ``cpu``, ``cuda``): the CPU, or its bound GPU (:func:`bind_cuda`)."""
    return bind_cuda() if want_cuda(choice) else torch.device("cpu")
