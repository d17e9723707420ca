"""``localize``: run a trained localizer on features and write the task's official detection JSON.

Examples: ``EXAMPLES`` below (printed by ``--help``, each checked by tests/test_cli.py).

A train-localizer run gives labelled detections; an mmaction2 BMN checkpoint (a ``state_dict`` file or an mmengine
Runner file, read without running any of its pickled code) gives the ActivityNet proposal JSON, which
``evaluate --task proposals`` scores.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import torch

from localization.infer import localize
from localization.config import LocalizeConfig
from localization.model import FEATURE_NORMS, CheckpointError, TrainedRun, load_run, run_from_checkpoint
from tal_common.annotations import AnnotationError
from tal_common.atomic import check_output_path, write_json_atomic
from tal_common.cli import HelpFormatter, entry_point, interrupted, parse_args
from tal_common.config import ConfigError, load_config, resolve_config_path
from tal_common.devices import local_device
from tal_common.h5 import FeatureFileError, FeatureReader


RENAMED = {"--num-workers": "--workers"}  # old spelling -> current: still accepted, with a deprecation line
EXAMPLES = """\
examples:
  localize --run runs/hacs_bmn --features hacs.h5 --annotations HACS_segments_v1.1.1.json --subset validation -o dets.json
  localize --run runs/ek100_bmn --features ek100.h5 --annotations EPIC_100_validation.csv \\
      --video-info EPIC_100_video_info.csv -o ek100_dets.json --sls 2 3 4
  localize --checkpoint bmn_mmaction2.pth --config hacs_bmn --features anet.h5 \\
      --annotations activity_net.v1-3.min.json -o proposals.json
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="localize", formatter_class=HelpFormatter, epilog=EXAMPLES,
                                     description="Run a trained localizer on features and write the task's official "
                                     "detection JSON.")
    parser.add_argument("--run", "--work-dir", dest="run", type=Path, default=None,
                        help="run folder written by train-localizer (its --work-dir)")
    parser.add_argument("--features", type=Path, required=True, help="HDF5 feature file")
    parser.add_argument(
        "--annotations", type=Path, required=True,
        help="HACS/ActivityNet JSON or EK100 CSV: the videos to process and their durations",
    )
    parser.add_argument("--subset", default="validation", help="annotation subset to process (JSON annotations)")
    parser.add_argument("--video-info", type=Path, default=None, help="EK100 EPIC_100_video_info.csv (durations)")
    parser.add_argument("-o", "--output", type=Path, required=True, help="detections JSON to write")
    parser.add_argument(
        "--checkpoint", default=None, metavar="best|last|FILE",
        help="with --run: which of its checkpoints (default best); without: a checkpoint file (train-localizer's, "
        "or an mmaction2 BMN checkpoint with --config)",
    )
    parser.add_argument("--config", default=None,
                        help="for a checkpoint from another toolkit: a localize config (packaged name or YAML) describing its head")
    parser.add_argument(
        "--feature-norm", choices=FEATURE_NORMS, default="checkpoint",
        help="checkpoint: normalise the features as the checkpoint was trained (none for mmaction2's); none: raw features",
    )
    parser.add_argument("--batch-size", type=int, default=16, help="windows per model batch")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers reading the features")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="where the model runs")
    parser.add_argument(
        "--sls", type=int, nargs=3, default=(2, 3, 4), metavar=("PT", "TL", "TD"),
        help="EK100 supervision levels (pre-training, training labels, training data), each 0..5",
    )
    return parser


def _load(args: argparse.Namespace, device: torch.device) -> TrainedRun:
    """The model from ``--run [--checkpoint best|last]`` or ``--checkpoint FILE [--config CFG]``."""
    if args.run is not None:
        if args.config is not None:
            raise ConfigError("--config is for a checkpoint file from another toolkit; a --run folder holds its config")
        which = args.checkpoint or "best"
        if which not in ("best", "last"):
            raise ConfigError(f"--checkpoint {which!r}: with --run, pick best or last (or pass a checkpoint file without --run)")
        run = load_run(args.run, which, device)
        if args.feature_norm == "none":
            run.stats = None
        return run
    if args.checkpoint in (None, "best", "last"):
        raise ConfigError("pass --run RUN_FOLDER, or --checkpoint FILE (with --config for an mmaction2 checkpoint)")
    cfg = None if args.config is None else load_config(LocalizeConfig, resolve_config_path(args.config, "localize"))
    return run_from_checkpoint(Path(args.checkpoint), cfg, device, args.feature_norm)


@entry_point
def main(argv: list[str] | None = None) -> int:
    """Load the run, localize every video of the subset, write the JSON. Returns the exit status."""
    args = parse_args(build_parser(), argv, RENAMED)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    threads = torch.get_num_threads()
    try:
        check_output_path(args.output, "-o")
        device = local_device(args.device)
        run = _load(args, device)
        options = {"sls": tuple(args.sls)}
        run.task.check_submission_options(options)
        if run.cfg.train.num_threads:
            torch.set_num_threads(run.cfg.train.num_threads)
        annotations = run.task.read_split(args.annotations, args.subset, args.video_info)
        detections = localize(
            run, FeatureReader(args.features), annotations, batch_size=args.batch_size,
            num_workers=args.workers, options=options, device=device,
        )
        try:
            write_json_atomic(args.output, detections)
        except OSError as exc:
            raise ValueError(f"-o {args.output}: cannot write it ({exc})") from None
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
