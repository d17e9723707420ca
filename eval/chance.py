"""The chance baseline: random segments with random labels, in the official submission formats.

Scored by the same evaluator as a model's detections, it shows what an mAP is worth on a given ground truth.
Each video of the evaluated set gets ``per_video`` segments with both ends uniform over its duration, a
uniform score and a label drawn uniformly from the classes of that ground truth (HACS/ActivityNet: the
subset's labels; EK100: the verb and noun classes that occur in the file).

    python -m eval.chance --dataset hacs --annotations A.json [--subset validation] -o random.json
    python -m eval.chance --dataset ek100 --annotations EPIC_100_validation.csv --video-info EPIC_100_video_info.csv -o random.json
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from tal_common.annotations import AnnotationError, AnnotationSet, read_annotations
from tal_common.atomic import write_json_atomic
from tal_common.cli import HelpFormatter, entry_point, interrupted


def random_submission(annotations: AnnotationSet, dataset: str, per_video: int = 100, seed: int = 0) -> dict:
    """A detection submission dict (``dataset`` ``hacs``/``activitynet`` or ``ek100``) of random predictions."""
    if per_video < 1:
        raise ValueError(f"per_video must be >= 1, got {per_video}")
    rng = np.random.default_rng(seed)
    segments = [s for v in annotations.videos.values() for s in v.segments]
    if not segments:
        raise ValueError(f"{annotations.source}: no ground-truth segments to draw labels from")
    if dataset == "ek100":
        verbs, nouns = np.unique([s.verb for s in segments]), np.unique([s.noun for s in segments])
    labels = np.array(annotations.labels, dtype=object)
    results = {}
    for vid, video in annotations.videos.items():
        ends = np.sort(rng.uniform(0.0, video.duration, (per_video, 2)), axis=1)
        score = rng.random(per_video)
        if dataset == "ek100":
            verb, noun = rng.choice(verbs, per_video), rng.choice(nouns, per_video)
            results[vid] = [
                {"verb": int(v), "noun": int(n), "action": f"{v},{n}", "score": float(c), "segment": [float(a), float(b)]}
                for v, n, c, (a, b) in zip(verb, noun, score, ends)
            ]
        else:
            label = rng.choice(labels, per_video)
            results[vid] = [
                {"label": str(lab), "score": float(c), "segment": [float(a), float(b)]}
                for lab, c, (a, b) in zip(label, score, ends)
            ]
    if dataset == "ek100":
        return {"version": "0.2", "challenge": "action_detection", "sls_pt": 0, "sls_tl": 0, "sls_td": 0, "results": results}
    return {"version": "VERSION 1.3", "results": results,
            "external_data": {"used": False, "details": f"random baseline, {per_video} per video, seed {seed}"}}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m eval.chance", formatter_class=HelpFormatter,
        description="The chance baseline: random segments with random labels, in the official submission formats.",
        epilog="examples:\n  python -m eval.chance --dataset hacs --annotations hacs.json --subset validation -o random.json\n"
        "  python -m eval.chance --dataset ek100 --annotations EPIC_100_validation.csv --video-info EPIC_100_video_info.csv "
        "-o random.json\n")
    parser.add_argument("--dataset", required=True, choices=("hacs", "activitynet", "ek100"),
                        help="the submission format: HACS/ActivityNet JSON, or EK100 action detection")
    parser.add_argument("--annotations", required=True, type=Path, help="ground-truth JSON (HACS/ActivityNet) or EK100 CSV")
    parser.add_argument("--subset", default="validation", help="HACS/ActivityNet subset")
    parser.add_argument("--video-info", type=Path, default=None, help="EK100 EPIC_100_video_info.csv (durations)")
    parser.add_argument("--per-video", type=int, default=100, help="random segments per video")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random segments, scores and labels")
    parser.add_argument("-o", "--output", required=True, type=Path, help="submission JSON to write")
    return parser


@entry_point
def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status (0 written, 2 bad annotations, 130 interrupted)."""
    args = build_parser().parse_args(argv)
    try:
        annotations = read_annotations(args.annotations, args.video_info)
        if args.dataset != "ek100":
            annotations = annotations.subset(args.subset)
        submission = random_submission(annotations, args.dataset, args.per_video, args.seed)
    except (AnnotationError, ValueError) as exc:
        print(f"eval.chance: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return interrupted("eval.chance", "nothing was written (rerun the same command)")
    write_json_atomic(args.output, submission)
    print(f"eval.chance: wrote {args.output}: {args.per_video} random predictions for each of {len(submission['results'])} videos")
    return 0


if __name__ == "__main__":
    sys.exit(main())
