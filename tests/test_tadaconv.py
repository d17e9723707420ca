"""TAdaConv2d and RouteFuncMLP: official reference outputs, equality with the grouped formulation, gradients."""
from pathlib import Path

import pytest
import torch
from torch import nn

from feature_extraction.tadaconv import RouteFuncMLP, TAdaConv2d, from_frames, grouped_tadaconv2d, to_frames

DATA = Path(__file__).parent / "data" / "tadaconv"


def frame_major(x: torch.Tensor) -> torch.Tensor:
    """Same values, stored (N, T, C, H, W) in memory (how the backbones keep activations)."""
    return x.transpose(1, 2).contiguous().transpose(1, 2)


def test_single_layer_matches_official():
    ref = torch.load(DATA / "ref_tadaconv2d.pt", weights_only=True)
    layer = nn.ModuleDict(
        {"conv": TAdaConv2d(64, 64, [1, 3, 3], padding=[0, 1, 1], bias=False, cal_dim="cin"), "rf": RouteFuncMLP(64, 4, [3, 3])}
    ).eval()
    layer.load_state_dict(ref["state_dict"])
    with torch.no_grad():
        alpha = layer["rf"](ref["input"])
        out = layer["conv"](ref["input"], alpha)
    torch.testing.assert_close(alpha, ref["alpha"], atol=1e-5, rtol=0)
    torch.testing.assert_close(out, ref["output"], atol=1e-5, rtol=0)
    with torch.no_grad():  # the in-repo baseline is the official formulation
        torch.testing.assert_close(grouped_tadaconv2d(layer["conv"], ref["input"], ref["alpha"]), ref["output"], atol=1e-5, rtol=0)


CASES = {
    "cin": dict(c_in=12, c_out=8, kernel=(1, 3, 3), stride=(1, 1, 1), padding=(0, 1, 1), groups=1, bias=False, cal_dim="cin"),
    "cin-stride2-bias": dict(c_in=12, c_out=8, kernel=(1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1), groups=1, bias=True, cal_dim="cin"),
    "cout-grouped": dict(c_in=12, c_out=12, kernel=(1, 3, 3), stride=(1, 1, 1), padding=(0, 1, 1), groups=3, bias=True, cal_dim="cout"),
    "cout-depthwise7": dict(c_in=8, c_out=8, kernel=(1, 7, 7), stride=(1, 1, 1), padding=(0, 3, 3), groups=8, bias=True, cal_dim="cout"),
}


def make_case(case: dict, bias_calibration: bool, seed: int = 0):
    torch.manual_seed(seed)
    conv = TAdaConv2d(case["c_in"], case["c_out"], case["kernel"], case["stride"], case["padding"],
                      groups=case["groups"], bias=case["bias"], cal_dim=case["cal_dim"])
    x = torch.randn(2, case["c_in"], 5, 9, 11)
    channels = case["c_in"] if case["cal_dim"] == "cin" else case["c_out"]
    alpha = 1 + 0.5 * torch.randn(2, channels, 5, 1, 1)
    alpha_bias = 1 + 0.5 * torch.randn(2, case["c_out"], 5, 1, 1) if bias_calibration else None
    return conv, x, alpha, alpha_bias


@pytest.mark.parametrize(
    "name, bias_calibration",
    [(name, cal) for name, case in sorted(CASES.items()) for cal in (False, True) if case["bias"] or not cal],
)
def test_equals_grouped_formulation(name, bias_calibration):
    conv, x, alpha, alpha_bias = make_case(CASES[name], bias_calibration)
    with torch.no_grad():
        expected = grouped_tadaconv2d(conv, x, alpha, alpha_bias)
        for inp in (x, frame_major(x), x.contiguous(memory_format=torch.channels_last_3d)):
            torch.testing.assert_close(conv(inp, alpha, alpha_bias), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["cin-stride2-bias", "cout-depthwise7"])
def test_gradients_equal_grouped_formulation(name):
    conv, x, alpha, alpha_bias = make_case(CASES[name], bias_calibration=True)
    grads = []
    for fn in (conv.forward, lambda *a: grouped_tadaconv2d(conv, *a)):
        inputs = [t.clone().requires_grad_() for t in (x, alpha, alpha_bias)]
        conv.zero_grad()
        out = fn(*inputs)
        out.backward(torch.cos(torch.arange(out.numel(), dtype=out.dtype)).view_as(out))
        grads.append([t.grad for t in inputs] + [conv.weight.grad.clone(), conv.bias.grad.clone()])
    for ours, ref in zip(*grads):
        torch.testing.assert_close(ours, ref, atol=1e-4, rtol=1e-4)


def test_route_function_starts_at_one():
    rf = RouteFuncMLP(16, ratio=4, kernels=(3, 3), bias_calibration=True).eval()
    alpha, alpha_bias = rf(torch.randn(2, 16, 6, 5, 5))
    assert alpha.shape == alpha_bias.shape == (2, 16, 6, 1, 1)
    assert torch.equal(alpha, torch.ones_like(alpha)) and torch.equal(alpha_bias, torch.ones_like(alpha_bias))
    assert isinstance(RouteFuncMLP(16)(torch.randn(1, 16, 3, 4, 4)), torch.Tensor)


def test_layernorm_gelu_route_function_written_out():
    """ModelScope's ``normal_lngelu`` route: ``b(gelu(channel-LN(a(v + g)))) + 1``, computed plainly here."""
    torch.manual_seed(3)
    rf = RouteFuncMLP(12, ratio=4, kernels=(3, 3), bias_calibration=True, norm="ln_gelu").eval()
    with torch.no_grad():
        for param in rf.parameters():
            param.normal_(0.0, 0.5)
    x = torch.randn(2, 12, 5, 4, 3)
    with torch.no_grad():
        alpha, alpha_bias = rf(x)
        v = x.mean(dim=(3, 4), keepdim=True)
        g = torch.einsum("oc,nc->no", rf.g.weight[:, :, 0, 0, 0], x.mean(dim=(2, 3, 4))) + rf.g.bias
        h = torch.nn.functional.conv3d(v + g[:, :, None, None, None], rf.a.weight, rf.a.bias, padding=(1, 0, 0))
        mean = h.mean(dim=1, keepdim=True)
        var = ((h - mean) ** 2).mean(dim=1, keepdim=True)
        h = (h - mean) / torch.sqrt(var + 1e-6) * rf.ln.weight.view(1, -1, 1, 1, 1) + rf.ln.bias.view(1, -1, 1, 1, 1)
        h = 0.5 * h * (1 + torch.erf(h / 2**0.5))
        expected = torch.nn.functional.conv3d(h, rf.b.weight, padding=(1, 0, 0)) + 1
        expected_bias = torch.nn.functional.conv3d(h, rf.b_bias.weight, padding=(1, 0, 0)) + 1
    torch.testing.assert_close(alpha, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(alpha_bias, expected_bias, atol=1e-5, rtol=1e-5)
    assert (alpha - 1).abs().max() > 0.1
    assert {k: tuple(v.shape) for k, v in rf.state_dict().items() if ".ln." in f".{k}"} == {"ln.weight": (3,), "ln.bias": (3,)}
    with pytest.raises(ValueError, match="norm must be"):
        RouteFuncMLP(12, norm="bn_gelu")


def test_parameter_layout_is_official():
    conv = TAdaConv2d(8, 16, (1, 3, 3), groups=2, bias=True)
    assert conv.weight.shape == (1, 1, 16, 4, 3, 3) and conv.bias.shape == (1, 1, 16)
    rf = RouteFuncMLP(16)
    assert {k: tuple(v.shape) for k, v in rf.state_dict().items() if k.endswith("weight")} == {
        "g.weight": (16, 16, 1, 1, 1), "a.weight": (4, 16, 3, 1, 1), "bn.weight": (4,), "b.weight": (16, 4, 3, 1, 1)
    }


def test_frames_round_trip_is_a_view():
    x = frame_major(torch.randn(2, 3, 4, 5, 6))
    frames = to_frames(x)
    assert frames.shape == (8, 3, 5, 6) and frames.data_ptr() == x.data_ptr() and frames.is_contiguous()
    assert torch.equal(from_frames(frames, 2), x)
    torch.testing.assert_close(frames[5], x[1, :, 1])


def test_bad_arguments_are_reported():
    with pytest.raises(ValueError, match="temporal"):
        TAdaConv2d(4, 4, (3, 3, 3))
    with pytest.raises(ValueError, match="cal_dim"):
        TAdaConv2d(4, 4, (1, 3, 3), cal_dim="both")
    conv = TAdaConv2d(4, 4, (1, 3, 3), padding=(0, 1, 1), bias=False)
    with pytest.raises(ValueError, match="alpha must be"):
        conv(torch.randn(1, 4, 3, 5, 5), torch.ones(1, 4, 2, 1, 1))
    with pytest.raises(ValueError, match="no bias"):
        conv(torch.randn(1, 4, 3, 5, 5), torch.ones(1, 4, 3, 1, 1), torch.ones(1, 4, 3, 1, 1))
