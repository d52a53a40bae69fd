"""Training: AdamW + one-cycle schedule + soft-target cross-entropy, with exact resume.

The pieces are pure functions (``one_cycle_lr``, ``param_groups``, ``soft_cross_entropy``,
``resolve_device``, ``resolve_amp``, ``divergence_advice``, ``load_optimizer_state``); ``train``
wires them together with checkpoints in a run folder (``checkpoint.RunFolder``: last.pt after
every epoch, best.pt on a new best validation accuracy, metrics.jsonl; a kill at any instant
leaves a folder that the same call finishes from).
"""

from __future__ import annotations

import copy
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

from vitcifar.checkpoint import FORMAT, CheckpointError, RunFolder, load_checkpoint, load_state_into
from vitcifar.data import AugmentConfig, BatchLoader, DataError, SampleLoader, Splits, eval_batches
from vitcifar.distributed import Distributed, RankStreams
from vitcifar.model import PRESETS, ViT, ViTConfig, check_choice

__all__ = [
    "TRAIN_PRESETS",
    "TrainConfig",
    "TrainingDiverged",
    "TrainingOutOfMemory",
    "divergence_advice",
    "evaluate_model",
    "load_optimizer_state",
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
Loader = Literal["auto", "sample", "batch"]

# Settings of the machine, not of the recipe: a resume may change them (CPU -> T4 across Colab
# sessions, more workers), and training continues with the same model and schedule.
RUNTIME_FIELDS = ("device", "amp", "gpu_aug", "loader", "num_workers", "compile", "eval_batch_size")
_OOM_ERRORS = (getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError),)


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


TRAIN_PRESETS: dict[str, TrainConfig] = {
    "deit-tiny": TrainConfig(),
    # The recipe half of "vit-fast" (model half in model.PRESETS):
    # - label smoothing 0.1: Szegedy et al. 2016; DeiT uses 0.1.
    # - EMA of weights: Polyak averaging; DeiT's model EMA; airbench averages weights too.
    # - repeated augmentation x3: Hoffer et al. 2020; DeiT's RASampler (3 repeats).
    # - Mixup/CutMix off for the last 10% of epochs (a fraction, so short runs keep it in
    #   proportion): the "Mixup off at the end" trick of many CIFAR recipes; lets the net fit
    #   clean data.
    # - flip test-time augmentation: airbench (Jordan 2024) evaluates on both mirrors.
    # - 5% warm-up: plain-ViT baselines (Beyer et al. 2022) warm up for a short fraction.
    "vit-fast": TrainConfig(
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
}


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


class TrainingOutOfMemory(RuntimeError):
    """The GPU ran out of memory; the message names the batch size to try instead."""


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


def divergence_advice(device: torch.device, amp: torch.dtype | None, batch_size: int) -> str:
    """What to try after a NaN/inf loss, for the precision that the run actually used."""
    if amp is torch.float16:
        return (
            "fp16 overflow is the usual cause on a T4: lower --lr (e.g. to half). --amp off also "
            "avoids it but needs about twice the activation memory: pair it with "
            f"--batch-size {max(1, batch_size // 4)} or less on a 15 GB GPU"
        )
    if amp is torch.bfloat16:
        return (
            "lower --lr (e.g. to half); bf16 has the range of fp32, so precision is not the cause"
        )
    where = "on the CPU" if device.type == "cpu" else "in full precision"
    return f"lower --lr (e.g. to half); the run was {where}, so mixed precision is not the cause"


def is_out_of_memory(err: BaseException) -> bool:
    """True for a CUDA out-of-memory error, also when wrapped (e.g. by torch.compile)."""
    seen: set[int] = set()
    e: BaseException | None = err
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, _OOM_ERRORS) or "out of memory" in str(e).lower():
            return True
        e = e.__cause__ or e.__context__
    return False


def out_of_memory_message(
    cfg: TrainConfig, model_cfg: ViTConfig, amp: torch.dtype | None, *, phase: str, epochs_done: int
) -> str:
    """One line: where memory ran out, at which batch size, and the batch size to try instead."""
    precision = str(amp).replace("torch.", "") if amp is not None else "fp32"
    if phase == "evaluation":
        return (
            f"the GPU ran out of memory during evaluation at eval_batch_size {cfg.eval_batch_size} "
            f"({precision}); use a smaller eval_batch_size, e.g. {max(1, cfg.eval_batch_size // 4)}"
        )
    where = (
        "choose a new --out for it (this folder's epochs used the old batch size)"
        if epochs_done
        else "nothing was saved yet"
    )
    return (
        f"the GPU ran out of memory in training at --batch-size {cfg.batch_size} "
        f"(dim {model_cfg.dim}, depth {model_cfg.depth}, {precision}); rerun with --batch-size "
        f"{max(1, cfg.batch_size // 2)} (the learning rate follows the batch size); {where}"
    )


def load_optimizer_state(opt: torch.optim.Optimizer, saved: dict[str, Any]) -> None:
    """``opt.load_state_dict(saved)`` with the state placed as *this* optimizer expects.

    torch places ``state["step"]`` by the *saved* groups' ``fused``/``capturable`` flags
    (pytorch#124133): a state saved by a non-fused CPU optimizer keeps its steps on the CPU, and the
    first fused CUDA step fails. So the saved groups take this optimizer's flags before loading;
    ``saved`` itself is not changed.
    """
    flags = ("fused", "capturable", "foreach", "differentiable")
    groups = [
        {**g, **{k: target[k] for k in flags if k in target}}
        for g, target in zip(saved["param_groups"], opt.param_groups)
    ]
    opt.load_state_dict({"state": saved["state"], "param_groups": groups})


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
    if "cuda" in state and torch.cuda.is_available():  # as many GPUs as both runs have
        for i, gpu_state in enumerate(state["cuda"][: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(gpu_state, i)


def _make_loader(splits: Splits, cfg: TrainConfig, device: torch.device):
    """The training loader; the one place where ``cfg.loader`` and ``cfg.gpu_aug`` are read.

    - "sample": torchvision's per-sample transforms in ``num_workers`` processes (the reference
      path, and the original notebook's).
    - "batch": ``BatchAugment`` on whole batches: on the GPU with the data resident there
      (``gpu_aug``, the default with CUDA), else in ``num_workers`` CPU threads (≈ 35k images/s
      on 2 threads, bench_input.py), batches then copied to ``device``.
    - "auto": batch on CUDA, sample on the CPU.
    """
    kind = cfg.loader if cfg.loader != "auto" else ("batch" if device.type == "cuda" else "sample")
    on_gpu = kind == "batch" and device.type == "cuda" and cfg.gpu_aug is not False
    if cfg.gpu_aug and device.type != "cuda":
        warnings.warn(
            "--gpu-aug needs a CUDA GPU; none is in use, so the CPU augmentation path is used",
            stacklevel=3,
        )
    if on_gpu:
        need = splits.train.images.numel() + splits.train.labels.numel() * 8
        free, _ = torch.cuda.mem_get_info(device)
        if need > 0.5 * free:
            warnings.warn(
                f"the training set needs {need / 2**30:.1f} GiB and the GPU has {free / 2**30:.1f} GiB free; "
                "using the CPU augmentation path instead of --gpu-aug",
                stacklevel=3,
            )
            on_gpu = False
    batch = {"batch_size": cfg.batch_size, "aug": cfg.augment, "seed": cfg.seed}
    if kind == "batch":
        data = splits.train.to(device) if on_gpu else splits.train
        return BatchLoader(
            data, device=device, repeats=cfg.repeats, threads=max(1, cfg.num_workers), **batch
        )
    if cfg.repeats > 1:
        log.info(
            "repeated augmentation needs the batch loader; the sample loader ignores repeats=%d",
            cfg.repeats,
        )
    return SampleLoader(splits.train, num_workers=cfg.num_workers, **batch)


class _Stepper:
    """One optimisation step: forward and backward (compiled when asked), clipping, the
    optimizer, scaler and schedule steps, the EMA update. No host sync.

    With ``compile``, a failure anywhere in the compiled forward *or* backward (torch compiles the
    backward lazily, at the first ``.backward()``) warns once, and the step is redone eagerly from
    then on. An out-of-memory error is never taken for a compile failure: it propagates.
    """

    def __init__(
        self,
        model: nn.Module,
        opt: torch.optim.Optimizer,
        sched: torch.optim.lr_scheduler.LRScheduler,
        scaler: torch.amp.GradScaler,
        cfg: TrainConfig,
        *,
        amp: torch.dtype | None,
        device: torch.device,
        ema: nn.Module | None = None,
        wrapped: nn.Module | None = None,
        compile_fn=None,
    ) -> None:
        self.model, self.opt, self.sched, self.scaler, self.cfg = model, opt, sched, scaler, cfg
        self.amp, self.device, self.ema = amp, device, ema
        self.net = wrapped if wrapped is not None else model  # what the forward runs (DDP or model)
        self.compiled = None
        if compile_fn is not None:
            try:
                self.compiled = compile_fn(self.net)
            except Exception as err:  # noqa: BLE001 - any compiler failure means: run eagerly
                self._fallback(err)

    def _fallback(self, err: BaseException) -> None:
        if is_out_of_memory(err):
            raise err
        warnings.warn(
            f"torch.compile failed ({type(err).__name__}: {str(err)[:200]}); training in eager mode",
            stacklevel=4,
        )
        self.compiled = None

    def _forward_backward(self, forward, x: torch.Tensor, y: torch.Tensor):
        self.opt.zero_grad(set_to_none=True)
        with torch.autocast(self.device.type, dtype=self.amp, enabled=self.amp is not None):
            logits = forward(x)
        loss = soft_cross_entropy(logits, y, self.cfg.label_smoothing)
        self.scaler.scale(loss).backward()
        return logits, loss

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits, loss) of one step on the batch (x, soft targets y); the weights are updated."""
        if self.compiled is not None:
            try:
                logits, loss = self._forward_backward(self.compiled, x, y)
            except Exception as err:  # noqa: BLE001
                if self.net is not self.model and not is_out_of_memory(err):
                    # DDP may be half-way through reducing this step's gradients: no redo.
                    raise ValueError(
                        f"torch.compile failed under torchrun ({type(err).__name__}: "
                        f"{str(err)[:200]}); rerun without --compile"
                    ) from err
                self._fallback(err)
                logits, loss = self._forward_backward(self.net, x, y)
        else:
            logits, loss = self._forward_backward(self.net, x, y)
        if self.cfg.grad_clip:
            self.scaler.unscale_(self.opt)
            nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        self.scaler.step(self.opt)
        self.scaler.update()
        t = self.sched.last_epoch  # optimisation steps done before this one
        self.sched.step()
        if self.ema is not None:
            decay = min(self.cfg.ema_decay, (1 + t) / (10 + t))
            with torch.no_grad():
                torch._foreach_lerp_(
                    list(self.ema.parameters()), list(self.model.parameters()), 1.0 - decay
                )
        return logits, loss


@dataclass
class RunResult:
    """What ``train`` returns: the run folder, per-epoch history and the best validation accuracy."""

    out_dir: Path
    history: list[dict[str, Any]]
    best_val_acc: float
    best_epoch: int


def _checkpoint(
    model, ema, opt, sched, scaler, epoch, best, history, model_cfg, cfg, data, runtime, rng
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
        "rng": rng,  # the random streams (every rank's own under torchrun: RankStreams)
        "model_config": model_cfg.to_dict(),
        "train_config": cfg.to_dict(),
        "classes": list(data["classes"]),
        "data": data,  # Splits.fingerprint(): the split a resume must see again
        "runtime": runtime,  # the device and autocast dtype actually used
    }


def _config_diff(a: dict[str, Any], b: dict[str, Any], skip: tuple[str, ...] = ()) -> list[str]:
    return [
        f"{k}: {a.get(k)!r} -> {b.get(k)!r}"
        for k in sorted(set(a) | set(b))
        if k not in skip and a.get(k) != b.get(k)
    ]


def _stored_configs(state: dict[str, Any], path: Path) -> tuple[ViTConfig, TrainConfig]:
    try:
        return ViTConfig.from_dict(state["model_config"]), TrainConfig.from_dict(
            state["train_config"]
        )
    except (TypeError, ValueError) as err:
        raise CheckpointError(
            f"{path} has settings this version cannot read ({err}); use the vitcifar version that "
            "wrote it, or choose another --out"
        ) from err


def _with_runtime(cfg: TrainConfig, runtime_of: TrainConfig) -> TrainConfig:
    """``cfg`` with the machine settings (``RUNTIME_FIELDS``) of ``runtime_of``."""
    return replace(cfg, **{k: getattr(runtime_of, k) for k in RUNTIME_FIELDS})


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

    With an existing ``last.pt``: its stored recipe must equal the given one (else a ValueError
    names the differences, and nothing is overwritten), unless ``resume=True``, which continues
    with the stored recipe. Machine settings (``RUNTIME_FIELDS``: device, precision, loader,
    workers, compile) may change between calls, e.g. a run started on the CPU continues on a GPU.
    ``resume=True`` without ``last.pt`` is an error, and so is a folder that holds another run's
    files but no ``last.pt``. ``stop_after`` ends this call after that many epochs (the schedule
    still spans ``cfg.epochs``); calling again continues, e.g. across Colab sessions.

    Under ``torchrun`` (``vitcifar.distributed``) every process calls ``train`` alike: each takes
    its shard of every global batch of ``cfg.batch_size``, and rank 0 alone writes the run folder.
    A run may resume with another number of processes.
    """
    from tqdm.auto import tqdm

    folder = RunFolder(out_dir)
    state = None
    if folder.last.exists():
        state = load_checkpoint(folder.last)
        stored_model, stored_cfg = _stored_configs(state, folder.last)
        if resume:
            model_cfg, cfg = stored_model, _with_runtime(stored_cfg, cfg)
        else:
            diff = _config_diff(stored_model.to_dict(), model_cfg.to_dict()) + _config_diff(
                stored_cfg.to_dict(), cfg.to_dict(), skip=RUNTIME_FIELDS
            )
            if diff:
                raise ValueError(
                    f"{folder.last} is a run with other settings ({'; '.join(diff)}); pass --resume "
                    "to continue it with its own settings, or choose another --out"
                )
    elif resume:
        raise FileNotFoundError(f"nothing to resume: {folder.last} does not exist")
    else:
        folder.check_new_run()
    data = splits.fingerprint()
    if state is not None and state.get("data", {}).get("digest") not in (None, data["digest"]):
        was = state["data"]
        raise DataError(
            f"{folder.last} was trained on other data ({was['train']} train / {was['val']} val images "
            f"from {was.get('source')}); now {data['train']} / {data['val']} from {data['source']}. "
            "Resume with the same --data, --subset, --val-size and --seed, or choose another --out"
        )
    if model_cfg.num_classes != len(splits.classes):
        raise DataError(
            f"the model has num_classes={model_cfg.num_classes} but the data has {len(splits.classes)} classes"
        )
    dist = Distributed.from_env()
    dist.check_batch(cfg.batch_size)
    if dist.is_main:
        folder.ensure_writable()
        folder.reconcile(state)
    dist.barrier()
    progress = progress and dist.is_main

    device = dist.device(resolve_device(cfg.device))
    amp = resolve_amp(cfg.amp, device)
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    model = ViT(model_cfg).to(device)
    ema = copy.deepcopy(model).requires_grad_(False) if cfg.ema_decay else None
    opt = torch.optim.AdamW(
        param_groups(model, cfg.weight_decay),
        lr=cfg.peak_lr,
        betas=(0.9, 0.999),
        fused=device.type == "cuda",
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
    if dist.enabled:
        runtime["processes"] = dist.world_size
    start_epoch, best, history = 0, (-1.0, -1), []
    if state is not None:
        load_state_into(model, state["model"], folder.last)
        if ema is not None and state.get("ema") is not None:
            load_state_into(ema, state["ema"], folder.last)
        load_optimizer_state(opt, state["optimizer"])
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
        log.info("resuming %s at epoch %d of %d", folder.path, start_epoch + 1, cfg.epochs)
    step = _Stepper(
        model,
        opt,
        sched,
        scaler,
        cfg,
        amp=amp,
        device=device,
        ema=ema,
        wrapped=dist.wrap(model),
        compile_fn=torch.compile if cfg.compile else None,
    )
    # DDP has broadcast the weights: from here each rank draws its own dropout and drop-path
    # masks (seed + rank), and the data's draws stay the same on every rank.
    streams = RankStreams(
        dist, cfg.seed, device, state["rng"] if state is not None else None, start_epoch
    )
    val_set = splits.val if len(splits.val) else splits.test
    if not len(splits.val):
        log.warning("val_size=0: picking best.pt on the test set, as the original notebook did")

    end_epoch = cfg.epochs if stop_after is None else min(cfg.epochs, start_epoch + stop_after)
    for epoch in range(start_epoch, end_epoch):
        phase, t0, oom = "training", time.perf_counter(), None
        try:
            loader.set_epoch(epoch, mix=epoch < cfg.mix_epochs)
            row = _train_epoch(
                step, loader, epoch, cfg, device, amp, folder, progress, dist, streams
            )
            phase = "evaluation"
            val_loss, val_acc, _ = evaluate_model(
                ema if ema is not None else model,
                val_set,
                device=device,
                batch_size=cfg.eval_batch_size,
                amp=amp,
                tta_flip=cfg.tta_flip,
            )
        except Exception as err:
            if not is_out_of_memory(err):  # also finds one wrapped by torch.compile
                raise
            oom = out_of_memory_message(cfg, model_cfg, amp, phase=phase, epochs_done=epoch)
        if oom is not None:  # raised here, not in the except: the failed step's tensors are freed
            if device.type == "cuda":
                torch.cuda.empty_cache()
            raise TrainingOutOfMemory(oom)
        if not math.isfinite(val_loss):  # weights went bad in the epoch's last steps
            raise TrainingDiverged(
                f"the validation loss became {val_loss} after epoch {epoch + 1}; {folder.last} keeps "
                f"the last good epoch. {divergence_advice(device, amp, cfg.batch_size)}"
            )
        row.update(val_loss=val_loss, val_acc=val_acc, seconds=time.perf_counter() - t0)
        history.append(row)
        is_best = val_acc > best[0]
        if is_best:
            best = (val_acc, epoch + 1)
        rng = streams.state(_rng_state())  # every rank: a collective under torchrun
        if dist.is_main:
            ckpt = _checkpoint(
                model,
                ema,
                opt,
                sched,
                scaler,
                epoch + 1,
                best,
                history,
                model_cfg,
                cfg,
                data,
                runtime,
                rng,
            )
            folder.commit(ckpt, is_best=is_best)
        dist.barrier()
        msg = (
            f"epoch {epoch + 1}/{cfg.epochs}  loss {row['train_loss']:.4f}  train acc {row['train_acc']:.4f}  "
            f"val acc {val_acc:.4f}  {row['seconds']:.1f}s  {row['images_per_s']:.0f} img/s"
        )
        if progress:
            tqdm.write(msg)
        elif dist.is_main:
            log.info(msg)
    return RunResult(folder.path, history, best[0], best[1])


def _train_epoch(
    step, loader, epoch, cfg, device, amp, folder, progress, dist, streams
) -> dict[str, Any]:
    """One pass over ``loader`` (this rank's shard of each global batch); returns the epoch's
    training row of the history, summed over all ranks."""
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    step.model.train()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device)
    seen, steps = 0, len(loader)
    bar = tqdm(
        streams.batches(loader),
        total=steps,
        desc=f"epoch {epoch + 1}/{cfg.epochs}",
        disable=not progress,
        leave=False,
        dynamic_ncols=True,
    )
    for i, (x, y) in enumerate(bar):
        x = dist.shard(x).to(device, non_blocking=True)
        y = dist.shard(y).to(device, non_blocking=True)
        logits, loss = step(x, y)
        loss_sum += loss.detach() * len(x)
        correct += (logits.argmax(-1) == y.argmax(-1)).sum()
        seen += len(x)
        if i % 25 == 0 or i == steps - 1:  # the only host syncs inside an epoch
            checked = loss_sum.clone()
            dist.sum(checked)  # every rank sees a NaN on any rank, and stops alike
            mean_loss = float(checked) / (seen * dist.world_size)
            if not math.isfinite(mean_loss):
                raise TrainingDiverged(
                    f"the training loss became {mean_loss} at epoch {epoch + 1}, step {i + 1}; "
                    f"{folder.last} keeps the last good epoch. "
                    f"{divergence_advice(device, amp, cfg.batch_size)}"
                )
            bar.set_postfix(
                loss=f"{mean_loss:.3f}",
                acc=f"{float(correct) / seen:.3f}",
                lr=f"{step.sched.get_last_lr()[0]:.2e}",
                ips=f"{seen / (time.perf_counter() - t0):.0f}",
            )
    total = torch.tensor(float(seen), device=device)
    dist.sum(loss_sum, correct, total)  # the global batch's numbers, as in one process
    seen = float(total)
    train_seconds = time.perf_counter() - t0
    return {
        "epoch": epoch + 1,
        "lr": step.sched.get_last_lr()[0],
        "train_loss": float(loss_sum) / seen,
        "train_acc": float(correct) / seen,
        "train_seconds": train_seconds,
        "images_per_s": seen / train_seconds,
    }


def config_for_preset(preset: str, **train_overrides: Any) -> tuple[ViTConfig, TrainConfig]:
    """(model config, train config) of a named preset, with TrainConfig overrides."""
    check_choice("preset", preset, tuple(PRESETS))
    return PRESETS[preset], replace(TRAIN_PRESETS[preset], **train_overrides)
