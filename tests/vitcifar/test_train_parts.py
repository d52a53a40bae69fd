import math

import pytest
import torch
import torch.nn.functional as F

from vitcifar.data import AugmentConfig, make_mixer
from vitcifar.model import ViT, ViTConfig
from vitcifar.train import (
    TrainConfig,
    one_cycle_lr,
    param_groups,
    resolve_amp,
    resolve_device,
    soft_cross_entropy,
)


def test_one_cycle_warmup_peak_and_final_value():
    total, frac = 1000, 0.3
    lrs = [one_cycle_lr(s, total_steps=total, warmup_frac=frac) for s in range(total + 1)]
    assert lrs[0] == pytest.approx(1 / 25)
    assert max(lrs) == pytest.approx(1.0)
    assert lrs.index(max(lrs)) == 300  # the peak is at the end of the warm-up
    assert all(b > a for a, b in zip(lrs[:300], lrs[1:301]))  # warm-up rises linearly
    assert lrs[150] == pytest.approx((1 / 25 + 1) / 2)
    assert all(b <= a for a, b in zip(lrs[300:], lrs[301:]))  # then anneals
    assert lrs[-1] == pytest.approx(1 / 25 / 1e4)
    assert lrs[650] == pytest.approx(
        lrs[-1] + (1 - lrs[-1]) * 0.5
    )  # cosine: halfway down at midpoint


def test_peak_lr_scales_with_batch_size():
    assert TrainConfig(batch_size=1024).peak_lr == pytest.approx(1e-3)
    assert TrainConfig(batch_size=256).peak_lr == pytest.approx(2.5e-4)
    assert TrainConfig(lr=3e-3).peak_lr == 3e-3


def test_param_groups_decay_only_weight_matrices():
    model = ViT(ViTConfig(dim=32, depth=2, heads=2))
    decay, no_decay = param_groups(model, 0.05)
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for p in decay["params"]}
    kept = {names[id(p)] for p in no_decay["params"]}
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    assert (
        "blocks.0.attn.qkv.weight" in decayed
        and "head.weight" in decayed
        and "patch_embed.proj.weight" in decayed
    )
    assert {
        "pos_embed",
        "cls_token",
        "blocks.0.norm1.weight",
        "blocks.0.attn.qkv.bias",
        "norm.bias",
    } <= kept
    assert not any(n.endswith(".bias") or "norm" in n for n in decayed)
    assert len(decayed) + len(kept) == len(list(model.parameters()))


def test_soft_cross_entropy_matches_hard_and_smoothing():
    logits = torch.randn(8, 5)
    y = torch.randint(0, 5, (8,))
    torch.testing.assert_close(
        soft_cross_entropy(logits, F.one_hot(y, 5).float()), F.cross_entropy(logits, y)
    )
    torch.testing.assert_close(
        soft_cross_entropy(logits, F.one_hot(y, 5).float(), 0.1),
        F.cross_entropy(logits, y, label_smoothing=0.1),
    )


def _constant_batch(n=8, k=4, size=16):
    # each image is the constant value of its own index, so mixed pixels reveal their sources
    x = torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1).expand(n, 3, size, size).clone()
    return x, torch.arange(n) % k


@pytest.mark.parametrize("which", ["mixup", "cutmix"])
def test_mixing_gives_distributions_in_stated_proportions(which):
    cfg = AugmentConfig(
        mixup_alpha=0.8 if which == "mixup" else 0.0, cutmix_alpha=1.0 if which == "cutmix" else 0.0
    )
    mixer = make_mixer(cfg, num_classes=8)
    torch.manual_seed(0)
    for _ in range(10):
        x, y = _constant_batch(k=8)
        xm, ym = mixer(x, y)
        assert ym.shape == (8, 8)
        torch.testing.assert_close(ym.sum(-1), torch.ones(8))
        # torchvision pairs sample i with i-1 (roll by one); the weight on the partner's label
        # equals the share of the partner in the image
        partner = torch.roll(torch.arange(8), 1)
        for i in range(8):
            own = ym[i, y[i]].item()
            if which == "mixup":  # pixel = lam * i + (1 - lam) * partner
                lam = (xm[i, 0, 0, 0].item() - partner[i].item()) / (i - partner[i].item())
                assert own == pytest.approx(lam, abs=1e-5)
            else:  # fraction of pixels still equal to i
                frac_own = (xm[i] == i).float().mean().item()
                assert own == pytest.approx(frac_own, abs=1e-5)


def test_both_mixers_are_chosen_per_batch():
    mixer = make_mixer(AugmentConfig(), num_classes=8)
    torch.manual_seed(1)
    kinds = set()
    for _ in range(30):
        x, y = _constant_batch(k=8)
        xm, _ = mixer(x, y)
        is_integer = torch.equal(xm, xm.round())  # CutMix copies pixels, Mixup blends them
        kinds.add("cutmix" if is_integer else "mixup")
    assert kinds == {"mixup", "cutmix"}


def test_no_mixer_when_both_off():
    assert make_mixer(AugmentConfig(mixup_alpha=0, cutmix_alpha=0), 10) is None


def test_device_and_precision_choice():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_amp("auto", torch.device("cpu")) is None
    if not torch.cuda.is_available():
        assert resolve_device("auto") == torch.device("cpu")
        with pytest.raises(ValueError, match="no CUDA GPU"):
            resolve_device("cuda")
    with pytest.raises(ValueError, match="'auto', 'cpu', 'cuda'"):
        resolve_device("tpu")


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"batch_size": 0}, "batch sizes must be >= 1"),
        ({"epochs": -1}, "epochs must be >= 1"),
        ({"lr": 0.0}, "lr must be > 0"),
        ({"amp": "fp8"}, "'auto', 'off', 'fp16', 'bf16'"),
        ({"warmup_frac": 1.0}, "warmup_frac"),
    ],
)
def test_impossible_train_settings_rejected(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**kwargs)


def test_train_config_round_trip():
    cfg = TrainConfig(label_smoothing=0.1, augment=AugmentConfig(randaug_ops=1))
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    assert math.isclose(cfg.peak_lr, 1e-3)


@pytest.mark.parametrize(
    "capability,amp,expected",
    [
        ((7, 5), "auto", torch.float16),
        ((8, 0), "auto", torch.bfloat16),
        ((9, 0), "fp16", torch.float16),
        ((7, 5), "off", None),
    ],
)
def test_precision_per_gpu_generation(monkeypatch, capability, amp, expected):
    # a T4 is sm_75: fp16 (+ grad scaler), never bf16; Ampere (sm_80) and newer: bf16
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    assert resolve_amp(amp, torch.device("cuda")) is expected


def test_bf16_refused_on_a_t4(monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 5))
    with pytest.raises(ValueError, match="needs an Ampere or newer GPU"):
        resolve_amp("bf16", torch.device("cuda"))
