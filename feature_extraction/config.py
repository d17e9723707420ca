"""The extraction config: YAML presets (``configs/extract/``) parsed into typed dataclasses, then resolved.

``resolve_config`` fills what a preset leaves open (``None``) from the weights choice's preprocessing,
so the clip length, resolution and normalisation always match the checkpoint.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import torch

from feature_extraction.clips import ClipSampler, to_fraction
from feature_extraction.video import check_decoder
from feature_extraction.weights import get_weights_spec
from tal_common.config import ConfigError, config_to_dict, packaged_configs

PRESETS = ("hacs", "ek100", "demo")


@dataclass
class SamplingConfig:
    """Clip sampling on the source timeline; ``None``/``auto`` take the weights' value.

    ``rule``: ``tadaconv`` (the official interval-based test rule) or ``nominal`` (even spacing at
    ``sample_fps``), see :mod:`feature_extraction.clips`.
    """

    sample_fps: float | str = 30
    clip_len: int | None = None
    frame_interval: int | None = None
    stride: int = 16
    rule: Literal["auto", "tadaconv", "nominal"] = "auto"

    def __post_init__(self) -> None:
        try:
            fps = to_fraction(self.sample_fps)
        except (ValueError, ZeroDivisionError):
            raise ValueError(f"sample_fps = {self.sample_fps!r} is not a frame rate (e.g. 30, 29.97 or 30000/1001)") from None
        if fps <= 0:
            raise ValueError(f"sample_fps = {self.sample_fps!r} must be > 0")


@dataclass
class PreprocessConfig:
    """Frame preparation; ``None``/``auto`` take the weights' value. ``crops``: 1 (centre) or 3 (along the long side).

    ``resize``: ``device`` (full frames decoded, official ``F.interpolate`` bilinear on the model's device)
    or ``decoder`` (decord resizes while decoding: faster on CPU-only machines, not the official pixels).
    """

    short_side: int | None = None
    crop_size: int | None = None
    crops: Literal[1, 3] = 1
    mean: list[float] | None = None
    std: list[float] | None = None
    resize: Literal["auto", "device", "decoder"] = "auto"


@dataclass
class ModelConfig:
    """Backbone and named weights choice (``random`` builds ``base_width`` from ``seed``)."""

    backbone: Literal["tada2d_r50", "tadaconvnext_tiny"] = "tada2d_r50"
    weights: str = "official-k400"
    base_width: int | None = None
    precision: Literal["auto", "fp32", "fp16", "bf16"] = "auto"
    seed: int = 0


@dataclass
class RunConfig:
    """Execution knobs (they do not change the features).

    ``decoder``: ``decord`` or ``torchcodec`` (identical frames; with ``device`` cuda torchcodec decodes on
    NVDEC in the main process).
    """

    device: Literal["auto", "cpu", "cuda"] = "auto"
    decoder: Literal["decord", "torchcodec"] = "decord"
    batch_size: int = 32
    workers: int = 4
    chunk_clips: int = 4
    probe_workers: int = 4
    probe_timeout_s: float = 120.0
    decode_timeout_s: float = 600.0
    compression: str | None = None


@dataclass
class ExtractConfig:
    """A resolved extraction config (what the HDF5 file records)."""

    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    run: RunConfig = field(default_factory=RunConfig)


def preset_path(name: str) -> Path:
    """The YAML file of preset ``name`` (``configs/extract/NAME.yaml``, shipped as package data)."""
    presets = packaged_configs("extract")
    if name not in presets:
        raise ConfigError(f"preset {name!r} not found; packaged presets: {', '.join(presets)}")
    return presets[name]


def resolve_config(cfg: ExtractConfig, cuda: bool) -> ExtractConfig:
    """Fill every ``None`` from the weights' preprocessing and ``auto`` precision from the device."""
    pre = get_weights_spec(cfg.model.backbone, cfg.model.weights).preprocessing
    sampling = replace(
        cfg.sampling,
        clip_len=cfg.sampling.clip_len or pre.clip_len,
        frame_interval=cfg.sampling.frame_interval or pre.frame_interval,
        rule=pre.sampling if cfg.sampling.rule == "auto" else cfg.sampling.rule,
    )
    preprocess = replace(
        cfg.preprocess,
        short_side=cfg.preprocess.short_side or pre.short_side,
        crop_size=cfg.preprocess.crop_size or min(pre.crop_size, cfg.preprocess.short_side or pre.crop_size),
        mean=list(cfg.preprocess.mean or pre.mean),
        std=list(cfg.preprocess.std or pre.std),
        resize=pre.resize if cfg.preprocess.resize == "auto" else cfg.preprocess.resize,
    )
    precision = cfg.model.precision
    if precision == "auto":
        precision = "bf16" if cuda and torch.cuda.is_bf16_supported() else "fp32"
    if cfg.model.base_width is not None and (cfg.model.weights != "random" or cfg.model.backbone != "tada2d_r50"):
        raise ConfigError("model.base_width applies only to tada2d_r50 with weights 'random' (checkpoints fix their width)")
    resolved = replace(cfg, sampling=sampling, preprocess=preprocess, model=replace(cfg.model, precision=precision))
    if resolved.preprocess.crop_size > resolved.preprocess.short_side:
        raise ConfigError(f"preprocess.crop_size {resolved.preprocess.crop_size} exceeds preprocess.short_side {resolved.preprocess.short_side}")
    if len(resolved.preprocess.mean) != 3 or len(resolved.preprocess.std) != 3:
        raise ConfigError("preprocess.mean and preprocess.std need 3 values (RGB)")
    try:
        check_decoder(cfg.run.decoder)
    except ValueError as exc:
        raise ConfigError(f"run.decoder: {exc}") from exc
    if resolved.preprocess.resize == "decoder" and cfg.run.decoder != "decord":
        raise ConfigError(f"preprocess.resize=decoder needs run.decoder=decord (got {cfg.run.decoder!r})")
    for name in ("batch_size", "workers", "chunk_clips", "probe_workers"):
        if getattr(cfg.run, name) < (0 if name == "workers" else 1):
            raise ConfigError(f"run.{name} must be positive, got {getattr(cfg.run, name)}")
    return resolved


def make_sampler(cfg: ExtractConfig) -> ClipSampler:
    """The clip sampler of a resolved config."""
    s = cfg.sampling
    return ClipSampler(to_fraction(s.sample_fps), int(s.clip_len), int(s.frame_interval), s.stride, s.rule)


def feature_identity(cfg: ExtractConfig, weights_sha256: str) -> dict:
    """What must match for two runs' features to belong in one file (everything except ``run``)."""
    plain = config_to_dict(cfg)
    plain.pop("run")
    return {"config": plain, "weights_sha256": weights_sha256}
