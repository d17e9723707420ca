"""The localizer (a proposal head and the task's classifier on the same window features) and its checkpoints.

A checkpoint (``runs/NAME/checkpoints/*.pt``) is a plain dict of tensors and containers, loadable with
``torch.load(weights_only=True)``: ``head`` and ``classifier`` state dicts, ``config`` (the resolved
:class:`LocalizeConfig` as a dict), ``feat_dim``, ``vocabulary``, ``feature_stats``, ``features`` (the feature file's provenance: backbone, weights,
their sha256 and the extraction config, so ``detect`` extracts matching features), plus the training state
(``optimizer``, ``scheduler``, ``epoch``, ``best``, ``rng``, ``metrics``) that ``--resume`` restores.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from localization.config import LocalizeConfig
from localization.data import FeatureStats
from localization.heads import HEADS, Head, HeadOutputs
from localization.tasks import Task, Vocabulary, make_task
from tal_common.checkpoint import CheckpointError, load_checkpoint_file
from tal_common.config import ConfigError, load_config


# Globals an mmengine Runner checkpoint holds besides tensors (its message hub's log history, numpy arrays and
# dtypes in it). They are unpickled as inert stand-ins: none of their code runs and only ``state_dict`` is used.
RUNNER_GLOBALS = (
    "mmengine.logging.history_buffer.HistoryBuffer",
    "numpy._core.multiarray._reconstruct", "numpy.core.multiarray._reconstruct",
    "numpy._core.multiarray.scalar", "numpy.core.multiarray.scalar",
    "numpy.ndarray", "numpy.dtype", "builtins.getattr",
)


class Localizer(nn.Module):
    """A proposal head and a classifier side by side on window features ``(B, C, T)``; without a classifier
    (a head loaded from another toolkit's checkpoint) it yields proposals only."""

    def __init__(self, head: Head, classifier: nn.Module | None) -> None:
        super().__init__()
        self.head = head
        self.classifier = classifier

    def forward(self, x: torch.Tensor) -> tuple[HeadOutputs, Any]:
        """``x (B, C, T)`` -> ``(head outputs, classifier output or None)``."""
        return self.head(x), None if self.classifier is None else self.classifier(x)


def build_head(cfg: LocalizeConfig, feat_dim: int) -> Head:
    """The head named by ``cfg.model.head`` for ``feat_dim``-channel windows."""
    m = cfg.model
    return HEADS[m.head](
        feat_dim, cfg.data.tscale, cfg.data.resolved_dscale, reference=m.reference, num_samples=m.num_samples,
        num_samples_per_bin=m.num_samples_per_bin, boundary_ratio=m.boundary_ratio,
        hidden_dim_1d=m.hidden_dim_1d, hidden_dim_2d=m.hidden_dim_2d, hidden_dim_3d=m.hidden_dim_3d,
    )


def build_localizer(cfg: LocalizeConfig, task: Task, feat_dim: int, vocab: Vocabulary) -> Localizer:
    """The head named by ``cfg.model.head`` and the task's classifier for ``feat_dim``-channel features."""
    return Localizer(build_head(cfg, feat_dim), task.build_classifier(feat_dim, vocab))


def stats_to_dict(stats: FeatureStats | None) -> dict[str, list[float]] | None:
    """Checkpoint form of the feature statistics."""
    return None if stats is None else {"mean": stats.mean.tolist(), "std": stats.std.tolist()}


def stats_from_dict(data: dict[str, list[float]] | None) -> FeatureStats | None:
    """Inverse of :func:`stats_to_dict`."""
    if data is None:
        return None
    return FeatureStats(np.asarray(data["mean"], np.float32), np.asarray(data["std"], np.float32))


@dataclass
class TrainedRun:
    """What inference needs from a checkpoint: config, task, model, vocabulary, feature statistics."""

    cfg: LocalizeConfig
    task: Task
    model: Localizer
    vocab: Vocabulary | None  # None: a proposal-only head from another toolkit
    stats: FeatureStats | None
    checkpoint: Path
    feat_dim: int
    features: dict[str, str]


def load_run(run_dir: Path, which: str = "best", device: torch.device | str = "cpu") -> TrainedRun:
    """Load ``run_dir/checkpoints/{which}.pt`` (falls back to ``last.pt`` when ``best.pt`` is absent)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"{run_dir}: no such run folder (train-localizer --work-dir writes one)")
    path = run_dir / "checkpoints" / f"{which}.pt"
    if not path.is_file() and which == "best":
        path = run_dir / "checkpoints" / "last.pt"
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir}: no checkpoint at checkpoints/{which}.pt (is this a train-localizer run folder?)")
    return run_from_state(load_checkpoint_file(path), path, device)


def run_from_state(state: dict[str, Any], path: Path, device: torch.device | str = "cpu") -> TrainedRun:
    """Rebuild the model of a loaded checkpoint dict (``path`` names it in errors)."""
    missing = [k for k in ("config", "vocabulary", "feat_dim", "head", "classifier", "feature_stats") if k not in state]
    if missing:
        raise CheckpointError(f"{path}: not a train-localizer checkpoint (missing {', '.join(missing)})")
    cfg = config_from_dict(state["config"], path)
    task = make_task(cfg)
    vocab = Vocabulary.from_dict(state["vocabulary"])
    feat_dim = int(state["feat_dim"])
    model = build_localizer(cfg, task, feat_dim, vocab)
    try:
        model.head.load_state_dict(state["head"])
        model.classifier.load_state_dict(state["classifier"])
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: weights do not fit the stored config ({str(exc).splitlines()[0]})") from None
    model.to(device).eval()
    features = dict(state.get("features", {}))
    return TrainedRun(cfg, task, model, vocab, stats_from_dict(state["feature_stats"]), path, feat_dim, features)


def run_from_checkpoint(path: Path, cfg: LocalizeConfig | None, device: torch.device | str = "cpu",
                        feature_norm: str = "checkpoint") -> TrainedRun:
    """Load a checkpoint file: a train-localizer checkpoint (it holds its config; ``cfg`` must be None) or a head
    checkpoint of the reference toolkit (mmaction2 BMN: a plain state dict, a ``{"state_dict": ...}`` file or an
    mmengine Runner file), which ``cfg`` describes and which yields proposals only.

    ``feature_norm``: ``checkpoint`` (the normalisation the checkpoint was trained with: a train-localizer run's
    statistics; none for a reference checkpoint, which was trained on raw features) or ``none`` (raw features).
    """
    if feature_norm not in FEATURE_NORMS:
        raise ValueError(f"feature normalisation must be one of {FEATURE_NORMS}, got {feature_norm!r}")
    path = Path(path)
    state = load_checkpoint_file(path, "train-localizer or mmaction2 BMN checkpoint", stand_ins=RUNNER_GLOBALS)
    if "config" in state and "head" in state:
        if cfg is not None:
            raise ConfigError(f"{path}: a train-localizer checkpoint holds its own config; drop --config")
        run = run_from_state(state, path, device)
        if feature_norm == "none":
            run.stats = None
        return run
    if cfg is None:
        raise ConfigError(f"{path}: not a train-localizer checkpoint, so its model is not described in it: "
                          "pass --config with the head's settings (e.g. the mmaction2 config's tscale and widths)")
    weights = _reference_weights(state, path)
    try:
        feat_dim = HEADS[cfg.model.head].reference_feat_dim(weights, path)
        head = build_head(cfg, feat_dim)
        head.load_reference(weights, path)
    except ValueError as exc:
        raise CheckpointError(str(exc)) from None
    model = Localizer(head, None).to(device).eval()
    return TrainedRun(cfg, make_task(cfg), model, None, None, path, feat_dim, {})


def init_head(head: Head, path: Path) -> str:
    """Load the head weights of a checkpoint file into ``head`` (``train-localizer --init-from``): a train-localizer
    checkpoint's head, or the reference toolkit's (mmaction2 BMN) weights. Returns what was loaded, for the log."""
    path = Path(path)
    state = load_checkpoint_file(path, "train-localizer or mmaction2 BMN checkpoint", stand_ins=RUNNER_GLOBALS)
    try:
        if "config" in state and "head" in state:
            head.load_state_dict(state["head"])
            return f"the head of train-localizer checkpoint {path}"
        head.load_reference(_reference_weights(state, path), path)
    except (RuntimeError, ValueError) as exc:
        raise CheckpointError(f"{path}: its head weights do not fit this config's head ({str(exc).splitlines()[0]})") from None
    return f"the reference head weights of {path}"


def _reference_weights(state: dict[str, Any], path: Path) -> dict[str, torch.Tensor]:
    """The state dict of a reference-toolkit checkpoint (plain, or under ``state_dict`` as mmcv/mmengine save it)."""
    weights = state.get("state_dict", state)
    if not isinstance(weights, dict) or not weights or not all(isinstance(v, torch.Tensor) for v in weights.values()):
        raise CheckpointError(f"{path}: not a head checkpoint (expected a state dict of tensors, or one under 'state_dict')")
    return weights


FEATURE_NORMS = ("checkpoint", "none")


def config_from_dict(data: dict[str, Any], origin: Path) -> LocalizeConfig:
    """Rebuild the typed config stored in a checkpoint, through the same validation as a YAML file."""
    overrides = [f"{section}={json.dumps(values)}" for section, values in data.items()]
    try:
        return load_config(LocalizeConfig, overrides=overrides)
    except ConfigError as exc:
        raise ConfigError(f"{origin}: stored config does not fit this version: {exc}") from exc
