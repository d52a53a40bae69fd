"""Training-step throughput: our deit-tiny against timm's VisionTransformer, identically configured.

    python benchmarks/bench_step.py                 # CPU, 2 threads, batch 64
    python benchmarks/bench_step.py --device cuda   # GPU, batch 512, bf16/fp16 autocast

A step = forward + soft-target cross-entropy + backward + AdamW step. The two models alternate,
round by round, so that machine noise hits both alike; the table shows medians and the ratio
ours / timm (>= 1.0 means ours is at least as fast). timm is a benchmark-only dependency
(`pip install timm`). Without timm, or with --device cuda where torch sees no GPU, it prints
one line "skipped: ..." and exits 77. --json PATH writes the figures as one JSON object
(benchmarks/gpu_check.sh reads it).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from vitcifar.model import ViT, ViTConfig
from vitcifar.train import param_groups, resolve_amp, soft_cross_entropy


def timm_twin(cfg: ViTConfig) -> torch.nn.Module:
    """timm's VisionTransformer with exactly our deit-tiny's configuration."""
    from timm.models.vision_transformer import VisionTransformer

    return VisionTransformer(
        img_size=cfg.image_size,
        patch_size=cfg.patch_size,
        in_chans=cfg.in_channels,
        num_classes=cfg.num_classes,
        embed_dim=cfg.dim,
        depth=cfg.depth,
        num_heads=cfg.heads,
        mlp_ratio=cfg.mlp_ratio,
        qkv_bias=True,
        class_token=True,
        global_pool="token",
        pos_drop_rate=cfg.emb_dropout,
        proj_drop_rate=cfg.dropout,
        attn_drop_rate=cfg.attn_dropout,
        drop_path_rate=cfg.drop_path,
    )


def make_step(model: torch.nn.Module, device: torch.device, amp, batch: int, num_classes: int):
    opt = torch.optim.AdamW(param_groups(model, 0.05), lr=1e-3, fused=device.type == "cuda")
    scaler = torch.amp.GradScaler(device.type, enabled=amp is torch.float16)
    x = torch.randn(batch, 3, 32, 32, device=device)
    y = torch.softmax(torch.randn(batch, num_classes, device=device), dim=-1)

    def step() -> None:
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            logits = model(x)
        loss = soft_cross_entropy(logits, y)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()

    return step


def timed(step, device: torch.device, iters: int) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(iters):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t) / iters


def cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "CPU"


SKIPPED = 77  # exit status of a skipped run: not a failure, not a result


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--batch-size", type=int, help="default: 64 on CPU, 512 on CUDA")
    p.add_argument(
        "--threads", type=int, default=2, help="CPU threads (default: %(default)s, Colab's vCPUs)"
    )
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--iters", type=int, help="steps per round (default: 3 on CPU, 50 on CUDA)")
    p.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = p.parse_args()
    if importlib.util.find_spec("timm") is None:
        print("skipped: no timm, the baseline (pip install timm)")
        return SKIPPED
    if args.device == "cuda" and not torch.cuda.is_available():
        print("skipped: no CUDA (torch sees no GPU; --device cpu times the CPU)")
        return SKIPPED
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    batch = args.batch_size or (64 if device.type == "cpu" else 512)
    iters = args.iters or (3 if device.type == "cpu" else 50)
    amp = resolve_amp("auto", device)
    cfg = ViTConfig()  # deit-tiny
    torch.manual_seed(0)
    models = {
        "vitcifar deit-tiny": ViT(cfg).to(device),
        "timm VisionTransformer": timm_twin(cfg).to(device),
    }
    counts = {k: sum(p.numel() for p in m.parameters()) for k, m in models.items()}
    steps = {k: make_step(m, device, amp, batch, cfg.num_classes) for k, m in models.items()}
    for s in steps.values():  # warm-up
        timed(s, device, 2)
    times = {k: [] for k in steps}
    for _ in range(args.rounds):
        for k, s in steps.items():
            times[k].append(timed(s, device, iters))
    where = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"{cpu_name()}, {args.threads} threads"
    )
    print(f"\ntraining step, batch {batch}, {where}, amp={amp}, torch {torch.__version__}")
    print(f"{'model':26s} {'params':>10s} {'images/s':>10s} {'ratio':>7s}")
    base = batch / statistics.median(times["timm VisionTransformer"])
    ips = {k: batch / statistics.median(times[k]) for k in steps}
    for k in steps:
        print(f"{k:26s} {counts[k]:>10,d} {ips[k]:>10.1f} {ips[k] / base:>7.2f}")
    if args.json:
        figures = {
            "benchmark": "step",
            "device": where,
            "amp": str(amp).replace("torch.", "") if amp else "off",
            "batch_size": batch,
            "images_per_s_ours": round(ips["vitcifar deit-tiny"], 1),
            "images_per_s_timm": round(base, 1),
            "ours_over_timm": round(ips["vitcifar deit-tiny"] / base, 3),
        }
        args.json.write_text(json.dumps(figures) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
