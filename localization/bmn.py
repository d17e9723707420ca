"""Boundary-Matching Network (BMN), numerically the mmaction2 / TAdaConv-repo model.

Layout: ``x (B, feat_dim, T)`` -> base module -> TEM (start/end probabilities ``(B, T)``) and PEM (confidence map
``(B, 2, D, T)``, ``[d, s]`` = proposal ``[s/T, (s+d+1)/T]``; channel 0 = IoU regression, 1 = classification).

The boundary-matching (BM) layer samples every proposal at ``num_samples`` points by linear interpolation, i.e.
multiplies the features ``(B, C, T)`` by a fixed mask ``(T, N*D*T)``; mmaction2 materialises the result
``(B, C, N, D, T)`` and feeds it to a Conv3d with kernel ``(N, 1, 1)``. Both steps are linear, so here they are
reordered exactly: the Conv3d weight first contracts channels and samples, ``(B, C, T) -> (B, H3, N, T)``, then a
sparse matmul with the mask produces ``(B, H3, D, T)``. The 5-D tensor is never built.

Parameter names follow mmaction2 (``x_1d_b``, ``x_1d_s``, ``x_1d_e``, ``x_1d_p``, ``x_3d_p``, ``x_2d_p``), so its
checkpoints load as they are (``load_bmn_checkpoint``).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping

import numpy as np
import torch
from torch import nn

from localization.targets import valid_proposal_mask

__all__ = [
    "BMN",
    "boundary_matching_mask",
    "boundary_matching_dense",
    "load_bmn_checkpoint",
]


def _mask_entries(
    tscale: int, dscale: int, num_samples: int, num_samples_per_bin: int, boundary_ratio: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Non-zero entries of the BM sample mask as ``(t, n, d, s, value)`` arrays (value float32).

    Proposal ``(d, s)`` (valid iff ``s + d < T``) covers feature indices ``[s, s + d]``; it is extended by
    ``boundary_ratio * (d + 1)`` on each side and sampled at ``N * pb`` evenly spaced points; sample bin ``n``
    averages the linear-interpolation weights of its ``pb`` points. The float64 arithmetic (including the order
    of accumulation and ``math.modf``'s truncation towards zero) is that of mmaction2's ``_get_interp1d_mask``,
    so the float32 result is bit-identical to it.
    """
    d_grid, s_grid = np.nonzero(valid_proposal_mask(tscale, dscale))
    centre_len = d_grid.astype(np.float64) + 1.0
    seg_min = s_grid - centre_len * boundary_ratio
    seg_max = (s_grid + d_grid) + centre_len * boundary_ratio
    step = (seg_max - seg_min) / (num_samples * num_samples_per_bin - 1.0)
    points = seg_min[:, None] + step[:, None] * np.arange(num_samples * num_samples_per_bin, dtype=np.float64)
    points = points.reshape(-1, num_samples_per_bin)  # rows: (proposal, bin), columns: the bin's points

    frac, down = np.modf(points)
    up = np.ceil(points)
    # Per point, in order: (down, 1 - frac) then (up, frac); the same order as the reference accumulation.
    index = np.stack([down, up], axis=2).reshape(len(points), -1).astype(np.int64)
    weight = np.stack([1.0 - frac, frac], axis=2).reshape(len(points), -1)
    inside = (index >= 0) & (index <= tscale - 1)

    base = np.floor(points[:, :1]).astype(np.int64)  # no index of a bin lies below floor(first point)
    offset = index - base
    local = np.zeros((len(points), int(offset.max()) + 1), dtype=np.float64)
    rows = np.arange(len(points))
    for k in range(index.shape[1]):  # 2 * pb sequential scatters, each over all bins at once
        r = rows[inside[:, k]]
        local[r, offset[r, k]] += weight[r, k]
    local = (1.0 / num_samples_per_bin * local).astype(np.float32)

    row, col = np.nonzero(local)
    prop, n = np.divmod(row, num_samples)
    return base[row, 0] + col, n, d_grid[prop], s_grid[prop], local[row, col]


def boundary_matching_mask(
    tscale: int,
    dscale: int | None = None,
    num_samples: int = 32,
    num_samples_per_bin: int = 3,
    boundary_ratio: float = 0.5,
) -> torch.Tensor:
    """The dense BM sample mask, float32 ``(T, N, D, T)`` indexed ``[t, n, d, s]``.

    ``mask.reshape(T, -1)`` is mmaction2's ``sample_mask``; columns of invalid proposals (``s + d >= T``) are zero.
    """
    dscale = tscale if dscale is None else dscale
    _check_bm_args(tscale, dscale, num_samples, num_samples_per_bin, boundary_ratio)
    t, n, d, s, value = _mask_entries(tscale, dscale, num_samples, num_samples_per_bin, boundary_ratio)
    mask = torch.zeros(tscale, num_samples, dscale, tscale, dtype=torch.float32)
    mask[t, n, d, s] = torch.from_numpy(value)
    return mask


def boundary_matching_dense(features: torch.Tensor, mask: torch.Tensor, x_3d_p: nn.Module) -> torch.Tensor:
    """Reference BM layer + Conv3d block as mmaction2 computes it (materialises ``(B, C, N, D, T)``).

    Args:
        features: ``(B, C, T)``.
        mask: ``(T, N, D, T)`` from ``boundary_matching_mask``.
        x_3d_p: the Conv3d (kernel ``(N, 1, 1)``) + ReLU block, e.g. ``BMN.x_3d_p``.

    Returns:
        ``(B, H3, D, T)``, equal to ``BMN.boundary_matching``. Memory grows as ``B*C*N*D*T``; it exists to verify
        and benchmark the reordered form.
    """
    b, c, _ = features.shape
    tscale, num_samples, dscale, _ = mask.shape
    sampled = torch.matmul(features, mask.reshape(tscale, -1)).reshape(b, c, num_samples, dscale, tscale)
    return x_3d_p(sampled).squeeze(2)


class _SampleMaskMatmul(torch.autograd.Function):
    """Per-sample ``matrix @ y[b]`` for a constant sparse CSR ``matrix (M, K)`` and ``y (B, K, H)`` -> ``(B, M, H)``.

    One sparse product per sample keeps each ``y[b]`` cache-resident and writes straight into the output, whose
    ``(B, M, H)`` layout is channels-last for the 2-D convolutions that follow. Backward multiplies by the stored
    transpose ``matrix_t (K, M)``.
    """

    @staticmethod
    def forward(ctx, matrix: torch.Tensor, matrix_t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        ctx.matrix_t = matrix_t
        out = y.new_empty(y.shape[0], matrix.shape[0], y.shape[2])
        for b in range(y.shape[0]):
            torch.mm(matrix, y[b], out=out[b])
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[None, None, torch.Tensor]:
        matrix_t = ctx.matrix_t
        grad_y = grad.new_empty(grad.shape[0], matrix_t.shape[0], grad.shape[2])
        for b in range(grad.shape[0]):
            torch.mm(matrix_t, grad[b].contiguous(), out=grad_y[b])
        return None, None, grad_y


class BMN(nn.Module):
    """Boundary-Matching Network.

    Args:
        feat_dim: input feature channels (divisible by 4: the base module uses groups=4).
        tscale: T, temporal positions of the input.
        dscale: D, proposal durations in the map (default T).
        num_samples: N, sample bins per proposal in the BM layer.
        num_samples_per_bin: interpolated points averaged per bin.
        boundary_ratio: each proposal is extended by this fraction of its length on both sides before sampling.
        hidden_dim_1d / hidden_dim_2d / hidden_dim_3d: channel widths (mmaction2 defaults 256 / 128 / 512).
    """

    def __init__(
        self,
        feat_dim: int,
        tscale: int,
        dscale: int | None = None,
        num_samples: int = 32,
        num_samples_per_bin: int = 3,
        boundary_ratio: float = 0.5,
        hidden_dim_1d: int = 256,
        hidden_dim_2d: int = 128,
        hidden_dim_3d: int = 512,
    ) -> None:
        super().__init__()
        dscale = tscale if dscale is None else dscale
        _check_bm_args(tscale, dscale, num_samples, num_samples_per_bin, boundary_ratio)
        for name, value in (("feat_dim", feat_dim), ("hidden_dim_1d", hidden_dim_1d)):
            if value < 4 or value % 4:
                raise ValueError(f"BMN: {name} must be a positive multiple of 4 (grouped convs), got {value}")
        self.feat_dim = feat_dim
        self.tscale = tscale
        self.dscale = dscale
        self.num_samples = num_samples
        self.num_samples_per_bin = num_samples_per_bin
        self.boundary_ratio = boundary_ratio

        h1, h2, h3 = hidden_dim_1d, hidden_dim_2d, hidden_dim_3d
        self.x_1d_b = nn.Sequential(
            nn.Conv1d(feat_dim, h1, kernel_size=3, padding=1, groups=4),
            nn.ReLU(inplace=True),
            nn.Conv1d(h1, h1, kernel_size=3, padding=1, groups=4),
            nn.ReLU(inplace=True),
        )
        self.x_1d_s = _tem_head(h1)
        self.x_1d_e = _tem_head(h1)
        self.x_1d_p = nn.Sequential(nn.Conv1d(h1, h1, kernel_size=3, padding=1), nn.ReLU(inplace=True))
        # Kept as a module so checkpoints keep mmaction2's key names; applied in reordered form in forward().
        self.x_3d_p = nn.Sequential(
            nn.Conv3d(h1, h3, kernel_size=(num_samples, 1, 1), stride=(num_samples, 1, 1)), nn.ReLU(inplace=True)
        )
        self.x_2d_p = nn.Sequential(
            nn.Conv2d(h3, h2, kernel_size=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(h2, h2, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(h2, h2, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(h2, 2, kernel_size=1),
            nn.Sigmoid(),
        )

        # The mask as CSR (rows (d, s), columns (t, n)) and its transpose, kept as plain dense index/value buffers
        # so that .to(device), DDP buffer broadcasts and state_dict handling need no sparse support.
        t, n, d, s, value = _mask_entries(tscale, dscale, num_samples, num_samples_per_bin, boundary_ratio)
        rows, cols = d * tscale + s, t * num_samples + n
        for prefix, (r, c) in (("bm", (rows, cols)), ("bm_t", (cols, rows))):
            order = np.lexsort((c, r))
            num_rows = dscale * tscale if prefix == "bm" else tscale * num_samples
            crow = np.concatenate([[0], np.cumsum(np.bincount(r, minlength=num_rows))])
            self.register_buffer(f"_{prefix}_crow", torch.from_numpy(crow), persistent=False)
            self.register_buffer(f"_{prefix}_col", torch.from_numpy(c[order]), persistent=False)
            self.register_buffer(f"_{prefix}_val", torch.from_numpy(value[order]), persistent=False)

    def sample_mask(self) -> torch.Tensor:
        """The dense BM mask ``(T, N, D, T)`` this model uses (same values as ``boundary_matching_mask``)."""
        dense = self._csr("bm", torch.float32).to_dense()  # ((d, s), (t, n))
        d, t, n = self.dscale, self.tscale, self.num_samples
        return dense.reshape(d, t, t, n).permute(2, 3, 0, 1).contiguous()

    def _csr(self, prefix: str, dtype: torch.dtype) -> torch.Tensor:
        """The mask ``(D*T, T*N)`` (``prefix="bm"``) or its transpose (``"bm_t"``) as a sparse CSR tensor."""
        sizes = (self.dscale * self.tscale, self.tscale * self.num_samples)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
            return torch.sparse_csr_tensor(
                getattr(self, f"_{prefix}_crow"),
                getattr(self, f"_{prefix}_col"),
                getattr(self, f"_{prefix}_val").to(dtype),
                size=sizes if prefix == "bm" else sizes[::-1],
                check_invariants=False,
            )

    def boundary_matching(self, features: torch.Tensor) -> torch.Tensor:
        """BM layer + ``x_3d_p`` (Conv3d, ReLU) in reordered form: ``(B, C, T)`` -> channels-last ``(B, H3, D, T)``.

        Runs in at least float32 with autocast off: sparse products have no reduced-precision kernels everywhere.
        """
        conv = self.x_3d_p[0]
        b, c, _ = features.shape
        h3 = conv.out_channels
        dtype = torch.promote_types(features.dtype, torch.float32)
        with torch.autocast(features.device.type, enabled=False):
            # y[b, (t, n), h] = sum_c x[b, c, t] * W[h, c, n]: one matmul with W as (C, N*H3).
            weight = conv.weight.to(dtype).reshape(h3, c, self.num_samples).permute(1, 2, 0).reshape(c, -1)
            y = torch.matmul(features.to(dtype).transpose(1, 2), weight)
            y = y.reshape(b, self.tscale * self.num_samples, h3)
            out = _SampleMaskMatmul.apply(self._csr("bm", dtype), self._csr("bm_t", dtype), y)  # (B, (d, s), H3)
            out = out.add_(conv.bias.to(dtype)).relu_()
        return out.reshape(b, self.dscale, self.tscale, h3).permute(0, 3, 1, 2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``x (B, feat_dim, T)`` -> ``(confidence_map (B, 2, D, T), start (B, T), end (B, T))``, all in [0, 1]."""
        if x.dim() != 3 or x.shape[1] != self.feat_dim or x.shape[2] != self.tscale:
            raise ValueError(
                f"BMN: expected input (B, {self.feat_dim}, {self.tscale}), got {tuple(x.shape)}"
            )
        base = self.x_1d_b(x)
        start = self.x_1d_s(base).squeeze(1)
        end = self.x_1d_e(base).squeeze(1)
        proposal = self.x_1d_p(base)
        conf = self.x_2d_p(self.boundary_matching(proposal))
        return conf.contiguous(), start, end


def _tem_head(channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv1d(channels, channels, kernel_size=3, padding=1, groups=4),
        nn.ReLU(inplace=True),
        nn.Conv1d(channels, 1, kernel_size=1),
        nn.Sigmoid(),
    )


def _check_bm_args(
    tscale: int, dscale: int, num_samples: int, num_samples_per_bin: int, boundary_ratio: float
) -> None:
    if tscale < 1 or not 1 <= dscale <= tscale:
        raise ValueError(f"BMN: need tscale >= 1 and 1 <= dscale <= tscale, got tscale={tscale}, dscale={dscale}")
    if num_samples < 1 or num_samples_per_bin < 1 or num_samples * num_samples_per_bin < 2:
        raise ValueError(
            f"BMN: need num_samples * num_samples_per_bin >= 2, got {num_samples} x {num_samples_per_bin}"
        )
    if boundary_ratio < 0:
        raise ValueError(f"BMN: boundary_ratio must be >= 0, got {boundary_ratio}")


# Entries of mmaction2 checkpoints that are derived constants, compared with ours instead of loaded.
_DERIVED_KEYS = ("sample_mask", "bm_mask")


def load_bmn_checkpoint(model: BMN, checkpoint: str | os.PathLike | Mapping[str, torch.Tensor], source: str | None = None) -> dict:
    """Load mmaction2-format BMN weights into ``model``, strictly.

    Args:
        model: the ``BMN`` to fill (its hyper-parameters must match the checkpoint's).
        checkpoint: a path to a ``torch.save`` file, or an already loaded mapping. Either a plain state dict or a
            dict with a ``state_dict`` entry (mmaction2/mmcv files, which also carry ``meta``, ``optimizer``...).
        source: how errors name an already loaded mapping (default ``<mapping>``).

    Returns:
        The other top-level entries of the file (e.g. ``{"meta": ...}``); ``{}`` for a plain state dict.

    Raises:
        FileNotFoundError: missing file. ValueError: missing/unexpected keys, shape mismatches, or a
        ``sample_mask`` / ``bm_mask`` entry that differs from the model's (different T, D, N or ratios).
    """
    source = os.fspath(checkpoint) if isinstance(checkpoint, (str, os.PathLike)) else (source or "<mapping>")
    if isinstance(checkpoint, (str, os.PathLike)):
        if not os.path.isfile(source):
            raise FileNotFoundError(f"BMN checkpoint not found: {source}")
        try:
            checkpoint = torch.load(source, map_location="cpu", weights_only=True)
        except Exception as exc:  # pickle errors come in many types; name the file and keep the cause
            raise ValueError(f"{source}: not a loadable weights-only torch checkpoint ({exc})") from exc
    if not isinstance(checkpoint, Mapping):
        raise ValueError(f"{source}: expected a dict, got {type(checkpoint).__name__}")
    if "state_dict" in checkpoint:
        state = checkpoint["state_dict"]
        extras = {k: v for k, v in checkpoint.items() if k != "state_dict"}
    else:
        state, extras = checkpoint, {}
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{source}: 'state_dict' must map parameter names to tensors")

    weights = {k: v for k, v in state.items() if k not in _DERIVED_KEYS}
    expected = model.state_dict()
    missing = sorted(set(expected) - set(weights))
    unexpected = sorted(set(weights) - set(expected))
    if missing or unexpected:
        raise ValueError(f"{source}: BMN checkpoint keys do not match; missing={missing}, unexpected={unexpected}")
    wrong = [
        f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(expected[k].shape)}"
        for k, v in weights.items()
        if v.shape != expected[k].shape
    ]
    if wrong:
        raise ValueError(f"{source}: BMN checkpoint shapes do not match the model: " + "; ".join(wrong))
    _check_derived(model, state, source)
    model.load_state_dict(weights, strict=True)
    return extras


def _check_derived(model: BMN, state: Mapping[str, torch.Tensor], source: str) -> None:
    """Compare a checkpoint's ``sample_mask`` ``(T, N*D*T)`` and ``bm_mask`` ``(D, T)`` with the model's."""
    if "sample_mask" in state:
        ours = model.sample_mask().reshape(model.tscale, -1)
        theirs = state["sample_mask"].detach().cpu().float()
        if theirs.shape != ours.shape or not torch.equal(theirs, ours.cpu()):
            raise ValueError(
                f"{source}: checkpoint sample_mask {tuple(theirs.shape)} differs from the model's "
                f"{tuple(ours.shape)} (tscale={model.tscale}, dscale={model.dscale}, num_samples={model.num_samples}, "
                f"num_samples_per_bin={model.num_samples_per_bin}, boundary_ratio={model.boundary_ratio})"
            )
    if "bm_mask" in state:
        ours = torch.from_numpy(valid_proposal_mask(model.tscale, model.dscale)).float()
        theirs = state["bm_mask"].detach().cpu().float()
        if theirs.shape != ours.shape or not torch.equal(theirs, ours):
            raise ValueError(f"{source}: checkpoint bm_mask {tuple(theirs.shape)} differs from the model's")
