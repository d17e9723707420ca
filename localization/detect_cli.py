"""``detect``: videos in, labelled segments and timeline pictures out, with a trained run.

Examples: ``EXAMPLES`` below (printed by ``--help``, each checked by tests/test_cli.py).

Steps: extract features with exactly the settings of the feature file the run was trained on (its backbone,
weights and extraction config are recorded in the checkpoint; cached and resumable in ``OUT/features.h5``),
localize, then write per video ``OUT/<video>.json`` (the task's official format), one ``OUT/detections.csv``
(``video,start_s,end_s,label,score``), ``OUT/timelines/<video>.png`` and ``OUT/index.md`` linking them.
"""
from __future__ import annotations

import argparse
import csv
import io
import logging
import sys
from pathlib import Path
from typing import Any

import torch
import yaml

from feature_extraction import cli as extract_cli
from localization.infer import localize
from localization.model import CheckpointError, TrainedRun, load_run
from localization.timeline import THUMBNAILS, draw_timeline, thumbnails
from tal_common.annotations import AnnotationError, AnnotationSet, VideoAnnotation, read_annotations
from tal_common.atomic import check_output_path, write_json_atomic, write_text_atomic
from tal_common.cli import EXIT_INTERRUPTED, HelpFormatter, entry_point, interrupted, parse_args
from tal_common.config import ConfigError
from tal_common.devices import local_device
from tal_common.h5 import FeatureFileError, FeatureReader
from tal_common.hashing import file_sha256

LOG = logging.getLogger("detect")
VIDEO_SUFFIXES = (".mp4", ".mkv", ".webm", ".avi", ".mov")
RENAMED = {"--ground-truth": "--annotations"}  # old spelling -> current: still accepted, with a deprecation line
EXAMPLES = """\
examples:
  detect my_video.mp4 more_videos/ --run runs/hacs_bmn -o detections/
  detect my_video.mp4 --run runs/hacs_bmn -o detections/ --annotations HACS_segments_v1.1.1.json --top 5
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="detect", formatter_class=HelpFormatter, epilog=EXAMPLES,
        description="Videos in, labelled segments and timeline pictures out, with a trained run: features (cached in\n"
        "OUTPUT/features.h5, resumable), then OUTPUT/<video>.json, detections.csv, timelines/<video>.png, index.md.")
    parser.add_argument("inputs", nargs="+", type=Path, metavar="VIDEO_OR_DIR", help="video files or folders of videos")
    parser.add_argument("--run", "--work-dir", dest="run", type=Path, required=True,
                        help="run folder written by train-localizer (its --work-dir)")
    parser.add_argument("-o", "--output", type=Path, required=True, help="output folder")
    parser.add_argument("--weights", default=None,
                        help="backbone checkpoint, when the one the run's features were made with is not at its recorded path")
    parser.add_argument("--checkpoint", choices=("best", "last"), default="best", help="which checkpoint of the run")
    parser.add_argument("--annotations", type=Path, default=None,
                        help="annotations (ActivityNet-style JSON or EK100 CSV) to draw as a lane under the detections")
    parser.add_argument("--top", type=int, default=10, help="detections per video listed in index.md")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="where the models run")
    parser.add_argument("--workers", type=int, default=1, help="decoding worker processes for the extraction")
    return parser


def _videos_folder(inputs: list[Path], out: Path) -> list[Path]:
    """Folders to hand to the extraction: given folders as they are, given files linked into ``OUT/inputs``."""
    folders, files = [], []
    for path in inputs:
        if path.is_dir():
            folders.append(path)
        elif path.is_file():
            if path.suffix.lower() not in VIDEO_SUFFIXES:
                raise ValueError(f"{path}: not a video file ({', '.join(VIDEO_SUFFIXES)})")
            files.append(path.resolve())
        else:
            raise FileNotFoundError(f"{path}: no such video file or folder")
    if files:
        linked = out / "inputs"
        linked.mkdir(parents=True, exist_ok=True)
        for path in files:
            link = linked / path.name
            if link.is_symlink() and link.resolve() != path:
                link.unlink()
            if not link.exists():
                link.symlink_to(path)
        folders.append(linked)
    return folders


def _extraction_args(run: TrainedRun, out: Path, weights: str | None) -> list[str]:
    """``extract-features`` options reproducing the run's features: its recorded config and weights."""
    provenance = run.features
    if "config" not in provenance:
        raise CheckpointError(f"{run.checkpoint}: records no feature provenance (train it again with this version)")
    config_path = out / "extract_config.yaml"
    recorded = yaml.safe_load(io.StringIO(provenance["config"]))
    write_text_atomic(config_path, yaml.safe_dump(recorded, sort_keys=False))
    recorded_weights = provenance.get("weights", "")
    if recorded_weights.startswith("random"):
        if weights not in (None, "random"):
            raise ValueError(f"{run.checkpoint}: the run was trained on features from random weights; do not pass --weights")
        chosen = "random"
    else:
        chosen = weights or recorded_weights
        if not Path(chosen).is_file():
            raise FileNotFoundError(f"{chosen}: backbone weights of the run's features not found; pass --weights PATH")
        if provenance.get("weights_sha256") and file_sha256(Path(chosen)) != provenance["weights_sha256"]:
            raise ValueError(f"{chosen}: not the weights the run's features were made with (sha256 differs from "
                             f"{provenance['weights_sha256'][:12]}..., recorded for {recorded_weights})")
    return ["--preset", "demo", "--config", str(config_path), "--weights", chosen]


def _annotations_from_features(reader: FeatureReader) -> AnnotationSet:
    """Every video of the feature file, with its decoded duration and no segments."""
    videos = {}
    for vid in reader.video_ids():
        timing = reader.timing(vid)
        videos[vid] = VideoAnnotation(vid, timing.duration_s, "detect", (), timing.source_fps)
    return AnnotationSet(videos, (), str(reader.path))


def _label(det: dict[str, Any]) -> str:
    return str(det["label"]) if "label" in det else f"verb {det['verb']} / noun {det['noun']}"


def _ground_truth(path: Path | None, video_id: str) -> list[tuple[float, float, str]]:
    if path is None:
        return []
    videos = read_annotations(path).videos
    ann = videos.get(video_id) or videos.get(video_id[2:] if video_id.startswith("v_") else f"v_{video_id}")
    return [] if ann is None else [(s.start, s.end, s.label) for s in ann.segments]


def run_detect(args: argparse.Namespace) -> int:
    out: Path = args.output
    out.mkdir(parents=True, exist_ok=True)
    device = local_device(args.device)
    run = load_run(args.run, args.checkpoint, device)
    folders = _videos_folder(args.inputs, out)
    features = out / "features.h5"
    LOG.info("1/3 extracting features with the run's settings (%s, weights %s) -> %s",
             run.features.get("backbone", "?"), run.features.get("weights", "?"), features)
    status = extract_cli.main([*map(str, folders), "-o", str(features), *_extraction_args(run, out, args.weights),
                               "--device", args.device, "--workers", str(args.workers)])
    if status == EXIT_INTERRUPTED:
        return status  # the extraction has said so in one line
    if status not in (0, 1) or not features.is_file():
        raise ValueError(f"feature extraction failed (exit status {status}); see the messages above")
    reader = FeatureReader(features)
    LOG.info("2/3 localizing %d videos", len(reader.video_ids()))
    submission = localize(run, reader, _annotations_from_features(reader), device=device, options={})
    results = submission["results"]
    sources = {p.stem: p for folder in folders for p in folder.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES}
    LOG.info("3/3 writing detections and timelines -> %s", out)
    rows = [["video", "start_s", "end_s", "label", "score"]]
    index = ["# Detections", "", f"Run: `{args.run}` ({run.checkpoint.name}); task {run.task.name}.", ""]
    for vid, dets in sorted(results.items()):
        write_json_atomic(out / f"{vid}.json", {**{k: v for k, v in submission.items() if k != "results"}, "results": {vid: dets}})
        rows += [[vid, f"{d['segment'][0]:.3f}", f"{d['segment'][1]:.3f}", _label(d), f"{d['score']:.6f}"] for d in dets]
        duration = reader.timing(vid).duration_s
        frames = thumbnails(sources[vid], [(i + 0.5) * duration / THUMBNAILS for i in range(THUMBNAILS)]) if vid in sources else []
        picture = out / "timelines" / f"{vid}.png"
        draw_timeline(picture, vid, duration, dets, _label, frames, _ground_truth(args.annotations, vid))
        index += [f"## {vid} ({duration:.1f} s)", "", f"![timeline](timelines/{vid}.png)", "",
                  "| start (s) | end (s) | label | score |", "|---:|---:|---|---:|"]
        index += [f"| {d['segment'][0]:.1f} | {d['segment'][1]:.1f} | {_label(d)} | {d['score']:.3f} |" for d in dets[:args.top]]
        index.append("")
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    write_text_atomic(out / "detections.csv", buffer.getvalue())
    write_json_atomic(out / "detections.json", submission)
    write_text_atomic(out / "index.md", "\n".join(index))
    print(f"detect: {len(results)} videos, {len(rows) - 1} detections -> {out / 'index.md'} (pictures in {out / 'timelines'})")
    return 0 if status == 0 else 1


@entry_point
def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status (0 all done, 1 some videos failed to decode, 2 error, 130 interrupted)."""
    args = parse_args(build_parser(), argv, RENAMED)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        check_output_path(args.output, "-o", folder=True)
        return run_detect(args)
    except (ConfigError, AnnotationError, FeatureFileError, CheckpointError, FileNotFoundError, ValueError) as exc:
        print(f"detect: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return interrupted("detect", "finished videos are kept, rerun the same command to resume")


if __name__ == "__main__":
    sys.exit(main())
