"""Training a proposal head and the task's classifier on HDF5 features.

``train(...)`` runs the whole job into a run folder::

    runs/NAME/config.yaml             the resolved config and the inputs (paths and sha256 of features, annotations)
    runs/NAME/train.log               log lines (rank 0)
    runs/NAME/metrics.jsonl           one JSON line per epoch: losses, val losses, lr
    runs/NAME/checkpoints/last.pt     the committed training state (see below)
    runs/NAME/checkpoints/best.pt     the weights of the epoch with the lowest validation loss (training loss
                                      when there is no validation set): what ``localize`` uses by default
    runs/NAME/tensorboard/            TensorBoard scalars (when the ``tensorboard`` package is installed)

Each epoch ends with one atomic commit: ``last.pt`` holds the model, optimizer, scheduler, RNG states, the
best-so-far (score, epoch and weights) and every metrics row so far, and is published by one rename. ``best.pt``
and ``metrics.jsonl`` are derived from it right after, and again on ``--resume``, so a kill at any instant
leaves the previous epoch's state or this one's, never a mix; stale temporary files are removed on resume.
Since each epoch's shuffle is seeded by ``seed + epoch`` and the RNG states are restored, an interrupted and
resumed run ends with files bitwise equal to an uninterrupted one.

Under ``torchrun`` (``WORLD_SIZE > 1``) the job runs data-parallel: gloo on CPU, NCCL on CUDA, a
``DistributedSampler`` shards each epoch, rank 0 writes every file.
"""
from __future__ import annotations

import json
import logging
import math
import os
import random
import sys
import time
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

from localization.config import LocalizeConfig
from localization.data import VideoEntry, build_entries, compute_feature_stats, make_dataset
from localization.model import (
    Localizer,
    build_localizer,
    config_from_dict,
    init_head,
    load_checkpoint_file,
    stats_from_dict,
    stats_to_dict,
)
from localization.tasks import Task, Vocabulary, make_task
from tal_common.atomic import remove_stale_temporaries, write_atomic, write_text_atomic
from tal_common.cli import worker_ignores_sigint
from tal_common.config import config_to_dict, config_to_yaml
from tal_common.devices import local_device
from tal_common.h5 import FeatureReader
from tal_common.hashing import file_sha256
from tal_common.workers import clamp_workers

LOG = logging.getLogger(__name__)
BEST_KEYS = ("head", "classifier", "config", "feat_dim", "vocabulary", "feature_stats", "features")
PROVENANCE_KEYS = ("backbone", "weights", "weights_sha256", "config", "format_version")


@dataclass
class _Dist:
    rank: int = 0
    world: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def main(self) -> bool:
        return self.rank == 0


def _setup_distributed(device: str) -> _Dist:
    """Bind this rank's device (before any collective), then join the process group when launched by torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    here = local_device(device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if here.type == "cuda" else "gloo")
    return _Dist(dist.get_rank() if world > 1 else 0, world, here)


HASH_LIMIT_BYTES = 2 << 30


def _inputs_comment(paths: dict[str, Path | None]) -> str:
    """Comment lines for a run's config.yaml naming the input files: absolute path and sha256 (files over 2 GiB:
    size and modification time, as hashing them would delay every start)."""
    lines = ["# inputs of this run (comments: not read back as config):"]
    for name, path in paths.items():
        if path is None:
            continue
        stat = Path(path).stat()
        if stat.st_size <= HASH_LIMIT_BYTES:
            digest = f"sha256 {file_sha256(path)}"
        else:
            digest = f"{stat.st_size} bytes, modified {stat.st_mtime:.0f} (too large to hash at start)"
        lines.append(f"#   {name}: {Path(path).resolve()}  ({digest})")
    return "\n".join(lines) + "\n"


def train(
    cfg: LocalizeConfig,
    features: Path,
    annotations: Path,
    work_dir: Path,
    *,
    resume: bool = False,
    val_annotations: Path | None = None,
    video_info: Path | None = None,
    init_from: Path | None = None,
) -> dict[str, Any]:
    """Train head + classifier; returns the last epoch's metrics (see the module docstring for the outputs).

    ``annotations``: the training annotations as the task reads them (ActivityNet-style JSON: ``data.train_subset``
    is trained on, ``data.val_subset`` of the same file or of ``val_annotations`` gives the validation loss; EK100:
    the training CSV, ``val_annotations`` the validation CSV, ``video_info`` the video-info CSV for durations).
    ``init_from``: a checkpoint whose head weights start a new run (train-localizer's or mmaction2's BMN); a resumed
    run continues from its own state instead.
    """
    env = _setup_distributed(cfg.train.device)
    work_dir = Path(work_dir)
    ckpt_dir = work_dir / "checkpoints"
    if env.main:
        if work_dir.is_symlink() or ckpt_dir.is_symlink():
            raise ValueError(f"{work_dir}: the run folder (or its checkpoints/) is a symbolic link; pass the real folder")
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        if not resume and (ckpt_dir / "last.pt").exists():
            raise FileExistsError(f"{work_dir} already holds a run; pass --resume to continue it or pick a new --work-dir")
    log_handler = _attach_log_file(work_dir / "train.log") if env.main else None
    try:
        return _train(cfg, env, features, annotations, work_dir, resume, val_annotations, video_info, init_from)
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
    init_from: Path | None,
) -> dict[str, Any]:
    ckpt_dir = work_dir / "checkpoints"
    _seed_everything(cfg.train.seed)
    task = make_task(cfg)
    state = None
    if resume and (ckpt_dir / "last.pt").is_file():
        state = load_checkpoint_file(ckpt_dir / "last.pt")
        _check_resumable(state, ckpt_dir / "last.pt", cfg)
    elif resume and env.main:
        LOG.info("%s: no committed epoch yet, so nothing to resume: starting from epoch 0", work_dir)
    reader = FeatureReader(features)
    train_ann = task.read_split(annotations, cfg.data.train_subset, video_info)
    val_source = task.validation_source(annotations, val_annotations)
    val_ann = None if val_source is None else task.read_split(val_source, cfg.data.val_subset, video_info, required=False)

    if state is not None:
        vocab = Vocabulary.from_dict(state["vocabulary"])
        stats = stats_from_dict(state["feature_stats"])
    else:
        vocab = task.build_vocabulary(train_ann)
        stats = None
    train_entries = build_entries(reader, train_ann, task)
    feat_dim = train_entries[0].feat_dim
    if state is not None and int(state["feat_dim"]) != feat_dim:
        raise ValueError(f"{features}: features are {feat_dim}-d but the run being resumed was trained on {state['feat_dim']}-d features")
    if cfg.data.normalize and stats is None:
        stats = compute_feature_stats(reader, train_entries)
    model = build_localizer(cfg, task, feat_dim, vocab)
    if init_from is not None and state is None:
        loaded = init_head(model.head, init_from)
        if env.main:
            LOG.info("head initialised from %s", loaded)
    model.to(env.device)
    attrs = reader.file_attrs()
    provenance = {key: str(attrs[key]) for key in PROVENANCE_KEYS if key in attrs}  # how the features were made
    train_set = make_dataset(task, reader, train_entries, stats, vocab, model.head.target_builder(), purpose="train")
    if len(train_set) == 0:
        raise ValueError(f"{annotations}: no training windows (windowed tasks: no window of {cfg.data.tscale} bins holds a whole action)")
    val_set = None
    if val_ann is not None:
        val_entries = build_entries(reader, val_ann, task)
        _report_unknown_labels(task, val_entries, vocab, val_source)
        if val_entries[0].feat_dim != feat_dim:
            raise ValueError(f"{features}: validation features are {val_entries[0].feat_dim}-d, training {feat_dim}-d")
        val_set = make_dataset(task, reader, val_entries, stats, vocab, model.head.target_builder(), purpose="validate")

    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=cfg.train.lr_steps, gamma=cfg.train.lr_gamma)
    start_epoch, best, history = 0, {"score": math.inf, "epoch": -1}, []
    if state is not None:
        model.head.load_state_dict(state["head"])
        model.classifier.load_state_dict(state["classifier"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start_epoch, best, history = state["epoch"] + 1, state["best"], list(state["metrics"])
        _set_rng_state(state["rng"])
        _warn_config_changes(state["config"], config_to_dict(cfg))
    if env.main:
        for folder, name in ((ckpt_dir, "last.pt"), (ckpt_dir, "best.pt"), (work_dir, "metrics.jsonl"), (work_dir, "config.yaml")):
            remove_stale_temporaries(folder, name)
        if state is not None:
            _derive_outputs(state, work_dir)
        inputs = {"features": Path(features), "annotations": Path(annotations), "val_annotations": val_annotations,
                  "video_info": video_info, "init_from": init_from}
        write_text_atomic(work_dir / "config.yaml", config_to_yaml(cfg) + _inputs_comment(inputs))
        LOG.info(
            "%s: %d training windows from %d videos%s; feat_dim %d; task %s, head %s; epochs %d..%d on %s x%d",
            "resumed" if state else "training", len(train_set), len(train_entries),
            f", {len(val_set)} validation windows" if val_set is not None else "", feat_dim,
            task.name, cfg.model.head, start_epoch, cfg.train.epochs - 1, env.device, env.world,
        )
        LOG.info("best.pt keeps the epoch with the lowest %s loss; last.pt the latest epoch", "validation" if val_set else "training")
    net: nn.Module = model
    if env.world > 1:
        net = DistributedDataParallel(model, device_ids=[env.device.index] if env.device.type == "cuda" else None)

    workers = clamp_workers(cfg.data.num_workers, "data.num_workers", LOG.info)
    sampler = DistributedSampler(train_set, num_replicas=env.world, rank=env.rank, shuffle=True, seed=cfg.train.seed)
    loader = DataLoader(train_set, batch_size=cfg.train.batch_size, sampler=sampler, num_workers=workers,
                        persistent_workers=workers > 0, worker_init_fn=worker_ignores_sigint)
    val_loader = None
    if val_set is not None and len(val_set):
        val_sampler = DistributedSampler(val_set, num_replicas=env.world, rank=env.rank, shuffle=False)
        # persistent: forking workers every epoch opens windows where Ctrl-C is swallowed (in at-fork hooks)
        val_loader = DataLoader(val_set, batch_size=cfg.train.batch_size, sampler=val_sampler, num_workers=workers,
                                persistent_workers=workers > 0, worker_init_fn=worker_ignores_sigint)

    board = _tensorboard(work_dir) if env.main else None
    loss_keys = (*model.head.loss_keys, "cls")
    metrics: dict[str, Any] = {}
    epochs = tqdm(range(start_epoch, cfg.train.epochs), desc="training", unit="epoch", initial=start_epoch,
                  total=cfg.train.epochs, disable=not env.main, dynamic_ncols=True)
    started = time.monotonic()
    for epoch in epochs:
        sampler.set_epoch(epoch)
        lr = optimizer.param_groups[0]["lr"]
        train_losses = _run_epoch(net, model, loader, env, cfg, loss_keys, optimizer, desc=f"epoch {epoch}")
        val_losses = _run_epoch(net, model, val_loader, env, cfg, loss_keys, None, desc="val") if val_loader else None
        scheduler.step()
        metrics = {"epoch": epoch, "lr": lr, **train_losses}
        if val_losses is not None:
            metrics.update({f"val_{k}": v for k, v in val_losses.items()})
        history.append(metrics)
        score = val_losses["loss"] if val_losses is not None else train_losses["loss"]
        if score < best["score"]:
            best = {"score": score, "epoch": epoch, "head": _detached(model.head), "classifier": _detached(model.classifier)}
        if env.main:
            checkpoint = {
                "head": model.head.state_dict(), "classifier": model.classifier.state_dict(),
                "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "epoch": epoch, "best": best, "metrics": history, "config": config_to_dict(cfg), "feat_dim": feat_dim,
                "vocabulary": vocab.to_dict(), "feature_stats": stats_to_dict(stats), "rng": _rng_state(),
                "features": provenance,
            }
            _save(checkpoint, ckpt_dir / "last.pt")  # the commit point
            _derive_outputs(checkpoint, work_dir)
            if board is not None:
                for key, value in metrics.items():
                    if key != "epoch":
                        board.add_scalar(key, value, epoch)
                board.flush()
            elapsed = time.monotonic() - started
            eta = elapsed / (epoch + 1 - start_epoch) * (cfg.train.epochs - epoch - 1)
            LOG.info("epoch %d: %s (%d of %d epochs done, elapsed %s, eta %s)", epoch,
                     " ".join(f"{k}={v:.4g}" for k, v in metrics.items() if k != "epoch"), epoch + 1, cfg.train.epochs,
                     tqdm.format_interval(elapsed), tqdm.format_interval(eta))
        if env.world > 1:
            dist.barrier()
    if board is not None:
        board.close()
    if env.main and best["epoch"] >= 0:
        LOG.info("best.pt is epoch %d of 0..%d: the lowest %s loss (%.4g); last.pt is epoch %d. localize and detect use "
                 "best.pt unless --checkpoint last", best["epoch"], cfg.train.epochs - 1,
                 "validation" if val_loader else "training", best["score"], history[-1]["epoch"])
    return metrics


def canonical(obj: Any) -> Any:
    """A copy of a checkpoint structure whose pickle depends only on its content: containers are rebuilt (no
    shared references) and strings interned, so a resumed run writes the same bytes as an uninterrupted one
    (pickle memoises by object identity). Tensors are kept as they are."""
    if isinstance(obj, dict):  # dict, OrderedDict (state dicts), Counter (scheduler milestones)
        out = type(obj)()
        for key, value in obj.items():
            out[canonical(key)] = canonical(value)
        return out
    if isinstance(obj, list):
        return [canonical(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(canonical(v) for v in obj)
    if isinstance(obj, str):
        return sys.intern(str(obj))
    return obj


def _save(obj: dict[str, Any], path: Path) -> None:
    """Publish ``obj`` at ``path`` atomically, in :func:`canonical` form."""
    state = canonical(obj)
    write_atomic(path, lambda tmp: torch.save(state, tmp))


def _detached(module: nn.Module) -> dict[str, torch.Tensor]:
    """A copy of ``module``'s state dict that later training steps do not change."""
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _derive_outputs(state: dict[str, Any], work_dir: Path) -> None:
    """Write ``best.pt`` and ``metrics.jsonl`` from a committed ``last.pt`` state (idempotent)."""
    best = state["best"]
    if best["epoch"] >= 0:
        derived = {key: state[key] for key in BEST_KEYS if key not in ("head", "classifier")}
        derived.update(head=best["head"], classifier=best["classifier"], epoch=best["epoch"], score=best["score"])
        _save(derived, work_dir / "checkpoints" / "best.pt")
    write_text_atomic(work_dir / "metrics.jsonl", "".join(json.dumps(row) + "\n" for row in state["metrics"]))


def _check_resumable(state: dict[str, Any], path: Path, cfg: LocalizeConfig) -> None:
    """Refuse to resume from a checkpoint of another kind or of an incompatible config, naming what differs."""
    needed = ("head", "classifier", "optimizer", "scheduler", "epoch", "best", "metrics", "config", "rng", "vocabulary")
    missing = [k for k in needed if k not in state]
    if missing:
        raise ValueError(f"{path}: not a resumable train-localizer checkpoint (missing {', '.join(missing)})")
    old = config_from_dict(state["config"], path)
    shape_keys = ("data.task", "data.tscale", "data.dscale", "model")
    changed = [key for key, _, _ in _flat_diff(config_to_dict(old), config_to_dict(cfg))
               if key.startswith(shape_keys) or key.startswith("classifier.hidden_dim")]
    if changed:
        raise ValueError(f"{path}: cannot resume with a different model shape; changed: {', '.join(changed)} "
                         "(resume with the run's config.yaml, or start a new --work-dir)")


def _report_unknown_labels(task: Task, entries: list[VideoEntry], vocab: Vocabulary, source: Path | None) -> None:
    unknown = task.unknown_labels(entries, vocab)
    if unknown:
        listed = ", ".join(f"{label!r} x{n}" for label, n in sorted(unknown.items())[:8])
        LOG.warning("%s: %d validation segments have labels the training set lacks (they count as background): %s",
                    source, sum(unknown.values()), listed)


def _tensorboard(work_dir: Path) -> Any:
    """A TensorBoard ``SummaryWriter`` on ``work_dir/tensorboard``, or ``None`` when tensorboard is not installed."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        LOG.info("tensorboard is not installed: no TensorBoard events (pip install 'tadaloc[tensorboard]')")
        return None
    return SummaryWriter(log_dir=str(work_dir / "tensorboard"))


def _run_epoch(
    net: nn.Module,
    model: Localizer,
    loader: DataLoader,
    env: _Dist,
    cfg: LocalizeConfig,
    loss_keys: tuple[str, ...],
    optimizer: torch.optim.Optimizer | None,
    desc: str,
) -> dict[str, float]:
    """One pass over ``loader``; trains when ``optimizer`` is given. Returns window-averaged losses (all ranks)."""
    training = optimizer is not None
    net.train(training)
    sums = torch.zeros(len(loss_keys) + 1, dtype=torch.float64, device=env.device)
    with torch.set_grad_enabled(training):
        for batch in tqdm(loader, desc=desc, disable=not env.main, leave=False, dynamic_ncols=True):
            batch = {k: v.to(env.device, non_blocking=True) for k, v in batch.items()}
            head_out, cls_out = net(batch["features"])
            head_losses = model.head.loss(head_out, batch)
            cls_loss = model.classifier.loss(cls_out, batch)
            loss = head_losses["loss"] + cfg.classifier.loss_weight * cls_loss
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"{desc}: training diverged, the loss became {loss.item()} (lower train.lr, now {cfg.train.lr:g}, or check the features)"
                )
            if training:
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            n = batch["features"].shape[0]
            values = [loss, *(head_losses[k] for k in loss_keys[1:-1]), cls_loss]
            parts = torch.stack(values).detach().double() * n
            sums += torch.cat([parts, torch.tensor([n], dtype=torch.float64, device=env.device)])
    if env.world > 1:
        dist.all_reduce(sums)
    count = max(sums[-1].item(), 1.0)
    return {k: sums[i].item() / count for i, k in enumerate(loss_keys)}


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
