"""Training: AdamW + one-cycle schedule + soft-target cross-entropy, with exact resume.

The pieces are pure functions (``one_cycle_lr``, ``param_groups``, ``soft_cross_entropy``,
``resolve_device``, ``resolve_amp``); ``train`` wires them together with checkpoints in a run
folder:

    RUN_DIR/last.pt        after every epoch (atomic: temporary file, then os.replace)
    RUN_DIR/best.pt        on a new best validation accuracy
    RUN_DIR/metrics.jsonl  one JSON line per epoch (rewritten from the checkpoint's history)
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import random
import time
import warnings
from dataclasses import asdict, dataclass, fields, replace
from functools import partial
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from vitcifar.checkpoint import FORMAT, atomic_save, load_checkpoint, load_state_into
from vitcifar.data import AugmentConfig, BatchLoader, DataError, SampleLoader, Splits, eval_batches
from vitcifar.model import PRESETS, ViT, ViTConfig, check_choice

__all__ = [
    "TRAIN_PRESETS",
    "TrainConfig",
    "TrainingDiverged",
    "evaluate_model",
    "one_cycle_lr",
    "param_groups",
    "resolve_amp",
    "resolve_device",
    "soft_cross_entropy",
    "train",
]

log = logging.getLogger(__name__)

Device = Literal["auto", "cpu", "cuda"]
Amp = Literal["auto", "off", "fp16", "bf16"]


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
    ema_decay: float | None = (
        None  # exponential moving average of the weights, per step; None = off
    )
    mix_off_epochs: int = 0  # last epochs trained without Mixup/CutMix
    repeats: int = 1  # repeated augmentation factor (batch path only)
    tta_flip: bool = False  # evaluate on the image and its mirror, average the logits
    seed: int = 0
    device: Device = "auto"  # auto: CUDA when present, else CPU
    amp: Amp = "auto"  # auto: bf16 on Ampere+, fp16 (+ grad scaler) on older GPUs (T4), off on CPU
    gpu_aug: bool | None = None  # batched augmentation with the data on the GPU; None: on when CUDA
    num_workers: int = 2  # DataLoader workers for the per-sample (CPU) path
    compile: bool = False  # torch.compile the model (falls back to eager with a warning)
    eval_batch_size: int = 1024
    augment: AugmentConfig = AugmentConfig()

    def __post_init__(self) -> None:
        check_choice("device", self.device, Device)
        check_choice("amp", self.amp, Amp)
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
        if (
            self.weight_decay < 0
            or self.mix_off_epochs < 0
            or self.repeats < 1
            or self.num_workers < 0
        ):
            raise ValueError(
                "weight_decay, mix_off_epochs, num_workers must be >= 0 and repeats >= 1"
            )

    @property
    def peak_lr(self) -> float:
        return self.lr if self.lr is not None else 5e-4 * self.batch_size / 512

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        d = dict(d)
        known = {f.name for f in fields(cls)}
        if set(d) - known:
            raise ValueError(f"unknown TrainConfig fields {sorted(set(d) - known)}")
        d["augment"] = AugmentConfig(**d.get("augment", {}))
        return cls(**d)


TRAIN_PRESETS: dict[str, TrainConfig] = {
    "deit-tiny": TrainConfig(),
    # The recipe half of "vit-fast" (model half in model.PRESETS):
    # - label smoothing 0.1: Szegedy et al. 2016; DeiT uses 0.1.
    # - EMA of weights: Polyak averaging; DeiT's model EMA; airbench averages weights too.
    # - repeated augmentation x3: Hoffer et al. 2020; DeiT's RASampler (3 repeats).
    # - Mixup/CutMix off for the last 10% of epochs: the "Mixup off at the end" trick of
    #   Liu et al. 2022 (ConvNeXt training notes) and many CIFAR recipes; lets the net fit clean data.
    # - flip test-time augmentation: airbench (Jordan 2024) evaluates on both mirrors.
    # - 5% warm-up: plain-ViT baselines (Beyer et al. 2022) warm up for a short fraction.
    "vit-fast": TrainConfig(
        epochs=300,
        batch_size=512,
        label_smoothing=0.1,
        ema_decay=0.999,
        repeats=3,
        mix_off_epochs=30,
        tta_flip=True,
        warmup_frac=0.05,
        grad_clip=1.0,
    ),
}


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


# ----------------------------------------------------------------------------- pure pieces


def one_cycle_lr(
    step: int,
    *,
    total_steps: int,
    warmup_frac: float,
    div_factor: float = 25.0,
    final_div_factor: float = 1e4,
) -> float:
    """Learning-rate multiplier of the peak at ``step``: linear warm-up from 1/div_factor to 1,
    then cosine annealing to 1/(div_factor * final_div_factor) at ``total_steps``."""
    start = 1.0 / div_factor
    end = start / final_div_factor
    warm = max(1, round(total_steps * warmup_frac)) if warmup_frac > 0 else 0
    if step < warm:
        return start + (1.0 - start) * step / warm
    t = min(1.0, (step - warm) / max(1, total_steps - warm))
    return end + (1.0 - end) * 0.5 * (1.0 + math.cos(math.pi * t))


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Two AdamW groups: weight matrices/kernels (ndim >= 2) decay; biases, norms, the position
    embedding and the [CLS] token do not."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.ndim >= 2 and not name.endswith(("pos_embed", "cls_token")):
            decay.append(p)
        else:
            no_decay.append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def soft_cross_entropy(
    logits: torch.Tensor, targets: torch.Tensor, label_smoothing: float = 0.0
) -> torch.Tensor:
    """Mean cross-entropy against soft targets (B, K) that sum to 1, optionally smoothed."""
    if label_smoothing:
        targets = targets * (1.0 - label_smoothing) + label_smoothing / targets.shape[-1]
    return torch.sum(-targets * F.log_softmax(logits.float(), dim=-1), dim=-1).mean()


def resolve_device(device: str) -> torch.device:
    """ "auto" -> CUDA when present, else CPU. "cuda" without a GPU is an error."""
    check_choice("device", device, Device)
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            "--device cuda was asked for, but torch sees no CUDA GPU; use --device cpu or auto"
        )
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(device)


def resolve_amp(amp: str, device: torch.device) -> torch.dtype | None:
    """Autocast dtype, or None for full precision. bf16 only on GPUs with native bf16 (Ampere+):
    a T4 (sm_75) emulates it slowly, so it gets fp16 with a gradient scaler."""
    check_choice("amp", amp, Amp)
    if device.type != "cuda" or amp == "off":
        return None
    native_bf16 = torch.cuda.get_device_capability(device)[0] >= 8
    if amp == "bf16" and not native_bf16:
        raise ValueError(
            "--amp bf16 needs an Ampere or newer GPU; this GPU supports fp16 (use --amp fp16 or auto)"
        )
    if amp == "auto":
        return torch.bfloat16 if native_bf16 else torch.float16
    return torch.bfloat16 if amp == "bf16" else torch.float16


@torch.no_grad()
def evaluate_model(
    model: nn.Module,
    data,
    *,
    device: torch.device,
    batch_size: int = 1024,
    amp: torch.dtype | None = None,
    tta_flip: bool = False,
) -> tuple[float, float, torch.Tensor]:
    """(mean loss, accuracy, predictions (N,) on CPU) of ``model`` on an ``ImageSet``."""
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), device=device)
    preds = []
    for x, y in eval_batches(data, batch_size=batch_size, device=device):
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            logits = model(x)
            if tta_flip:
                logits = logits + model(x.flip(-1))
        logits = logits.float() / (2 if tta_flip else 1)
        loss_sum += F.cross_entropy(logits, y, reduction="sum")
        preds.append(logits.argmax(dim=-1))
    model.train(was_training)
    if not preds:
        return float("nan"), float("nan"), torch.empty(0, dtype=torch.int64)
    pred = torch.cat(preds).cpu()
    n = len(pred)
    return float(loss_sum) / n, float((pred == data.labels.cpu()).float().mean()), pred


# ----------------------------------------------------------------------------- the loop


def _rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "python": list(random.getstate()[1])}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate((3, tuple(state["python"]), None))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _make_loader(splits: Splits, cfg: TrainConfig, device: torch.device):
    """The training loader for ``device``:

    - CUDA with ``gpu_aug`` (default): data resident on the GPU, batched augmentation there.
    - CUDA without it (or data too large for the GPU): batched augmentation in ``num_workers``
      CPU threads, batches copied to the GPU (≈ 35k images/s on 2 threads, bench_input.py).
    - CPU: torchvision's per-sample transforms in ``num_workers`` processes (the reference path;
      the model, not the input, is the bottleneck there).
    """
    use_gpu = cfg.gpu_aug if cfg.gpu_aug is not None else device.type == "cuda"
    if use_gpu and device.type != "cuda":
        warnings.warn(
            "--gpu-aug needs a CUDA GPU; none is in use, so the CPU augmentation path is used",
            stacklevel=3,
        )
        use_gpu = False
    if use_gpu:
        need = splits.train.images.numel() + splits.train.labels.numel() * 8
        free, _ = torch.cuda.mem_get_info(device)
        if need > 0.5 * free:
            warnings.warn(
                f"the training set needs {need / 2**30:.1f} GiB and the GPU has {free / 2**30:.1f} GiB free; "
                "using the CPU augmentation path instead of --gpu-aug",
                stacklevel=3,
            )
            use_gpu = False
    batch = {"batch_size": cfg.batch_size, "aug": cfg.augment, "seed": cfg.seed}
    if device.type == "cuda":
        data = splits.train.to(device) if use_gpu else splits.train
        return BatchLoader(
            data, device=device, repeats=cfg.repeats, threads=max(1, cfg.num_workers), **batch
        )
    if cfg.repeats > 1:
        log.info(
            "repeated augmentation needs the batch path; the CPU path ignores repeats=%d",
            cfg.repeats,
        )
    return SampleLoader(splits.train, num_workers=cfg.num_workers, **batch)


class _CompileOrEager:
    """Calls ``torch.compile(model)``; if compiling fails (at the first call, where torch compiles),
    warns once and runs the eager model from then on."""

    def __init__(self, model: nn.Module) -> None:
        self.model, self.compiled = model, None
        try:
            self.compiled = torch.compile(model)
        except Exception as err:  # noqa: BLE001 - any compiler failure means: run eagerly
            self._fail(err)

    def _fail(self, err: BaseException) -> None:
        warnings.warn(
            f"torch.compile failed ({type(err).__name__}: {str(err)[:200]}); training in eager mode",
            stacklevel=4,
        )
        self.compiled = None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.compiled is not None:
            try:
                return self.compiled(x)
            except Exception as err:  # noqa: BLE001
                self._fail(err)
        return self.model(x)


@dataclass
class RunResult:
    """What ``train`` returns: the run folder, per-epoch history and the best validation accuracy."""

    out_dir: Path
    history: list[dict[str, Any]]
    best_val_acc: float
    best_epoch: int


def _checkpoint(
    model, ema, opt, sched, scaler, epoch, best, history, model_cfg, cfg, data, runtime
) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "model": model.state_dict(),
        "ema": ema.state_dict() if ema is not None else None,
        "optimizer": opt.state_dict(),
        "scheduler": sched.state_dict(),
        "scaler": scaler.state_dict(),
        "epoch": epoch,  # epochs completed
        "best_val_acc": best[0],
        "best_epoch": best[1],
        "history": history,
        "rng": _rng_state(),
        "model_config": model_cfg.to_dict(),
        "train_config": cfg.to_dict(),
        "classes": list(data["classes"]),
        "data": data,  # Splits.fingerprint(): the split a resume must see again
        "runtime": runtime,  # the device and autocast dtype actually used
    }


def _config_diff(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    return [
        f"{k}: {a.get(k)!r} -> {b.get(k)!r}"
        for k in sorted(set(a) | set(b))
        if a.get(k) != b.get(k)
    ]


def train(
    model_cfg: ViTConfig,
    splits: Splits,
    cfg: TrainConfig,
    out_dir: str | os.PathLike,
    *,
    resume: bool = False,
    progress: bool = True,
    stop_after: int | None = None,
) -> RunResult:
    """Train a ViT on ``splits`` into ``out_dir``; continues from ``out_dir/last.pt`` if present.

    With an existing ``last.pt``: its stored configs must equal the given ones (else a ValueError
    names the differences, and nothing is overwritten), unless ``resume=True``, which continues
    with the stored configs. ``resume=True`` without ``last.pt`` is an error. ``stop_after``
    ends this call after that many epochs (the schedule still spans ``cfg.epochs``); calling
    again continues, e.g. across Colab sessions.
    """
    from tqdm.auto import tqdm

    out = Path(out_dir)
    last_path = out / "last.pt"
    state = None
    if last_path.exists():
        state = load_checkpoint(last_path)
        if resume:
            model_cfg = ViTConfig.from_dict(state["model_config"])
            cfg = TrainConfig.from_dict(state["train_config"])
        else:
            diff = _config_diff(state["model_config"], model_cfg.to_dict()) + _config_diff(
                state["train_config"], cfg.to_dict()
            )
            if diff:
                raise ValueError(
                    f"{last_path} is a run with other settings ({'; '.join(diff)}); pass --resume to "
                    "continue it with its own settings, or choose another --out"
                )
    elif resume:
        raise FileNotFoundError(f"nothing to resume: {last_path} does not exist")
    data = splits.fingerprint()
    if state is not None and state.get("data", {}).get("digest") not in (None, data["digest"]):
        was = state["data"]
        raise DataError(
            f"{last_path} was trained on other data ({was['train']} train / {was['val']} val images "
            f"from {was.get('source')}); now {data['train']} / {data['val']} from {data['source']}. "
            "Resume with the same --data, --subset, --val-size and --seed, or choose another --out"
        )
    if model_cfg.num_classes != len(splits.classes):
        raise DataError(
            f"the model has num_classes={model_cfg.num_classes} but the data has {len(splits.classes)} classes"
        )

    device = resolve_device(cfg.device)
    amp = resolve_amp(cfg.amp, device)
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    model = ViT(model_cfg).to(device)
    ema = copy.deepcopy(model).requires_grad_(False) if cfg.ema_decay else None
    fused = device.type == "cuda"
    opt = torch.optim.AdamW(
        param_groups(model, cfg.weight_decay), lr=cfg.peak_lr, betas=(0.9, 0.999), fused=fused
    )
    loader = _make_loader(splits, cfg, device)
    steps_per_epoch = len(loader)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt,
        partial(
            one_cycle_lr,
            total_steps=cfg.epochs * steps_per_epoch,
            warmup_frac=cfg.warmup_frac,
            div_factor=cfg.div_factor,
            final_div_factor=cfg.final_div_factor,
        ),
    )
    scaler = torch.amp.GradScaler(device.type, enabled=amp is torch.float16)
    runtime = {"device": device.type, "amp": str(amp).replace("torch.", "") if amp else "off"}
    start_epoch, best, history = 0, (-1.0, -1), []
    if state is not None:
        load_state_into(model, state["model"], last_path)
        if ema is not None and state.get("ema") is not None:
            load_state_into(ema, state["ema"], last_path)
        opt.load_state_dict(state["optimizer"])
        for group in opt.param_groups:  # a run started on the CPU continues fused on a GPU
            group["fused"] = fused
        sched.load_state_dict(state["scheduler"])
        if state["scaler"] and scaler.is_enabled():  # an fp16 scaler's state, continued on a T4
            scaler.load_state_dict(state["scaler"])
        if state.get("runtime", runtime) != runtime:
            log.warning(
                "resuming on %s (was %s): training continues, but not bit-for-bit as it would have",
                runtime,
                state.get("runtime"),
            )
        start_epoch, best, history = (
            state["epoch"],
            (state["best_val_acc"], state["best_epoch"]),
            state["history"],
        )
        _set_rng_state(state["rng"])
        log.info("resuming %s at epoch %d of %d", out, start_epoch + 1, cfg.epochs)
    out.mkdir(parents=True, exist_ok=True)
    step_model = _CompileOrEager(model) if cfg.compile else model
    val_set = splits.val if len(splits.val) else splits.test
    if not len(splits.val):
        log.warning("val_size=0: picking best.pt on the test set, as the original notebook did")

    end_epoch = cfg.epochs if stop_after is None else min(cfg.epochs, start_epoch + stop_after)
    for epoch in range(start_epoch, end_epoch):
        loader.set_epoch(epoch, mix=epoch < cfg.epochs - cfg.mix_off_epochs)
        model.train()
        t0 = time.perf_counter()
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device)
        seen = 0
        bar = tqdm(
            loader,
            total=steps_per_epoch,
            desc=f"epoch {epoch + 1}/{cfg.epochs}",
            disable=not progress,
            leave=False,
            dynamic_ncols=True,
        )
        for i, (x, y) in enumerate(bar):
            x = x.to(device, non_blocking=True)
            y = y.to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
                logits = step_model(x)
            loss = soft_cross_entropy(logits, y, cfg.label_smoothing)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if cfg.grad_clip:
                scaler.unscale_(opt)
                nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            scaler.step(opt)
            scaler.update()
            sched.step()
            if ema is not None:
                with torch.no_grad():
                    torch._foreach_lerp_(
                        list(ema.parameters()), list(model.parameters()), 1.0 - cfg.ema_decay
                    )
            loss_sum += loss.detach() * len(x)
            correct += (logits.argmax(-1) == y.argmax(-1)).sum()
            seen += len(x)
            if i % 25 == 0 or i == steps_per_epoch - 1:  # the only host syncs inside an epoch
                mean_loss = float(loss_sum) / seen
                if not math.isfinite(mean_loss):
                    raise TrainingDiverged(
                        f"the training loss became {mean_loss} at epoch {epoch + 1}, step {i + 1}; "
                        f"{last_path} keeps the last good epoch. Lower --lr or use --amp off"
                    )
                bar.set_postfix(
                    loss=f"{mean_loss:.3f}",
                    acc=f"{float(correct) / seen:.3f}",
                    lr=f"{sched.get_last_lr()[0]:.2e}",
                    ips=f"{seen / (time.perf_counter() - t0):.0f}",
                )
        train_seconds = time.perf_counter() - t0
        eval_model = ema if ema is not None else model
        val_loss, val_acc, _ = evaluate_model(
            eval_model,
            val_set,
            device=device,
            batch_size=cfg.eval_batch_size,
            amp=amp,
            tta_flip=cfg.tta_flip,
        )
        if not math.isfinite(val_loss):  # weights went bad in the epoch's last steps
            raise TrainingDiverged(
                f"the validation loss became {val_loss} after epoch {epoch + 1}; {last_path} keeps "
                "the last good epoch. Lower --lr or use --amp off"
            )
        row = {
            "epoch": epoch + 1,
            "lr": sched.get_last_lr()[0],
            "train_loss": float(loss_sum) / seen,
            "train_acc": float(correct) / seen,
            "val_loss": val_loss,
            "val_acc": val_acc,
            "seconds": time.perf_counter() - t0,
            "train_seconds": train_seconds,
            "images_per_s": seen / train_seconds,
        }
        history.append(row)
        is_best = val_acc > best[0]
        if is_best:
            best = (val_acc, epoch + 1)
        ckpt = _checkpoint(
            model, ema, opt, sched, scaler, epoch + 1, best, history, model_cfg, cfg, data, runtime
        )
        atomic_save(ckpt, last_path)
        if is_best:
            atomic_save(ckpt, out / "best.pt")
        _write_metrics(history, out / "metrics.jsonl")
        msg = (
            f"epoch {epoch + 1}/{cfg.epochs}  loss {row['train_loss']:.4f}  train acc {row['train_acc']:.4f}  "
            f"val acc {val_acc:.4f}  {row['seconds']:.1f}s  {row['images_per_s']:.0f} img/s"
        )
        if progress:
            tqdm.write(msg)
        else:
            log.info(msg)
    return RunResult(out, history, best[0], best[1])


def _write_metrics(history: list[dict[str, Any]], path: Path) -> None:
    tmp = path.with_suffix(".jsonl.tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in history))
    os.replace(tmp, path)


def config_for_preset(preset: str, **train_overrides: Any) -> tuple[ViTConfig, TrainConfig]:
    """(model config, train config) of a named preset, with TrainConfig overrides."""
    check_choice("preset", preset, tuple(PRESETS))
    return PRESETS[preset], replace(TRAIN_PRESETS[preset], **train_overrides)
