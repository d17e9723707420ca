"""Training BMN and the detection classifier on HDF5 features.

``train(...)`` runs the whole job into a run folder::

    runs/NAME/config.yaml             the resolved config
    runs/NAME/train.log               log lines (rank 0)
    runs/NAME/metrics.jsonl           one JSON line per epoch: losses, val losses, lr
    runs/NAME/checkpoints/last.pt     model, classifier, optimizer, scheduler, epoch, RNG states, config,
    runs/NAME/checkpoints/best.pt     vocabulary and feature statistics (lowest val loss, else train loss)

Checkpoints are written atomically (temp file + ``os.replace``). ``resume=True`` restores ``last.pt``
including the RNG states and continues with the next epoch; since each epoch's shuffle is seeded by
``seed + epoch``, an interrupted and resumed run ends with the same weights as an uninterrupted one.

Under ``torchrun`` (``WORLD_SIZE > 1``) the job runs data-parallel: gloo on CPU, NCCL on CUDA, a
``DistributedSampler`` shards each epoch, rank 0 writes every file.
"""
from __future__ import annotations

import json
import logging
import math
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from localization.bmn import BMN
from localization.classify import SnippetClassifier, VideoClassifier
from localization.config import LocalizeConfig
from localization.data import (
    FeatureStats,
    VideoEntry,
    WindowDataset,
    build_entries,
    compute_feature_stats,
    ek100_windows,
    hacs_windows,
)
from localization.losses import bmn_loss
from tal_common.annotations import AnnotationError, AnnotationSet, read_annotations
from tal_common.atomic import write_atomic, write_text_atomic
from tal_common.config import config_to_dict, config_to_yaml
from tal_common.h5 import FeatureReader

LOG = logging.getLogger(__name__)
LOSS_KEYS = ("loss", "tem", "pem_reg", "pem_cls", "cls")


@dataclass(frozen=True)
class Vocabulary:
    """What the classifier predicts: HACS class names, or EK100 verb/noun counts (background excluded)."""

    labels: tuple[str, ...] = ()
    num_verbs: int = 0
    num_nouns: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"labels": list(self.labels), "num_verbs": self.num_verbs, "num_nouns": self.num_nouns}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Vocabulary":
        return cls(tuple(data["labels"]), int(data["num_verbs"]), int(data["num_nouns"]))


class Localizer(nn.Module):
    """BMN and the detection classifier side by side on the same window features ``(B, C, T)``."""

    def __init__(self, bmn: BMN, classifier: VideoClassifier | SnippetClassifier) -> None:
        super().__init__()
        self.bmn = bmn
        self.classifier = classifier

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, Any]:
        """``x (B, C, T)`` -> ``(conf (B, 2, D, T), start (B, T), end (B, T), classifier output)``."""
        conf, start, end = self.bmn(x)
        return conf, start, end, self.classifier(x)


def build_localizer(cfg: LocalizeConfig, feat_dim: int, vocab: Vocabulary) -> Localizer:
    """The BMN + classifier described by ``cfg`` for ``feat_dim``-channel features."""
    m = cfg.model
    bmn = BMN(
        feat_dim, cfg.data.tscale, cfg.data.resolved_dscale, num_samples=m.num_samples,
        num_samples_per_bin=m.num_samples_per_bin, boundary_ratio=m.boundary_ratio,
        hidden_dim_1d=m.hidden_dim_1d, hidden_dim_2d=m.hidden_dim_2d, hidden_dim_3d=m.hidden_dim_3d,
    )
    c = cfg.classifier
    if cfg.data.mode == "hacs":
        classifier: nn.Module = VideoClassifier(feat_dim, len(vocab.labels), c.hidden_dim, c.dropout)
    else:
        classifier = SnippetClassifier(feat_dim, vocab.num_verbs, vocab.num_nouns, c.hidden_dim, c.dropout)
    return Localizer(bmn, classifier)


def build_vocabulary(cfg: LocalizeConfig, annotations: AnnotationSet) -> Vocabulary:
    """HACS: the sorted training labels. EK100: verb/noun counts from the config or the largest id + 1."""
    if cfg.data.mode == "hacs":
        labels = tuple(sorted({s.label for v in annotations.videos.values() for s in v.segments}))
        if not labels:
            raise AnnotationError(f"{annotations.source}: the training videos have no segments")
        return Vocabulary(labels=labels)
    segs = [s for v in annotations.videos.values() for s in v.segments]
    if any(s.verb is None or s.noun is None for s in segs):
        raise AnnotationError(f"{annotations.source}: EK100 mode needs verb_class/noun_class on every segment")
    max_verb = max((s.verb for s in segs), default=-1)
    max_noun = max((s.noun for s in segs), default=-1)
    num_verbs = cfg.classifier.num_verbs or max_verb + 1
    num_nouns = cfg.classifier.num_nouns or max_noun + 1
    if max_verb >= num_verbs or max_noun >= num_nouns:
        raise AnnotationError(
            f"{annotations.source}: verb/noun ids up to {max_verb}/{max_noun} exceed classifier.num_verbs/num_nouns "
            f"= {num_verbs}/{num_nouns}"
        )
    return Vocabulary(num_verbs=num_verbs, num_nouns=num_nouns)


def make_dataset(
    cfg: LocalizeConfig,
    reader: FeatureReader,
    entries: list[VideoEntry],
    stats: FeatureStats | None,
    vocab: Vocabulary,
    with_targets: bool,
    training: bool,
) -> WindowDataset:
    """The windows of ``entries`` for ``cfg.data.mode`` (EK100 training keeps windows holding a whole action)."""
    d = cfg.data
    if d.mode == "hacs":
        windows = hacs_windows(entries, d.tscale)
    else:
        windows = ek100_windows(entries, d.tscale, d.window_bin_s, d.window_overlap, require_action=training)
    return WindowDataset(
        reader, entries, windows, d.mode, d.tscale, d.resolved_dscale, stats, with_targets,
        class_index={label: i for i, label in enumerate(vocab.labels)},
        num_verbs=vocab.num_verbs, num_nouns=vocab.num_nouns, min_segment_fraction=d.min_segment_fraction,
    )


def stats_to_dict(stats: FeatureStats | None) -> dict[str, list[float]] | None:
    """Checkpoint form of the feature statistics."""
    return None if stats is None else {"mean": stats.mean.tolist(), "std": stats.std.tolist()}


def stats_from_dict(data: dict[str, list[float]] | None) -> FeatureStats | None:
    """Inverse of :func:`stats_to_dict`."""
    if data is None:
        return None
    return FeatureStats(np.asarray(data["mean"], np.float32), np.asarray(data["std"], np.float32))


@dataclass
class _Dist:
    rank: int = 0
    world: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def main(self) -> bool:
        return self.rank == 0


def _setup_distributed(device: str) -> _Dist:
    """Join the process group when launched by torchrun; pick the device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    use_cuda = torch.cuda.is_available() if device == "auto" else device == "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device is 'cuda' but CUDA is not available")
    if world > 1:
        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if use_cuda else "gloo")
        rank = dist.get_rank()
        local = int(os.environ.get("LOCAL_RANK", "0"))
    else:
        rank, local = 0, 0
    if use_cuda:
        torch.cuda.set_device(local)
        return _Dist(rank, world, torch.device("cuda", local))
    return _Dist(rank, world, torch.device("cpu"))


def _read_split(
    cfg: LocalizeConfig, path: Path, subset: str, video_info: Path | None, required: bool
) -> AnnotationSet | None:
    """An annotation file restricted, for HACS JSON, to ``subset`` (EK100 CSVs are one subset each)."""
    annotations = read_annotations(path, video_info=video_info if cfg.data.mode == "ek100" else None)
    if cfg.data.mode == "ek100":
        return annotations
    try:
        return annotations.subset(subset)
    except AnnotationError:
        if required:
            raise
        return None


def train(
    cfg: LocalizeConfig,
    features: Path,
    annotations: Path,
    work_dir: Path,
    *,
    resume: bool = False,
    val_annotations: Path | None = None,
    video_info: Path | None = None,
) -> dict[str, Any]:
    """Train BMN + classifier; returns the last epoch's metrics (see the module docstring for the outputs).

    ``annotations``: HACS/ActivityNet JSON (``data.train_subset`` is trained on, ``data.val_subset`` of the
    same file or of ``val_annotations`` gives the validation loss) or an EK100 CSV (the training rows;
    ``val_annotations`` the validation CSV; ``video_info`` the EK100 video-info CSV for durations).
    """
    env = _setup_distributed(cfg.train.device)
    work_dir = Path(work_dir)
    ckpt_dir = work_dir / "checkpoints"
    if env.main:
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        if not resume and (ckpt_dir / "last.pt").exists():
            raise FileExistsError(f"{work_dir} already holds a run; pass --resume to continue it or pick a new --work-dir")
    log_handler = _attach_log_file(work_dir / "train.log") if env.main else None
    try:
        return _train(cfg, env, features, annotations, work_dir, resume, val_annotations, video_info)
    finally:
        if log_handler is not None:
            logging.getLogger().removeHandler(log_handler)
            log_handler.close()


def _train(
    cfg: LocalizeConfig,
    env: _Dist,
    features: Path,
    annotations: Path,
    work_dir: Path,
    resume: bool,
    val_annotations: Path | None,
    video_info: Path | None,
) -> dict[str, Any]:
    ckpt_dir = work_dir / "checkpoints"
    _seed_everything(cfg.train.seed)
    reader = FeatureReader(features)
    train_ann = _read_split(cfg, annotations, cfg.data.train_subset, video_info, required=True)
    val_source = val_annotations if val_annotations is not None else (annotations if cfg.data.mode == "hacs" else None)
    val_ann = None if val_source is None else _read_split(cfg, val_source, cfg.data.val_subset, video_info, required=False)

    state = _load_checkpoint(ckpt_dir / "last.pt", env.device) if resume else None
    if state is not None:
        vocab = Vocabulary.from_dict(state["vocabulary"])
        stats = stats_from_dict(state["feature_stats"])
    else:
        vocab = build_vocabulary(cfg, train_ann)
        stats = None
    train_entries = build_entries(reader, train_ann, cfg.data.mode)
    if cfg.data.normalize and stats is None:
        stats = compute_feature_stats(reader, train_entries)
    train_set = make_dataset(cfg, reader, train_entries, stats, vocab, with_targets=True, training=True)
    if len(train_set) == 0:
        raise ValueError(f"{annotations}: no training windows (EK100: no window of {cfg.data.tscale} bins holds a whole action)")
    val_set = None
    if val_ann is not None:
        val_entries = build_entries(reader, val_ann, cfg.data.mode)
        val_set = make_dataset(cfg, reader, val_entries, stats, vocab, with_targets=True, training=False)

    feat_dim = train_entries[0].feat_dim
    model = build_localizer(cfg, feat_dim, vocab).to(env.device)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=cfg.train.lr_steps, gamma=cfg.train.lr_gamma)
    start_epoch, best = 0, math.inf
    if state is not None:
        model.bmn.load_state_dict(state["model"])
        model.classifier.load_state_dict(state["classifier"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start_epoch, best = state["epoch"] + 1, state["best"]
        _set_rng_state(state["rng"])
        _warn_config_changes(state["config"], config_to_dict(cfg))
    if env.main:
        write_text_atomic(work_dir / "config.yaml", config_to_yaml(cfg))
        _truncate_metrics(work_dir / "metrics.jsonl", start_epoch)
        LOG.info(
            "%s: %d training windows from %d videos%s; feat_dim %d; %s epochs %d..%d on %s x%d",
            "resumed" if state else "training", len(train_set), len(train_entries),
            f", {len(val_set)} validation windows" if val_set is not None else "", feat_dim,
            cfg.data.mode, start_epoch, cfg.train.epochs - 1, env.device, env.world,
        )
    net: nn.Module = model
    if env.world > 1:
        net = DistributedDataParallel(model, device_ids=[env.device.index] if env.device.type == "cuda" else None)

    sampler = DistributedSampler(train_set, num_replicas=env.world, rank=env.rank, shuffle=True, seed=cfg.train.seed)
    loader = DataLoader(
        train_set, batch_size=cfg.train.batch_size, sampler=sampler, num_workers=cfg.data.num_workers,
        persistent_workers=cfg.data.num_workers > 0,
    )
    val_loader = None
    if val_set is not None and len(val_set):
        val_sampler = DistributedSampler(val_set, num_replicas=env.world, rank=env.rank, shuffle=False)
        val_loader = DataLoader(val_set, batch_size=cfg.train.batch_size, sampler=val_sampler, num_workers=cfg.data.num_workers)

    metrics: dict[str, Any] = {}
    for epoch in range(start_epoch, cfg.train.epochs):
        sampler.set_epoch(epoch)
        lr = optimizer.param_groups[0]["lr"]
        train_losses = _run_epoch(net, model, loader, env, cfg, optimizer, desc=f"epoch {epoch}")
        val_losses = _run_epoch(net, model, val_loader, env, cfg, None, desc="val") if val_loader else None
        scheduler.step()
        metrics = {"epoch": epoch, "lr": lr, **train_losses}
        if val_losses is not None:
            metrics.update({f"val_{k}": v for k, v in val_losses.items()})
        score = val_losses["loss"] if val_losses is not None else train_losses["loss"]
        is_best = score < best
        best = min(best, score)
        if env.main:
            checkpoint = {
                "model": model.bmn.state_dict(), "classifier": model.classifier.state_dict(),
                "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "epoch": epoch, "best": best, "config": config_to_dict(cfg), "feat_dim": feat_dim,
                "vocabulary": vocab.to_dict(), "feature_stats": stats_to_dict(stats), "rng": _rng_state(),
            }
            write_atomic(ckpt_dir / "last.pt", lambda tmp: torch.save(checkpoint, tmp))
            if is_best:
                write_atomic(ckpt_dir / "best.pt", lambda tmp: torch.save(checkpoint, tmp))
            with open(work_dir / "metrics.jsonl", "a") as f:
                f.write(json.dumps(metrics) + "\n")
            LOG.info("epoch %d: %s", epoch, " ".join(f"{k}={v:.4g}" for k, v in metrics.items() if k != "epoch"))
        if env.world > 1:
            dist.barrier()
    return metrics


def _run_epoch(
    net: nn.Module,
    model: Localizer,
    loader: DataLoader,
    env: _Dist,
    cfg: LocalizeConfig,
    optimizer: torch.optim.Optimizer | None,
    desc: str,
) -> dict[str, float]:
    """One pass over ``loader``; trains when ``optimizer`` is given. Returns window-averaged losses (all ranks)."""
    training = optimizer is not None
    net.train(training)
    sums = torch.zeros(len(LOSS_KEYS) + 1, dtype=torch.float64, device=env.device)
    with torch.set_grad_enabled(training):
        for batch in tqdm(loader, desc=desc, disable=not env.main, leave=False, dynamic_ncols=True):
            batch = {k: v.to(env.device, non_blocking=True) for k, v in batch.items()}
            conf, start, end, cls_out = net(batch["features"])
            total, tem, pem_reg, pem_cls = _bmn_loss_terms(conf, start, end, batch)
            cls_loss = model.classifier.loss(cls_out, batch)
            loss = total + cfg.classifier.loss_weight * cls_loss
            if not torch.isfinite(loss):
                raise FloatingPointError(f"{desc}: loss is {loss.item()} (check the features and the learning rate)")
            if training:
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            n = batch["features"].shape[0]
            parts = torch.stack([loss, tem, pem_reg, pem_cls, cls_loss]).detach().double() * n
            sums += torch.cat([parts, torch.tensor([n], dtype=torch.float64, device=env.device)])
    if env.world > 1:
        dist.all_reduce(sums)
    count = max(sums[-1].item(), 1.0)
    return {k: sums[i].item() / count for i, k in enumerate(LOSS_KEYS)}


def _bmn_loss_terms(
    conf: torch.Tensor, start: torch.Tensor, end: torch.Tensor, batch: dict[str, torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """BMN total loss and its TEM / PEM-regression / PEM-classification parts for one batch."""
    return bmn_loss(conf, start, end, batch["iou_map"], batch["start"], batch["end"])


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _rng_state() -> dict[str, Any]:
    """The torch / numpy / python RNG states, as tensors and plain containers (loadable with weights_only)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "python": [version, list(internal), gauss_next],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _load_checkpoint(path: Path, device: torch.device) -> dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(f"cannot resume: {path} does not exist")
    return torch.load(path, map_location="cpu", weights_only=True)


def _truncate_metrics(path: Path, start_epoch: int) -> None:
    """Drop metric lines of epochs >= ``start_epoch`` (written before an interruption, now redone)."""
    if not path.exists():
        return
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    kept = [line for line in lines if json.loads(line)["epoch"] < start_epoch]
    path.write_text("".join(line + "\n" for line in kept))


def _warn_config_changes(old: dict[str, Any], new: dict[str, Any]) -> None:
    changed = [key for key, a, b in _flat_diff(old, new) if key != "train.epochs"]
    if changed:
        LOG.warning("resuming with a config that differs from the checkpoint's in: %s", ", ".join(changed))


def _flat_diff(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, Any, Any]]:
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            yield from _flat_diff(a, b, f"{prefix}{key}.")
        elif a != b:
            yield f"{prefix}{key}", a, b


def _attach_log_file(path: Path) -> logging.Handler:
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    if root.level > logging.INFO or root.level == logging.NOTSET:
        root.setLevel(logging.INFO)
    return handler
