"""``evaluate``: score a detection or proposal file against ground truth and write the report.

    evaluate --dataset {hacs,activitynet,ek100} --annotations GT --predictions P.json \\
             [--subset validation] [--task detection|proposals] [--tiou T [T ...]] [--diagnose] [--strict] -o DIR

Writes ``DIR/report.json``, ``DIR/report.md`` and PNG plots (the folder is replaced as a whole), and prints the
table. ``--diagnose`` adds the DETAD false-positive and sensitivity analysis. What found no counterpart (by video
and by class, :mod:`eval.matching`) is counted in the report and said on stderr; when nothing can match it is a
warning, and with ``--strict`` an error. EK100 classes are named from the class tables (``--verb-classes`` /
``--noun-classes``, else ``EPIC_100_*_classes.csv`` beside the ground truth). Exit status: 0 on success, 2 on a
usage error, a malformed input (the message names the file, video and field) or a ``--strict`` failure.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from eval.class_names import ClassNames, ek100_class_names
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
from eval.matching import Matching, match_counts
from eval.proposals import evaluate_proposals
from eval.report import format_table, write_report
from tal_common.annotations import AnnotationError
from tal_common.cli import HelpFormatter, entry_point, interrupted, parse_args

RENAMED = {"--ground-truth": "--annotations", "--out": "--output"}  # old spellings: still accepted, with a deprecation line
EXAMPLES = """\
examples:
  evaluate --dataset hacs --annotations HACS_segments_v1.1.1.json --subset validation --predictions dets.json -o reports/hacs
  evaluate --dataset ek100 --annotations EPIC_100_validation.csv --predictions ek100_dets.json -o reports/ek100 --diagnose
  evaluate --dataset activitynet --annotations thumos14.json --subset test --tiou 0.3 0.4 0.5 0.6 0.7 \\
      --predictions thumos_dets.json -o reports/thumos
  evaluate --dataset activitynet --task proposals --annotations gt.json --predictions proposals.json -o reports/ar
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="evaluate", formatter_class=HelpFormatter, epilog=EXAMPLES,
        description="Score a detection or proposal file against ground truth with the official rules; write\n"
        "OUTPUT/report.json, report.md and PNG plots (the folder is replaced as a whole) and print the table.")
    parser.add_argument("--dataset", required=True, choices=("hacs", "activitynet", "ek100"),
                        help="hacs/activitynet: official ActivityNet rules (JSON ground truth); ek100: EPIC-Kitchens-100 rules (CSV)")
    parser.add_argument("--annotations", required=True, type=Path, help="ground-truth JSON (HACS/ActivityNet) or EK100 CSV")
    parser.add_argument("--predictions", required=True, type=Path, help="submission JSON in the official format")
    parser.add_argument("--task", choices=("detection", "proposals"), default="detection",
                        help="detection: mAP per tIoU of labelled segments; proposals: AR@AN and AUC of class-agnostic ones")
    parser.add_argument("--subset", default=None,
                        help="HACS/ActivityNet subset to evaluate (default: validation); EK100 files have no subsets")
    parser.add_argument("--tiou", type=_threshold, nargs="+", default=None,
                        help="tIoU thresholds (default: official, linspace(0.5, 0.95, 10); EK100 detection linspace(0.1, 0.5, 5))")
    parser.add_argument("--unknown-labels", choices=UNKNOWN_LABEL_POLICIES, default=None,
                        help="HACS/ActivityNet: a predicted label absent from the ground truth is a false positive of an "
                             "unscored class, counted and said (default), or an error as in the official evaluator, "
                             "which crashes (default with --strict)")
    parser.add_argument("--max-avg-proposals", type=float, default=100, help="proposals: the AN range, 1..this (default 100)")
    parser.add_argument("--blocked-videos", type=Path, default=None,
                        help="HACS/ActivityNet: JSON list of video ids left out of ground truth and predictions")
    parser.add_argument("--diagnose", action="store_true",
                        help="detection: add the DETAD false-positive profile and sensitivity analysis (tables and plots)")
    parser.add_argument("--strict", action="store_true",
                        help="predictions on videos outside the ground truth, predictions of which none can match and "
                             "(HACS/ActivityNet) predicted labels outside its classes are errors (default: counted, "
                             "and a warning when nothing matches)")
    parser.add_argument("--verb-classes", type=Path, default=None,
                        help="EK100: EPIC_100_verb_classes.csv naming the verbs in the report (default: the one beside "
                             "--annotations, if any; else ids)")
    parser.add_argument("--noun-classes", type=Path, default=None,
                        help="EK100: EPIC_100_noun_classes.csv naming the nouns (default: the one beside --annotations)")
    parser.add_argument("-o", "--output", required=True, type=Path, help="output folder for report.json, report.md and plots")
    return parser


def _threshold(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value) or not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"a tIoU threshold must be in (0, 1], got {text!r}")
    return value


@entry_point
def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status (0 done, 2 usage error or malformed input, 130 interrupted)."""
    try:
        args = parse_args(build_parser(), argv, RENAMED)
    except SystemExit as exc:  # argparse has printed the usage error
        return int(exc.code or 0)
    try:
        return _run(args)
    except KeyboardInterrupt:
        return interrupted("evaluate", "the previous report (if any) is left as it was; rerun the same command")


def _run(args: argparse.Namespace) -> int:
    """Read, match, score, (diagnose,) write the report folder and print the table."""
    try:
        if args.output.exists() and not args.output.is_dir():
            raise InputError(f"{args.output}: -o/--output must be a folder, and this is a file")
        gt, pred = _read_inputs(args)
        names = _class_names(args)
        matching = _matching(gt, pred, args, names)
        result = _evaluate(args, gt, pred)
        diagnosis = _diagnose(args, gt, pred, result) if args.diagnose else None
    except (InputError, AnnotationError) as exc:
        print(f"evaluate: error: {exc}", file=sys.stderr)
        return 2
    meta = {
        "dataset": args.dataset,
        "task": args.task,
        "ground_truth": str(args.annotations),
        "predictions": str(args.predictions),
    }
    if args.dataset != "ek100":
        meta["subset"] = args.subset or "validation"
    meta.update({f"{task}_classes": source for task, source in names.sources.items()})
    try:
        write_report(result, args.output, meta, matching=matching, diagnosis=diagnosis, class_names=names.names)
    except OSError as exc:
        print(f"evaluate: error: cannot write the report to {args.output}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    print(format_table(result))
    if diagnosis:
        _print_profiles(diagnosis)
    print(f"report: {args.output / 'report.md'}")
    return 0


def _read_inputs(args: argparse.Namespace) -> tuple[SegmentTable, SegmentTable]:
    """Ground truth and predictions as tables; ``--blocked-videos`` already left out of both."""
    if args.dataset == "ek100" and (args.subset is not None or args.blocked_videos is not None):
        raise InputError("--subset and --blocked-videos do not apply to EK100: every row of the CSV counts")
    for path, option in ((args.annotations, "--annotations"), (args.predictions, "--predictions")):
        if path.is_dir():
            raise InputError(f"{path}: {option} must be a file, and this is a folder")
    if args.dataset == "ek100":
        gt = ek100_ground_truth(args.annotations)
        pred = (read_activitynet_predictions(args.predictions, with_labels=False) if args.task == "proposals"
                else read_ek100_predictions(args.predictions))
        return gt, pred
    blocked = _read_blocked(args.blocked_videos) if args.blocked_videos else ()
    gt = activitynet_ground_truth(args.annotations, args.subset or "validation", blocked)
    pred = read_activitynet_predictions(args.predictions, with_labels=args.task == "detection")
    if blocked:
        keep = ~pd.Index(pred.video).isin(list(blocked))
        pred = SegmentTable(pred.source, pred.video[keep], pred.start[keep], pred.end[keep],
                            {k: v[keep] for k, v in pred.labels.items()}, pred.score[keep])
    return gt, pred


def _class_names(args: argparse.Namespace) -> ClassNames:
    """EK100 class names for the report (said on stderr); none for HACS/ActivityNet."""
    if args.dataset != "ek100":
        if args.verb_classes is not None or args.noun_classes is not None:
            raise InputError("--verb-classes and --noun-classes apply to EK100 (HACS/ActivityNet labels are names)")
        return ClassNames({}, {})
    names = ek100_class_names(args.annotations, args.verb_classes, args.noun_classes)
    if args.task == "detection":
        print(f"evaluate: {names.describe()}", file=sys.stderr)
    return names


def _matching(gt: SegmentTable, pred: SegmentTable, args: argparse.Namespace, names: ClassNames) -> Matching:
    """What has no counterpart, said on stderr; a warning when nothing matches, errors with ``--strict``."""
    matching = match_counts(gt, pred)
    for line in matching.summary(names.names):
        print(f"evaluate: matching: {line}", file=sys.stderr)
    problems = matching.nothing_matches()
    if problems and args.strict:
        raise InputError(f"{pred.source}: {problems[0]} (ground truth: {gt.source}; --strict)")
    for problem in problems:
        print(f"evaluate: WARNING: {pred.source}: {problem} (ground truth: {gt.source}) Nothing can score: the mAP "
              "is 0.", file=sys.stderr)
    if args.strict and matching.predictions_outside_evaluated_videos:
        outside = ~pd.Index(pred.video).isin(list(gt.videos))
        first = pred.video[np.flatnonzero(outside)[0]]
        raise InputError(f"{pred.source}: video {first!r}: {matching.predictions_outside_evaluated_videos} predictions "
                         f"on {matching.prediction_videos_outside_evaluated_videos} videos that are not in the ground "
                         f"truth {gt.source} (--strict)")
    return matching


def _evaluate(args: argparse.Namespace, gt: SegmentTable, pred: SegmentTable):
    if args.task == "proposals":
        if args.diagnose:
            raise InputError("--diagnose applies to --task detection")
        if not (math.isfinite(args.max_avg_proposals) and args.max_avg_proposals >= 1):
            raise InputError(f"--max-avg-proposals must be a number >= 1 (the AN curve runs from 1 proposal per video "
                             f"to it), got {args.max_avg_proposals:g}")
        return evaluate_proposals(gt, pred, dataset=args.dataset, tiou_thresholds=args.tiou,
                                  max_avg_nr_proposals=args.max_avg_proposals)
    unknown_labels = args.unknown_labels or ("error" if args.strict else "false_positive")
    return evaluate_detection(gt, pred, dataset=args.dataset, subset=args.subset or "validation",
                              tiou_thresholds=args.tiou, unknown_labels=unknown_labels)


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
