"""``evaluate``: score a detection or proposal file against ground truth and write the report.

    evaluate --dataset {hacs,activitynet,ek100} --ground-truth GT --predictions P.json \\
             [--subset validation] [--task detection|proposals] [--tiou T [T ...]] [--diagnose] [--strict] --out DIR

Writes ``DIR/report.json``, ``DIR/report.md`` and PNG plots (the folder is replaced as a whole), and prints the
table. ``--diagnose`` adds the DETAD false-positive and sensitivity analysis. Exit status: 0 on success, 2 on a
usage error or a malformed input (the message names the file, video and field).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from eval.detection import EK100_TASKS, UNKNOWN_LABEL_POLICIES, evaluate_detection
from eval.diagnose import (
    ACTIVITYNET_CHARACTERISTICS,
    ERROR_NAMES,
    ERROR_TYPES,
    THUMOS14_CHARACTERISTICS,
    Diagnosis,
    diagnose,
)
from eval.inputs import (
    InputError,
    SegmentTable,
    activitynet_ground_truth,
    ek100_ground_truth,
    read_activitynet_predictions,
    read_ek100_predictions,
)
from eval.proposals import evaluate_proposals
from eval.report import format_table, write_report
from tal_common.annotations import AnnotationError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", required=True, choices=("hacs", "activitynet", "ek100"),
                        help="hacs/activitynet: official ActivityNet rules (JSON ground truth); ek100: EPIC-Kitchens-100 rules (CSV)")
    parser.add_argument("--ground-truth", required=True, type=Path, help="ground-truth JSON (HACS/ActivityNet) or EK100 CSV")
    parser.add_argument("--predictions", required=True, type=Path, help="submission JSON in the official format")
    parser.add_argument("--task", choices=("detection", "proposals"), default="detection")
    parser.add_argument("--subset", default=None,
                        help="HACS/ActivityNet subset to evaluate (default: validation); EK100 files have no subsets")
    parser.add_argument("--tiou", type=_threshold, nargs="+", default=None,
                        help="tIoU thresholds (default: official, linspace(0.5, 0.95, 10); EK100 detection linspace(0.1, 0.5, 5))")
    parser.add_argument("--unknown-labels", choices=UNKNOWN_LABEL_POLICIES, default="error",
                        help="HACS/ActivityNet: a predicted label absent from the ground truth is an error (the official "
                             "evaluator crashes) or a false positive of an unscored class")
    parser.add_argument("--max-avg-proposals", type=float, default=100, help="proposals: the AN range, 1..this (default 100)")
    parser.add_argument("--blocked-videos", type=Path, default=None,
                        help="HACS/ActivityNet: JSON list of video ids left out of ground truth and predictions")
    parser.add_argument("--diagnose", action="store_true",
                        help="detection: add the DETAD false-positive profile and sensitivity analysis (tables and plots)")
    parser.add_argument("--strict", action="store_true",
                        help="predictions on videos outside the ground truth are an error (default: counted, and a "
                             "warning when no prediction is on a ground-truth video)")
    parser.add_argument("--out", required=True, type=Path, help="output directory for report.json, report.md and plots")
    return parser


def _threshold(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value) or not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"a tIoU threshold must be in (0, 1], got {text!r}")
    return value


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # argparse has printed the usage error
        return int(exc.code or 0)
    try:
        if args.out.exists() and not args.out.is_dir():
            raise InputError(f"{args.out}: --out must be a folder, and this is a file")
        gt, pred = _read_inputs(args)
        matching = _matching(gt, pred, args)
        result = _evaluate(args, gt, pred)
        diagnosis = _diagnose(args, gt, pred, result) if args.diagnose else None
    except (InputError, AnnotationError) as exc:
        print(f"evaluate: error: {exc}", file=sys.stderr)
        return 2
    meta = {
        "dataset": args.dataset,
        "task": args.task,
        "ground_truth": str(args.ground_truth),
        "predictions": str(args.predictions),
    }
    if args.dataset != "ek100":
        meta["subset"] = args.subset or "validation"
    try:
        write_report(result, args.out, meta, matching=matching, diagnosis=diagnosis)
    except OSError as exc:
        print(f"evaluate: error: cannot write the report to {args.out}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    print(format_table(result))
    if diagnosis:
        _print_profiles(diagnosis)
    print(f"report: {args.out / 'report.md'}")
    return 0


def _read_inputs(args: argparse.Namespace) -> tuple[SegmentTable, SegmentTable]:
    """Ground truth and predictions as tables; ``--blocked-videos`` already left out of both."""
    if args.dataset == "ek100" and (args.subset is not None or args.blocked_videos is not None):
        raise InputError("--subset and --blocked-videos do not apply to EK100: every row of the CSV counts")
    for path, option in ((args.ground_truth, "--ground-truth"), (args.predictions, "--predictions")):
        if path.is_dir():
            raise InputError(f"{path}: {option} must be a file, and this is a folder")
    if args.dataset == "ek100":
        gt = ek100_ground_truth(args.ground_truth)
        pred = (read_activitynet_predictions(args.predictions, with_labels=False) if args.task == "proposals"
                else read_ek100_predictions(args.predictions))
        return gt, pred
    blocked = _read_blocked(args.blocked_videos) if args.blocked_videos else ()
    gt = activitynet_ground_truth(args.ground_truth, args.subset or "validation", blocked)
    pred = read_activitynet_predictions(args.predictions, with_labels=args.task == "detection")
    if blocked:
        keep = ~pd.Index(pred.video).isin(list(blocked))
        pred = SegmentTable(pred.source, pred.video[keep], pred.start[keep], pred.end[keep],
                            {k: v[keep] for k, v in pred.labels.items()}, pred.score[keep])
    return gt, pred


def _matching(gt: SegmentTable, pred: SegmentTable, args: argparse.Namespace) -> dict[str, int]:
    """How many predictions and ground-truth videos have no counterpart; an error or a warning where it matters."""
    gt_videos = pd.Index(gt.videos)
    pred_videos = pd.unique(pred.video)
    outside = ~pd.Index(pred.video).isin(gt_videos)
    outside_videos = int((~pd.Index(pred_videos).isin(gt_videos)).sum())
    counts = {
        "predictions": len(pred),
        "predictions_outside_evaluated_videos": int(outside.sum()),
        "prediction_videos_outside_evaluated_videos": outside_videos,
        "evaluated_videos": len(gt_videos),
        "evaluated_videos_without_predictions": int((~gt_videos.isin(pred_videos)).sum()),
    }
    if len(pred) and outside.all():
        message = (f"{pred.source}: none of the {len(pred_videos)} prediction videos is a video of the ground truth "
                   f"{gt.source} (e.g. {pred_videos[0]!r} vs {gt_videos[0] if len(gt_videos) else None!r}); "
                   "wrong file or id prefix?")
        if args.strict:
            raise InputError(message)
        print(f"evaluate: WARNING: {message} Every prediction is a false positive.", file=sys.stderr)
    elif args.strict and outside.any():
        first = pred.video[np.flatnonzero(outside)[0]]
        raise InputError(f"{pred.source}: video {first!r}: {int(outside.sum())} predictions on {outside_videos} videos "
                         f"that are not in the ground truth {gt.source} (--strict)")
    return counts


def _evaluate(args: argparse.Namespace, gt: SegmentTable, pred: SegmentTable):
    if args.task == "proposals":
        if args.diagnose:
            raise InputError("--diagnose applies to --task detection")
        if not (math.isfinite(args.max_avg_proposals) and args.max_avg_proposals >= 1):
            raise InputError(f"--max-avg-proposals must be a number >= 1 (the AN curve runs from 1 proposal per video "
                             f"to it), got {args.max_avg_proposals:g}")
        return evaluate_proposals(gt, pred, dataset=args.dataset, tiou_thresholds=args.tiou,
                                  max_avg_nr_proposals=args.max_avg_proposals)
    return evaluate_detection(gt, pred, dataset=args.dataset, subset=args.subset or "validation",
                              tiou_thresholds=args.tiou, unknown_labels=args.unknown_labels)


def _diagnose(args: argparse.Namespace, gt: SegmentTable, pred: SegmentTable, result) -> dict[str, Diagnosis]:
    """DETAD diagnosis at the evaluation's thresholds: one for HACS/ActivityNet (key ""), one per EK100 task."""
    if args.dataset == "ek100":
        return {task: diagnose(gt, pred, task, result.tiou_thresholds, THUMOS14_CHARACTERISTICS) for task in EK100_TASKS}
    return {"": diagnose(gt, pred, "label", result.tiou_thresholds, ACTIVITYNET_CHARACTERISTICS)}


def _print_profiles(diagnosis: dict[str, Diagnosis]) -> None:
    for name, d in diagnosis.items():
        shares = ", ".join(f"{ERROR_NAMES[e].lower()} {v * 100:.1f}%" for e, v in zip(ERROR_TYPES, d.fp_profile[0]))
        print(f"false-positive profile{' (' + name + ')' if name else ''}, top 1G: {shares}; "
              f"average-mAP_N {d.average_mAP_N * 100:.2f}%")


def _read_blocked(path: Path) -> list[str]:
    try:
        ids = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(ids, list) or not all(isinstance(v, str) for v in ids):
        raise InputError(f"{path}: must be a JSON list of video ids")
    return ids


if __name__ == "__main__":
    sys.exit(main())
