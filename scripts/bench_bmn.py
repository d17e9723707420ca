#!/usr/bin/env python3
"""Time and size one BMN training step, ours vs the dense (mmaction2) formulation; and post-processing.

Baselines, measured in the same run:

* training step (forward, ``bmn_loss``, backward, Adam step) at T=D=100, feat_dim 2048, mmaction2 widths
  256/128/512: ``localization.bmn.BMN`` (reordered BM layer + Conv3d, sparse mask, channels-last 2-D convs) vs the
  same model computed as mmaction2 does (``boundary_matching_dense``: features @ dense mask ``(T, N*D*T)`` ->
  ``(B, C, N, D, T)`` -> Conv3d, NCHW 2-D convs), same weights, inputs, loss and optimiser;
* post-processing of one video (candidates + Soft-NMS, top 100): vectorised vs the literal loops
  (``proposals_from_maps_loop`` + ``soft_nms_loop``), on random maps.

Peak memory: each training configuration runs in a fresh subprocess and reports ``ru_maxrss`` (peak resident set
size of that process, from ``resource.getrusage``); it includes the interpreter, torch and the model (the same for
both), so the ratio is conservative. The dense batch-16 run is skipped when its peak, extrapolated linearly in the
batch size from the measured dense batch-4 run, would exceed ``--max-gib``.

Output: one line per configuration, ``peak_memory_ratio: X.XX`` (dense / ours, batch 4) and, last,
``train_step_speedup: X.XX`` (dense / ours step time, batch 4). Example (about 2 minutes on 2 cores):
``python scripts/bench_bmn.py --repeats 2``.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from localization.bmn import BMN, boundary_matching_dense, boundary_matching_mask  # noqa: E402
from localization.losses import bmn_loss  # noqa: E402
from localization.postprocess import (  # noqa: E402
    bmn_proposals,
    proposals_from_maps_loop,
    soft_nms_loop,
)
from localization.targets import bmn_targets  # noqa: E402

TSCALE, FEAT_DIM = 100, 2048


def _dense_forward(model: BMN, mask: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """mmaction2's forward: the same layers, BM layer materialised."""
    base = model.x_1d_b(x)
    start = model.x_1d_s(base).squeeze(1)
    end = model.x_1d_e(base).squeeze(1)
    conf = model.x_2d_p(boundary_matching_dense(model.x_1d_p(base), mask, model.x_3d_p))
    return conf, start, end


def _worker(kind: str, batch: int, repeats: int) -> None:
    """One configuration in this (fresh) process; prints a JSON line with times and ru_maxrss."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    model = BMN(FEAT_DIM, TSCALE)
    mask = boundary_matching_mask(TSCALE) if kind == "dense" else None
    forward = (lambda x: _dense_forward(model, mask, x)) if kind == "dense" else model
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-4, weight_decay=1e-4)

    x = torch.randn(batch, FEAT_DIM, TSCALE)
    targets = []
    for _ in range(batch):
        starts = np.sort(rng.uniform(0, 0.8, size=2))
        segments = np.stack([starts, starts + rng.uniform(0.02, 0.2, size=2)], axis=1)
        targets.append(bmn_targets(segments, TSCALE))
    gt_iou, gt_start, gt_end = (torch.from_numpy(np.stack(t)) for t in zip(*targets))
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    def step() -> None:
        optimiser.zero_grad(set_to_none=True)
        conf, start, end = forward(x)
        bmn_loss(conf, start, end, gt_iou, gt_start, gt_end).total.backward()
        optimiser.step()

    step()  # warm-up (allocator, Adam state)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"seconds": statistics.median(times), "peak_gib": peak_kib / 2**20,
                      "setup_gib": rss_before / 2**20}))


def _run_worker(kind: str, batch: int, repeats: int) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", kind, "--batch", str(batch),
           "--repeats", str(repeats)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"bench worker {kind} batch {batch} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _bench_postprocess(videos: int) -> tuple[float, float]:
    """Milliseconds per video: vectorised and loop post-processing on random T=100 maps (outputs compared)."""
    rng = np.random.default_rng(1)
    maps = [
        (rng.random((2, TSCALE, TSCALE)).astype(np.float32), rng.random(TSCALE).astype(np.float32),
         rng.random(TSCALE).astype(np.float32))
        for _ in range(videos)
    ]
    t0 = time.perf_counter()
    fast = [bmn_proposals(*m) for m in maps]
    t1 = time.perf_counter()
    slow = [soft_nms_loop(proposals_from_maps_loop(*m)) for m in maps]
    t2 = time.perf_counter()
    if not all(np.array_equal(a, b) for a, b in zip(fast, slow)):
        raise RuntimeError("vectorised and loop post-processing disagree")
    return 1e3 * (t1 - t0) / videos, 1e3 * (t2 - t1) / videos


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=2, help="timed training steps per configuration (after 1 warm-up)")
    parser.add_argument("--batches", type=int, nargs="+", default=[4, 16], help="batch sizes; the first is the reference")
    parser.add_argument("--max-gib", type=float, default=12.0, help="skip dense runs predicted above this peak")
    parser.add_argument("--videos", type=int, default=10, help="videos for the post-processing timing")
    parser.add_argument("--worker", choices=["ours", "dense"], help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        _worker(args.worker, args.batch, args.repeats)
        return

    print(f"BMN training step, T=D={TSCALE}, feat_dim {FEAT_DIM}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {args.repeats} timed steps (median)")
    results: dict[tuple[str, int], dict] = {}
    for batch in args.batches:
        for kind in ("ours", "dense"):
            if kind == "dense" and ("dense", args.batches[0]) in results and batch != args.batches[0]:
                ref = results[("dense", args.batches[0])]
                predicted = ref["setup_gib"] + (ref["peak_gib"] - ref["setup_gib"]) * batch / args.batches[0]
                if predicted > args.max_gib:
                    print(f"dense batch {batch:>2}: skipped, predicted peak {predicted:.1f} GiB > --max-gib "
                          f"{args.max_gib:g} (the (B, C, N, D, T) tensor alone is "
                          f"{batch * 256 * 32 * TSCALE * TSCALE * 4 / 2**30:.1f} GiB)")
                    continue
            r = results[(kind, batch)] = _run_worker(kind, batch, args.repeats)
            print(f"{kind:>5} batch {batch:>2}: {r['seconds']:7.2f} s/step  peak RSS {r['peak_gib']:6.2f} GiB "
                  f"(+{r['peak_gib'] - r['setup_gib']:.2f} GiB over the process before the first step)")

    fast_ms, loop_ms = _bench_postprocess(args.videos)
    print(f"post-processing (T=100, top 100): vectorised {fast_ms:.1f} ms/video, loop {loop_ms:.1f} ms/video, "
          f"speedup {loop_ms / fast_ms:.1f}x")

    ref_batch = args.batches[0]
    ours, dense = results[("ours", ref_batch)], results[("dense", ref_batch)]
    print(f"peak_memory_ratio: {dense['peak_gib'] / ours['peak_gib']:.2f}")
    print(f"train_step_speedup: {dense['seconds'] / ours['seconds']:.2f}")


if __name__ == "__main__":
    main()
