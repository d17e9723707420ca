"""Inference: a trained localizer on HDF5 features -> the task's submission dict.

The task decides everything dataset-specific (windows, fusion, proposal budget, labelling, format); this module
only batches windows through the model and groups each video's window outputs.
"""
from __future__ import annotations

import logging
from typing import Any

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from localization.data import build_entries, make_dataset
from localization.model import TrainedRun
from localization.tasks import WindowOutput
from localization.tasks.base import proposal_submission
from tal_common.annotations import AnnotationSet
from tal_common.cli import worker_ignores_sigint
from tal_common.h5 import FeatureReader
from tal_common.workers import clamp_workers

LOG = logging.getLogger(__name__)


def localize(
    run: TrainedRun,
    reader: FeatureReader,
    annotations: AnnotationSet,
    *,
    batch_size: int = 16,
    num_workers: int = 0,
    options: dict[str, Any] | None = None,
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> dict[str, Any]:
    """Detections for every video of ``annotations`` that has features, as the task's submission dict (a run
    without a classifier, e.g. an mmaction2 BMN checkpoint: the ActivityNet proposal JSON).

    ``annotations`` supplies the video list and durations (restrict it to a subset first). ``options`` are the
    task's submission options (EK100: ``{"sls": (pt, tl, td)}``), checked before any work is done.
    """
    options = options or {}
    run.task.check_submission_options(options)
    entries = build_entries(reader, annotations, run.task)
    if entries[0].feat_dim != run.feat_dim:
        raise ValueError(
            f"{reader.path}: features are {entries[0].feat_dim}-d but {run.checkpoint} was trained on "
            f"{run.feat_dim}-d features (localize with the features the run was trained on)"
        )
    dataset = make_dataset(run.task, reader, entries, run.stats, run.vocab, None, purpose="infer")
    workers = clamp_workers(num_workers, "--workers", LOG.info)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers,
                        worker_init_fn=worker_ignores_sigint)
    per_video: dict[int, list[WindowOutput]] = {}
    with torch.no_grad():
        for batch in tqdm(loader, desc="localize", disable=not progress, leave=False, dynamic_ncols=True):
            head_out, cls_out = run.model(batch["features"].to(device))
            head_np = {k: v.float().cpu().numpy() for k, v in head_out.items()}
            probs = _class_probabilities(run, cls_out)
            for j, index in enumerate(batch["index"].tolist()):
                item_probs = None if probs is None else {k: v[j] for k, v in probs.items()} if isinstance(probs, dict) else probs[j]
                per_video.setdefault(dataset.windows[index].video, []).append(
                    WindowOutput(dataset.windows[index], {k: v[j] for k, v in head_np.items()}, item_probs)
                )
    if run.vocab is None:  # a head without a classifier: class-agnostic proposals
        proposals = {entries[v].video_id: run.task.proposals(entries[v], outputs, run.model.head) for v, outputs in per_video.items()}
        return proposal_submission(proposals, reader.file_attrs())
    results = {
        entries[v].video_id: run.task.detections(entries[v], outputs, run.model.head, run.vocab)
        for v, outputs in per_video.items()
    }
    return run.task.submission(results, reader.file_attrs(), options)


def _class_probabilities(run: TrainedRun, cls_out: Any) -> Any:
    """The classifier's probabilities as numpy (an array or a dict of arrays), or None without a classifier."""
    if run.model.classifier is None:
        return None
    probs = run.model.classifier.probabilities(cls_out)
    if isinstance(probs, dict):
        return {k: v.float().cpu().numpy() for k, v in probs.items()}
    return probs.float().cpu().numpy()
