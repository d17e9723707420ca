"""``train-localizer``: train BMN + the detection classifier on an HDF5 feature file.

Examples: ``EXAMPLES`` below (printed by ``--help``, each run by tests/test_cli.py).
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from localization.config import LocalizeConfig
from localization.model import CheckpointError
from localization.train import train
from tal_common.annotations import AnnotationError
from tal_common.atomic import check_output_path
from tal_common.cli import HelpFormatter, entry_point, interrupted
from tal_common.config import ConfigError, add_config_args, load_config, packaged_configs, resolve_config_path
from tal_common.h5 import FeatureFileError


EXAMPLES = """\
examples:
  train-localizer --config hacs_bmn --features hacs.h5 --annotations HACS_segments_v1.1.1.json --work-dir runs/hacs_bmn
  train-localizer --config demo_bmn --features demo.h5 --annotations hacs.json --work-dir runs/demo --set train.epochs=5
  train-localizer --config hacs_bmn --features hacs.h5 --annotations HACS_segments_v1.1.1.json --work-dir runs/hacs_bmn --resume
  torchrun --nproc_per_node=4 -m localization.train_cli --config hacs_bmn --features hacs.h5 \\
      --annotations HACS_segments_v1.1.1.json --work-dir runs/hacs_bmn --set train.batch_size=4
  train-localizer --config hacs_bmn --init-from bmn_mmaction2.pth --feature-norm none --features anet.h5 \\
      --annotations activity_net.v1-3.min.json --work-dir runs/anet_from_mm
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="train-localizer", formatter_class=HelpFormatter, epilog=EXAMPLES,
                                     description="Train BMN and the detection classifier on an HDF5 feature file;\n"
                                     "the run folder holds config.yaml, train.log, metrics.jsonl and checkpoints/.")
    add_config_args(parser, f"YAML config file, or a packaged one by name: {', '.join(packaged_configs('localize'))}",
                    example="train.epochs=5")
    parser.add_argument("--features", type=Path, required=True, help="HDF5 feature file (extract-features output)")
    parser.add_argument(
        "--annotations", type=Path, required=True,
        help="HACS/ActivityNet JSON (training + validation subsets) or the EK100 training CSV",
    )
    parser.add_argument("--val-annotations", type=Path, default=None, help="validation annotations (EK100: the validation CSV)")
    parser.add_argument("--video-info", type=Path, default=None, help="EK100 EPIC_100_video_info.csv (durations)")
    parser.add_argument("--work-dir", type=Path, required=True, help="run folder, e.g. runs/NAME")
    parser.add_argument("--resume", action="store_true", help="continue from WORK_DIR/checkpoints/last.pt")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default=None,
                        help="where the model trains (default: the config's train.device)")
    parser.add_argument("--workers", type=int, default=None,
                        help="DataLoader workers reading the features (default: the config's data.num_workers)")
    parser.add_argument("--init-from", type=Path, default=None, metavar="CKPT",
                        help="start the head from this checkpoint's weights: a train-localizer checkpoint or an mmaction2 "
                        "BMN checkpoint (state_dict or mmengine Runner file, read without running its pickled code)")
    parser.add_argument("--feature-norm", choices=("stats", "none"), default=None,
                        help="overrides data.normalize: stats = per-channel mean/std of the training features, "
                        "none = raw features (what mmaction2's BMN is trained on)")
    return parser


@entry_point
def main(argv: list[str] | None = None) -> int:
    """Parse arguments, resolve the config once, train. Returns the exit status."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    threads = torch.get_num_threads()
    try:
        check_output_path(args.work_dir, "--work-dir", folder=True)
        config_path = None if args.config is None else resolve_config_path(args.config, "localize")
        if config_path is None and args.resume and (args.work_dir / "config.yaml").is_file():
            config_path = args.work_dir / "config.yaml"
        overrides = [*args.overrides, *([f"train.device={args.device}"] if args.device else []),
                     *([f"data.num_workers={args.workers}"] if args.workers is not None else []),
                     *([f"data.normalize={str(args.feature_norm == 'stats').lower()}"] if args.feature_norm else [])]
        cfg = load_config(LocalizeConfig, config_path, overrides)
        if cfg.train.num_threads:
            torch.set_num_threads(cfg.train.num_threads)
        metrics = train(
            cfg, args.features, args.annotations, args.work_dir, resume=args.resume,
            val_annotations=args.val_annotations, video_info=args.video_info, init_from=args.init_from,
        )
    except (ConfigError, AnnotationError, FeatureFileError, CheckpointError, FileNotFoundError, FileExistsError,
            ValueError, FloatingPointError) as exc:
        print(f"train-localizer: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return interrupted("train-localizer", f"the last finished epoch is kept: add --resume to the same command "
                           f"to continue ({args.work_dir})")
    finally:
        torch.set_num_threads(threads)
        if dist.is_initialized():
            dist.destroy_process_group()
    if metrics:
        logging.getLogger(__name__).info("done: %s", args.work_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
