#!/usr/bin/env python3
"""Time TAdaConv2d (dense conv2d over all frames) against the official grouped-conv formulation.

Baseline: :func:`feature_extraction.tadaconv.grouped_tadaconv2d`, the official computation (calibrated
kernels built per frame, one ``conv2d`` with ``groups = B*T``), measured in the same run, interleaved with
ours (best of ``--repeats``, robust to other load on the machine). Each gets the activations in the layout
its network stores them: contiguous ``(N, C, T, H, W)`` for the official network (Conv3d/BN3d everywhere),
frame-major ``(N, T, C, H, W)`` for ours; the ``same-input`` column gives ours the official layout too.

* every distinct 3x3 TAdaConv shape of TAda2D-R50 at ``--size`` (first block of each stage has stride 2):
  forward (no grad) and forward+backward;
* whole TAda2D-R50 clips/s at ``--batch x 3 x --frames x --size x --size`` (eval, no grad), with our
  TAdaConv2d and with the grouped formulation swapped in.

The last line is ``speedup_vs_grouped_conv: X.XX``: the geometric mean over the layer shapes of the
forward speedup. Example (about a minute on 2 cores): ``python scripts/bench_tadaconv.py --repeats 3``.
"""

from __future__ import annotations

import argparse
import math
import time
from typing import Callable

import torch

from feature_extraction.backbones import tada2d_r50
from feature_extraction.tadaconv import TAdaConv2d, grouped_tadaconv2d


class GroupedTAdaConv2d(TAdaConv2d):
    """TAdaConv2d computed the official way (for the whole-model baseline)."""

    forward = grouped_tadaconv2d


def best_seconds(fns: dict[str, Callable[[], object]], warmup: int, repeats: int) -> dict[str, float]:
    """Best wall time of each function, the functions run interleaved ``repeats`` times after ``warmup`` runs."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    best = {name: math.inf for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def layer_shapes(size: int, base_width: int) -> list[tuple[str, int, int, int]]:
    """(name, channels, input side, stride) of every distinct 3x3 TAdaConv in TAda2D-R50."""
    shapes = []
    side = size // 2  # after the stem
    for stage in range(4):
        width = base_width * 2**stage
        shapes.append((f"conv{stage + 2}.res_1", width, side, 2))
        side //= 2
        shapes.append((f"conv{stage + 2}.res_2+", width, side, 1))
    return shapes


def bench_layer(channels: int, side: int, stride: int, args: argparse.Namespace) -> dict[str, float]:
    """Seconds for one layer shape: ``ours``/``grouped``/``ours_same_input`` forward, ``ours_bwd``/``grouped_bwd``."""
    torch.manual_seed(0)
    conv = TAdaConv2d(channels, channels, (1, 3, 3), stride=(1, stride, stride), padding=(0, 1, 1), bias=False)
    x = torch.randn(args.batch, channels, args.frames, side, side)  # official layout
    x_ours = x.transpose(1, 2).contiguous().transpose(1, 2)  # frame-major, as our backbone stores it
    alpha = 1 + 0.1 * torch.randn(args.batch, channels, args.frames, 1, 1)

    def grouped(inp: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        return grouped_tadaconv2d(conv, inp, a)

    with torch.no_grad():
        times = best_seconds(
            {"ours": lambda: conv(x_ours, alpha), "grouped": lambda: grouped(x, alpha),
             "ours_same_input": lambda: conv(x, alpha)},
            args.warmup, args.repeats,
        )

    def train_step(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], inp: torch.Tensor) -> Callable[[], None]:
        leaf, a = inp.detach().requires_grad_(), alpha.clone().requires_grad_()

        def step() -> None:
            conv.zero_grad(set_to_none=True)
            leaf.grad = a.grad = None
            fn(leaf, a).sum().backward()

        return step

    backward = best_seconds({"ours_bwd": train_step(conv, x_ours), "grouped_bwd": train_step(grouped, x)},
                            args.warmup, args.repeats)
    return times | backward


def bench_model(args: argparse.Namespace) -> tuple[float, float]:
    """Clips/s of TAda2D-R50 with our TAdaConv2d and with the grouped formulation swapped in."""
    torch.manual_seed(0)
    model = tada2d_r50(base_width=args.base_width).eval()
    clip = torch.randn(args.batch, 3, args.frames, args.size, args.size)
    convs = [m for m in model.modules() if isinstance(m, TAdaConv2d)]

    def run(cls: type) -> Callable[[], object]:
        def forward() -> object:
            for m in convs:
                m.__class__ = cls
            return model(clip)

        return forward

    with torch.no_grad():
        times = best_seconds({"ours": run(TAdaConv2d), "grouped": run(GroupedTAdaConv2d)}, args.warmup, args.model_repeats)
    return args.batch / times["ours"], args.batch / times["grouped"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=1, help="clips per batch (default 1)")
    parser.add_argument("--frames", type=int, default=8, help="frames per clip (default 8)")
    parser.add_argument("--size", type=int, default=224, help="clip side (default 224)")
    parser.add_argument("--base-width", type=int, default=64, help="TAda2D-R50 base width (default 64, the paper's)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per layer measurement (best of; default 5)")
    parser.add_argument("--model-repeats", type=int, default=2, help="timed runs of the whole model (default 2)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs before each measurement (default 1)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--skip-model", action="store_true", help="only the layer benchmarks")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch}, {args.frames} frames, "
          f"{args.size}x{args.size}, best of {args.repeats}")

    forward_speedups = []
    print("layer          shape              forward: ours vs grouped (speedup) [same-input speedup]   "
          "forward+backward: ours vs grouped (speedup)")
    for name, channels, side, stride in layer_shapes(args.size, args.base_width):
        t = bench_layer(channels, side, stride, args)
        forward_speedups.append(t["grouped"] / t["ours"])
        print(f"{name:14s} C={channels:4d} {side:3d}x{side:<3d} s{stride}  "
              f"{t['ours'] * 1e3:8.2f} ms vs {t['grouped'] * 1e3:8.2f} ms ({t['grouped'] / t['ours']:5.2f}x) "
              f"[{t['grouped'] / t['ours_same_input']:5.2f}x]  "
              f"{t['ours_bwd'] * 1e3:8.2f} ms vs {t['grouped_bwd'] * 1e3:8.2f} ms ({t['grouped_bwd'] / t['ours_bwd']:5.2f}x)")
    if not args.skip_model:
        ours, grouped = bench_model(args)
        print(f"tada2d_r50 base_width {args.base_width} {args.batch}x3x{args.frames}x{args.size}x{args.size}: "
              f"{ours:.3f} clips/s vs {grouped:.3f} clips/s with grouped-conv TAdaConv ({ours / grouped:.2f}x)")
    geomean = math.exp(sum(math.log(s) for s in forward_speedups) / len(forward_speedups))
    print(f"speedup_vs_grouped_conv: {geomean:.2f}")


if __name__ == "__main__":
    main()
