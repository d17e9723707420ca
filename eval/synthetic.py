"""Generated predictions in the official submission formats, made from real ground truth the way the fixtures
in ``../shared/fixtures/eval`` were: jittered ground-truth segments plus random false positives.

Used by ``scripts/bench_eval.py`` and by the tests that check the vectorised evaluators against
:mod:`eval.baseline` on any ground truth. Jitter (as the fixtures' README states): centre shift
~ N(0, 0.15 * length), length * exp(N(0, 0.25)), label kept with p = 0.8, score ~ U(0, 1).
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from eval.inputs import EK100_NUM_NOUNS, EK100_NUM_VERBS, SegmentTable


class _Jittered(NamedTuple):
    source: np.ndarray  # (N,) ground-truth row each prediction was made from
    video: np.ndarray
    start: np.ndarray
    end: np.ndarray
    score: np.ndarray
    relabel: np.ndarray  # (N,) bool: the label is to be replaced by a random one


def _jitter(gt: SegmentTable, n: int, rng: np.random.Generator, fp_share: float, score_decimals: int | None) -> _Jittered:
    source = rng.integers(0, len(gt), n)
    length = gt.end[source] - gt.start[source]
    centre = (gt.start[source] + gt.end[source]) / 2 + rng.normal(0, 1, n) * 0.15 * length
    length = length * np.exp(rng.normal(0, 0.25, n))
    start, end = np.maximum(centre - length / 2, 0.0), centre + length / 2
    # Random false positives: anywhere in a ground-truth video, 1-60 s long.
    fp = rng.random(n) < fp_share
    start[fp] = rng.uniform(0, 120, fp.sum())
    end[fp] = start[fp] + rng.uniform(1, 60, fp.sum())
    end = np.maximum(end, start)
    score = rng.random(n)
    if score_decimals is not None:
        score = np.round(score, score_decimals)
    return _Jittered(source, gt.video[source], start, end, score, rng.random(n) >= 0.8)


def _results(video: np.ndarray, entries: list[dict]) -> dict[str, list[dict]]:
    results: dict[str, list[dict]] = {}
    for vid, entry in zip(video, entries):
        results.setdefault(vid, []).append(entry)
    return results


def activitynet_table(
    gt: SegmentTable, n: int, seed: int = 0, fp_share: float = 0.2, score_decimals: int | None = None
) -> SegmentTable:
    """``n`` jittered HACS/ActivityNet detections as a table (what :func:`activitynet_detections` serialises)."""
    rng = np.random.default_rng(seed)
    j = _jitter(gt, n, rng, fp_share, score_decimals)
    classes = np.array(list(dict.fromkeys(gt.labels["label"])), dtype=object)
    label = np.where(j.relabel, classes[rng.integers(0, len(classes), n)], gt.labels["label"][j.source])
    return SegmentTable(f"jittered ground truth, seed {seed}", j.video, j.start, j.end, {"label": label}, j.score)


def activitynet_detections(
    gt: SegmentTable, n: int, seed: int = 0, fp_share: float = 0.2, score_decimals: int | None = None
) -> dict:
    """An official ActivityNet/HACS detection submission dict with ``n`` predictions."""
    table = activitynet_table(gt, n, seed, fp_share, score_decimals)
    entries = [
        {"label": lab, "score": float(s), "segment": [float(a), float(b)]}
        for lab, s, a, b in zip(table.labels["label"], table.score, table.start, table.end)
    ]
    return {
        "version": "VERSION 1.3",
        "results": _results(table.video, entries),
        "external_data": {"used": False, "details": table.source},
    }


def activitynet_proposals(gt: SegmentTable, per_video: tuple[int, int] = (100, 100), seed: int = 0) -> dict:
    """An official proposal submission dict: per ground-truth video a number of proposals drawn from
    ``per_video`` (inclusive range; unequal counts exercise the official per-video share of AN)."""
    rng = np.random.default_rng(seed)
    videos = np.array(list(dict.fromkeys(gt.video)), dtype=object)
    counts = rng.integers(per_video[0], per_video[1] + 1, len(videos))
    rows_of = {v: np.flatnonzero(gt.video == v) for v in videos}
    source = np.concatenate([rng.choice(rows_of[v], c) for v, c in zip(videos, counts)])
    sub = SegmentTable(gt.source, gt.video[source], gt.start[source], gt.end[source])
    j = _jitter(sub, len(source), rng, 0.3, None)
    entries = [{"score": float(s), "segment": [float(a), float(b)]} for s, a, b in zip(j.score, j.start, j.end)]
    return {"version": "VERSION 1.3", "results": _results(j.video, entries), "external_data": {"used": False}}


def ek100_submission(
    gt: SegmentTable, n: int, seed: int = 0, fp_share: float = 0.2, score_decimals: int | None = None
) -> dict:
    """An EK100 action-detection submission dict with ``n`` predictions (verb and noun relabelled independently)."""
    rng = np.random.default_rng(seed)
    j = _jitter(gt, n, rng, fp_share, score_decimals)
    verb = np.where(j.relabel, rng.integers(0, EK100_NUM_VERBS, n), gt.labels["verb"][j.source])
    noun = np.where(rng.random(n) >= 0.8, rng.integers(0, EK100_NUM_NOUNS, n), gt.labels["noun"][j.source])
    entries = [
        {"verb": int(v), "noun": int(m), "action": f"{v},{m}", "score": float(s), "segment": [float(a), float(b)]}
        for v, m, s, a, b in zip(verb, noun, j.score, j.start, j.end)
    ]
    return {
        "version": "0.2", "challenge": "action_detection", "sls_pt": 0, "sls_tl": 0, "sls_td": 0,
        "results": _results(j.video, entries),
    }
