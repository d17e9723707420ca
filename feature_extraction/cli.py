"""``extract-features``: videos -> one HDF5 file of clip features (see DESIGN.md, "HDF5 layout").

Usage::

    extract-features VIDEO_DIR [VIDEO_DIR ...] -o features.h5 --preset hacs [--weights PATH] ...
    extract-features inspect features.h5
    extract-features verify features.h5 --videos VIDEO_DIR
    extract-features import SRC -o features.h5 --format FORMAT ...   (see feature_extraction/import_features.py)
    extract-features export features.h5 --format npy -o DIR          (see feature_extraction/export_features.py)

Run under ``torchrun --nproc_per_node=N -m feature_extraction.cli ...`` to shard the videos across
ranks (they coordinate over gloo, each CUDA rank on its own GPU; a rank that dies or hangs stops the
others within ``--rank-timeout-s`` seconds, see :mod:`feature_extraction.ranks`). How a run survives crashes:

* every finished video is published as its own small file in ``<out>.parts/`` (written to a
  temporary name, fsynced, renamed), every failed one as a JSON record there;
* a rerun of the same command skips the videos already in ``<out>`` or in ``<out>.parts/`` and
  retries the failed ones;
* rank 0 assembles ``<out>`` from the previous ``<out>`` and the parts into ``<out>.tmp``, renames it
  onto ``<out>``, writes ``<out>.failures.jsonl`` and only then removes ``<out>.parts/``, ``run.json`` first:
  a parts folder without ``run.json`` holds only what ``<out>`` already has, and a rerun removes it;
* rank 0 holds the lock ``<out>.lock`` for the whole run, so a second run on the same output stops with a
  message (a lock left by a killed run is taken over);
* free space is checked before extracting and before assembling, and a full disk is a named error that
  keeps the parts.

A ``kill -9`` at any instant therefore leaves the previous ``<out>`` (or none) plus complete parts.
"""
from __future__ import annotations

import argparse
import contextlib
import errno
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Sequence

import torch
import yaml

from feature_extraction import export_features, import_features
from feature_extraction.config import PRESETS, ExtractConfig, feature_identity, make_sampler, preset_path, resolve_config
from feature_extraction.dataset import VideoWork
from feature_extraction.notices import low_fps_notice, weights_notice
from feature_extraction.pipeline import Failure, extract_videos, load_model, model_threads, record_failure
from feature_extraction.ranks import DEFAULT_RANK_TIMEOUT_S, EXIT_RANK_LOST, RankGroup, RankLostError
from feature_extraction.summary import inspect_file, verify_file
from feature_extraction.video import VIDEO_EXTENSIONS, VideoInfo, find_videos, probe_videos
from feature_extraction.weights import get_weights_spec
from tal_common.atomic import check_output_path, durable_replace, durable_unlink
from tal_common.cli import HelpFormatter, entry_point, interrupted
from tal_common.config import ConfigError, add_config_args, config_to_yaml, load_config
from tal_common.devices import want_cuda
from tal_common.h5 import FeatureReader, assemble_file
from tal_common.hashing import file_sha256
from tal_common.lock import output_lock

SUBCOMMANDS = ("extract", "inspect", "verify", "import", "export")


# --------------------------------------------------------------------------- argument parsing


EXAMPLES = """\
examples:
  extract-features videos/ -o features.h5 --preset demo --device cpu
  extract-features hacs/videos -o hacs.h5 --preset hacs --weights weights/ --device cuda --bf16 --workers 8
  extract-features videos/ -o features.h5 --preset hacs --weights random --set preprocess.resize=decoder
  torchrun --nproc_per_node=8 -m feature_extraction.cli hacs/videos -o hacs.h5 --preset hacs --weights weights/
  extract-features inspect hacs.h5
  extract-features verify hacs.h5 --videos hacs/videos
"""


def extract_parser() -> argparse.ArgumentParser:
    """Options of the default command (videos -> features)."""
    p = argparse.ArgumentParser(
        prog="extract-features", formatter_class=HelpFormatter, epilog=EXAMPLES,
        description="Extract TAdaConv clip features from videos into one HDF5 file (crash-safe: rerun the same "
        "command to resume).\nOther commands: inspect, verify, import, export (extract-features COMMAND --help).",
    )
    p.add_argument("video_dirs", nargs="+", type=Path, metavar="VIDEO_DIR", help="folders searched recursively for videos")
    p.add_argument("-o", "--output", type=Path, required=True, help="output HDF5 file")
    p.add_argument("--preset", choices=PRESETS, required=True,
                   help="extraction preset (the packaged configs/extract/PRESET.yaml)")
    add_config_args(p, "YAML file applied over the preset (same keys as configs/extract/*.yaml)",
                    example="preprocess.resize=decoder")
    p.add_argument("--weights", default=None,
                   help="checkpoint file or folder holding the preset's weights, or 'random' (default: the preset's)")
    p.add_argument("--video-list", type=Path, default=None, help="only these video ids / file names (one per line)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default=None,
                   help="where the model runs (default: the preset's run.device, auto = cuda when present)")
    p.add_argument("--batch-size", type=int, default=None, help="clips per model batch (default: the preset's run.batch_size)")
    p.add_argument("--workers", type=int, default=None, help="decoding worker processes (default: the preset's run.workers)")
    p.add_argument("--decoder", choices=("decord", "torchcodec"), default=None,
                   help="video decoder (default: the preset's run.decoder, decord); torchcodec with --device cuda "
                   "decodes on NVDEC")
    precision = p.add_mutually_exclusive_group()
    precision.add_argument("--fp16", action="store_const", const="fp16", dest="precision",
                           help="run the model under float16 autocast (CUDA; default: the preset's model.precision)")
    precision.add_argument("--bf16", action="store_const", const="bf16", dest="precision",
                           help="run the model under bfloat16 autocast (default: the preset's model.precision)")
    p.add_argument("--fresh", action="store_true",
                   help="discard the finished videos of an interrupted run made with another config or weights "
                   "(OUTPUT.parts/) instead of refusing to start")
    p.add_argument("--rank-timeout-s", type=float, default=DEFAULT_RANK_TIMEOUT_S,
                   help="with several ranks: stop when another rank has sent no heartbeat for this long")
    return p


def inspect_parser() -> argparse.ArgumentParser:
    """Options of ``extract-features inspect``."""
    p = argparse.ArgumentParser(prog="extract-features inspect", formatter_class=HelpFormatter,
                                description="Summarise a feature file: provenance, videos, clips, dims, timing, failures.",
                                epilog="example:\n  extract-features inspect features.h5 | head -3\n")
    p.add_argument("features", type=Path, help="HDF5 feature file written by extract-features")
    return p


def verify_parser() -> argparse.ArgumentParser:
    """Options of ``extract-features verify``."""
    p = argparse.ArgumentParser(
        prog="extract-features verify", formatter_class=HelpFormatter,
        description="Check every video is present with the clip count its duration implies (exit 1 otherwise).",
        epilog="example:\n  extract-features verify features.h5 --videos videos/ --workers 2\n",
    )
    p.add_argument("features", type=Path, help="HDF5 feature file written by extract-features")
    p.add_argument("--videos", nargs="+", type=Path, required=True, metavar="DIR", help="the folders the features came from")
    p.add_argument("--video-list", type=Path, default=None, help="only these video ids / file names (one per line)")
    p.add_argument("--workers", type=int, default=4, help="processes probing the videos")
    p.add_argument("--probe-timeout-s", type=float, default=120.0, help="give up probing one video after this long")
    return p


def build_parser(command: str) -> argparse.ArgumentParser:
    """The parser of one command: ``extract`` (the default), ``inspect``, ``verify``, ``import`` or ``export``."""
    return {"extract": extract_parser, "inspect": inspect_parser, "verify": verify_parser,
            "import": import_features.build_parser, "export": export_features.build_parser}[command]()


def split_command(argv: Sequence[str]) -> tuple[str, list[str]]:
    """``["inspect", "f.h5"]`` -> ``("inspect", ["f.h5"])``; arguments without a command -> ``("extract", argv)``."""
    args = list(argv)
    return (args.pop(0) if args and args[0] in SUBCOMMANDS else "extract"), args


@entry_point
def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (0: every video done, 1: some failed, 2: usage/config error,
    3: another rank was lost, 130: interrupted; rerun to resume)."""
    command, args = split_command(sys.argv[1:] if argv is None else argv)
    try:
        if command == "inspect":
            return inspect_file(inspect_parser().parse_args(args).features)
        if command == "verify":
            a = verify_parser().parse_args(args)
            return verify_file(a.features, a.videos, a.video_list, a.workers, a.probe_timeout_s)
        if command == "import":
            return import_features.main(args)
        if command == "export":
            return export_features.main(args)
        return run_extract(extract_parser().parse_args(args))
    except (ConfigError, FileNotFoundError, ValueError) as exc:
        print(f"extract-features: error: {exc}", file=sys.stderr)
        return 2
    except (PermissionError, NotADirectoryError, IsADirectoryError) as exc:  # an output path that cannot be written
        print(f"extract-features: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        if not _disk_full(exc):
            raise
        print(f"extract-features: error: no space left on the device ({exc}); finished videos are kept: free some "
              "space and rerun the same command to resume", file=sys.stderr)
        return 2
    except RankLostError as exc:
        print(f"extract-features: {exc}", file=sys.stderr)
        return EXIT_RANK_LOST
    except KeyboardInterrupt:
        advice = ("finished videos are kept, rerun the same command to resume" if command == "extract"
                  else "nothing was changed, rerun the same command")
        return interrupted("extract-features", advice)


# --------------------------------------------------------------------------- extraction


def load_extract_config(args: argparse.Namespace) -> ExtractConfig:
    """The preset, then ``--config``, then ``--set``, then the option flags (``--device``, ``--workers``, ...)."""
    overrides = list(args.overrides)
    for key, value in (("run.device", args.device), ("run.batch_size", args.batch_size), ("run.workers", args.workers),
                       ("run.decoder", args.decoder), ("model.precision", args.precision)):
        if value is not None:
            overrides.append(f"{key}={value}")
    if args.weights == "random":
        overrides.append("model.weights=random")
    return load_config(ExtractConfig, args.config, overrides, base=preset_path(args.preset))


def run_extract(args: argparse.Namespace) -> int:
    """The ``extract`` command: configure, find/probe/shard videos, extract, assemble."""
    cfg = load_extract_config(args)
    weights_path = None if args.weights == "random" else args.weights
    for path in args.video_dirs:
        if path.is_file():
            raise ValueError(f"{path}: a file, and extract-features takes folders of videos (VIDEO_DIR): pass its folder "
                             f"{str(path.parent)!r} (--video-list FILE to take only some of its videos), or run detect "
                             "on single video files")
    try:
        cuda = want_cuda(cfg.run.device)
    except ValueError as exc:
        raise ConfigError(f"run.device: {exc}") from None
    notice = weights_notice(args.preset, cfg, cuda)
    cfg = resolve_config(cfg, cuda)
    spec = get_weights_spec(cfg.model.backbone, cfg.model.weights)
    try:
        checkpoint = spec.locate(weights_path)
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"preset {args.preset!r}: {exc}; pass it with --weights PATH (or --weights random for a random init)") from exc
    check_output_path(args.output, "-o")
    videos = find_videos(args.video_dirs, args.video_list)  # duplicate ids fail here, before any work
    if not videos:
        raise ValueError(f"no videos ({', '.join(VIDEO_EXTENSIONS)}) found under {', '.join(map(str, args.video_dirs))}")
    check_video_ids(videos)
    sha = file_sha256(checkpoint) if checkpoint is not None else ""
    provenance = (cfg.model.backbone, str(checkpoint) if checkpoint is not None else f"random (seed {cfg.model.seed})", sha)
    if args.rank_timeout_s <= 0:
        raise ValueError(f"--rank-timeout-s must be > 0, got {args.rank_timeout_s}")
    env = RankGroup(cuda)
    if notice and env.rank == 0:
        print(f"extract-features: {notice}", file=sys.stderr)
    try:
        return _extract(cfg, env, videos, args.output.resolve(), checkpoint, provenance, args.rank_timeout_s, args.fresh)
    finally:
        env.close()


def _extract(cfg: ExtractConfig, env: RankGroup, videos: dict[str, Path], out: Path, checkpoint: Path | None,
             provenance: tuple[str, str, str], rank_timeout_s: float, fresh: bool = False) -> int:
    """Extract this rank's shard into the parts folder; rank 0 then assembles ``out``.

    Returns the exit status: rank 0 says whether any video failed (of every rank); other ranks return 0
    once their shard is done (their failures are in the parts folder, which rank 0 reports).
    """
    if env.rank == 0:
        out.parent.mkdir(parents=True, exist_ok=True)
    lock = output_lock(out.with_name(out.name + ".lock"), str(out)) if env.rank == 0 else contextlib.nullcontext()
    with lock:
        return _extract_locked(cfg, env, videos, out, checkpoint, provenance, rank_timeout_s, fresh)


def _extract_locked(cfg: ExtractConfig, env: RankGroup, videos: dict[str, Path], out: Path, checkpoint: Path | None,
                    provenance: tuple[str, str, str], rank_timeout_s: float, fresh: bool) -> int:
    """:func:`_extract` once rank 0 holds the output's lock."""
    parts = out.with_name(out.name + ".parts")
    identity = feature_identity(cfg, provenance[2])
    sampler = make_sampler(cfg)  # a bad sampling value fails here, before the parts folder exists
    if env.rank == 0:
        _prepare_workdir(out, parts, identity, fresh)
    env.barrier("preparing the output folder")
    env.start_heartbeat(parts / "ranks", rank_timeout_s)
    done = _finished_ids(out, parts)
    todo = [vid for vid in videos if vid not in done]
    env.barrier("listing the finished videos")  # every rank has listed them before any new part appears

    probed = _probe_shard(todo[env.rank :: env.world], videos, cfg, parts, progress=env.rank == 0)
    infos: dict[str, VideoInfo] = {}
    for shard in env.gather(probed, "exchanging the probed videos"):
        infos.update(shard)
    mine = shard_by_duration({vid: infos[vid].duration_s for vid in sorted(infos)}, env.world)[env.rank]
    work = [VideoWork(vid, videos[vid], infos[vid], sampler.num_clips(infos[vid].duration_s)) for vid in mine]
    if env.rank == 0:
        print(f"extract-features: {len(videos)} videos, {len(done)} already done, {len(todo)} to do "
              f"({len(todo) - len(infos)} failed probing), {env.world} rank(s)", file=sys.stderr)
        fps_notice = low_fps_notice(infos, float(sampler.sample_fps))
        if fps_notice:
            print(f"extract-features: {fps_notice}", file=sys.stderr)

    device = env.device
    if device.type == "cpu" and "OMP_NUM_THREADS" not in os.environ:  # torchrun sets it for several ranks
        torch.set_num_threads(model_threads(cfg.run.workers))
    model = load_model(cfg, checkpoint, device)
    if cfg.run.compression is None:  # compressed rows take an unknown share of this
        new_bytes = sum(w.num_clips for w in work) * model.feature_dim * cfg.preprocess.crops * 4
        check_free_space(parts, new_bytes, f"the {len(work)} videos to extract")
    extract_videos(work, model, cfg, sampler, device, parts, show_progress=env.rank == 0)
    env.finish()  # rank 0 returns once every rank is done; a lost rank stops it with a message
    if env.rank != 0:
        return 0
    return int(_assemble(out, parts, videos, cfg, provenance) > 0)


def _prepare_workdir(out: Path, parts: Path, identity: dict, fresh: bool = False) -> None:
    """Create ``parts``; refuse to mix features of another config/weights; drop stale temporary files.

    An unfinished run of another config or weights in ``parts`` is discarded when it finished no video (a run
    that failed at once, e.g. on a wrong option) or with ``fresh``; otherwise the message says what differs.
    """
    stamp = parts / "run.json"
    if out.exists():
        previous = _file_identity(out)
        if previous != identity:
            raise ValueError(f"{out} exists with features of another config or weights ({_differences(previous, identity)}); "
                             "choose another -o or remove it")
    if parts.is_symlink() or (parts.exists() and not parts.is_dir()):
        kind = "a symbolic link" if parts.is_symlink() else "not a folder"
        raise ValueError(f"{parts}: the work folder of -o {out} is {kind}; extract-features does not follow or replace "
                         "it: remove it, or give -o a path inside the folder you want the work done in")
    if parts.is_dir() and not stamp.exists():
        # run.json goes first when parts is removed and is written before any part: what is left is done or empty
        print(f"extract-features: removing {parts}, left over by a run that had finished or had not started", file=sys.stderr)
        shutil.rmtree(parts)
    if stamp.exists():
        previous = json.loads(stamp.read_text())
        if previous != identity:
            finished = len(list(parts.glob("*.h5")))
            if finished and not fresh:
                raise ValueError(f"{parts} holds {finished} finished videos of an interrupted run with another config or "
                                 f"weights ({_differences(previous, identity)}): rerun that run's command to finish it, "
                                 "or add --fresh to discard them")
            print(f"extract-features: discarding {parts}: an unfinished run with another config or weights "
                  f"({finished} finished videos)", file=sys.stderr)
            durable_unlink(stamp)  # first, as in the final cleanup: a kill in between leaves a folder without run.json
            shutil.rmtree(parts)
    if not stamp.exists():
        parts.mkdir(parents=True, exist_ok=True)
        tmp = parts / "run.json.tmp"
        tmp.write_text(json.dumps(identity, indent=1, sort_keys=True))
        durable_replace(tmp, stamp)
    (parts / "failed").mkdir(exist_ok=True)
    for stale in list(parts.glob("*.tmp")) + list(parts.glob("hung/*")):
        stale.unlink()
    shutil.rmtree(parts / "ranks", ignore_errors=True)  # heartbeats and done markers of an interrupted run
    for record in (parts / "failed").glob("*.json"):
        record.unlink()  # failed videos are retried


def check_video_ids(videos: dict[str, Path]) -> None:
    """Refuse video ids that cannot name an HDF5 dataset (``.``, ``..``, empty, or containing ``/``), naming the file."""
    for vid, path in videos.items():
        if vid in ("", ".", "..") or "/" in vid:
            raise ValueError(f"{path}: video id {vid!r} (the file name without its extension) cannot name a dataset "
                             "in the HDF5 file; rename the file")


def check_free_space(folder: Path, need_bytes: int, what: str) -> None:
    """Error naming ``folder`` when its file system has less than ``need_bytes`` free for ``what``."""
    probe = folder if folder.exists() else folder.parent
    free = shutil.disk_usage(probe).free
    if free < need_bytes:
        raise ValueError(f"{folder}: not enough free space for {what}: about {need_bytes / 1e6:.1f} MB needed, "
                         f"{free / 1e6:.1f} MB free; free some space and rerun the same command (finished videos are kept)")


def _disk_full(exc: OSError) -> bool:
    """Whether ``exc`` says the device is full (HDF5 reports it in its message, without an errno)."""
    return exc.errno == errno.ENOSPC or "errno = 28" in str(exc) or "No space left on device" in str(exc)


def _differences(old: dict, new: dict, prefix: str = "") -> str:
    """The keys where two identities differ, e.g. ``"model.weights: 'random' -> 'official-k400'"``."""
    diffs = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            inner = _differences(a, b, f"{prefix}{key}.")
            diffs += [inner] if inner else []
        elif a != b:
            diffs.append(f"{prefix.removeprefix('config.')}{key}: {a!r} -> {b!r}")
    return "; ".join(diffs)


def _file_identity(out: Path) -> dict:
    reader = FeatureReader(out)
    attrs = reader.file_attrs()
    reader.close()
    try:
        plain = yaml.safe_load(attrs["config"])
        plain.pop("run", None)
        return {"config": plain, "weights_sha256": attrs["weights_sha256"]}
    except (KeyError, AttributeError, yaml.YAMLError) as exc:
        raise ValueError(f"{out}: not a feature file written by extract-features (no readable config attribute)") from exc


def _finished_ids(out: Path, parts: Path) -> set[str]:
    done = {p.name[: -len(".h5")] for p in parts.glob("*.h5")}
    if out.exists():
        reader = FeatureReader(out)
        done.update(reader.video_ids())
        reader.close()
    return done


def _probe_shard(ids: Sequence[str], videos: dict[str, Path], cfg: ExtractConfig, parts: Path,
                 progress: bool) -> dict[str, VideoInfo]:
    """Probe this rank's share of the videos (a bar on stderr with ``progress``); failures go to ``parts/failed``."""
    by_path = {videos[vid]: vid for vid in ids}
    infos: dict[str, VideoInfo] = {}
    for path, info, reason in probe_videos(list(by_path), workers=cfg.run.probe_workers, timeout_s=cfg.run.probe_timeout_s,
                                             progress=progress):
        if info is None:
            record_failure(parts, Failure(by_path[path], str(path), reason or "probe failed"))
        else:
            infos[by_path[path]] = info
    return infos


def shard_by_duration(durations: dict[str, float], world: int) -> list[list[str]]:
    """Split video ids across ``world`` ranks, greedy longest-first onto the least-loaded rank.

    Deterministic for a given input (ties broken by id, then by rank); each shard comes back sorted.
    """
    loads = [0.0] * world
    shards: list[list[str]] = [[] for _ in range(world)]
    for vid in sorted(durations, key=lambda v: (-durations[v], v)):
        rank = min(range(world), key=lambda r: (loads[r], r))
        shards[rank].append(vid)
        loads[rank] += durations[vid]
    return [sorted(s) for s in shards]


def _assemble(out: Path, parts: Path, videos: dict[str, Path], cfg: ExtractConfig, provenance: tuple[str, str, str]) -> int:
    """Merge the previous ``out`` and the new parts into ``out``; write the failure manifest; remove ``parts``."""
    failures = [json.loads(p.read_text()) for p in sorted((parts / "failed").glob("*.json"))]
    new = {p.name[: -len(".h5")]: p for p in sorted(parts.glob("*.h5"))}
    kept: list[str] = []
    if out.exists():
        reader = FeatureReader(out)
        kept = [vid for vid in reader.video_ids() if vid not in new]
        reader.close()
    if new:
        sources = [(out, vid) for vid in kept] + [(path, vid) for vid, path in new.items()]
        check_free_space(out.parent, sum(p.stat().st_size for p in new.values()) + (out.stat().st_size if out.exists() else 0),
                         f"assembling {out}")
        try:
            assemble_file(out, sources, *provenance[:3], config_to_yaml(cfg))
        except OSError as exc:
            if not _disk_full(exc):
                raise
            raise ValueError(f"{out}: no space left on the device while assembling; the extracted videos are kept in "
                             f"{parts}: free some space and rerun the same command") from None
    manifest = out.with_name(out.name + ".failures.jsonl")
    tmp = manifest.with_name(manifest.name + ".tmp")
    tmp.write_text("".join(json.dumps(f) + "\n" for f in failures))
    durable_replace(tmp, manifest)
    durable_unlink(parts / "run.json")  # first, so a folder half removed by a kill is recognised as finished
    shutil.rmtree(parts)
    missing = len(set(videos) - set(kept) - set(new) - {f["video"] for f in failures})
    if missing:
        raise RuntimeError(f"{out}: {missing} videos neither extracted nor recorded as failed (internal error)")
    action = f"wrote {out}" if new else f"nothing new for {out}"
    print(f"extract-features: {action}: {len(kept) + len(new)} videos ({len(new)} new, {len(kept)} kept); "
          f"failures in {manifest}", file=sys.stderr)
    print(f"extract-features: {len(failures)} of {len(videos)} videos failed")
    return len(failures)


if __name__ == "__main__":
    sys.exit(main())
