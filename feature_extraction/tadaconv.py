"""TAdaConv: temporally adaptive 2D convolution and its calibration generator.

TAdaConv (Huang et al., "TAda! Temporally-Adaptive Convolutions for Video Understanding", ICLR 2022)
convolves every frame ``t`` of a clip with its own weights ``W_t = alpha_t * W_b``: a shared base
weight ``W_b`` calibrated by a per-frame, per-channel factor ``alpha_t`` produced from the clip itself
by :class:`RouteFuncMLP`.

The official code builds ``W_t`` explicitly and runs one grouped ``conv2d`` with ``groups = B*T``
(kept here as :func:`grouped_tadaconv2d`, the reference for tests and ``scripts/bench_tadaconv.py``).
Because the calibration is one scalar per channel and frame, it can be moved onto the activations
instead, which is exactly equal and lets all frames share one dense ``conv2d``:

* ``cal_dim="cin"``:  ``conv2d(x_t, alpha_t * W_b) == conv2d(alpha_t * x_t, W_b)`` (zero padding stays zero);
* ``cal_dim="cout"``: ``conv2d(x_t, alpha_t * W_b) == alpha_t * conv2d(x_t, W_b)``.

Tensors are ``(N, C, T, H, W)``. Parameter names and shapes follow the official modules
(``weight`` is ``(1, 1, C_out, C_in/groups, kh, kw)``, ``bias`` is ``(1, 1, C_out)``), so official state
dicts load unchanged. :func:`to_frames` / :func:`from_frames` switch between ``(N, C, T, H, W)`` and a
frame batch ``(N*T, C, H, W)``; they are free views whenever the tensor is stored frame-major
(``(N, T, C, H, W)`` or ``(N, T, H, W, C)`` in memory), which is how the backbones keep their activations.
"""

from __future__ import annotations

import math
from typing import Literal, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

CalDim = Literal["cin", "cout"]


def to_frames(x: Tensor) -> Tensor:
    """``(N, C, T, H, W)`` -> ``(N*T, C, H, W)``; a view when ``x`` is stored frame-major, else one copy."""
    n, c, t, h, w = x.shape
    return x.transpose(1, 2).reshape(n * t, c, h, w)


def from_frames(y: Tensor, n: int) -> Tensor:
    """``(N*T, C, H, W)`` -> ``(N, C, T, H, W)``, always a view (the result is stored frame-major)."""
    nt, c, h, w = y.shape
    if nt % n:
        raise ValueError(f"frame batch of {nt} does not split into {n} clips")
    return y.view(n, nt // n, c, h, w).transpose(1, 2)


def _triple(value: int | Sequence[int], name: str) -> tuple[int, int, int]:
    if isinstance(value, int):
        return (value, value, value)
    out = tuple(int(v) for v in value)
    if len(out) != 3:
        raise ValueError(f"{name} must be an int or 3 values (t, h, w), got {value!r}")
    return out  # type: ignore[return-value]


RouteNorm = Literal["bn_relu", "ln_gelu"]


class ChannelsLayerNorm(nn.LayerNorm):
    """``LayerNorm`` over ``C`` of ``(N, C, T, H, W)`` (ConvNeXt's "channels_first" LayerNorm, eps 1e-6)."""

    def __init__(self, channels: int) -> None:
        super().__init__(channels, eps=1e-6)

    def forward(self, x: Tensor) -> Tensor:  # type: ignore[override]
        """``(N, C, T, H, W)`` -> same shape, stored ``(N, T, H, W, C)`` in memory."""
        y = F.layer_norm(x.permute(0, 2, 3, 4, 1), self.normalized_shape, self.weight, self.bias, self.eps)
        return y.permute(0, 4, 1, 2, 3)


class RouteFuncMLP(nn.Module):
    """Calibration generator of TAdaConv (official names ``RouteFuncMLP`` / ``RouteFuncMLPLnGelu``).

    ``v`` = per-frame spatial average ``(N, C, T, 1, 1)``; ``g`` = 1x1 conv of the global average;
    ``alpha = b(act(norm(a(v + g)))) + 1`` with temporal convs ``a`` (``C -> C/ratio``, kernel
    ``kernels[0]``) and ``b`` (``C/ratio -> C``, kernel ``kernels[1]``, zero-initialised so
    ``alpha == 1`` at init). ``norm="bn_relu"`` (TAda2D, the official TAdaConv code) is ``relu(bn(.))``
    with a ``BatchNorm3d`` named ``bn``; ``norm="ln_gelu"`` (TAdaConvNeXt, ModelScope's
    ``normal_lngelu`` route) is ``gelu(ln(.))`` with a channels-first ``LayerNorm`` (eps 1e-6) named
    ``ln``. With ``bias_calibration`` a second zero-initialised head ``b_bias`` gives ``alpha_bias``
    for the convolution bias (the TAdaConvNeXt variant).
    """

    def __init__(
        self,
        c_in: int,
        ratio: int = 4,
        kernels: Sequence[int] = (3, 3),
        bias_calibration: bool = False,
        bn_eps: float = 1e-5,
        bn_momentum: float = 0.1,
        norm: RouteNorm = "bn_relu",
    ) -> None:
        super().__init__()
        hidden = c_in // ratio
        if hidden < 1:
            raise ValueError(f"RouteFuncMLP: c_in={c_in} is smaller than the reduction ratio {ratio}")
        if norm not in ("bn_relu", "ln_gelu"):
            raise ValueError(f"RouteFuncMLP: norm must be 'bn_relu' or 'ln_gelu', got {norm!r}")
        k_a, k_b = kernels
        self.g = nn.Conv3d(c_in, c_in, kernel_size=1)
        self.a = nn.Conv3d(c_in, hidden, kernel_size=(k_a, 1, 1), padding=(k_a // 2, 0, 0))
        if norm == "bn_relu":
            self.bn = nn.BatchNorm3d(hidden, eps=bn_eps, momentum=bn_momentum)
        else:
            self.ln = ChannelsLayerNorm(hidden)
        self.norm_kind: RouteNorm = norm
        self.b = nn.Conv3d(hidden, c_in, kernel_size=(k_b, 1, 1), padding=(k_b // 2, 0, 0), bias=False)
        self.b_bias = (
            nn.Conv3d(hidden, c_in, kernel_size=(k_b, 1, 1), padding=(k_b // 2, 0, 0), bias=False)
            if bias_calibration
            else None
        )
        self.reset_calibration()

    def reset_calibration(self) -> None:
        """Zero the output convs so that ``alpha == 1`` (TAdaConv starts as a plain 2D conv)."""
        nn.init.zeros_(self.b.weight)
        if self.b_bias is not None:
            nn.init.zeros_(self.b_bias.weight)

    def forward(self, x: Tensor) -> Tensor | tuple[Tensor, Tensor]:
        """``x`` ``(N, C, T, H, W)`` -> ``alpha`` ``(N, C, T, 1, 1)``, or ``(alpha, alpha_bias)`` with bias calibration."""
        frame_mean = x.mean(dim=(3, 4), keepdim=True)
        global_mean = x.mean(dim=(2, 3, 4), keepdim=True)
        hidden = self.a(frame_mean + self.g(global_mean))
        if self.norm_kind == "bn_relu":
            hidden = F.relu(self.bn(hidden))
        else:
            hidden = F.gelu(self.ln(hidden))
        alpha = self.b(hidden) + 1
        if self.b_bias is None:
            return alpha
        return alpha, self.b_bias(hidden) + 1


class TAdaConv2d(nn.Module):
    """Temporally adaptive 2D convolution on ``(N, C, T, H, W)`` clips (time is never strided or padded).

    ``forward(x, alpha, alpha_bias=None)`` with ``alpha`` ``(N, C_cal, T, 1, 1)`` where ``C_cal`` is
    ``in_channels`` for ``cal_dim="cin"`` and ``out_channels`` for ``"cout"``. The bias (if any) is added
    as is, or as ``alpha_bias * bias`` when ``alpha_bias`` ``(N, C_out, T, 1, 1)`` is given.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | Sequence[int],
        stride: int | Sequence[int] = 1,
        padding: int | Sequence[int] = 0,
        dilation: int | Sequence[int] = 1,
        groups: int = 1,
        bias: bool = True,
        cal_dim: CalDim = "cin",
    ) -> None:
        super().__init__()
        kernel = _triple(kernel_size, "kernel_size")
        strides = _triple(stride, "stride")
        pads = _triple(padding, "padding")
        dils = _triple(dilation, "dilation")
        if (kernel[0], strides[0], pads[0], dils[0]) != (1, 1, 0, 1):
            raise ValueError(
                "TAdaConv2d is 2D per frame: temporal kernel/stride/dilation must be 1 and temporal padding 0, "
                f"got kernel_size={kernel}, stride={strides}, padding={pads}, dilation={dils}"
            )
        if cal_dim not in ("cin", "cout"):
            raise ValueError(f"cal_dim must be 'cin' or 'cout', got {cal_dim!r}")
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"in_channels={in_channels} and out_channels={out_channels} must divide groups={groups}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = kernel
        self.stride = strides
        self.padding = pads
        self.dilation = dils
        self.groups = groups
        self.cal_dim: CalDim = cal_dim
        self.weight = nn.Parameter(torch.empty(1, 1, out_channels, in_channels // groups, kernel[1], kernel[2]))
        self.bias = nn.Parameter(torch.empty(1, 1, out_channels)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The official init: kaiming-uniform weight (a=sqrt(5)), uniform bias in +-1/sqrt(fan_in)."""
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in = self.weight.shape[3] * self.weight.shape[4] * self.weight.shape[5]
            bound = 1 / math.sqrt(fan_in)
            nn.init.uniform_(self.bias, -bound, bound)

    def _check_calibration(self, x: Tensor, alpha: Tensor, what: str, channels: int) -> None:
        n, _, t = x.shape[:3]
        if alpha.shape != (n, channels, t, 1, 1):
            raise ValueError(
                f"TAdaConv2d: {what} must be {(n, channels, t, 1, 1)} for input {tuple(x.shape)}, got {tuple(alpha.shape)}"
            )

    def forward(self, x: Tensor, alpha: Tensor, alpha_bias: Tensor | None = None) -> Tensor:
        """``x`` ``(N, C_in, T, H, W)`` -> ``(N, C_out, T, H', W')``; same result as :func:`grouped_tadaconv2d`."""
        if x.dim() != 5 or x.shape[1] != self.in_channels:
            raise ValueError(f"TAdaConv2d: expected (N, {self.in_channels}, T, H, W), got {tuple(x.shape)}")
        calibrated = self.in_channels if self.cal_dim == "cin" else self.out_channels
        self._check_calibration(x, alpha, "alpha", calibrated)
        if alpha_bias is not None:
            if self.bias is None:
                raise ValueError("TAdaConv2d: alpha_bias given but the layer has no bias")
            self._check_calibration(x, alpha_bias, "alpha_bias", self.out_channels)
        n = x.shape[0]
        conv_bias = self.bias.view(-1) if self.bias is not None and alpha_bias is None and self.cal_dim == "cin" else None
        if self.cal_dim == "cin":
            x = x * alpha
        y = F.conv2d(
            to_frames(x), self.weight[0, 0], conv_bias, self.stride[1:], self.padding[1:], self.dilation[1:], self.groups
        )
        y = from_frames(y, n)
        if self.cal_dim == "cout":
            y = y * alpha
        if self.bias is not None and conv_bias is None:
            bias = self.bias.view(1, -1, 1, 1, 1)
            y = y.add_(bias if alpha_bias is None else alpha_bias * bias)
        return y

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"padding={self.padding}, groups={self.groups}, bias={self.bias is not None}, cal_dim={self.cal_dim!r}"
        )


def grouped_tadaconv2d(conv: TAdaConv2d, x: Tensor, alpha: Tensor, alpha_bias: Tensor | None = None) -> Tensor:
    """Reference: the official formulation of ``conv(x, alpha, alpha_bias)``.

    Builds the ``B*T`` calibrated kernels ``alpha_t * W_b`` and runs one grouped ``conv2d`` with
    ``groups = conv.groups * B * T`` over the frames stacked along channels. Same shapes as
    :meth:`TAdaConv2d.forward`; used by the tests and as the baseline of ``scripts/bench_tadaconv.py``.
    """
    b, c_in, t, h, w = x.shape
    _, _, c_out, c_in_group, kh, kw = conv.weight.shape
    frames = x.permute(0, 2, 1, 3, 4).reshape(1, b * t * c_in, h, w)
    alpha_btc = alpha.permute(0, 2, 1, 3, 4)  # (B, T, C, 1, 1)
    if conv.cal_dim == "cin":
        weight = alpha_btc.unsqueeze(2) * conv.weight  # (B, T, 1, C_in, 1, 1) * (1, 1, C_out, C_in, kh, kw)
    else:
        weight = alpha_btc.unsqueeze(3) * conv.weight  # (B, T, C_out, 1, 1, 1) * (1, 1, C_out, C_in/g, kh, kw)
    weight = weight.reshape(b * t * c_out, c_in_group, kh, kw)
    bias = None
    if conv.bias is not None:
        if alpha_bias is None:
            bias = conv.bias.repeat(b, t, 1).reshape(-1)
        else:
            bias = (alpha_bias.permute(0, 2, 1, 3, 4).reshape(b, t, c_out) * conv.bias).reshape(-1)
    y = F.conv2d(frames, weight, bias, conv.stride[1:], conv.padding[1:], conv.dilation[1:], conv.groups * b * t)
    return y.view(b, t, c_out, y.shape[-2], y.shape[-1]).permute(0, 2, 1, 3, 4)
