"""Inference: a trained localizer on HDF5 features -> the task's submission dict.

The task decides everything dataset-specific (windows, fusion, proposal budget, labelling, format); this module
only batches windows through the model and groups each video's window outputs.
"""
from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from localization.data import build_entries, make_dataset
from localization.model import TrainedRun
from localization.tasks import WindowOutput
from tal_common.annotations import AnnotationSet
from tal_common.cli import worker_ignores_sigint
from tal_common.h5 import FeatureReader


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
    """Detections for every video of ``annotations`` that has features, as the task's submission dict.

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
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        worker_init_fn=worker_ignores_sigint)
    per_video: dict[int, list[WindowOutput]] = {}
    with torch.no_grad():
        for batch in tqdm(loader, desc="localize", disable=not progress, leave=False, dynamic_ncols=True):
            head_out, cls_out = run.model(batch["features"].to(device))
            probs = run.model.classifier.probabilities(cls_out)
            head_np = {k: v.float().cpu().numpy() for k, v in head_out.items()}
            probs_np = {k: v.float().cpu().numpy() for k, v in probs.items()} if isinstance(probs, dict) else probs.float().cpu().numpy()
            for j, index in enumerate(batch["index"].tolist()):
                window = dataset.windows[index]
                item_probs = {k: v[j] for k, v in probs_np.items()} if isinstance(probs_np, dict) else probs_np[j]
                per_video.setdefault(window.video, []).append(
                    WindowOutput(window, {k: v[j] for k, v in head_np.items()}, item_probs)
                )
    results = {
        entries[v].video_id: run.task.detections(entries[v], outputs, run.model.head, run.vocab)
        for v, outputs in per_video.items()
    }
    return run.task.submission(results, reader.file_attrs(), options)
