"""Video backbones built on TAdaConv: TAda2D-R50 and TAdaConvNeXt-T.

Both factories return a :class:`VideoModel` whose state dict uses the official TAdaConv key layout
(``backbone.*`` and, with a head, ``head.out.*``), so official checkpoints load unchanged:

* ``model.forward_features(x)``: clip ``(N, 3, T, H, W)`` -> last feature map ``(N, C, T', H', W')``;
* ``model(x)``: ``(N, C)`` pooled feature (``C == model.feature_dim``); with ``num_classes`` set, the
  head's **logits** ``(N, num_classes)`` instead (the official head applies softmax in eval mode: take
  ``logits.softmax(-1)`` to get its probabilities);
* ``build_model(backbone, weights)`` resolves a named weights choice of :mod:`feature_extraction.weights`
  and returns the model with the :class:`~feature_extraction.weights.Preprocessing` it needs.

Activations are kept frame-major in memory (``(N, T, C, H, W)`` for TAda2D, ``(N, T, H, W, C)`` for
TAdaConvNeXt) so that every per-frame operation runs as one 2D op over ``N*T`` frames without copies.
The layout follows the input: TAda2D fed a ``channels_last_3d`` clip runs on channels-last frames
throughout (often faster on GPUs; on this project's CPU the default frame-major layout was faster).
"""

from __future__ import annotations

import os
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from feature_extraction.tadaconv import ChannelsLayerNorm, RouteFuncMLP, TAdaConv2d, from_frames, to_frames
from feature_extraction.weights import (
    Checkpoint,
    Preprocessing,
    apply_checkpoint,
    get_weights_spec,
    infer_base_width,
    read_checkpoint,
)

Weights = str | os.PathLike | Checkpoint | None


# --------------------------------------------------------------------------- per-frame building blocks


class FrameConv(nn.Conv3d):
    """A ``Conv3d`` with temporal kernel 1 (official parameter shape), run as one ``conv2d`` over all frames."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Sequence[int], stride: Sequence[int] = (1, 1, 1),
                 padding: Sequence[int] = (0, 0, 0), bias: bool = False) -> None:
        if (kernel_size[0], stride[0], padding[0]) != (1, 1, 0):
            raise ValueError(f"FrameConv needs a temporal kernel/stride of 1 and no temporal padding, got "
                             f"kernel_size={kernel_size}, stride={stride}, padding={padding}")
        super().__init__(in_channels, out_channels, tuple(kernel_size), tuple(stride), tuple(padding), bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        """``(N, C_in, T, H, W)`` -> ``(N, C_out, T, H', W')``."""
        y = F.conv2d(to_frames(x), self.weight[:, :, 0], self.bias, self.stride[1:], self.padding[1:])
        return from_frames(y, x.shape[0])


class FrameBatchNorm(nn.BatchNorm2d):
    """BatchNorm over ``(N, C, T, H, W)`` (same statistics and state dict as ``BatchNorm3d``), run on frames."""

    def forward(self, x: Tensor) -> Tensor:  # type: ignore[override]
        """``(N, C, T, H, W)`` -> same shape."""
        return from_frames(super().forward(to_frames(x)), x.shape[0])


def temporal_avg_pool3(x: Tensor) -> Tensor:
    """``AvgPool3d((3, 1, 1), stride 1, padding (1, 0, 0))`` (zeros counted) on ``(N, C, T, H, W)``, layout kept."""
    y = x.clone()
    y[:, :, 1:] += x[:, :, :-1]
    y[:, :, :-1] += x[:, :, 1:]
    return y.div_(3)


def _init_convnet(module: nn.Module) -> None:
    """The official ResNet init: kaiming-normal (fan_out) 3D convs, unit BN, N(0, 0.01) linear layers.

    Parameters the official code marks ``skip_init`` (zero-initialised calibration and aggregation
    parameters) and TAdaConv weights (own init) are left alone.
    """
    for name, m in module.named_modules():
        if name.endswith(("b_rf.b", "b_avgpool_bn")):
            continue
        if isinstance(m, nn.Conv3d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.01)
            nn.init.zeros_(m.bias)


# --------------------------------------------------------------------------- TAda2D-R50


class Stem2D(nn.Module):
    """Official ``Base2DStem``: per-frame 7x7 conv, stride 2, BN, ReLU; no max-pool."""

    def __init__(self, out_channels: int) -> None:
        super().__init__()
        self.a = FrameConv(3, out_channels, (1, 7, 7), stride=(1, 2, 2), padding=(0, 3, 3))
        self.a_bn = FrameBatchNorm(out_channels)

    def forward(self, x: Tensor) -> Tensor:
        """``(N, 3, T, H, W)`` -> ``(N, C, T, H/2, W/2)``, stored frame-major ``(N, T, C, H, W)``."""
        return F.relu(self.a_bn(self.a(x)))


class TAda2DBottleneck(nn.Module):
    """Official ``TAda2DBlock`` branch: 1x1 -> TAdaConv 3x3 (+ temporal aggregation) -> 1x1.

    ``y = b(x, b_rf(x)); out = relu(b_bn(y) + b_avgpool_bn(avgpool_t(y)))``; ``b_avgpool_bn`` starts at
    zero (weight and bias), so at init the block equals a 2D ResNet bottleneck applied per frame.
    """

    def __init__(self, dim_in: int, width: int, dim_out: int, stride: int) -> None:
        super().__init__()
        self.a = FrameConv(dim_in, width, (1, 1, 1))
        self.a_bn = FrameBatchNorm(width)
        self.b = TAdaConv2d(width, width, (1, 3, 3), stride=(1, stride, stride), padding=(0, 1, 1), bias=False)
        self.b_rf = RouteFuncMLP(width, ratio=4, kernels=(3, 3))
        self.b_bn = FrameBatchNorm(width)
        self.b_avgpool_bn = FrameBatchNorm(width)
        self.c = FrameConv(width, dim_out, (1, 1, 1))
        self.c_bn = FrameBatchNorm(dim_out)
        self.reset_aggregation()

    def reset_aggregation(self) -> None:
        """Zero the aggregation BN so the temporal average-pool branch starts switched off."""
        nn.init.zeros_(self.b_avgpool_bn.weight)
        nn.init.zeros_(self.b_avgpool_bn.bias)

    def forward(self, x: Tensor) -> Tensor:
        """``(N, C_in, T, H, W)`` -> ``(N, C_out, T, H/stride, W/stride)``."""
        x = F.relu(self.a_bn(self.a(x)))
        y = self.b(x, self.b_rf(x))
        x = F.relu(self.b_bn(y) + self.b_avgpool_bn(temporal_avg_pool3(y)))
        return self.c_bn(self.c(x))


class TAda2DResBlock(nn.Module):
    """Official ``Base3DBlock``: ``relu(shortcut(x) + conv_branch(x))``; projection shortcut when shape changes."""

    def __init__(self, dim_in: int, width: int, dim_out: int, stride: int) -> None:
        super().__init__()
        if dim_in != dim_out or stride != 1:
            self.short_cut = FrameConv(dim_in, dim_out, (1, 1, 1), stride=(1, stride, stride))
            self.short_cut_bn = FrameBatchNorm(dim_out)
        else:
            self.short_cut = None
            self.short_cut_bn = None
        self.conv_branch = TAda2DBottleneck(dim_in, width, dim_out, stride)

    def forward(self, x: Tensor) -> Tensor:
        """``(N, C_in, T, H, W)`` -> ``(N, C_out, T, H', W')``."""
        shortcut = x if self.short_cut is None else self.short_cut_bn(self.short_cut(x))
        return F.relu(shortcut + self.conv_branch(x))


class TAda2DStage(nn.Module):
    """Official ``Base3DResStage``: blocks ``res_1 .. res_n``; stride 2 in ``res_1``."""

    def __init__(self, num_blocks: int, dim_in: int, width: int, dim_out: int) -> None:
        super().__init__()
        self.num_blocks = num_blocks
        for i in range(num_blocks):
            block = TAda2DResBlock(dim_in if i == 0 else dim_out, width, dim_out, stride=2 if i == 0 else 1)
            self.add_module(f"res_{i + 1}", block)

    def forward(self, x: Tensor) -> Tensor:
        """``(N, C_in, T, H, W)`` -> ``(N, C_out, T, H/2, W/2)``."""
        for i in range(self.num_blocks):
            x = getattr(self, f"res_{i + 1}")(x)
        return x


class TAda2DResNet(nn.Module):
    """TAda2D-R50 backbone (official ``ResNet3D`` + ``TAda2DBlock``): ``conv1`` stem, stages ``conv2..conv5``.

    Stage output channels are ``4 * base_width * (1, 2, 4, 8)``; spatial stride 32, time never downsampled.
    """

    depths = (3, 4, 6, 3)

    def __init__(self, base_width: int = 64) -> None:
        super().__init__()
        if base_width < 4:
            raise ValueError(f"base_width must be >= 4 (the route function reduces channels by 4), got {base_width}")
        self.base_width = base_width
        self.conv1 = Stem2D(base_width)
        dim_in = base_width
        for stage, blocks in enumerate(self.depths):
            width = base_width * 2**stage
            self.add_module(f"conv{stage + 2}", TAda2DStage(blocks, dim_in, width, 4 * width))
            dim_in = 4 * width
        self.feature_dim = dim_in
        _init_convnet(self)

    def forward(self, x: Tensor) -> Tensor:
        """``(N, 3, T, H, W)`` -> conv5 map ``(N, 32*base_width, T, H/32, W/32)``."""
        x = self.conv1(x)
        return self.conv5(self.conv4(self.conv3(self.conv2(x))))

    def pool(self, features: Tensor) -> Tensor:
        """Global average ``(N, C, T, H, W)`` -> ``(N, C)``."""
        return features.mean(dim=(2, 3, 4))


# --------------------------------------------------------------------------- TAdaConvNeXt-T


def drop_path(x: Tensor, p: float, training: bool) -> Tensor:
    """Stochastic depth: in training, zero each sample's residual branch with probability ``p`` (rescaled)."""
    if not training or p == 0.0:
        return x
    keep = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(1.0 - p)
    return x * keep / (1.0 - p) if p < 1.0 else x * keep


class TAdaConvNeXtBlock(nn.Module):
    """ConvNeXt block whose depthwise 7x7 conv is a TAdaConv2d (``cal_dim="cout"``, calibrated bias).

    ``x + drop_path(gamma * pwconv2(gelu(pwconv1(norm(dwconv(x, *dwconv_rf(x)))))))``; the route function
    ``dwconv_rf`` is ModelScope's ``normal_lngelu`` one (LayerNorm + GELU, see :class:`RouteFuncMLP`).
    """

    def __init__(self, dim: int, drop_path: float = 0.0, layer_scale: float = 1e-6) -> None:
        super().__init__()
        self.dwconv = TAdaConv2d(dim, dim, (1, 7, 7), padding=(0, 3, 3), groups=dim, bias=True, cal_dim="cout")
        self.dwconv_rf = RouteFuncMLP(dim, ratio=4, kernels=(3, 3), bias_calibration=True, norm="ln_gelu")
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(torch.full((dim,), layer_scale))
        self.drop_path = drop_path

    def forward(self, x: Tensor) -> Tensor:
        """``(N, C, T, H, W)`` -> same shape."""
        alpha, alpha_bias = self.dwconv_rf(x)
        y = self.dwconv(x, alpha, alpha_bias).permute(0, 2, 3, 4, 1)  # (N, T, H, W, C)
        y = self.gamma * self.pwconv2(F.gelu(self.pwconv1(self.norm(y))))
        y = drop_path(y, self.drop_path, self.training)
        return x + y.permute(0, 4, 1, 2, 3)


class TAdaConvNeXt(nn.Module):
    """TAdaConvNeXt backbone as ModelScope builds it (``modelscope/models/cv/action_recognition/tada_convnext.py``,
    ``TadaConvNeXt`` with ``ROUTE_FUNC_TYPE: normal_lngelu``, ``ROUTE_FUNC_R: 4``, ``ROUTE_FUNC_K: [3, 3]``).

    Stem ``Conv3d(3, dims[0], (2, 4, 4), stride (2, 4, 4))`` + LayerNorm, so ``T' = T // 2``; between stages a
    LayerNorm + per-frame 2x2 stride-2 conv. ``norm`` is the final LayerNorm applied to the pooled feature.

    Parameter names are ModelScope's, so the ``model_state`` of its checkpoints (``backbone.*`` and the
    ``BaseHead`` linear ``head.out.*``) loads into :class:`VideoModel` with the identity key map:
    ``backbone.downsample_layers.{0..3}.{0,1}.*`` (stem conv + LN; LN + 2x2 conv),
    ``backbone.stages.{i}.{j}.{dwconv,dwconv_rf.{g,a,ln,b,b_bias},norm,pwconv1,pwconv2,gamma}``,
    ``backbone.norm.*``. TAdaConv2d weights are ``(1, 1, C, 1, 7, 7)`` and biases ``(1, 1, C)`` there too.
    A checkpoint with a BatchNorm route (``dwconv_rf.bn.*``, ModelScope's ``normal`` route type) is a
    different model and is refused by the key check.
    """

    def __init__(self, dims: Sequence[int] = (96, 192, 384, 768), depths: Sequence[int] = (3, 3, 9, 3),
                 drop_path_rate: float = 0.0, layer_scale: float = 1e-6) -> None:
        super().__init__()
        if min(dims) < 4:
            raise ValueError(f"TAdaConvNeXt dims must be >= 4 (the route function reduces channels by 4), got {tuple(dims)}")
        self.downsample_layers = nn.ModuleList(
            [nn.Sequential(nn.Conv3d(3, dims[0], kernel_size=(2, 4, 4), stride=(2, 4, 4)), ChannelsLayerNorm(dims[0]))]
        )
        for i in range(3):
            self.downsample_layers.append(
                nn.Sequential(ChannelsLayerNorm(dims[i]), FrameConv(dims[i], dims[i + 1], (1, 2, 2), (1, 2, 2), bias=True))
            )
        rates = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
        self.stages = nn.ModuleList()
        for i, depth in enumerate(depths):
            first = sum(depths[:i])
            blocks = [TAdaConvNeXtBlock(dims[i], rates[first + j], layer_scale) for j in range(depth)]
            self.stages.append(nn.Sequential(*blocks))
        self.norm = nn.LayerNorm(dims[-1], eps=1e-6)
        self.feature_dim = dims[-1]
        self._init_weights()

    def _init_weights(self) -> None:
        """ConvNeXt init: truncated-normal (std 0.02) convs and linears, zero biases; calibration stays at alpha == 1."""
        for m in self.modules():
            if isinstance(m, (nn.Conv3d, nn.Linear, TAdaConv2d)):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        for m in self.modules():
            if isinstance(m, RouteFuncMLP):
                m.reset_calibration()

    def forward(self, x: Tensor) -> Tensor:
        """``(N, 3, T, H, W)`` -> last stage map ``(N, dims[-1], T//2, H/32, W/32)``."""
        for downsample, stage in zip(self.downsample_layers, self.stages):
            x = stage(downsample(x))
        return x

    def pool(self, features: Tensor) -> Tensor:
        """Global average + final LayerNorm: ``(N, C, T, H, W)`` -> ``(N, C)``."""
        return self.norm(features.mean(dim=(2, 3, 4)))


# --------------------------------------------------------------------------- model wrapper and factories


class ClassificationHead(nn.Module):
    """Official ``BaseHead`` on a pooled feature: dropout + linear ``out`` (logits; no softmax)."""

    def __init__(self, dim: int, num_classes: int, dropout: float) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(dim, num_classes)
        nn.init.normal_(self.out.weight, std=0.01)
        nn.init.zeros_(self.out.bias)

    def forward(self, pooled: Tensor) -> Tensor:
        """``(N, C)`` -> logits ``(N, num_classes)``."""
        return self.out(self.dropout(pooled))


class VideoModel(nn.Module):
    """A backbone with an optional classification head (state dict keys ``backbone.*``, ``head.out.*``)."""

    def __init__(self, backbone: TAda2DResNet | TAdaConvNeXt, num_classes: int | None, dropout: float) -> None:
        super().__init__()
        self.backbone = backbone
        self.feature_dim: int = backbone.feature_dim
        self.num_classes = num_classes
        self.head = ClassificationHead(self.feature_dim, num_classes, dropout) if num_classes else None

    def forward_features(self, x: Tensor) -> Tensor:
        """Clip ``(N, 3, T, H, W)`` -> last feature map ``(N, feature_dim, T', H', W')``."""
        if x.dim() != 5 or x.shape[1] != 3:
            raise ValueError(f"expected a clip batch (N, 3, T, H, W), got {tuple(x.shape)}")
        return self.backbone(x)

    def forward(self, x: Tensor) -> Tensor:
        """Clip ``(N, 3, T, H, W)`` -> pooled feature ``(N, feature_dim)``, or logits ``(N, num_classes)`` with a head."""
        pooled = self.backbone.pool(self.forward_features(x))
        return pooled if self.head is None else self.head(pooled)


def _read(weights: Weights) -> Checkpoint | None:
    if weights is None or isinstance(weights, Checkpoint):
        return weights
    return read_checkpoint(weights)


def _with_weights(model: VideoModel, checkpoint: Checkpoint | None) -> VideoModel:
    if checkpoint is not None:
        apply_checkpoint(model, checkpoint)
    return model


def tada2d_r50(*, base_width: int | None = None, num_classes: int | None = None, weights: Weights = None,
               dropout: float = 0.5) -> VideoModel:
    """TAda2D-R50 (the paper's model at ``base_width=64``; feature dim ``32 * base_width``).

    ``weights``: path of an official TAdaConv checkpoint (``.pyth``), a torchvision ResNet-50 state dict
    or a saved state dict of this model (see :func:`feature_extraction.weights.load_checkpoint`), or an
    already read :class:`~feature_extraction.weights.Checkpoint`. With ``base_width=None`` the width is
    read from ``weights`` (64 without weights). ``num_classes`` adds a head (``dropout`` before it); a
    checkpoint head of that size is loaded, any other is skipped with a warning.
    """
    checkpoint = _read(weights)
    if base_width is None:
        base_width = infer_base_width(checkpoint, "tada2d_r50") if checkpoint is not None else 64
    return _with_weights(VideoModel(TAda2DResNet(base_width), num_classes, dropout), checkpoint)


def tadaconvnext_tiny(*, base_width: int | None = None, num_classes: int | None = None, weights: Weights = None,
                      dropout: float = 0.0, drop_path_rate: float = 0.0) -> VideoModel:
    """TAdaConvNeXt-T (dims ``base_width * (1, 2, 4, 8)``, 96/192/384/768 at the default ``base_width=96``;
    depths 3/3/9/3; feature dim ``8 * base_width``; halves the clip length).

    ``weights``: path of a ModelScope TAdaConvNeXt checkpoint (``{"model_state": ...}``, identity key map,
    see :class:`TAdaConvNeXt`), a torchvision ``convnext_tiny`` state dict (2D weights map one to one, the
    stem kernel is inflated over 2 frames), a saved state dict of this model, or a read ``Checkpoint``.
    With ``base_width=None`` the width is read from ``weights`` (96 without weights).
    """
    checkpoint = _read(weights)
    if base_width is None:
        base_width = infer_base_width(checkpoint, "tadaconvnext_tiny") if checkpoint is not None else 96
    backbone = TAdaConvNeXt(dims=tuple(base_width * m for m in (1, 2, 4, 8)), drop_path_rate=drop_path_rate)
    return _with_weights(VideoModel(backbone, num_classes, dropout), checkpoint)


BACKBONES: dict[str, Callable[..., VideoModel]] = {
    "tada2d_r50": tada2d_r50,
    "tadaconvnext_tiny": tadaconvnext_tiny,
}


def build_model(backbone: str, weights: str = "random", *, weights_path: str | os.PathLike | None = None,
                num_classes: int | None = None) -> tuple[VideoModel, Preprocessing]:
    """Build ``backbone`` with a named weights choice and return it with the preprocessing it expects.

    ``weights`` names an entry of :data:`feature_extraction.weights.WEIGHTS` (``"official-k400"``,
    ``"imagenet"``, ``"random"``); ``weights_path`` is the checkpoint file, or a folder holding it under the
    expected file name. The file's layout must match the choice (an ImageNet file is not a K400 model).
    """
    if backbone not in BACKBONES:
        raise ValueError(f"unknown backbone {backbone!r}; choose one of {sorted(BACKBONES)}")
    spec = get_weights_spec(backbone, weights)
    path = spec.locate(weights_path)
    checkpoint = read_checkpoint(path) if path is not None else None
    if checkpoint is not None and checkpoint.kind != spec.kind:
        raise ValueError(f"{path}: weights {weights!r} expect a {spec.kind} checkpoint, this file is {checkpoint.kind}")
    return BACKBONES[backbone](num_classes=num_classes, weights=checkpoint), spec.preprocessing
