"""``make-demo-dataset``: generate (or, with ``--validate``, only check) the synthetic demo dataset.

See :mod:`tal_common.demo_dataset` for what the videos show and the layout written.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Sequence

from tal_common.cli import HelpFormatter, entry_point, interrupted, parse_args
from tal_common.demo_dataset import DemoConfig, DemoDatasetError, make_demo_dataset, validate_demo_dataset

RENAMED = {"--out": "--output"}  # old spelling -> current: still accepted, with a deprecation line
EXAMPLES = """\
examples:
  make-demo-dataset -o demo_data
  make-demo-dataset -o demo_data --videos 9 --val-videos 9 --seconds 10 20
  make-demo-dataset -o demo_data --validate
"""


def build_parser() -> argparse.ArgumentParser:
    """Command-line options; defaults are those of :class:`DemoConfig`."""
    defaults = DemoConfig()
    parser = argparse.ArgumentParser(
        prog="make-demo-dataset", formatter_class=HelpFormatter, epilog=EXAMPLES,
        description="Generate synthetic demo videos (9 action classes) with annotations in both real formats:\n"
        "OUTPUT/videos/*.mp4, OUTPUT/annotations/hacs.json (HACS/ActivityNet JSON), OUTPUT/annotations/ek100/*.csv.")
    parser.add_argument("-o", "--output", type=Path, required=True, help="dataset folder (videos/ and annotations/)")
    parser.add_argument("--videos", type=int, default=defaults.train_videos, help="training videos")
    parser.add_argument("--val-videos", type=int, default=defaults.val_videos, help="validation videos")
    parser.add_argument("--seconds", type=float, nargs=2, default=defaults.duration_range, metavar=("MIN", "MAX"),
                        help="range of the video lengths in seconds")
    parser.add_argument("--seed", type=int, default=defaults.seed, help="seed of everything drawn (same seed, same files)")
    parser.add_argument("--workers", type=int, default=2, help="processes rendering videos in parallel")
    parser.add_argument("--validate", action="store_true", help="only validate the dataset already in OUTPUT")
    return parser


@entry_point
def main(argv: Sequence[str] | None = None) -> int:
    """Generate or validate and print the summary; returns the exit status (0, 2 on bad options or data, 130)."""
    args = parse_args(build_parser(), argv, RENAMED)
    started = time.perf_counter()
    try:
        if args.validate:
            summary = validate_demo_dataset(args.output)
            verb = "valid"
        else:
            config = DemoConfig(train_videos=args.videos, val_videos=args.val_videos, seed=args.seed,
                                duration_range=tuple(args.seconds))
            summary = make_demo_dataset(args.output, config, workers=args.workers)
            verb = "written and valid"
    except (DemoDatasetError, ValueError, OSError) as exc:
        print(f"make-demo-dataset: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return interrupted("make-demo-dataset", "rerun the same command (videos are rewritten)")
    print(f"{args.output}: {verb}: {summary} ({time.perf_counter() - started:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
