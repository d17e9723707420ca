#!/usr/bin/env python
"""Benchmark the vectorised detection evaluator against the in-repo loop baseline (eval.baseline).

On the full ActivityNet v1.3 validation ground truth (7,654 segments, 200 classes) with generated (jittered)
predictions: times the evaluation of the same in-memory predictions by both (checking they agree bit for bit),
the end-to-end time from the two JSON files, and the vectorised evaluation of 1M predictions.
The last line is ``speedup_vs_loop: X.XX``.

    python scripts/bench_eval.py [--ground-truth ../shared/data/annotations/activitynet/activity_net_v1-3_validation_gt.json]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from eval import baseline, synthetic  # noqa: E402
from eval.detection import evaluate_activitynet_detection, evaluate_detection, evaluate_ek100_detection  # noqa: E402
from eval.inputs import activitynet_ground_truth, ek100_ground_truth  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared/data/annotations"
DEFAULT_GT = SHARED / "activitynet/activity_net_v1-3_validation_gt.json"
DEFAULT_EK100_GT = SHARED / "ek100/EPIC_100_validation.csv"


def best_of(repeats: int, fn) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return min(times), out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ground-truth", type=Path, default=DEFAULT_GT)
    parser.add_argument("--ek100-ground-truth", type=Path, default=DEFAULT_EK100_GT,
                        help="EK100 validation CSV: also check vectorised == loop there (skipped when absent)")
    parser.add_argument("--predictions", type=int, default=20_000, help="generated predictions for the comparison")
    parser.add_argument("--large", type=int, default=1_000_000, help="generated predictions for the large timing")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if not args.ground_truth.exists():
        parser.error(f"{args.ground_truth}: not found (pass --ground-truth)")

    gt = activitynet_ground_truth(args.ground_truth)
    pred = synthetic.activitynet_table(gt, args.predictions, seed=args.seed)
    print(f"ground truth: {len(gt)} segments, {len(set(gt.labels['label']))} classes, {len(gt.videos)} videos")
    print(f"predictions: {len(pred)} (jittered ground truth + false positives, seed {args.seed})")

    t_vec, fast = best_of(args.repeats, lambda: evaluate_activitynet_detection(gt, pred))
    t_loop, slow = best_of(1, lambda: evaluate_activitynet_detection(gt, pred, ap_function=baseline.average_precision))
    if not np.array_equal(fast.ap, slow.ap):
        print("MISMATCH between the vectorised evaluator and the loop baseline", file=sys.stderr)
        return 1
    print(f"average mAP: {fast.average_mAP * 100:.4f} (vectorised and loop agree bit for bit)")
    print(f"vectorised: {t_vec:.4f} s   loop baseline: {t_loop:.4f} s")

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "pred.json"
        path.write_text(json.dumps(synthetic.activitynet_detections(gt, args.predictions, seed=args.seed)))
        t_files, _ = best_of(args.repeats, lambda: evaluate_detection(args.ground_truth, path))
    print(f"end to end from the JSON files (read, validate, evaluate): {t_files:.4f} s")

    if args.ek100_ground_truth.exists():
        ek_gt = ek100_ground_truth(args.ek100_ground_truth)
        ek_sub = synthetic.ek100_submission(ek_gt, 15_000, seed=args.seed)
        t_ek, ek_fast = best_of(1, lambda: evaluate_ek100_detection(ek_gt, ek_sub))
        ek_slow = evaluate_ek100_detection(ek_gt, ek_sub, ap_function=baseline.average_precision)
        if any(not np.array_equal(ek_fast.tasks[t].ap, ek_slow.tasks[t].ap) for t in ek_fast.tasks):
            print("MISMATCH between the vectorised EK100 evaluator and the loop baseline", file=sys.stderr)
            return 1
        print(f"EK100: {len(ek_gt)} segments, 15000 predictions: {t_ek:.4f} s, verb/noun/action agree bit for bit with the loop")

    large = synthetic.activitynet_table(gt, args.large, seed=args.seed + 1)
    t_large, result = best_of(1, lambda: evaluate_activitynet_detection(gt, large))
    print(f"{args.large} predictions: {t_large:.3f} s (average mAP {result.average_mAP * 100:.4f})")
    print(f"speedup_vs_loop: {t_loop / t_vec:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
