"""Every setting of a run, and the one table of named presets.

- ``ViTConfig``: the network (read by ``model.ViT``).
- ``AugmentConfig``: the training augmentation (read by ``data`` and ``gpu_aug``).
- ``TrainConfig``: the recipe and the loop's settings, with ``augment`` inside.
- ``PRESET_TABLE``: ``{name: (ViTConfig, TrainConfig)}``. The CLI's ``--preset`` choices, the
  notebook's ``PRESET``, ``config_for_preset``, ``model.PRESETS`` and ``train.TRAIN_PRESETS`` all
  read it, so a new preset is one row here.

This module imports nothing else of vitcifar (the bottom floor): the configs are plain frozen
dataclasses, saved as ``asdict`` in every checkpoint, so a checkpoint alone can rebuild its run.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Literal, TypeVar, get_args

__all__ = [
    "PRESET_TABLE",
    "RUNTIME_FIELDS",
    "AugmentConfig",
    "PresetView",
    "TrainConfig",
    "ViTConfig",
    "check_choice",
    "config_for_preset",
    "preset_names",
]

# Settings of the machine, not of the recipe: a resume may change them (CPU -> T4 across Colab
# sessions, more workers), and training continues with the same model and schedule.
RUNTIME_FIELDS = ("device", "amp", "gpu_aug", "loader", "num_workers", "compile", "eval_batch_size")


def check_choice(name: str, value: Any, allowed: Any) -> None:
    """Raise a ValueError naming ``name`` and the allowed values if ``value`` is not one of them."""
    options = get_args(allowed) or tuple(allowed)
    if value not in options:
        raise ValueError(
            f"{name}={value!r} is not supported; choose one of {', '.join(map(repr, options))}"
        )


Pool = Literal["cls", "mean"]
PosEmbed = Literal["learned", "sincos2d"]


@dataclass(frozen=True)
class ViTConfig:
    """Everything that defines the network; saved in every checkpoint (``asdict``)."""

    image_size: int = 32  # pixels, square input
    patch_size: int = 4  # pixels; 32 / 4 -> 8 x 8 = 64 patches
    in_channels: int = 3
    num_classes: int = 10
    dim: int = 192  # token width D
    depth: int = 12  # encoder blocks
    heads: int = 3  # attention heads; head width = dim / heads
    mlp_ratio: float = 4.0  # MLP hidden width = mlp_ratio * dim
    dropout: float = 0.1  # dropout inside the MLP and on the attention output projection
    emb_dropout: float = 0.1  # dropout on the token sequence after adding positions
    attn_dropout: float = 0.0  # dropout on attention probabilities
    drop_path: float = 0.0  # stochastic depth rate of the last block (linear from 0)
    pool: Pool = "cls"  # "cls": read the [CLS] token; "mean": average the patch tokens (no [CLS])
    pos_embed: PosEmbed = "learned"  # "learned" or fixed 2-D sin-cos

    def __post_init__(self) -> None:
        check_choice("pool", self.pool, Pool)
        check_choice("pos_embed", self.pos_embed, PosEmbed)
        for name in (
            "image_size",
            "patch_size",
            "in_channels",
            "num_classes",
            "dim",
            "depth",
            "heads",
        ):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        if self.image_size % self.patch_size:
            raise ValueError(
                f"patch_size={self.patch_size} does not divide image_size={self.image_size}; "
                "pick a patch size that divides the image (e.g. 2, 4 or 8 for 32x32)"
            )
        if self.dim % self.heads:
            raise ValueError(
                f"dim={self.dim} is not divisible by heads={self.heads}; pick dim = heads * head_width"
            )
        if self.pos_embed == "sincos2d" and self.dim % 4:
            raise ValueError(f"pos_embed='sincos2d' needs dim divisible by 4, got dim={self.dim}")
        if self.mlp_ratio <= 0:
            raise ValueError(f"mlp_ratio must be > 0, got {self.mlp_ratio}")
        for name in ("dropout", "emb_dropout", "attn_dropout", "drop_path"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)!r}")

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ViTConfig:
        """Rebuild from ``asdict(config)``; unknown keys are an error (a checkpoint of another format)."""
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown ViTConfig fields {sorted(unknown)}; known: {sorted(known)}")
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class AugmentConfig:
    """Training augmentation; defaults are the original notebook's (DeiT's) recipe."""

    crop_padding: int = 4  # RandomCrop(32, padding=4), zero fill
    flip: bool = True  # RandomHorizontalFlip(p=0.5)
    randaug_ops: int = 2  # RandAugment(num_ops=2, ...); 0 turns RandAugment off
    randaug_magnitude: int = 9  # ... magnitude=9 of 31 bins
    mixup_alpha: float = 0.8  # Mixup Beta(0.8, 0.8); 0 turns it off
    cutmix_alpha: float = (
        1.0  # CutMix Beta(1, 1); 0 turns it off. With both on, one is chosen per batch.
    )

    def __post_init__(self) -> None:
        if self.crop_padding < 0 or self.randaug_ops < 0 or not 0 <= self.randaug_magnitude <= 30:
            raise ValueError(
                f"invalid augmentation {self}: crop_padding and randaug_ops must be >= 0, "
                "randaug_magnitude in 0..30"
            )
        if self.mixup_alpha < 0 or self.cutmix_alpha < 0:
            raise ValueError("mixup_alpha and cutmix_alpha must be >= 0 (0 turns them off)")


Device = Literal["auto", "cpu", "cuda"]
Amp = Literal["auto", "off", "fp16", "bf16"]
Loader = Literal["auto", "sample", "batch"]


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation and loop settings; defaults are the original notebook's DeiT-Tiny recipe."""

    epochs: int = 300
    batch_size: int = 1024
    lr: float | None = (
        None  # peak learning rate; None -> 5e-4 * batch_size / 512 (DeiT's scaling rule)
    )
    weight_decay: float = 0.05  # AdamW, on weight matrices only (see param_groups)
    warmup_frac: float = (
        0.3  # fraction of steps in the linear warm-up (torch OneCycleLR's pct_start)
    )
    div_factor: float = 25.0  # start lr = peak / div_factor (OneCycleLR's default)
    final_div_factor: float = 1e4  # final lr = start lr / final_div_factor (OneCycleLR's default)
    label_smoothing: float = 0.0  # applied to the (mixed) soft targets
    grad_clip: float | None = None  # max gradient norm; None = no clipping
    # Exponential moving average of the weights, per step; None = off. The decay warms up as
    # min(ema_decay, (1 + t) / (10 + t)) at step t (TensorFlow's num_updates rule, timm's EMA
    # warm-up), so a short run's average is not dominated by its random initial weights.
    ema_decay: float | None = None
    mix_off_frac: float = 0.0  # last fraction of the epochs trained without Mixup/CutMix
    repeats: int = 1  # repeated augmentation factor (batch path only)
    tta_flip: bool = False  # evaluate on the image and its mirror, average the logits
    seed: int = 0
    device: Device = "auto"  # auto: CUDA when present, else CPU
    amp: Amp = "auto"  # auto: bf16 on Ampere+, fp16 (+ grad scaler) on older GPUs (T4), off on CPU
    # Training input: "sample" = torchvision per sample in DataLoader workers (the original
    # notebook's path); "batch" = vitcifar.gpu_aug.BatchAugment on whole batches (on the GPU, or in
    # num_workers CPU threads); "auto" = batch on CUDA, sample on the CPU.
    loader: Loader = "auto"
    gpu_aug: bool | None = None  # batch loader: keep the data on the GPU; None: on when CUDA
    num_workers: int = (
        2  # DataLoader processes (sample) or augmentation threads (batch on CPU data)
    )
    compile: bool = False  # torch.compile the model (falls back to eager with a warning)
    eval_batch_size: int = 1024
    augment: AugmentConfig = AugmentConfig()

    def __post_init__(self) -> None:
        check_choice("device", self.device, Device)
        check_choice("amp", self.amp, Amp)
        check_choice("loader", self.loader, Loader)
        if self.gpu_aug and self.loader == "sample":
            raise ValueError("gpu_aug needs the batch loader; use loader='batch' or 'auto'")
        if not 0.0 <= self.mix_off_frac <= 1.0:
            raise ValueError(f"mix_off_frac must be in [0, 1], got {self.mix_off_frac}")
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 1 or self.eval_batch_size < 1:
            raise ValueError(
                f"batch sizes must be >= 1, got {self.batch_size} / {self.eval_batch_size}"
            )
        if self.lr is not None and not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if not 0.0 <= self.warmup_frac < 1.0:
            raise ValueError(f"warmup_frac must be in [0, 1), got {self.warmup_frac}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.ema_decay is not None and not 0.0 < self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in (0, 1) or None, got {self.ema_decay}")
        if self.weight_decay < 0 or self.repeats < 1 or self.num_workers < 0:
            raise ValueError("weight_decay, num_workers must be >= 0 and repeats >= 1")

    @property
    def peak_lr(self) -> float:
        return self.lr if self.lr is not None else 5e-4 * self.batch_size / 512

    @property
    def mix_epochs(self) -> int:
        """Epochs trained with Mixup/CutMix (the first ones)."""
        return self.epochs - round(self.mix_off_frac * self.epochs)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def with_runtime_of(self, other: TrainConfig) -> TrainConfig:
        """This recipe with the machine settings (``RUNTIME_FIELDS``) of ``other``."""
        return replace(self, **{k: getattr(other, k) for k in RUNTIME_FIELDS})

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        d = dict(d)
        if "mix_off_epochs" in d:  # checkpoints before mix_off_frac stored a number of epochs
            d["mix_off_frac"] = d.pop("mix_off_epochs") / d.get("epochs", cls.epochs)
        known = {f.name for f in fields(cls)}
        if set(d) - known:
            raise ValueError(f"unknown TrainConfig fields {sorted(set(d) - known)}")
        d["augment"] = AugmentConfig(**d.get("augment", {}))
        return cls(**d)


# ----------------------------------------------------------------------------- the preset table

PRESET_TABLE: dict[str, tuple[ViTConfig, TrainConfig]] = {
    # The original notebook's DeiT-Tiny: 5,362,762 trainable parameters for 10 classes, and its
    # recipe (TrainConfig's defaults).
    "deit-tiny": (ViTConfig(), TrainConfig()),
    # Same width and depth, with the choices that help a plain ViT on small data.
    # The model:
    # - mean pooling instead of [CLS]: Beyer et al. 2022, "Better plain ViT baselines for ImageNet-1k".
    # - fixed 2-D sin-cos positions: same paper (and MAE, He et al. 2021).
    # - stochastic depth 0.1: Huang et al. 2016; DeiT (Touvron et al. 2021) uses 0.1 for Tiny.
    # - no dropout in MLP/embedding: DeiT found dropout hurts once stochastic depth and Mixup are used.
    # The recipe:
    # - label smoothing 0.1: Szegedy et al. 2016; DeiT uses 0.1.
    # - EMA of weights: Polyak averaging; DeiT's model EMA; airbench averages weights too.
    # - repeated augmentation x3: Hoffer et al. 2020; DeiT's RASampler (3 repeats).
    # - Mixup/CutMix off for the last 10% of epochs (a fraction, so short runs keep it in
    #   proportion): the "Mixup off at the end" trick of many CIFAR recipes; lets the net fit
    #   clean data.
    # - flip test-time augmentation: airbench (Jordan 2024) evaluates on both mirrors.
    # - 5% warm-up: plain-ViT baselines (Beyer et al. 2022) warm up for a short fraction.
    "vit-fast": (
        ViTConfig(dropout=0.0, emb_dropout=0.0, drop_path=0.1, pool="mean", pos_embed="sincos2d"),
        TrainConfig(
            epochs=300,
            batch_size=512,
            label_smoothing=0.1,
            ema_decay=0.999,
            repeats=3,
            mix_off_frac=0.1,
            tta_flip=True,
            warmup_frac=0.05,
            grad_clip=1.0,
        ),
    ),
}

_Half = TypeVar("_Half", ViTConfig, TrainConfig)


class PresetView(Mapping[str, _Half]):
    """A read-only, live view of one half of ``PRESET_TABLE``: ``model.PRESETS`` (the model
    configs) and ``train.TRAIN_PRESETS`` (the recipes). A row added to the table shows in both."""

    def __init__(self, half: int) -> None:
        self._half = half

    def __getitem__(self, name: str) -> _Half:
        if name not in PRESET_TABLE:
            raise KeyError(
                f"no preset {name!r}; choose one of {', '.join(map(repr, preset_names()))}"
            )
        return PRESET_TABLE[name][self._half]

    def __iter__(self) -> Iterator[str]:
        return iter(PRESET_TABLE)

    def __len__(self) -> int:
        return len(PRESET_TABLE)

    def __repr__(self) -> str:
        return repr(dict(self))


MODEL_PRESETS: PresetView[ViTConfig] = PresetView(0)
TRAIN_PRESETS: PresetView[TrainConfig] = PresetView(1)


def preset_names() -> list[str]:
    """The preset names, sorted: what the CLI and the notebook offer."""
    return sorted(PRESET_TABLE)


def config_for_preset(preset: str, **train_overrides: Any) -> tuple[ViTConfig, TrainConfig]:
    """(model config, train config) of a named preset, with TrainConfig overrides."""
    check_choice("preset", preset, tuple(preset_names()))
    model_cfg, train_cfg = PRESET_TABLE[preset]
    known = [f.name for f in fields(TrainConfig)]
    model_fields = {f.name for f in fields(ViTConfig)}
    for key in train_overrides:
        if key in model_fields:
            raise TypeError(
                f"config_for_preset: {key!r} is a model (ViTConfig) setting, not a TrainConfig "
                f"one; change it with dataclasses.replace(model_cfg, {key}=...)"
            )
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            guess = f"did you mean {close[0]!r}? " if close else ""
            raise TypeError(
                f"config_for_preset: {key!r} is not a TrainConfig setting; {guess}"
                f"the settings are {', '.join(known)}"
            )
    return model_cfg, replace(train_cfg, **train_overrides)
