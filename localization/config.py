"""The localization stage's configuration: one dataclass per YAML section.

Parsed once at the CLI edge with ``tal_common.config.load_config(LocalizeConfig, path, overrides)``;
everything below the CLI receives the typed sections (or plain arguments taken from them).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


@dataclass
class DataConfig:
    """How features become head inputs.

    ``task`` names the dataset protocol (``localization.tasks.TASKS``): ``hacs`` (HACS Segments / ActivityNet:
    every video rescaled to ``tscale`` bins), ``ek100`` (the TAdaConv EK100 protocol), ``ek100_sliding`` and
    ``thumos14`` (sliding windows of ``tscale`` bins of
    ``window_bin_s`` seconds, ``window_overlap`` apart as a fraction of a window; set ``dscale``, e.g. 100).
    ``dscale`` defaults to ``tscale``. ``train_subset``/``val_subset`` name the annotation subsets (JSON:
    e.g. ``training``/``validation``; EK100 CSVs: ``train``/``validation``, taken from the file names).
    """

    task: Literal["hacs", "ek100", "ek100_sliding", "thumos14"] = "hacs"
    tscale: int = 100
    dscale: int | None = None
    window_bin_s: float = 0.2667
    window_overlap: float = 0.5
    min_segment_fraction: float = 0.5
    normalize: bool = True
    train_subset: str = "training"
    val_subset: str = "validation"
    num_workers: int = 0

    def __post_init__(self) -> None:
        if self.tscale < 2:
            raise ValueError(f"data.tscale must be >= 2, got {self.tscale}")
        if self.dscale is not None and not 1 <= self.dscale <= self.tscale:
            raise ValueError(f"data.dscale must be in [1, tscale={self.tscale}], got {self.dscale}")
        if self.window_bin_s <= 0:
            raise ValueError(f"data.window_bin_s must be > 0, got {self.window_bin_s}")
        if not 0 <= self.window_overlap < 1:
            raise ValueError(f"data.window_overlap must be in [0, 1), got {self.window_overlap}")
        if not 0 < self.min_segment_fraction <= 1:
            raise ValueError(f"data.min_segment_fraction must be in (0, 1], got {self.min_segment_fraction}")

    @property
    def resolved_dscale(self) -> int:
        """D: ``dscale`` or, when unset, ``tscale``."""
        return self.tscale if self.dscale is None else self.dscale


@dataclass
class ModelConfig:
    """The proposal head (``localization.heads.HEADS``) and its hyper-parameters (BMN: mmaction2 defaults).

    ``reference``: whose arithmetic the head reproduces. ``mmaction2``: its BMN targets (segments rounded to
    float32), loss (eps 1e-5, ratio clamp 1.05..21) and proposal score ``start x end x clr x reg``. ``tadaconv``:
    the TAdaConv EK100 code's targets (float64), loss (eps 1e-6, no clamp) and score ``clr^1.2 x reg``.
    """

    head: Literal["bmn"] = "bmn"
    reference: Literal["mmaction2", "tadaconv"] = "mmaction2"
    num_samples: int = 32
    num_samples_per_bin: int = 3
    boundary_ratio: float = 0.5
    hidden_dim_1d: int = 256
    hidden_dim_2d: int = 128
    hidden_dim_3d: int = 512


@dataclass
class TrainConfig:
    """Optimisation: Adam with weight decay, learning rate x ``lr_gamma`` at each epoch in ``lr_steps``.

    ``num_threads``: CPU threads for torch (0 keeps torch's default; 1 is much faster for small models on a
    busy machine, where multi-threaded small convolutions spin-wait).
    """

    epochs: int = 9
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 1e-4
    lr_steps: list[int] = field(default_factory=lambda: [7])
    lr_gamma: float = 0.1
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    num_threads: int = 0

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError(f"train.epochs and train.batch_size must be >= 1, got {self.epochs}, {self.batch_size}")
        if self.num_threads < 0:
            raise ValueError(f"train.num_threads must be >= 0 (0: torch's default), got {self.num_threads}")


@dataclass
class PostprocessConfig:
    """Proposal extraction and Gaussian Soft-NMS.

    Boundary candidates are local peaks or positions above ``peak_ratio`` x the maximum; Soft-NMS decays
    overlaps above ``soft_nms_low + (soft_nms_high - soft_nms_low) * width`` (width normalised by the video's
    duration) by ``exp(-IoU^2 / soft_nms_alpha)``.

    ``max_proposals`` is per video for whole-video tasks (``hacs``) and per minute of video for ``thumos14`` and
    ``ek100_sliding``; ``ek100`` keeps the TAdaConv budget, ``int(duration_s) + 1``.
    """

    peak_ratio: float = 0.5
    soft_nms_alpha: float = 0.4
    soft_nms_low: float = 0.5
    soft_nms_high: float = 0.9
    max_proposals: int = 100


@dataclass
class ClassifierConfig:
    """The detection classifier trained next to BMN on the same features.

    ``hacs``: video-level (mean+max pooled features -> MLP -> softmax), ``top_k`` classes per proposal (default 2).
    ``ek100``: snippet-level verb and noun heads (with a background class), ``top_k`` verb x noun pairs per
    proposal (default 5); ``num_verbs``/``num_nouns`` default to the largest id in the training CSV + 1.
    ``thumos14``: a snippet-level class head (with background), ``top_k`` classes per proposal (default 2).
    """

    hidden_dim: int = 256
    dropout: float = 0.1
    loss_weight: float = 1.0
    top_k: int | None = None
    num_verbs: int | None = None
    num_nouns: int | None = None


@dataclass
class LocalizeConfig:
    """The whole stage-2 configuration (``configs/localize/*.yaml``)."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    postprocess: PostprocessConfig = field(default_factory=PostprocessConfig)
    classifier: ClassifierConfig = field(default_factory=ClassifierConfig)
