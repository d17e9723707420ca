"""Inference: a trained run + features -> detections in the official JSON layouts.

Per video: every window (HACS: the whole video; EK100: sliding windows) goes through BMN and the classifier;
each window's candidate proposals are mapped to seconds on the video's timeline, pooled, Soft-NMS'd once per
video and cut to the top ``max_proposals`` (EK100: per minute of video); then the classifier labels them
(``localization.classify``).

Outputs: ActivityNet/HACS ``{"version", "results": {video_id: [{"label", "score", "segment"}]},
"external_data"}`` and EK100 ``{"version": "0.2", "challenge": "action_detection", "sls_pt", "sls_tl",
"sls_td", "results": {video_id: [{"verb", "noun", "action", "score", "segment"}]}}``.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from localization.classify import ek100_detections, hacs_detections
from localization.config import LocalizeConfig
from localization.data import VideoEntry, Window, WindowDataset, build_entries
from localization.postprocess import proposals_from_maps, soft_nms
from localization.train import Localizer, Vocabulary, build_localizer, make_dataset, stats_from_dict
from tal_common.annotations import AnnotationSet
from tal_common.config import ConfigError, load_config
from tal_common.h5 import FeatureReader

ACTIVITYNET_VERSION = "VERSION 1.3"
EK100_VERSION = "0.2"


@dataclass
class TrainedRun:
    """What inference needs from a run folder: config, model, vocabulary, feature statistics."""

    cfg: LocalizeConfig
    model: Localizer
    vocab: Vocabulary
    stats: Any
    checkpoint: Path


def load_run(run_dir: Path, which: str = "best", device: torch.device | str = "cpu") -> TrainedRun:
    """Load ``run_dir/checkpoints/{which}.pt`` (falls back to ``last.pt`` when ``best.pt`` is absent)."""
    run_dir = Path(run_dir)
    path = run_dir / "checkpoints" / f"{which}.pt"
    if not path.is_file() and which == "best":
        path = run_dir / "checkpoints" / "last.pt"
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir}: no checkpoint at checkpoints/{which}.pt (is this a train-localizer run folder?)")
    state = torch.load(path, map_location="cpu", weights_only=True)
    cfg = _config_from_dict(state["config"], path)
    vocab = Vocabulary.from_dict(state["vocabulary"])
    model = build_localizer(cfg, int(state["feat_dim"]), vocab)
    model.bmn.load_state_dict(state["model"])
    model.classifier.load_state_dict(state["classifier"])
    model.to(device).eval()
    return TrainedRun(cfg, model, vocab, stats_from_dict(state["feature_stats"]), path)


def _config_from_dict(data: dict[str, Any], origin: Path) -> LocalizeConfig:
    """Rebuild the typed config stored in a checkpoint, through the same validation as a YAML file."""
    overrides = [f"{section}={json.dumps(values)}" for section, values in data.items()]
    try:
        return load_config(LocalizeConfig, overrides=overrides)
    except ConfigError as exc:
        raise ConfigError(f"{origin}: stored config does not fit this version: {exc}") from exc


def localize(
    run: TrainedRun,
    reader: FeatureReader,
    annotations: AnnotationSet,
    *,
    batch_size: int = 16,
    num_workers: int = 0,
    sls: tuple[int, int, int] = (2, 3, 4),
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> dict[str, Any]:
    """Detections for every video of ``annotations`` that has features, as the official JSON dict.

    ``annotations`` supplies the video list and durations (restrict it to a subset first). ``sls`` are the EK100
    supervision levels ``(pt, tl, td)`` declared in the submission.
    """
    cfg = run.cfg
    entries = build_entries(reader, annotations, cfg.data.mode)
    dataset = make_dataset(cfg, reader, entries, run.stats, run.vocab, with_targets=False, training=False)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    per_video: dict[int, list[tuple[Window, np.ndarray, Any]]] = {}
    with torch.no_grad():
        for batch in tqdm(loader, desc="localize", disable=not progress, leave=False, dynamic_ncols=True):
            conf, start, end, cls_out = run.model(batch["features"].to(device))
            cls_probs = run.model.classifier.probabilities(cls_out)
            for j, index in enumerate(batch["index"].tolist()):
                window = dataset.windows[index]
                props = _window_proposals(dataset, index, conf[j], start[j], end[j], cfg)
                probs = cls_probs[j].cpu().numpy() if cfg.data.mode == "hacs" else tuple(p[j].cpu().numpy() for p in cls_probs)
                per_video.setdefault(window.video, []).append((window, props, probs))
    results = {}
    for v, outputs in per_video.items():
        entry = entries[v]
        proposals = _video_proposals(entry, [p for _, p, _ in outputs], cfg)
        if cfg.data.mode == "hacs":
            class_probs = np.mean([c for _, _, c in outputs], axis=0)
            results[entry.video_id] = hacs_detections(
                proposals, class_probs, run.vocab.labels, cfg.classifier.resolved_top_k("hacs")
            )
        else:
            windows = [w for w, _, _ in outputs]
            centers, verb_probs, noun_probs = _fuse_snippets(entry, windows, [c for _, _, c in outputs], cfg)
            results[entry.video_id] = ek100_detections(
                proposals, verb_probs, noun_probs, centers, cfg.classifier.resolved_top_k("ek100")
            )
    if cfg.data.mode == "hacs":
        attrs = reader.file_attrs()
        weights = str(attrs.get("weights", "unknown"))
        return {
            "version": ACTIVITYNET_VERSION,
            "results": results,
            "external_data": {
                "used": weights not in ("random", "", "unknown"),
                "details": f"features: {attrs.get('backbone', 'unknown')} (weights: {weights}); BMN trained on {cfg.data.train_subset}",
            },
        }
    for name, level in zip(("sls_pt", "sls_tl", "sls_td"), sls):
        if not 0 <= level <= 5:
            raise ValueError(f"{name} must be in 0..5, got {level}")
    return {
        "version": EK100_VERSION, "challenge": "action_detection",
        "sls_pt": sls[0], "sls_tl": sls[1], "sls_td": sls[2], "results": results,
    }


def _window_proposals(
    dataset: WindowDataset, index: int, conf: torch.Tensor, start: torch.Tensor, end: torch.Tensor,
    cfg: LocalizeConfig,
) -> np.ndarray:
    """One window's candidates ``(K, 3)`` ``[start_s, end_s, score]`` on the video's timeline."""
    window = dataset.windows[index]
    props = np.asarray(
        proposals_from_maps(conf, start, end, peak_ratio=cfg.postprocess.peak_ratio),
        dtype=np.float64,
    ).reshape(-1, 3)
    length = dataset.tscale * window.bin_s
    out = props.copy()
    out[:, :2] = window.start_s + props[:, :2] * length
    return out


def _video_proposals(entry: VideoEntry, window_props: list[np.ndarray], cfg: LocalizeConfig) -> np.ndarray:
    """Pool a video's window proposals, clip them to the video, Soft-NMS, keep the top ``max_proposals``
    (EK100: per started minute). Returns ``(K, 3)`` ``[start_s, end_s, score]``.

    Soft-NMS runs in units of the video's duration: its width-adaptive threshold expects normalised widths.
    """
    pooled = np.concatenate(window_props, axis=0)
    pooled[:, :2] = np.clip(pooled[:, :2], 0.0, entry.duration)
    pooled = pooled[pooled[:, 1] > pooled[:, 0]]
    pp = cfg.postprocess
    top = pp.max_proposals if cfg.data.mode == "hacs" else max(1, math.ceil(pp.max_proposals * entry.duration / 60.0))
    pooled[:, :2] /= entry.duration
    kept = soft_nms(pooled, alpha=pp.soft_nms_alpha, low=pp.soft_nms_low, high=pp.soft_nms_high, top_k=top)
    kept[:, :2] *= entry.duration
    return kept


def _fuse_snippets(
    entry: VideoEntry, windows: list[Window], probs: list[tuple[np.ndarray, np.ndarray]], cfg: LocalizeConfig
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Average the windows' per-bin verb/noun probabilities on the video's global bin grid.

    Windows start on multiples of the window step, so bin ``i`` of a window starting at ``start_s`` is global
    bin ``round(start_s / bin_s) + i``. Returns bin centres ``(G,)`` and probabilities ``(G, V+1)``, ``(G, N+1)``
    for the bins inside the video.
    """
    tscale, bin_s = cfg.data.tscale, cfg.data.window_bin_s
    size = max(round(w.start_s / bin_s) for w in windows) + tscale
    verb = np.zeros((size, probs[0][0].shape[0]))
    noun = np.zeros((size, probs[0][1].shape[0]))
    count = np.zeros(size)
    for w, (pv, pn) in zip(windows, probs):
        g = round(w.start_s / bin_s)
        verb[g:g + tscale] += pv.T
        noun[g:g + tscale] += pn.T
        count[g:g + tscale] += 1
    centers = (np.arange(size) + 0.5) * bin_s
    keep = (centers <= entry.duration) & (count > 0)
    if not keep.any():  # a video shorter than half a bin: keep its first bin
        keep[0] = True
    c = count[keep][:, None]
    return centers[keep], verb[keep] / c, noun[keep] / c
