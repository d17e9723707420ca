"""``evaluate``: score a detection or proposal file against ground truth and write the report.

    evaluate --dataset {hacs,activitynet,ek100} --ground-truth GT --predictions P.json \\
             [--subset validation] [--task detection|proposals] [--tiou T [T ...]] --out DIR

Writes ``DIR/report.json``, ``DIR/report.md`` and PNG plots, and prints the table. Exit status: 0 on success,
2 on a usage error or a malformed input (the message names the file, video and field).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from eval.detection import UNKNOWN_LABEL_POLICIES, evaluate_detection
from eval.inputs import InputError
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
    parser.add_argument("--out", required=True, type=Path, help="output directory for report.json, report.md and plots")
    return parser


def _threshold(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"not a finite number: {text!r}")
    return value


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # argparse has printed the usage error
        return int(exc.code or 0)
    try:
        result = _evaluate(args)
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
    write_report(result, args.out, meta)
    print(format_table(result))
    print(f"report: {args.out / 'report.md'}")
    return 0


def _evaluate(args: argparse.Namespace):
    if args.dataset == "ek100" and (args.subset is not None or args.blocked_videos is not None):
        raise InputError("--subset and --blocked-videos do not apply to EK100: every row of the CSV counts")
    blocked = _read_blocked(args.blocked_videos) if args.blocked_videos else ()
    subset = args.subset or "validation"
    if args.task == "proposals":
        return evaluate_proposals(
            args.ground_truth, args.predictions, dataset=args.dataset, subset=subset, tiou_thresholds=args.tiou,
            max_avg_nr_proposals=args.max_avg_proposals, blocked_videos=blocked,
        )
    return evaluate_detection(
        args.ground_truth, args.predictions, dataset=args.dataset, subset=subset, tiou_thresholds=args.tiou,
        unknown_labels=args.unknown_labels, blocked_videos=blocked,
    )


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
