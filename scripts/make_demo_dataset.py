#!/usr/bin/env python
"""Generate (or, with --validate, only check) the synthetic demo dataset; see tal_common/demo_dataset.py."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from tal_common.demo_dataset import DemoConfig, make_demo_dataset, validate_demo_dataset


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options; defaults are those of :class:`DemoConfig`."""
    defaults = DemoConfig()
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, required=True, help="dataset folder (videos/ and annotations/)")
    parser.add_argument("--videos", type=int, default=defaults.train_videos, help="training videos")
    parser.add_argument("--val-videos", type=int, default=defaults.val_videos, help="validation videos")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--workers", type=int, default=2, help="processes rendering videos in parallel")
    parser.add_argument("--validate", action="store_true", help="only validate the dataset already in --out")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Generate or validate; print the summary. Errors propagate with the offending video named."""
    args = parse_args(argv)
    started = time.perf_counter()
    if args.validate:
        summary = validate_demo_dataset(args.out)
        verb = "valid"
    else:
        config = DemoConfig(train_videos=args.videos, val_videos=args.val_videos, seed=args.seed)
        summary = make_demo_dataset(args.out, config, workers=args.workers)
        verb = "written and valid"
    print(f"{args.out}: {verb}: {summary} ({time.perf_counter() - started:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
