"""Training: AdamW + one-cycle schedule + soft-target cross-entropy, with exact resume.

The loop, read top to bottom in ``train``: load or check the run folder's last.pt, build the
model, optimizer, schedule and loader, restore the resume state, then per epoch train
(``_train_epoch``), evaluate (``evaluate.evaluate_model``) and write the run folder
(``checkpoint.RunFolder``: last.pt after every epoch, best.pt on a new best validation accuracy,
metrics.jsonl; a kill at any instant leaves a folder that the same call finishes from).

Its parts live beside it: the recipe and the presets in ``config``, the device, precision and
failure messages in ``machine``, the resume state (``TrainState``) in ``checkpoint``. The pieces
here are pure functions (``one_cycle_lr``, ``param_groups``, ``soft_cross_entropy``), the
loader choice (``make_loader``) and one optimisation step (``Stepper``).
"""

from __future__ import annotations

import contextlib
import copy
import functools
import logging
import math
import os
import random
import time
import warnings
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vitcifar.checkpoint import (
    CheckpointError,
    Mirror,
    MirrorPolicy,
    RunFolder,
    TrainState,
    config_diff,
    hold_folder,
    load_checkpoint,
    load_optimizer_state,
    load_state_into,
    rng_state,
    set_rng_state,
    stored_configs,
)
from vitcifar.config import (
    RUNTIME_FIELDS,
    TRAIN_PRESETS,
    TrainConfig,
    ViTConfig,
    config_for_preset,
)
from vitcifar.data import BatchLoader, DataError, SampleLoader, Splits, check_fits_model
from vitcifar.distributed import Distributed, RankStreams
from vitcifar.evaluate import evaluate_model
from vitcifar.machine import (
    CLI_KNOBS,
    Knobs,
    TrainingDiverged,
    TrainingOutOfMemory,
    divergence_advice,
    is_out_of_memory,
    out_of_memory_message,
    precision_name,
    resolve_amp,
    resolve_device,
)
from vitcifar.model import ViT

__all__ = [
    "TRAIN_PRESETS",
    "RunResult",
    "Stepper",
    "TrainConfig",
    "TrainingDiverged",
    "TrainingOutOfMemory",
    "config_for_preset",
    "divergence_advice",
    "eta_text",
    "evaluate_model",
    "is_out_of_memory",
    "load_optimizer_state",
    "make_loader",
    "one_cycle_lr",
    "param_groups",
    "resolve_amp",
    "resolve_device",
    "soft_cross_entropy",
    "train",
]
# Re-exported above for the old import paths (``from vitcifar.train import TrainConfig,
# resolve_device, evaluate_model, ...``): they live in config, machine, evaluate and checkpoint.

log = logging.getLogger(__name__)


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


def eta_text(epochs_left: float, epoch_seconds: list[float]) -> str:
    """The run's ETA: ``epochs_left`` x the mean of ``epoch_seconds`` (this session's epochs:
    resumed ones ran on another machine or day). "2h 05m", "4m 10s", "12s"; "?" with none yet."""
    if not epoch_seconds:
        return "?"
    s = round(max(0.0, epochs_left) * sum(epoch_seconds) / len(epoch_seconds))
    if s >= 3600:
        return f"{s // 3600}h {s % 3600 // 60:02d}m"
    return f"{s // 60}m {s % 60:02d}s" if s >= 60 else f"{s}s"


# ----------------------------------------------------------------------------- the loop


def make_loader(splits: Splits, cfg: TrainConfig, device: torch.device):
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


class Stepper:
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


def _locking_the_run_folder(train_fn):
    """``train`` with its run folder locked for the call (``checkpoint.hold_folder``; under
    torchrun rank 0 holds it and every rank learns whether it got it)."""

    @functools.wraps(train_fn)
    def locked(model_cfg, splits, cfg, out_dir, **kwargs) -> RunResult:
        if not str(out_dir).strip():
            raise ValueError("the run folder is an empty path; name one, e.g. --out runs/demo")
        folder = RunFolder(out_dir)
        folder.check_writable()
        # the group's backend follows the device ("auto": CUDA when there, as resolve_device)
        dist = Distributed.from_env(None if cfg.device == "auto" else cfg.device)
        with contextlib.ExitStack() as held:
            held.enter_context(hold_folder(folder.path, command="train", dist=dist))
            if kwargs.get("local_dir") is not None:  # the session's copy of a mirrored run too
                held.enter_context(hold_folder(kwargs["local_dir"], command="train", dist=dist))
            return train_fn(model_cfg, splits, cfg, out_dir, **kwargs)

    return locked


@_locking_the_run_folder
def train(
    model_cfg: ViTConfig,
    splits: Splits,
    cfg: TrainConfig,
    out_dir: str | os.PathLike,
    *,
    resume: bool = False,
    progress: bool = True,
    stop_after: int | None = None,
    local_dir: str | os.PathLike | None = None,
    mirror_policy: MirrorPolicy | None = None,
    knobs: Knobs = CLI_KNOBS,
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

    The run folder is locked for the call (``checkpoint.hold_folder``; rank 0 holds it): a second
    writer, e.g. a torchrun worker that outlived a killed torchrun, is refused with
    ``FolderLockedError`` naming its PID.
    ``local_dir``: train into this folder (the session's disk) and mirror it to ``out_dir``
    (e.g. Google Drive) when ``mirror_policy`` says, and at the end of the call
    (``checkpoint.Mirror``); a run continues from the newer of the two. ``knobs`` names the
    settings in error messages: ``CLI_KNOBS`` (flags) or a notebook's own table.
    """
    from tqdm.auto import tqdm

    if not isinstance(splits, Splits):
        raise TypeError(
            f"splits must be a vitcifar Splits (from load_splits, or Splits(train, val, test) of "
            f"ImageSets), got {type(splits).__name__}"
        )
    if local_dir is not None:
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise ValueError("a mirrored run folder (local_dir) is for one process, not torchrun")
        folder = RunFolder(local_dir, mirror=Mirror(out_dir, mirror_policy, knobs=knobs))
        folder.mirror.restore(folder)
    else:
        folder = RunFolder(out_dir)
    saved, state = None, None  # last.pt as read, and as a TrainState
    if folder.last.exists():
        try:
            saved = load_checkpoint(folder.last)
        except CheckpointError as err:  # damaged outside our writes (a disk, a sync, a hand)
            best_pt = folder.path / "best.pt"
            way = (
                f"copy {best_pt} over last.pt to go on from its epoch, or "
                if best_pt.exists()
                else ""
            )
            raise CheckpointError(f"{err}; {way}choose another {knobs('out')}") from err
        state = TrainState.from_dict(saved, folder.last)
        stored_model, stored_cfg = stored_configs(state, folder.last)
        if resume:
            model_cfg, cfg = stored_model, stored_cfg.with_runtime_of(cfg)
        else:
            diff = config_diff(stored_model.to_dict(), model_cfg.to_dict()) + config_diff(
                stored_cfg.to_dict(), cfg.to_dict(), skip=RUNTIME_FIELDS
            )
            if diff:
                raise ValueError(
                    f"{folder.last} is a run with other settings ({'; '.join(diff)}); "
                    f"{knobs.switch('resume')} to continue it with its own settings, or choose "
                    f"another {knobs('out')}"
                )
    elif resume:
        raise FileNotFoundError(f"nothing to resume: {folder.last} does not exist")
    else:
        folder.check_new_run()
    data = splits.fingerprint()
    if state is not None and state.data.get("digest") not in (None, data["digest"]):
        was = state.data
        raise DataError(
            f"{folder.last} was trained on other data ({was['train']} train / {was['val']} val images "
            f"from {was.get('source')}); now {data['train']} / {data['val']} from {data['source']}. "
            f"Resume with the same {knobs('data')}, {knobs('subset')}, {knobs('val_size')} and "
            f"{knobs('seed')}, or choose another {knobs('out')}"
        )
    if model_cfg.num_classes != len(splits.classes):
        raise DataError(
            f"the model has num_classes={model_cfg.num_classes} but the data has {len(splits.classes)} classes"
        )
    check_fits_model(splits.train, model_cfg, "training")
    check_fits_model(splits.val, model_cfg, "validation")
    dist = Distributed.from_env(resolve_device(cfg.device, knobs=knobs))
    dist.check_batch(cfg.batch_size)
    if dist.is_main:
        folder.ensure_writable()
        folder.reconcile(saved)
    dist.barrier()
    progress = progress and dist.is_main

    device = dist.device(resolve_device(cfg.device, knobs=knobs))
    amp = resolve_amp(cfg.amp, device, knobs=knobs)
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
    loader = make_loader(splits, cfg, device)
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
    runtime = {"device": device.type, "amp": precision_name(amp)}
    if dist.enabled:
        runtime["processes"] = dist.world_size
    start_epoch, best, history = 0, (-1.0, -1), []
    if state is not None:
        load_state_into(model, state.model, folder.last)
        if ema is not None and state.ema is not None:
            load_state_into(ema, state.ema, folder.last)
        load_optimizer_state(opt, state.optimizer)
        sched.load_state_dict(state.scheduler)
        if state.scaler and scaler.is_enabled():  # an fp16 scaler's state, continued on a T4
            scaler.load_state_dict(state.scaler)
        if state.runtime and state.runtime != runtime:  # files before "runtime" have none
            log.warning(
                "resuming on %s (was %s): training continues, but not bit-for-bit as it would have",
                runtime,
                state.runtime,
            )
        start_epoch, best, history = state.epoch, state.best, state.history
        set_rng_state(state.rng)
        if start_epoch < cfg.epochs:
            log.info("resuming %s at epoch %d of %d", folder.path, start_epoch + 1, cfg.epochs)
        else:  # a finished run called again (e.g. Run all after the end): nothing to train
            log.info("%s is complete (%d of %d epochs)", folder.path, start_epoch, cfg.epochs)
    step = Stepper(
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
        dist, cfg.seed, device, state.rng if state is not None else None, start_epoch
    )
    val_set = splits.val if len(splits.val) else splits.test
    if not len(splits.val):
        log.warning("val_size=0: picking best.pt on the test set, as the original notebook did")

    end_epoch = cfg.epochs if stop_after is None else min(cfg.epochs, start_epoch + stop_after)
    session: list[float] = []  # this call's epoch times (s): the ETA's mean
    advice = partial(divergence_advice, device, amp, cfg.batch_size, knobs=knobs)
    for epoch in range(start_epoch, end_epoch):
        phase, t0, oom = "training", time.perf_counter(), None
        try:
            loader.set_epoch(epoch, mix=epoch < cfg.mix_epochs)
            row = _train_epoch(
                step, loader, epoch, cfg, folder, progress, dist, streams, session, advice
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
            oom = out_of_memory_message(
                cfg, model_cfg, amp, phase=phase, epochs_done=epoch, knobs=knobs
            )
        if oom is not None:  # raised here, not in the except: the failed step's tensors are freed
            if device.type == "cuda":
                torch.cuda.empty_cache()
            raise TrainingOutOfMemory(oom)
        if not math.isfinite(val_loss):  # weights went bad in the epoch's last steps
            raise TrainingDiverged(
                f"the validation loss became {val_loss} after epoch {epoch + 1}; {folder.last} keeps "
                f"the last good epoch. {advice()}"
            )
        row.update(val_loss=val_loss, val_acc=val_acc, seconds=time.perf_counter() - t0)
        history.append(row)
        session.append(row["seconds"])
        is_best = val_acc > best[0]
        if is_best:
            best = (val_acc, epoch + 1)
        rng = streams.state(rng_state())  # every rank: a collective under torchrun
        if dist.is_main:
            state = TrainState(
                model=model.state_dict(),
                ema=ema.state_dict() if ema is not None else None,
                optimizer=opt.state_dict(),
                scheduler=sched.state_dict(),
                scaler=scaler.state_dict(),
                epoch=epoch + 1,  # epochs completed
                best_val_acc=best[0],
                best_epoch=best[1],
                history=history,
                rng=rng,  # the random streams (every rank's own under torchrun: RankStreams)
                model_config=model_cfg.to_dict(),
                train_config=cfg.to_dict(),
                classes=list(data["classes"]),
                data=data,  # Splits.fingerprint(): the split a resume must see again
                runtime=runtime,  # the device and autocast dtype actually used
            )
            folder.commit(state.to_dict(), is_best=is_best)
        dist.barrier()
        msg = (
            f"epoch {epoch + 1}/{cfg.epochs}  loss {row['train_loss']:.4f}  train acc {row['train_acc']:.4f}  "
            f"val acc {val_acc:.4f}  {row['seconds']:.1f}s  {row['images_per_s']:.0f} img/s  "
            f"ETA {eta_text(cfg.epochs - epoch - 1, session)}"
        )
        if progress:
            tqdm.write(msg)
        elif dist.is_main:
            log.info(msg)
    if dist.is_main:
        folder.finish()  # the mirror, if any, gets the end of this call
    return RunResult(Path(out_dir), history, best[0], best[1])


def _train_epoch(
    step, loader, epoch, cfg, folder, progress, dist, streams, session, advice
) -> dict[str, Any]:
    """One pass over ``loader`` (this rank's shard of each global batch); returns the epoch's
    training row of the history, summed over all ranks. The bar's ETA is the run's: the epochs
    left (this one's unfinished part included) x the mean epoch time of ``session``, or of this
    epoch so far in a session's first."""
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    device = step.device
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
                    f"{folder.last} keeps the last good epoch. {advice()}"
                )
            bar.set_postfix(
                loss=f"{mean_loss:.3f}",
                acc=f"{float(correct) / seen:.3f}",
                lr=f"{step.sched.get_last_lr()[0]:.2e}",
                ips=f"{seen / (time.perf_counter() - t0):.0f}",
                eta=eta_text(
                    cfg.epochs - epoch - (i + 1) / steps,
                    session or [(time.perf_counter() - t0) * steps / (i + 1)],
                ),
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
