"""Training-input throughput: per-sample torchvision DataLoader vs batched BatchAugment.

Both pipelines produce the same thing per batch: RandomCrop(32, padding=4) + RandomHorizontalFlip
+ RandAugment(2, 9), scaled to [0, 1] and normalised with the CIFAR-10 mean/std, then MixUp or
CutMix (torchvision v2, soft targets).

    baseline   the original notebook: a DataLoader with --threads (2) worker processes over
               in-memory PIL images, torchvision transforms per sample, MixUp/CutMix in the
               collate function.
    ours       vitcifar.data.BatchLoader, the training loader: a uint8 (N, 3, 32, 32) tensor in
               memory; per batch a slice of a random permutation -> BatchAugment -> normalise
               -> MixUp/CutMix. On the CPU once serially and once with --threads Python threads
               making batches ahead (the path training uses on a GPU with --no-gpu-aug); on
               CUDA when a GPU is present (data resident on the GPU, timers read after
               torch.cuda.synchronize()).

Usage:
    python -m benchmarks.bench_input                              # random 32x32 images
    python -m benchmarks.bench_input --data /tmp/cifar10/train    # CIFAR-10 JPEGs (ImageFolder)
    python -m benchmarks.bench_input --ops                        # also per-op cost of BatchAugment
(from the repository root; after `pip install -e .` also python benchmarks/bench_input.py)

Prints one table with images/s (mean ± std over --repeats runs) and the ratio to the baseline
measured in the same run. Other processes on the machine slow both pipelines; the load average
is printed so that a busy machine shows.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, default_collate
from torchvision import datasets
from torchvision.transforms import v2

from vitcifar.data import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    AugmentConfig,
    BatchLoader,
    ImageSet,
    make_mixer,
)
from vitcifar.gpu_aug import RANDAUG_OPS, BatchAugment

NUM_CLASSES = 10


def make_mix() -> v2.Transform:
    """MixUp or CutMix, one per batch: the mixer both pipelines (and training) use."""
    return make_mixer(AugmentConfig(), NUM_CLASSES)


def load_images(
    data: str | None, *, count: int, seed: int
) -> tuple[list[Image.Image], torch.Tensor]:
    """`count` 32x32 RGB PIL images and their labels (count,) int64.

    From an ImageFolder directory (a random subset) when `data` is given, else random pixels.
    """
    generator = np.random.default_rng(seed)
    if data is None:
        pixels = generator.integers(0, 256, size=(count, 32, 32, 3), dtype=np.uint8)
        labels = generator.integers(0, NUM_CLASSES, size=count)
        return [Image.fromarray(p) for p in pixels], torch.as_tensor(labels)
    folder = datasets.ImageFolder(data)
    if len(folder) < count:
        raise ValueError(f"{data} holds {len(folder)} images but the run needs {count}")
    chosen = generator.choice(len(folder), size=count, replace=False)
    images, labels = [], []
    for i in chosen:
        path, label = folder.samples[i]
        with Image.open(path) as image:
            images.append(image.convert("RGB"))
        labels.append(label)
    if images[0].size != (32, 32):
        raise ValueError(f"expected 32x32 images in {data}, got {images[0].size}")
    return images, torch.tensor(labels)


class _PILDataset(Dataset):
    """In-memory PIL images with a per-sample transform, as in the original notebook."""

    def __init__(
        self, images: list[Image.Image], labels: torch.Tensor, transform: Callable
    ) -> None:
        self.images, self.labels, self.transform = images, labels.tolist(), transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.transform(self.images[index]), self.labels[index]


class _MixCollate:
    """default_collate, then MixUp/CutMix on the batch (a class so that workers can pickle it)."""

    def __init__(self) -> None:
        self.mix = make_mix()

    def __call__(self, batch: list) -> tuple[torch.Tensor, torch.Tensor]:
        return self.mix(*default_collate(batch))


def baseline_transform() -> v2.Transform:
    """The original notebook's per-sample training transform (PIL image -> normalised tensor)."""
    return v2.Compose(
        [
            v2.RandomCrop(32, padding=4),
            v2.RandomHorizontalFlip(),
            v2.RandAugment(num_ops=2, magnitude=9),
            v2.ToImage(),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(CIFAR10_MEAN, CIFAR10_STD),
        ]
    )


def run_baseline(
    images: list[Image.Image],
    labels: torch.Tensor,
    *,
    workers: int,
    batch_size: int,
    warmup: int,
    batches: int,
) -> float:
    """Images/s of the per-sample DataLoader (`workers` processes, one thread each) over
    `batches` batches after `warmup` batches."""
    loader = DataLoader(
        _PILDataset(images, labels, baseline_transform()),
        batch_size=batch_size,
        shuffle=True,
        num_workers=workers,
        collate_fn=_MixCollate(),
        drop_last=True,
    )
    iterator = iter(loader)
    for _ in range(warmup):
        next(iterator)
    start = time.perf_counter()
    for _ in range(batches):
        x, y = next(iterator)
    elapsed = time.perf_counter() - start
    assert x.shape == (batch_size, 3, 32, 32) and y.shape == (batch_size, NUM_CLASSES)
    del iterator  # stops the workers
    return batches * batch_size / elapsed


def baseline_cpu_rate(
    images: list[Image.Image], labels: torch.Tensor, *, batch_size: int, batches: int
) -> float:
    """Images per CPU-second of the baseline's work (what one DataLoader worker does: per-sample
    transforms, collate, MixUp/CutMix), run in this process on one thread."""
    dataset = _PILDataset(images, labels, baseline_transform())
    collate = _MixCollate()
    generator = torch.Generator().manual_seed(0)
    order = torch.randperm(len(dataset), generator=generator).tolist()
    collate([dataset[i] for i in order[:batch_size]])  # warm-up
    start = time.process_time()
    for step in range(batches):
        first = (step * batch_size) % (len(dataset) - batch_size + 1)
        x, y = collate([dataset[i] for i in order[first : first + batch_size]])
    return batches * batch_size / (time.process_time() - start)


def run_ours(
    data: torch.Tensor,
    labels: torch.Tensor,
    *,
    batch_size: int,
    warmup: int,
    batches: int,
    threads: int = 0,
    clock: Callable[[], float] = time.perf_counter,
) -> float:
    """Images per second of `clock` (wall clock by default) of the training loader
    `vitcifar.data.BatchLoader` (BatchAugment -> normalise -> MixUp/CutMix) over `data`
    (N, 3, 32, 32) uint8, on data's device; `threads` CPU threads augment batches ahead."""
    device = data.device
    loader = BatchLoader(
        ImageSet(data, labels.to(device), [str(k) for k in range(NUM_CLASSES)]),
        batch_size=batch_size,
        aug=AugmentConfig(),
        threads=threads,
    )
    if len(loader) < warmup + batches:
        raise ValueError(f"need {warmup + batches} batches of data, have {len(loader)}")
    iterator = iter(loader)
    for _ in range(warmup):
        next(iterator)
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = clock()
    for _ in range(batches):
        x, y = next(iterator)
    if device.type == "cuda":
        torch.cuda.synchronize()
    elapsed = clock() - start
    assert x.shape == (batch_size, 3, 32, 32) and y.shape == (batch_size, NUM_CLASSES)
    del iterator
    return batches * batch_size / elapsed


def time_ops(data: torch.Tensor, *, batch_size: int, repeats: int = 5) -> list[tuple[str, float]]:
    """CPU milliseconds (time.process_time) per full batch for each op (apply_op) and for the
    crop + flip; run it with one torch thread so that CPU time is work, not waiting."""
    augment = BatchAugment()
    images = data[:batch_size]
    height, width = images.shape[-2:]
    rows = []
    no_ops = BatchAugment(num_ops=0)
    jobs: list[tuple[str, Callable[[], torch.Tensor]]] = [("crop + flip", lambda: no_ops(images))]
    for op in RANDAUG_OPS:
        magnitude = {
            "TranslateX": 4.35 * width / 32,
            "TranslateY": 4.35 * height / 32,
            "Rotate": 9.0,
            "ShearX": 0.09,
            "ShearY": 0.09,
            "Posterize": 7.0,
            "Solarize": 0.7,
        }.get(op, 0.27)
        jobs.append(
            (op, lambda op=op, magnitude=magnitude: augment.apply_op(images, op, magnitude))
        )
    for name, job in jobs:
        job()
        start = time.process_time()
        for _ in range(repeats):
            job()
        rows.append((name, (time.process_time() - start) / repeats * 1e3))
    return rows


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--batches", type=int, default=10, help="timed batches per run")
    parser.add_argument("--warmup", type=int, default=3, help="untimed batches before each run")
    parser.add_argument("--repeats", type=int, default=3, help="runs per pipeline (mean ± std)")
    parser.add_argument(
        "--threads",
        type=int,
        default=2,
        help="CPU threads: DataLoader workers of the baseline, torch threads of ours",
    )
    parser.add_argument(
        "--data", default=None, help="ImageFolder train dir (e.g. /tmp/cifar10/train)"
    )
    parser.add_argument("--ops", action="store_true", help="also time each op on a full batch")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    count = args.batch_size * (args.warmup + args.batches)
    started = time.perf_counter()
    images, labels = load_images(args.data, count=count, seed=0)
    data = torch.from_numpy(np.stack([np.asarray(image) for image in images])).permute(0, 3, 1, 2)
    data = data.contiguous()  # (N, 3, 32, 32) uint8
    source = args.data or "random 32x32 RGB"
    print(f"data: {count} images from {source}, loaded in {time.perf_counter() - started:.1f} s")
    print(
        f"cpu: {cpu_name()}, {os.cpu_count()} logical cores, load average {os.getloadavg()[0]:.2f}"
    )
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "none"
    print(
        f"torch {torch.__version__}, gpu: {gpu}; batch {args.batch_size}, {args.batches} timed "
        f"batches after {args.warmup} warm-up, {args.repeats} runs each\n"
    )

    sizes = dict(batch_size=args.batch_size, warmup=args.warmup, batches=args.batches)
    results: list[tuple[str, str, str, list[float]]] = []
    workers = args.threads
    baseline = [run_baseline(images, labels, workers=workers, **sizes) for _ in range(args.repeats)]
    results.append(
        ("per-sample torchvision (original notebook)", "cpu", f"{workers} workers", baseline)
    )
    ours_cpu = [run_ours(data, labels, **sizes) for _ in range(args.repeats)]
    results.append(("BatchLoader, no worker threads", "cpu", f"{args.threads} torch", ours_cpu))
    # The training path (CUDA with --no-gpu-aug): batches made ahead in Python threads.
    pooled = [run_ours(data, labels, threads=args.threads, **sizes) for _ in range(args.repeats)]
    results.append(
        ("BatchLoader, CPU threads (training path)", "cpu", f"{args.threads} threads", pooled)
    )
    if torch.cuda.is_available():
        on_gpu = (data.cuda(), labels.cuda())
        ours_gpu = [run_ours(*on_gpu, **sizes) for _ in range(args.repeats)]
        results.append(("BatchLoader, data on the GPU (--gpu-aug)", "cuda", "-", ours_gpu))

    base = statistics.mean(baseline)
    header = f"{'pipeline':<44} | {'device':<6} | {'threads':<12} | {'images/s':>15} | ratio"
    print(header)
    print("-" * len(header))
    for name, device, threads, rates in results:
        mean = statistics.mean(rates)
        std = statistics.stdev(rates) if len(rates) > 1 else 0.0
        rate = f"{mean:,.0f} ± {std:,.0f}"
        print(f"{name:<44} | {device:<6} | {threads:<12} | {rate:>15} | {mean / base:.2f}x")

    # Per CPU-second, one thread: time other processes take from the CPUs is not counted, so on a
    # busy machine this shows what an idle core does (the wall-clock table above would not).
    torch.set_num_threads(1)
    cpu_sizes = dict(batch_size=args.batch_size, batches=max(2, args.batches // 2))
    base_cpu = baseline_cpu_rate(images, labels, **cpu_sizes)
    ours_cpu_time = run_ours(data, labels, warmup=1, clock=time.process_time, **cpu_sizes)
    print(
        "\nwork per CPU-second (1 thread, in this process, time.process_time; not slowed by "
        "other processes):"
    )
    header = f"{'pipeline':<44} | {'images/CPU-s':>12} | ratio"
    print(header)
    print("-" * len(header))
    print(f"{'per-sample torchvision (one worker)':<44} | {base_cpu:>12,.0f} | 1.00x")
    print(f"{'BatchLoader':<44} | {ours_cpu_time:>12,.0f} | {ours_cpu_time / base_cpu:.2f}x")
    torch.set_num_threads(args.threads)

    if args.ops:
        print(
            f"\nBatchAugment per op: CPU ms for one full batch of {args.batch_size}, 1 thread "
            f"(RandAugment runs each op on ~1/14 of the batch per slot):"
        )
        torch.set_num_threads(1)
        for name, ms in time_ops(data, batch_size=args.batch_size):
            print(f"  {name:<13} {ms:7.2f} ms")


if __name__ == "__main__":
    main()
