"""``train-localizer``: train BMN + the detection classifier on an HDF5 feature file.

Example::

    train-localizer --config configs/localize/hacs_bmn.yaml --features hacs.h5 \\
        --annotations HACS_segments_v1.1.1.json --work-dir runs/hacs_bmn
    torchrun --nproc_per_node 4 -m localization.train_cli --config ... --work-dir runs/x   # data-parallel
    train-localizer --config hacs_bmn --init-from bmn_mmaction2.pth --feature-norm none ...   # fine-tune mmaction2's BMN
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
from tal_common.config import ConfigError, add_config_args, load_config, resolve_config_path
from tal_common.h5 import FeatureFileError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="train-localizer", description=__doc__.split("\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_config_args(parser)
    parser.add_argument("--features", type=Path, required=True, help="HDF5 feature file (extract-features output)")
    parser.add_argument(
        "--annotations", type=Path, required=True,
        help="HACS/ActivityNet JSON (training + validation subsets) or the EK100 training CSV",
    )
    parser.add_argument("--val-annotations", type=Path, default=None, help="validation annotations (EK100: the validation CSV)")
    parser.add_argument("--video-info", type=Path, default=None, help="EK100 EPIC_100_video_info.csv (durations)")
    parser.add_argument("--work-dir", type=Path, required=True, help="run folder, e.g. runs/NAME")
    parser.add_argument("--resume", action="store_true", help="continue from WORK_DIR/checkpoints/last.pt")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default=None, help="overrides train.device")
    parser.add_argument("--init-from", type=Path, default=None, metavar="CKPT",
                        help="start the head from this checkpoint's weights: a train-localizer checkpoint or an mmaction2 "
                        "BMN checkpoint (state_dict or mmengine Runner file, read without running its pickled code)")
    parser.add_argument("--feature-norm", choices=("stats", "none"), default=None,
                        help="overrides data.normalize: stats = per-channel mean/std of the training features, "
                        "none = raw features (what mmaction2's BMN is trained on)")
    return parser


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
        print(f"train-localizer: interrupted; the last finished epoch is kept: add --resume to the same command "
              f"to continue ({args.work_dir})", file=sys.stderr)
        return 130
    finally:
        torch.set_num_threads(threads)
        if dist.is_initialized():
            dist.destroy_process_group()
    if metrics:
        logging.getLogger(__name__).info("done: %s", args.work_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
