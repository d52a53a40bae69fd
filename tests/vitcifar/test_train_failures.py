"""What happens when the machine changes or fails: cross-device optimizer state, the compile
fall-back, out-of-memory and divergence advice, the loader choice, runtime settings on resume."""

from __future__ import annotations

import warnings
from dataclasses import replace

import pytest
import torch

from vitcifar.data import BatchLoader, SampleLoader, load_splits, normalize
from vitcifar.model import ViT, ViTConfig
from vitcifar.train import (
    TRAIN_PRESETS,
    Stepper,
    TrainConfig,
    TrainingOutOfMemory,
    divergence_advice,
    is_out_of_memory,
    load_optimizer_state,
    make_loader,
    param_groups,
    train,
)

OOM = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)


def tiny_model(seed: int = 0) -> ViT:
    torch.manual_seed(seed)
    return ViT(
        ViTConfig(
            patch_size=8, dim=32, depth=2, heads=2, num_classes=4, dropout=0.0, emb_dropout=0.0
        )
    )


def batch(seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(8, 3, 32, 32, generator=g)
    y = torch.nn.functional.one_hot(torch.randint(0, 4, (8,), generator=g), 4).float()
    return x, y


def stepper(model, cfg=None, compile_fn=None):
    cfg = cfg or TrainConfig(device="cpu", lr=1e-3)
    opt = torch.optim.AdamW(param_groups(model, 0.05), lr=1e-3)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    return Stepper(
        model, opt, sched, scaler, cfg, amp=None, device=torch.device("cpu"), compile_fn=compile_fn
    )


# ----------------------------------------------------------------------------- optimizer state


def test_fused_optimizer_after_a_non_fused_save_has_its_state_placed_for_fused():
    model = tiny_model()
    plain = torch.optim.AdamW(param_groups(model, 0.05), lr=1e-3, fused=False)
    x, y = batch()
    torch.nn.functional.cross_entropy(model(x), y).backward()
    plain.step()
    saved = plain.state_dict()

    fused = torch.optim.AdamW(param_groups(model, 0.05), lr=1e-3, fused=True)
    load_optimizer_state(fused, saved)
    params = [p for g in fused.param_groups for p in g["params"]]
    for p in params:
        step = fused.state[p]["step"]
        assert step.dtype == torch.float32 and step.device == p.device and float(step) == 1.0
    assert all(g["fused"] for g in fused.param_groups)
    assert not any(g["fused"] for g in saved["param_groups"])  # the saved dict is left alone

    before = [p.detach().clone() for p in params]
    model.zero_grad()
    torch.nn.functional.cross_entropy(model(x), y).backward()
    fused.step()  # one fused step from a non-fused save (torch >= 2.4 has fused AdamW on the CPU)
    assert all(float(fused.state[p]["step"]) == 2.0 for p in params)
    assert any(not torch.equal(a, p) for a, p in zip(before, params))


def test_non_fused_optimizer_after_a_fused_save_keeps_float32_steps_on_the_cpu():
    model = tiny_model()
    fused = torch.optim.AdamW(param_groups(model, 0.05), lr=1e-3, fused=True)
    x, y = batch()
    torch.nn.functional.cross_entropy(model(x), y).backward()
    fused.step()
    plain = torch.optim.AdamW(param_groups(model, 0.05), lr=1e-3, fused=False)
    load_optimizer_state(plain, fused.state_dict())
    assert not any(g["fused"] for g in plain.param_groups)
    for state in plain.state.values():
        assert state["step"].device.type == "cpu" and state["step"].dtype == torch.float32
    plain.step()


# ----------------------------------------------------------------------------- compile fall-back


class _BackwardFails(torch.autograd.Function):
    """Stands in for a compiled graph whose lazily compiled backward fails."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        raise RuntimeError("backend compiler failed while compiling the backward graph")


def test_compile_failure_in_the_backward_falls_back_to_eager_for_that_same_step():
    eager, compiled = tiny_model(), tiny_model()
    x, y = batch()
    stepper(eager)(x, y)
    s = stepper(compiled, compile_fn=lambda m: lambda inp: _BackwardFails.apply(m(inp)))
    with pytest.warns(UserWarning, match="torch.compile failed .*backward.*eager mode"):
        s(x, y)
    assert s.compiled is None
    for a, b in zip(eager.parameters(), compiled.parameters()):
        assert torch.equal(a, b)  # the failed step was redone eagerly, exactly once


def test_out_of_memory_is_never_reported_as_a_compile_failure():
    def oom(inp):
        raise OOM("CUDA out of memory. Tried to allocate 2.00 GiB")

    s = stepper(tiny_model(), compile_fn=lambda m: oom)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "torch.compile failed" warning
        with pytest.raises(OOM):
            s(*batch())
    wrapped = RuntimeError("backend compiler failed")
    wrapped.__cause__ = OOM("CUDA out of memory")
    assert is_out_of_memory(wrapped) and not is_out_of_memory(RuntimeError("shape mismatch"))


def test_out_of_memory_in_training_names_the_batch_size_to_try(image_folder, tmp_path, monkeypatch):
    splits = load_splits(str(image_folder), val_size=16, subset=64, progress=False)
    cfg = TrainConfig(epochs=1, batch_size=32, device="cpu", num_workers=0)

    def forward(self, x):
        raise OOM("CUDA out of memory. Tried to allocate 12.70 GiB")

    monkeypatch.setattr(ViT, "forward", forward)
    with pytest.raises(TrainingOutOfMemory) as err:
        train(tiny_model().config, splits, cfg, tmp_path / "run", progress=False)
    msg = str(err.value)
    assert "--batch-size 32" in msg and "--batch-size 16" in msg and "\n" not in msg
    assert not (tmp_path / "run" / "last.pt").exists()


def test_divergence_advice_fits_the_precision_used():
    cuda = torch.device("cuda")
    fp16 = divergence_advice(cuda, torch.float16, 1024)
    assert "--amp off" in fp16 and "--batch-size 256" in fp16
    assert "--amp off" not in divergence_advice(cuda, torch.bfloat16, 1024)
    cpu = divergence_advice(torch.device("cpu"), None, 1024)
    assert "--lr" in cpu and "--amp" not in cpu


# ----------------------------------------------------------------------------- loaders, configs


def test_loader_choice(image_folder):
    splits = load_splits(str(image_folder), val_size=16, subset=64, progress=False)
    cpu = torch.device("cpu")
    base = TrainConfig(batch_size=16, device="cpu", num_workers=0)
    assert isinstance(make_loader(splits, base, cpu), SampleLoader)  # auto on the CPU
    assert isinstance(make_loader(splits, replace(base, loader="batch"), cpu), BatchLoader)
    assert isinstance(make_loader(splits, replace(base, loader="sample"), cpu), SampleLoader)
    with pytest.raises(
        ValueError, match="loader=.gpu. is not supported; choose one of .auto., .sample., .batch."
    ):
        TrainConfig(loader="gpu")
    with pytest.raises(ValueError, match="gpu_aug needs the batch loader"):
        TrainConfig(loader="sample", gpu_aug=True)


def test_mix_off_is_a_fraction_and_old_checkpoints_still_load():
    fast = TRAIN_PRESETS["vit-fast"]
    assert fast.mix_epochs == 270 and replace(fast, epochs=10).mix_epochs == 9
    old = {**TrainConfig().to_dict(), "epochs": 300}
    old.pop("mix_off_frac")
    old["mix_off_epochs"] = 30
    assert TrainConfig.from_dict(old).mix_epochs == 270


def test_resume_may_change_machine_settings_but_not_the_recipe(image_folder, tmp_path):
    splits = load_splits(str(image_folder), val_size=16, subset=64, progress=False)
    model_cfg = tiny_model().config
    cfg = TrainConfig(epochs=2, batch_size=16, lr=3e-3, device="cpu", num_workers=0)
    train(model_cfg, splits, cfg, tmp_path / "run", progress=False, stop_after=1)
    # next session: another loader and worker count (as after a move from the CPU to a GPU)
    run = train(
        model_cfg,
        splits,
        replace(cfg, loader="batch", num_workers=1),
        tmp_path / "run",
        progress=False,
    )
    assert [r["epoch"] for r in run.history] == [1, 2]
    with pytest.raises(ValueError, match="weight_decay: 0.05 -> 0.1"):
        train(
            model_cfg,
            splits,
            replace(cfg, weight_decay=0.1, epochs=3),
            tmp_path / "run",
            progress=False,
        )


def test_normalisation_constants_are_made_once_per_device():
    from vitcifar.data import _norm_constants

    images = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8)
    _norm_constants.cache_clear()
    a = normalize(images)
    b = normalize(images[:2])
    assert _norm_constants.cache_info().misses == 1 and _norm_constants.cache_info().hits == 1
    mean = torch.tensor([0.4914, 0.4822, 0.4465]).view(1, 3, 1, 1) * 255
    std = torch.tensor([0.2470, 0.2435, 0.2616]).view(1, 3, 1, 1) * 255
    assert torch.equal(a, (images.float() - mean) / std) and torch.equal(b, a[:2])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cpu_started_run_continues_on_the_gpu_with_fused_adamw(image_folder, tmp_path):
    splits = load_splits(str(image_folder), val_size=16, subset=64, progress=False)
    model_cfg = tiny_model().config
    cfg = TrainConfig(epochs=2, batch_size=16, lr=3e-3, num_workers=0)
    train(
        model_cfg,
        splits,
        replace(cfg, device="cpu"),
        tmp_path / "run",
        progress=False,
        stop_after=1,
    )
    run = train(model_cfg, splits, replace(cfg, device="cuda"), tmp_path / "run", progress=False)
    assert len(run.history) == 2
    run = train(
        model_cfg, splits, replace(cfg, device="cpu", epochs=2), tmp_path / "run", progress=False
    )
    assert len(run.history) == 2


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_training_steps_make_no_host_sync(image_folder):
    splits = load_splits(str(image_folder), val_size=16, subset=64, progress=False)
    cuda = torch.device("cuda")
    cfg = TrainConfig(
        batch_size=16,
        amp="bf16" if torch.cuda.is_bf16_supported() else "off",
        ema_decay=0.99,
        grad_clip=1.0,
    )
    model = tiny_model().to(cuda)
    ema = tiny_model().to(cuda).requires_grad_(False)
    opt = torch.optim.AdamW(param_groups(model, 0.05), lr=1e-3, fused=True)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    scaler = torch.amp.GradScaler("cuda", enabled=False)
    amp = torch.bfloat16 if cfg.amp == "bf16" else None
    step = Stepper(model, opt, sched, scaler, cfg, amp=amp, device=cuda, ema=ema)
    loader = make_loader(splits, cfg, cuda)
    loader.set_epoch(0)
    batches = iter(loader)
    x, y = next(batches)  # warm-up: first use of each kernel and constant
    step(x, y)
    val = splits.val.images[:8].to(cuda)  # (evaluation copies its batches in; that is not a step)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for x, y in batches:
            step(x, y)
        normalize(val)  # the constants come from the per-device cache, no copy
    finally:
        torch.cuda.set_sync_debug_mode("default")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_t4_path_fp16_grad_scaler_unscales_clips_and_skips_a_step_on_inf_grads():
    """amp=fp16 as a T4 gets it ("auto" there), forced here on any GPU, with train()'s fused
    AdamW and an enabled GradScaler: the scaler unscales before the clip, so the clip sees the
    true gradients (their norm ends at exactly the clip, not at clip / scale); a step whose
    gradients are not finite changes no weight and halves the scale."""
    cuda = torch.device("cuda")
    clip = 1e-2  # below any gradient norm of a fresh model, so the clip always acts
    cfg = TrainConfig(device="cuda", amp="fp16", grad_clip=clip, lr=1e-3)
    model = tiny_model().to(cuda)
    opt = torch.optim.AdamW(param_groups(model, 0.05), lr=1e-3, fused=True)  # as train() does
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    # train()'s scaler, but a scale that no first step can overflow (2**16 may, and would skip)
    scaler = torch.amp.GradScaler("cuda", init_scale=2.0**8)
    step = Stepper(model, opt, sched, scaler, cfg, amp=torch.float16, device=cuda)
    x, y = (t.to(cuda) for t in batch())
    before = [p.detach().clone() for p in model.parameters()]
    _, loss = step(x, y)
    assert torch.isfinite(loss)
    grads = [p.grad.float() for p in model.parameters() if p.grad is not None]
    norm = float(
        torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
    )
    assert norm == pytest.approx(clip, rel=1e-3)  # clipped after unscaling (else clip / 256)
    assert any(not torch.equal(a, p) for a, p in zip(before, model.parameters()))
    assert scaler.get_scale() == 2.0**8  # a good step keeps the scale (it grows after 2000)

    before = [p.detach().clone() for p in model.parameters()]
    bad = x.clone()
    bad[0, 0, 0, 0] = float("inf")
    step(bad, y)  # inf input → non-finite gradients → the optimizer step is skipped
    assert all(torch.equal(a, p) for a, p in zip(before, model.parameters()))
    assert scaler.get_scale() == 2.0**7
    _, loss = step(x, y)  # and training goes on at the smaller scale
    assert torch.isfinite(loss) and all(torch.isfinite(p).all() for p in model.parameters())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_fp16_training_on_cuda_saves_the_scaler_state(image_folder, tmp_path):
    splits = load_splits(str(image_folder), val_size=16, subset=64, progress=False)
    cfg = TrainConfig(epochs=1, batch_size=16, lr=3e-3, num_workers=0, device="cuda", amp="fp16")
    run = train(tiny_model().config, splits, cfg, tmp_path / "run", progress=False)
    state = torch.load(tmp_path / "run" / "last.pt", map_location="cpu", weights_only=False)
    assert state["runtime"]["amp"] == "float16" and state["scaler"]["scale"] > 0
    assert len(run.history) == 1


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_compile_epoch_on_cuda_runs_compiled_without_falling_back(image_folder, tmp_path):
    """One epoch with compile=True (what `vitcifar train --compile` sets) on the GPU: torch.compile
    must work there, not fall back to eager with a warning."""
    splits = load_splits(str(image_folder), val_size=16, subset=64, progress=False)
    cfg = TrainConfig(epochs=1, batch_size=16, lr=3e-3, num_workers=0, device="cuda", compile=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run = train(tiny_model().config, splits, cfg, tmp_path / "run", progress=False)
    fallbacks = [str(w.message) for w in caught if "torch.compile failed" in str(w.message)]
    assert fallbacks == []
    assert len(run.history) == 1 and run.history[0]["train_loss"] == run.history[0]["train_loss"]
