"""BMN network: the sample mask bit for bit, the reordered BM layer, and mmaction2 checkpoints."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from localization.bmn import BMN, boundary_matching_dense, boundary_matching_mask, load_bmn_checkpoint

DATA = Path(__file__).parent / "data" / "bmn"
CKPT = DATA / "bmn_mmaction2_T32_f48_seed5.pt"


def _fixture_model() -> BMN:
    return BMN(48, 32, hidden_dim_1d=32, hidden_dim_2d=16, hidden_dim_3d=64).eval()


def test_mask_matches_reference_bit_for_bit():
    info = json.loads((DATA / "masks.json").read_text())[0]
    ref = np.load(DATA / info["file"])
    dense = np.zeros(ref["shape"], np.float32)
    dense[ref["row"], ref["col"]] = ref["data"]

    ours = boundary_matching_mask(100, 100, 32, 3, 0.5)
    assert ours.shape == (100, 32, 100, 100) and ours.dtype == torch.float32
    flat = ours.reshape(100, -1).numpy()
    assert np.array_equal(flat, dense)
    assert hashlib.sha256(np.ascontiguousarray(flat).tobytes()).hexdigest() == info["sha256_dense_float32"]
    assert np.count_nonzero(flat) == info["nnz"]


def _loop_mask(tscale: int, dscale: int, num_samples: int, per_bin: int, ratio: float) -> np.ndarray:
    """The interpolation mask written out proposal by proposal, point by point (float64 accumulation)."""
    mask = np.zeros((tscale, num_samples, dscale, tscale))
    for s in range(tscale):
        for d in range(min(dscale, tscale - s)):
            lo, hi = s - (d + 1.0) * ratio, s + d + (d + 1.0) * ratio
            step = (hi - lo) / (num_samples * per_bin - 1.0)
            for n in range(num_samples):
                column = np.zeros(tscale)
                for k in range(per_bin):
                    point = lo + step * (n * per_bin + k)
                    frac, whole = math.modf(point)  # truncation towards zero, as the reference code does
                    if 0 <= int(whole) < tscale:
                        column[int(whole)] += 1 - frac
                    if 0 <= math.ceil(point) < tscale:
                        column[math.ceil(point)] += frac
                mask[:, n, d, s] = 1.0 / per_bin * column
    return mask.astype(np.float32)


@pytest.mark.parametrize("args", [(17, 17, 8, 3, 0.5), (23, 9, 5, 2, 0.3), (12, 12, 4, 1, 0.0), (15, 6, 7, 4, 1.2)])
def test_mask_equals_point_by_point_loop(args):
    assert np.array_equal(boundary_matching_mask(*args).numpy(), _loop_mask(*args))


def test_mask_zero_for_invalid_proposals_and_dscale_is_a_slice():
    full = boundary_matching_mask(20, num_samples=8)
    d, s = np.meshgrid(np.arange(20), np.arange(20), indexing="ij")
    assert torch.all(full[:, :, torch.from_numpy(s + d >= 20)] == 0)
    assert torch.all(full.sum(dim=(0, 1))[torch.from_numpy(s + d < 20)] > 0)
    assert torch.equal(boundary_matching_mask(20, 7, num_samples=8), full[:, :, :7])


def test_model_mask_buffers_equal_dense_mask_and_are_not_saved():
    model = BMN(8, 24, dscale=10, num_samples=6, hidden_dim_1d=8, hidden_dim_2d=4, hidden_dim_3d=8)
    assert torch.equal(model.sample_mask(), boundary_matching_mask(24, 10, 6))
    assert not any(k.startswith("_bm") for k in model.state_dict())


def test_reordered_boundary_matching_equals_dense_including_gradients():
    torch.manual_seed(0)
    model = BMN(8, 16, dscale=9, num_samples=5, hidden_dim_1d=8, hidden_dim_2d=4, hidden_dim_3d=6).double()
    feats = torch.randn(3, 8, 16, dtype=torch.float64, requires_grad=True)
    mask = boundary_matching_mask(16, 9, 5).double()
    ours = model.boundary_matching(feats)
    dense = boundary_matching_dense(feats, mask, model.x_3d_p)
    assert ours.shape == (3, 6, 9, 16)
    torch.testing.assert_close(ours, dense, rtol=0, atol=1e-12)

    grad_out = torch.randn_like(ours)
    conv = model.x_3d_p[0]
    wrt = (feats, conv.weight, conv.bias)
    for a, b in zip(torch.autograd.grad(ours, wrt, grad_out), torch.autograd.grad(dense, wrt, grad_out)):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


def test_forward_shapes_and_input_check():
    model = BMN(8, 12, dscale=6, num_samples=4, hidden_dim_1d=8, hidden_dim_2d=4, hidden_dim_3d=8)
    conf, start, end = model(torch.randn(2, 8, 12))
    assert conf.shape == (2, 2, 6, 12) and start.shape == (2, 12) and end.shape == (2, 12)
    assert conf.is_contiguous() and 0 <= conf.min() and conf.max() <= 1
    with pytest.raises(ValueError, match=r"expected input \(B, 8, 12\)"):
        model(torch.randn(2, 8, 13))
    with pytest.raises(ValueError, match="multiple of 4"):
        BMN(10, 12)
    with pytest.raises(ValueError, match="dscale"):
        BMN(8, 12, dscale=13)


def test_mmaction2_checkpoint_reproduces_outputs():
    ref = torch.load(CKPT, weights_only=True)
    model = _fixture_model()
    extras = load_bmn_checkpoint(model, CKPT)
    assert "meta" in extras
    with torch.no_grad():
        conf, start, end = model(ref["x"])
    torch.testing.assert_close(conf, ref["conf"], rtol=0, atol=1e-5)
    torch.testing.assert_close(start, ref["start"], rtol=0, atol=1e-5)
    torch.testing.assert_close(end, ref["end"], rtol=0, atol=1e-5)


def test_checkpoint_derived_masks_are_checked_not_loaded(tmp_path):
    ref = torch.load(CKPT, weights_only=True)
    state = dict(ref["state_dict"])
    state["sample_mask"] = boundary_matching_mask(32).reshape(32, -1)
    state["bm_mask"] = torch.tensor([[1.0] * (32 - i) + [0.0] * i for i in range(32)])
    path = tmp_path / "mm.pth"
    torch.save({"meta": {"epoch": 9}, "state_dict": state}, path)
    assert load_bmn_checkpoint(_fixture_model(), path) == {"meta": {"epoch": 9}}

    state["sample_mask"] = boundary_matching_mask(32, boundary_ratio=0.25).reshape(32, -1)
    with pytest.raises(ValueError, match="sample_mask"):
        load_bmn_checkpoint(_fixture_model(), {"state_dict": state})


def test_checkpoint_key_and_shape_errors(tmp_path):
    state = dict(torch.load(CKPT, weights_only=True)["state_dict"])
    bad = {k: v for k, v in state.items() if k != "x_1d_s.2.bias"} | {"head.fc.weight": torch.zeros(1)}
    with pytest.raises(ValueError, match=r"missing=\['x_1d_s.2.bias'\], unexpected=\['head.fc.weight'\]"):
        load_bmn_checkpoint(_fixture_model(), bad)
    with pytest.raises(ValueError, match="x_3d_p.0.weight"):
        load_bmn_checkpoint(BMN(48, 32, num_samples=16, hidden_dim_1d=32, hidden_dim_2d=16, hidden_dim_3d=64), state)
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        load_bmn_checkpoint(_fixture_model(), tmp_path / "nope.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="junk.pth"):
        load_bmn_checkpoint(_fixture_model(), tmp_path / "junk.pth")
