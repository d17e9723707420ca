"""Checkpoints for the TAdaConv backbones, and the preprocessing each weights choice was trained with.

Reading (always ``torch.load(..., weights_only=True)``, never a download):

* **official TAdaConv checkpoints** (``.pyth``: ``{"model_state": ..., "model_ema_state": ...}``, keys
  ``backbone.conv2.res_1.conv_branch.b.weight``, ``head.out.weight``; an optional ``module.`` prefix),
  ModelScope TAdaConvNeXt checkpoints (``pytorch_model.pt``: the same ``{"model_state": ...}`` layout, keys
  ``backbone.stages.0.0.dwconv_rf.ln.weight`` ...; the key map is the identity, see
  :class:`~feature_extraction.backbones.TAdaConvNeXt`) and state dicts saved from our models (same layout):
  every backbone key must match by name and shape;
* **torchvision ImageNet state dicts** of ``resnet50`` / ``convnext_tiny``, mapped onto TAda2D-R50 /
  TAdaConvNeXt-T (plug-and-play: the calibration (``b_rf``, ``dwconv_rf``) and temporal aggregation
  (``b_avgpool_bn``) parameters keep their initialisation, so a freshly built model then computes exactly
  the per-frame 2D network; the ImageNet classifier is dropped).

``read_checkpoint(path)`` gives a :class:`Checkpoint` (state dict in our layout + its ``kind``);
``apply_checkpoint(model, checkpoint)`` / ``load_checkpoint(model, path)`` load it. A checkpoint head of
another class count (or a model without head) is skipped (with a warning when the model has a head);
any other missing, unexpected or mis-shaped key is an error listing them.

Named choices (:data:`WEIGHTS`, ``get_weights_spec(backbone, name)``): each :class:`WeightsSpec` names the
file it needs and carries the :class:`Preprocessing` that goes with it, so extraction cannot drift from
the checkpoint.
"""

from __future__ import annotations

import logging
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, NamedTuple

from torch import Tensor, nn

from tal_common.checkpoint import load_checkpoint_file

logger = logging.getLogger(__name__)

KIND_TADACONV = "tadaconv"
KIND_TV_RESNET50 = "torchvision-resnet50"
KIND_TV_CONVNEXT = "torchvision-convnext_tiny"

# Parameters a torchvision (2D) checkpoint cannot provide: they keep their plug-and-play initialisation.
_FRESH_PARAMS = re.compile(r"\.(b_rf|b_avgpool_bn|dwconv_rf)\.")


# --------------------------------------------------------------------------- preprocessing + named choices


@dataclass(frozen=True)
class Preprocessing:
    """How clips must be prepared for a weights choice.

    ``clip_len`` frames over ``clip_len * frame_interval`` frames at the sample rate, picked by the
    ``sampling`` rule (``tadaconv``: the official interval-based test rule; ``nominal``: evenly at the
    sample rate, see :mod:`feature_extraction.clips`). RGB frames as uint8 / 255, short side resized to
    ``short_side`` (``resize="device"``: the official ``F.interpolate`` bilinear on full frames, on the
    model's device; ``"decoder"``: decord's resize, the approximate fast path), ``crop_size`` squares at
    the official offsets, ``(x - mean) / std`` per channel (see :mod:`feature_extraction.transform`).
    """

    short_side: int
    crop_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    clip_len: int
    frame_interval: int
    sampling: str = "tadaconv"
    resize: str = "device"


KINETICS_MEAN_STD = ((0.45, 0.45, 0.45), (0.225, 0.225, 0.225))  # the official TAdaConv normalisation
IMAGENET_MEAN_STD = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))  # torchvision's


@dataclass(frozen=True)
class WeightsSpec:
    """A named weights choice: which file (``None``: random init), its layout ``kind``, its preprocessing."""

    backbone: str
    name: str
    kind: str | None
    filename: str | None
    url: str | None
    preprocessing: Preprocessing
    description: str

    def locate(self, path: str | os.PathLike | None) -> Path | None:
        """The checkpoint file for this choice: ``path`` itself, or ``path/filename`` when ``path`` is a folder.

        Returns ``None`` for random init. A missing file is a ``FileNotFoundError`` that says what to
        download and where to put it.
        """
        if self.filename is None:
            if path is not None:
                raise ValueError(f"weights {self.name!r} of {self.backbone} are a random init and take no file (got {path})")
            return None
        if path is None:
            raise FileNotFoundError(
                f"weights {self.name!r} of {self.backbone} need the file {self.filename} ({self.description}); "
                f"download it from {self.url} and pass its path (or its folder)"
            )
        file = Path(path)
        if file.is_dir():
            file = file / self.filename
        if not file.is_file():
            raise FileNotFoundError(
                f"{file}: checkpoint for weights {self.name!r} of {self.backbone} not found; download "
                f"{self.filename} from {self.url} and put it there"
            )
        return file


def _pre(short_side: int, crop: int, mean_std: tuple, clip_len: int, interval: int, *, official: bool = True) -> Preprocessing:
    """``official``: the TAdaConv test sampling and transform; otherwise nominal spacing and decoder resize."""
    sampling, resize = ("tadaconv", "device") if official else ("nominal", "decoder")
    return Preprocessing(short_side, crop, mean_std[0], mean_std[1], clip_len, interval, sampling, resize)


WEIGHTS: dict[str, dict[str, WeightsSpec]] = {
    "tada2d_r50": {
        "official-k400": WeightsSpec(
            "tada2d_r50", "official-k400", KIND_TADACONV, "tada2d_r50_k400_8x8.pyth",
            "https://drive.google.com/file/d/1YsbTKLoDwxtStAsP5oxUMbIsw85NvY0O/view (official MODEL_ZOO, K400 TAda2D-R50 8x8)",
            _pre(256, 256, KINETICS_MEAN_STD, 8, 8),
            "official TAda2D-R50 trained on Kinetics-400, 8 frames x interval 8, test scale 256 / crop 256",
        ),
        "imagenet": WeightsSpec(
            "tada2d_r50", "imagenet", KIND_TV_RESNET50, "resnet50-0676ba61.pth",
            "https://download.pytorch.org/models/resnet50-0676ba61.pth",
            _pre(256, 224, IMAGENET_MEAN_STD, 8, 8),
            "torchvision ResNet-50 IMAGENET1K_V1 as a plug-and-play TAda2D init",
        ),
        "random": WeightsSpec(
            "tada2d_r50", "random", None, None, None, _pre(256, 224, KINETICS_MEAN_STD, 8, 8, official=False),
            "official random init (for tests and demos; nominal spacing and decoder resize, the fast path)",
        ),
    },
    "tadaconvnext_tiny": {
        "imagenet": WeightsSpec(
            "tadaconvnext_tiny", "imagenet", KIND_TV_CONVNEXT, "convnext_tiny-983f1562.pth",
            "https://download.pytorch.org/models/convnext_tiny-983f1562.pth",
            _pre(236, 224, IMAGENET_MEAN_STD, 16, 4, official=False),
            "torchvision ConvNeXt-T IMAGENET1K_V1 as a plug-and-play TAdaConvNeXt init (16 frames: the stem halves time)",
        ),
        "random": WeightsSpec(
            "tadaconvnext_tiny", "random", None, None, None, _pre(236, 224, IMAGENET_MEAN_STD, 16, 4, official=False),
            "random init (for tests and demos)",
        ),
    },
}


def get_weights_spec(backbone: str, name: str) -> WeightsSpec:
    """The :class:`WeightsSpec` named ``name`` for ``backbone`` (a clear error lists the valid names)."""
    if backbone not in WEIGHTS:
        raise ValueError(f"unknown backbone {backbone!r}; choose one of {sorted(WEIGHTS)}")
    if name not in WEIGHTS[backbone]:
        raise ValueError(f"unknown weights {name!r} for {backbone}; choose one of {sorted(WEIGHTS[backbone])}")
    return WEIGHTS[backbone][name]


# --------------------------------------------------------------------------- reading checkpoints


class Checkpoint(NamedTuple):
    """A checkpoint read from ``path``: ``state_dict`` already in our (official TAdaConv) key layout."""

    path: Path
    kind: str
    state_dict: dict[str, Tensor]

    @property
    def num_classes(self) -> int | None:
        """Class count of the checkpoint's head (``head.out``), ``None`` without one."""
        return _head_classes(self.state_dict)


# The stem weight whose output channels are a backbone's ``base_width``.
_STEM_KEYS = {"tada2d_r50": "backbone.conv1.a.weight", "tadaconvnext_tiny": "backbone.downsample_layers.0.0.weight"}


def infer_base_width(checkpoint: Checkpoint, backbone: str) -> int:
    """``base_width`` of a checkpoint of ``backbone``: the stem's output channels (TAda2D-R50: 64, TAdaConvNeXt-T: 96)."""
    key = _STEM_KEYS[backbone]
    stem = checkpoint.state_dict.get(key)
    if stem is None:
        raise ValueError(f"{checkpoint.path}: not a {backbone} checkpoint (no {key})")
    return int(stem.shape[0])


def _unsqueeze_t(w: Tensor) -> Tensor:
    """2D conv weight ``(O, I, kh, kw)`` -> 3D ``(O, I, 1, kh, kw)``."""
    return w.unsqueeze(2)


def _tadaconv_weight(w: Tensor) -> Tensor:
    """2D conv weight ``(O, I, kh, kw)`` -> TAdaConv2d ``(1, 1, O, I, kh, kw)``."""
    return w[None, None]


def _inflate_stem(w: Tensor) -> Tensor:
    """2D patchify kernel ``(C, 3, 4, 4)`` -> ``(C, 3, 2, 4, 4)``: repeated over 2 frames and halved (static clip == 2D)."""
    return w.unsqueeze(2).repeat(1, 1, 2, 1, 1) / 2


def _same(w: Tensor) -> Tensor:
    return w


# (torchvision key pattern, our key from the match (None: dropped), value conversion); first match wins.
_Rule = tuple[str, Callable[[re.Match[str]], str] | None, Callable[[Tensor], Tensor]]

_BN = r"(weight|bias|running_mean|running_var|num_batches_tracked)"


def _block(m: re.Match[str]) -> str:
    return f"backbone.conv{int(m[1]) + 1}.res_{int(m[2]) + 1}"


_RESNET50_RULES: list[_Rule] = [
    (r"conv1\.weight", lambda m: "backbone.conv1.a.weight", _unsqueeze_t),
    (rf"bn1\.{_BN}", lambda m: f"backbone.conv1.a_bn.{m[1]}", _same),
    (r"layer(\d)\.(\d+)\.conv1\.weight", lambda m: f"{_block(m)}.conv_branch.a.weight", _unsqueeze_t),
    (r"layer(\d)\.(\d+)\.conv2\.weight", lambda m: f"{_block(m)}.conv_branch.b.weight", _tadaconv_weight),
    (r"layer(\d)\.(\d+)\.conv3\.weight", lambda m: f"{_block(m)}.conv_branch.c.weight", _unsqueeze_t),
    (rf"layer(\d)\.(\d+)\.bn([123])\.{_BN}", lambda m: f"{_block(m)}.conv_branch.{'_abc'[int(m[3])]}_bn.{m[4]}", _same),
    (r"layer(\d)\.(\d+)\.downsample\.0\.weight", lambda m: f"{_block(m)}.short_cut.weight", _unsqueeze_t),
    (rf"layer(\d)\.(\d+)\.downsample\.1\.{_BN}", lambda m: f"{_block(m)}.short_cut_bn.{m[3]}", _same),
    (r"fc\.(weight|bias)", None, _same),
]

_CONVNEXT_BLOCK_LAYERS = {"2": "norm", "3": "pwconv1", "5": "pwconv2"}


def _stage(m: re.Match[str]) -> str:
    return f"backbone.stages.{int(m[1]) // 2}.{m[2]}"


_CONVNEXT_RULES: list[_Rule] = [
    (r"features\.0\.0\.weight", lambda m: "backbone.downsample_layers.0.0.weight", _inflate_stem),
    (r"features\.0\.([01])\.(weight|bias)", lambda m: f"backbone.downsample_layers.0.{m[1]}.{m[2]}", _same),
    (r"features\.([246])\.1\.weight", lambda m: f"backbone.downsample_layers.{int(m[1]) // 2}.1.weight", _unsqueeze_t),
    (r"features\.([246])\.([01])\.(weight|bias)",
     lambda m: f"backbone.downsample_layers.{int(m[1]) // 2}.{m[2]}.{m[3]}", _same),
    (r"features\.([1357])\.(\d+)\.layer_scale", lambda m: f"{_stage(m)}.gamma", lambda w: w.reshape(-1)),
    (r"features\.([1357])\.(\d+)\.block\.0\.weight", lambda m: f"{_stage(m)}.dwconv.weight", _tadaconv_weight),
    (r"features\.([1357])\.(\d+)\.block\.0\.bias", lambda m: f"{_stage(m)}.dwconv.bias", lambda w: w.view(1, 1, -1)),
    (r"features\.([1357])\.(\d+)\.block\.([235])\.(weight|bias)",
     lambda m: f"{_stage(m)}.{_CONVNEXT_BLOCK_LAYERS[m[3]]}.{m[4]}", _same),
    (r"classifier\.0\.(weight|bias)", lambda m: f"backbone.norm.{m[1]}", _same),  # LayerNorm of the pooled feature
    (r"classifier\.2\.(weight|bias)", None, _same),
]


def _convert(state: Mapping[str, Tensor], rules: list[_Rule], path: Path, what: str) -> dict[str, Tensor]:
    """Rename/reshape a torchvision state dict into our layout (every key must match a rule)."""
    compiled = [(re.compile(pattern), name, convert) for pattern, name, convert in rules]
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        for pattern, name, convert in compiled:
            m = pattern.fullmatch(key)
            if m is not None:
                if name is not None:
                    out[name(m)] = convert(value)
                break
        else:
            raise ValueError(f"{path}: unexpected key {key!r} in a {what} state dict")
    return out


def read_checkpoint(path: str | os.PathLike, *, ema: bool = False) -> Checkpoint:
    """Read a checkpoint file and bring its state dict into our layout.

    Accepts an official TAdaConv checkpoint (``model_state``, or ``model_ema_state`` with ``ema=True``), a
    plain state dict of our models, or a torchvision ResNet-50 / ConvNeXt-T state dict. A ``module.``
    prefix (DataParallel) is removed.
    """
    file = Path(path)
    obj = load_checkpoint_file(file, "backbone checkpoint (a state dict or an official TAdaConv checkpoint)")
    official = "model_state" in obj or "model_ema_state" in obj
    if official:
        field = "model_ema_state" if ema else "model_state"
        if field not in obj:
            raise ValueError(f"{file}: official checkpoint has no {field!r} (fields: {sorted(obj)})")
        state = obj[field]
    elif ema:
        raise ValueError(f"{file}: ema=True needs an official checkpoint with 'model_ema_state'")
    else:
        state = obj
    bad = [k for k, v in state.items() if not isinstance(k, str) or not isinstance(v, Tensor)]
    if bad:
        raise ValueError(f"{file}: not a state dict (non-tensor entries {bad[:5]})")
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    if any(k.startswith("backbone.") for k in state):
        return Checkpoint(file, KIND_TADACONV, dict(state))
    if official:
        raise ValueError(f"{file}: official checkpoint without 'backbone.' keys (first keys: {list(state)[:5]})")
    if "conv1.weight" in state and "layer1.0.conv1.weight" in state:
        return Checkpoint(file, KIND_TV_RESNET50, _convert(state, _RESNET50_RULES, file, "torchvision ResNet-50"))
    if "features.0.0.weight" in state and "features.1.0.block.0.weight" in state:
        return Checkpoint(file, KIND_TV_CONVNEXT, _convert(state, _CONVNEXT_RULES, file, "torchvision ConvNeXt"))
    raise ValueError(
        f"{file}: unrecognised checkpoint layout (first keys: {list(state)[:5]}); expected an official TAdaConv "
        "checkpoint or a torchvision resnet50 / convnext_tiny state dict"
    )


# --------------------------------------------------------------------------- loading into a model


def _head_classes(state: Mapping[str, Tensor]) -> int | None:
    weight = state.get("head.out.weight")
    return None if weight is None else int(weight.shape[0])


def apply_checkpoint(model: nn.Module, checkpoint: Checkpoint) -> None:
    """Load ``checkpoint`` into ``model`` (a :class:`~feature_extraction.backbones.VideoModel`).

    Backbone keys must match exactly by name and shape (for torchvision checkpoints the calibration and
    aggregation parameters are exempt and keep their initialisation); otherwise a ``ValueError`` lists
    every missing, unexpected and mis-shaped key. The head (``head.*``) is loaded when it matches the
    model's; otherwise it is skipped, with a warning if the model has a head.
    """
    target = model.state_dict()
    body = {k: v for k, v in checkpoint.state_dict.items() if not k.startswith("head.")}
    head = {k: v for k, v in checkpoint.state_dict.items() if k.startswith("head.")}
    exempt = _FRESH_PARAMS if checkpoint.kind != KIND_TADACONV else None
    missing = [k for k in target if not k.startswith("head.") and k not in body and not (exempt and exempt.search(k))]
    unexpected = [k for k in body if k not in target]
    mis_shaped = [f"{k}: file {tuple(v.shape)} vs model {tuple(target[k].shape)}"
                  for k, v in body.items() if k in target and v.shape != target[k].shape]
    if missing or unexpected or mis_shaped:
        lines = [f"{checkpoint.path}: {checkpoint.kind} checkpoint does not fit {type(model).__name__}"]
        for title, keys in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", mis_shaped)):
            if keys:
                lines.append(f"{title} ({len(keys)}): " + ", ".join(keys))
        raise ValueError("\n".join(lines))

    model_head = {k: v for k, v in target.items() if k.startswith("head.")}
    head_fits = set(head) == set(model_head) and all(head[k].shape == v.shape for k, v in model_head.items())
    if model_head and head_fits:
        body.update(head)
    elif model_head:
        warnings.warn(
            f"{checkpoint.path}: checkpoint head ({_head_classes(head)} classes) does not match the model head "
            f"({_head_classes(model_head)} classes); the head keeps its initialisation",
            stacklevel=2,
        )
    elif head:
        logger.info("%s: model has no head; checkpoint head (%s classes) skipped", checkpoint.path, _head_classes(head))
    result = model.load_state_dict(body, strict=False)
    assert not result.unexpected_keys, result.unexpected_keys  # guaranteed by the checks above


def load_checkpoint(model: nn.Module, path: str | os.PathLike, *, ema: bool = False) -> Checkpoint:
    """Read ``path`` (see :func:`read_checkpoint`) and load it into ``model`` (see :func:`apply_checkpoint`).

    Returns the :class:`Checkpoint` read (its ``kind`` says which layout the file had).
    """
    checkpoint = read_checkpoint(path, ema=ema)
    apply_checkpoint(model, checkpoint)
    return checkpoint
