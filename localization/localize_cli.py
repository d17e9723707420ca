"""``localize``: run a trained localizer on features and write the task's official detection JSON.

Examples: ``EXAMPLES`` below (printed by ``--help``, each checked by tests/test_cli.py).
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import torch

from localization.infer import localize
from localization.model import CheckpointError, load_run
from tal_common.annotations import AnnotationError
from tal_common.atomic import write_json_atomic
from tal_common.cli import HelpFormatter, entry_point, interrupted, parse_args
from tal_common.config import ConfigError
from tal_common.devices import local_device
from tal_common.h5 import FeatureFileError, FeatureReader


RENAMED = {"--num-workers": "--workers"}  # old spelling -> current: still accepted, with a deprecation line
EXAMPLES = """\
examples:
  localize --run runs/hacs_bmn --features hacs.h5 --annotations HACS_segments_v1.1.1.json --subset validation -o dets.json
  localize --run runs/ek100_bmn --features ek100.h5 --annotations EPIC_100_validation.csv \\
      --video-info EPIC_100_video_info.csv -o ek100_dets.json --sls 2 3 4
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="localize", formatter_class=HelpFormatter, epilog=EXAMPLES,
                                     description="Run a trained localizer on features and write the task's official "
                                     "detection JSON.")
    parser.add_argument("--run", "--work-dir", dest="run", type=Path, required=True,
                        help="run folder written by train-localizer (its --work-dir)")
    parser.add_argument("--features", type=Path, required=True, help="HDF5 feature file")
    parser.add_argument(
        "--annotations", type=Path, required=True,
        help="HACS/ActivityNet JSON or EK100 CSV: the videos to process and their durations",
    )
    parser.add_argument("--subset", default="validation", help="annotation subset to process (JSON annotations)")
    parser.add_argument("--video-info", type=Path, default=None, help="EK100 EPIC_100_video_info.csv (durations)")
    parser.add_argument("-o", "--output", type=Path, required=True, help="detections JSON to write")
    parser.add_argument("--checkpoint", choices=("best", "last"), default="best", help="which checkpoint of the run")
    parser.add_argument("--batch-size", type=int, default=16, help="windows per model batch")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers reading the features")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="where the model runs")
    parser.add_argument(
        "--sls", type=int, nargs=3, default=(2, 3, 4), metavar=("PT", "TL", "TD"),
        help="EK100 supervision levels (pre-training, training labels, training data), each 0..5",
    )
    return parser


@entry_point
def main(argv: list[str] | None = None) -> int:
    """Load the run, localize every video of the subset, write the JSON. Returns the exit status."""
    args = parse_args(build_parser(), argv, RENAMED)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    threads = torch.get_num_threads()
    try:
        device = local_device(args.device)
        run = load_run(args.run, args.checkpoint, device)
        options = {"sls": tuple(args.sls)}
        run.task.check_submission_options(options)
        if run.cfg.train.num_threads:
            torch.set_num_threads(run.cfg.train.num_threads)
        annotations = run.task.read_split(args.annotations, args.subset, args.video_info)
        detections = localize(
            run, FeatureReader(args.features), annotations, batch_size=args.batch_size,
            num_workers=args.workers, options=options, device=device,
        )
        write_json_atomic(args.output, detections)
    except (ConfigError, AnnotationError, FeatureFileError, CheckpointError, FileNotFoundError, ValueError) as exc:
        print(f"localize: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return interrupted("localize", "nothing was written (rerun the same command)")
    finally:
        torch.set_num_threads(threads)
    count = sum(len(v) for v in detections["results"].values())
    logging.getLogger(__name__).info("%d detections for %d videos -> %s", count, len(detections["results"]), args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
