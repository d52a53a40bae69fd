"""Data: CIFAR-10/100 or an ImageFolder tree -> uint8 tensors, splits, augmentation, loaders.

Every source is decoded once into an ``ImageSet`` (uint8 images (N, C, H, W) + int64 labels;
an ImageFolder's files by ``vitcifar.images``' one image rule, which prediction uses too):
CIFAR-10's training set is 150 MB, so it fits in RAM and, on a GPU, in device memory. Two
training loaders sit on top of it:

- ``SampleLoader``: torchvision ``transforms.v2`` per sample in DataLoader workers (RandomCrop,
  RandomHorizontalFlip, RandAugment), then Mixup/CutMix in ``collate_fn``. The reference path.
- ``BatchLoader``: the same augmentation on whole batches, on the device the images live on
  (``vitcifar.gpu_aug.BatchAugment``), then the same Mixup/CutMix. 3-4x faster than the per-sample
  path on 2 CPU threads and free of CPU work on a GPU (``benchmarks/bench_input.py``).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torchvision.transforms import v2

from vitcifar.config import AugmentConfig, ViTConfig
from vitcifar.gpu_aug import BatchAugment
from vitcifar.images import IMAGE_EXTENSIONS, DataError, ImageTooLarge, decode_image, to_rgb8

__all__ = [
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "AugmentConfig",
    "BatchLoader",
    "DataError",
    "ImageSet",
    "SampleLoader",
    "Splits",
    "decode_training_image",
    "list_image_folder",
    "load_splits",
    "load_test_set",
    "make_mixer",
    "normalize",
    "sample_transform",
    "to_rgb8",
]
# Re-exported for the old import paths: AugmentConfig lives in vitcifar.config; DataError,
# IMAGE_EXTENSIONS and to_rgb8 in vitcifar.images (the one image rule).

log = logging.getLogger(__name__)

CIFAR10_MEAN = (
    0.4914,
    0.4822,
    0.4465,
)  # per-channel mean of the CIFAR-10 training set, [0, 1] scale
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
FOLDER_LAYOUT = (
    "expected DATA/train/<class>/*.jpg and DATA/test/<class>/*.jpg with the same class folders"
)


@dataclass
class ImageSet:
    """Decoded images: ``images`` (N, C, H, W) uint8, ``labels`` (N,) int64, ``classes`` names."""

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]

    def __post_init__(self) -> None:
        check_image_set(self.images, self.labels, self.classes)

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, indices: torch.Tensor) -> ImageSet:
        return ImageSet(self.images[indices], self.labels[indices], self.classes)

    def to(self, device: torch.device | str) -> ImageSet:
        return ImageSet(self.images.to(device), self.labels.to(device), self.classes)


def check_image_set(images: Any, labels: Any, classes: Sequence[str]) -> None:
    """Raise a one-line ``DataError`` unless ``images`` is (N, C, H, W) uint8 on 0-255 and
    ``labels`` (N,) integers in [0, len(classes)): what an ``ImageSet`` built by hand must hold."""
    for name, t in (("images", images), ("labels", labels)):
        if not isinstance(t, torch.Tensor):
            raise DataError(
                f"ImageSet {name} must be a torch tensor, got {type(t).__name__}; "
                f"convert it with torch.as_tensor({name})"
            )
    shape = tuple(images.shape)
    if images.ndim != 4:
        raise DataError(f"ImageSet images must be (N, C, H, W), got shape {shape}")
    if images.shape[1] not in (1, 3, 4) and images.shape[-1] in (1, 3, 4):
        raise DataError(
            f"ImageSet images must be (N, C, H, W), got shape {shape}, which looks like "
            "(N, H, W, C); use images.permute(0, 3, 1, 2).contiguous()"
        )
    if images.dtype != torch.uint8:
        hint = (
            "(images * 255).round().to(torch.uint8) for images on the [0, 1] scale"
            if images.is_floating_point()
            else "images.to(torch.uint8) if the values are 0-255"
        )
        raise DataError(
            f"ImageSet images must be uint8 on the 0-255 scale, got {images.dtype}; use {hint}"
        )
    if labels.ndim != 1 or len(labels) != len(images):
        raise DataError(
            f"ImageSet labels must be (N,) with one label per image, got shape "
            f"{tuple(labels.shape)} for {len(images)} images"
        )
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise DataError(
            f"ImageSet labels must be integer class indices, got {labels.dtype}; use labels.long()"
        )
    # The range on the CPU only: a device copy (ImageSet.to) of a checked set needs no host
    # sync, which the GPU path avoids (tests/vitcifar/test_train_failures.py)
    on_cpu = labels.device.type == "cpu"
    if on_cpu and len(labels) and not 0 <= int(labels.min()) <= int(labels.max()) < len(classes):
        raise DataError(
            f"ImageSet labels must be class indices in [0, {len(classes)}) for its "
            f"{len(classes)} classes, got labels from {int(labels.min())} to {int(labels.max())}; "
            "number the classes from 0 and list every class name in classes"
        )


def check_fits_model(data: ImageSet, model_cfg: ViTConfig, what: str) -> None:
    """Raise a one-line ``DataError`` unless ``data``'s images are the (C, H, W) the model takes."""
    c, size = model_cfg.in_channels, model_cfg.image_size
    got = tuple(data.images.shape[1:])
    if got != (c, size, size):
        hint = (
            "; images.expand(-1, 3, -1, -1) turns grayscale into RGB"
            if got[0] == 1 and c == 3
            else f"; resize the images to {size}x{size}, or set the model's image_size"
            if got[0] == c
            else ""
        )
        raise DataError(
            f"the {what} images are {got} (C, H, W) but the model takes {(c, size, size)}{hint}"
        )


@dataclass
class Splits:
    """Training, validation (held out from training; may be empty) and test sets.

    ``source`` holds the ``load_splits`` arguments that made them (data, val_size, subset, seed),
    so a checkpoint can say which data a run used.
    """

    train: ImageSet
    val: ImageSet
    test: ImageSet
    source: dict[str, Any] = field(default_factory=dict)

    @property
    def classes(self) -> list[str]:
        return self.train.classes

    def fingerprint(self) -> dict[str, Any]:
        """What a resumed run must see again: sizes, classes and a digest of the train/val split."""
        h = hashlib.sha1()
        for part in (self.train, self.val):
            h.update(part.labels.cpu().numpy().tobytes())
            h.update(part.images.cpu().contiguous().numpy().tobytes())
        return {
            "train": len(self.train),
            "val": len(self.val),
            "classes": list(self.classes),
            "digest": h.hexdigest(),
            "source": dict(self.source),
        }


# ----------------------------------------------------------------------------- loading


def _list_class_folders(split_dir: Path) -> dict[str, list[Path]]:
    classes = sorted(
        d.name for d in split_dir.iterdir() if d.is_dir() and not d.name.startswith(".")
    )
    files = {
        c: sorted(
            p
            for p in (split_dir / c).iterdir()
            # a hidden file is none of the data set's: macOS's "._name.jpg" resource forks
            # (in zips made on a Mac) are no images, and predict skips them too
            if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")
        )
        for c in classes
    }
    return files


def decode_training_image(path: Path, size: int) -> np.ndarray:
    """One file of an ImageFolder tree -> (size, size, 3) uint8 by the package's one image rule
    (``vitcifar.images.decode_image``, the same as evaluation and prediction); an unreadable file
    is a ``DataError`` that names it and says to remove or replace it."""
    try:
        return decode_image(path, size, name=str(path))
    except ImageTooLarge as err:
        raise DataError(f"image {err}; remove or replace this file") from err
    except DataError as err:
        raise DataError(f"cannot read image {err}; remove or replace this file") from err


_decode = decode_training_image  # the old private name (README before 0.x, benchmarks)


@dataclass
class FolderListing:
    """The files of an ImageFolder tree, not yet decoded: paths and labels per split."""

    root: Path
    classes: list[str]
    paths: dict[str, list[Path]]  # split -> files, grouped by class
    labels: dict[str, torch.Tensor]  # split -> (N,) int64

    def decode(
        self,
        split: str,
        indices: torch.Tensor | None = None,
        *,
        image_size: int = 32,
        progress: bool = True,
    ) -> ImageSet:
        """Decode the files of ``split`` (all, or those at ``indices``) into an ImageSet."""
        from tqdm.auto import tqdm

        idx = range(len(self.paths[split])) if indices is None else indices.tolist()
        paths = [self.paths[split][i] for i in idx]
        with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
            arrays = list(
                tqdm(
                    pool.map(lambda p: decode_training_image(p, image_size), paths, chunksize=256),
                    total=len(paths),
                    desc=f"decode {split}",
                    disable=not progress,
                    leave=False,
                )
            )
        if arrays:
            images = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
        else:
            images = torch.empty((0, 3, image_size, image_size), dtype=torch.uint8)
        labels = self.labels[split] if indices is None else self.labels[split][indices]
        return ImageSet(images, labels.clone(), self.classes)


def list_image_folder(root: str | os.PathLike) -> FolderListing:
    """List an ImageFolder tree ``root/{train,test}/<class>/<image>``.

    Raises ``DataError`` naming the path for a missing folder, a wrong layout, differing class
    folders between train and test, or a class folder without images.
    """
    root = Path(root).expanduser()
    if not root.exists():
        raise DataError(f"data path {root} does not exist; {FOLDER_LAYOUT}")
    if not root.is_dir():
        raise DataError(f"data path {root} is not a folder; {FOLDER_LAYOUT}")
    missing = [s for s in ("train", "test") if not (root / s).is_dir()]
    if missing:
        raise DataError(
            f"{root} has no {' or '.join(m + '/' for m in missing)} folder; {FOLDER_LAYOUT}"
        )
    listing = {s: _list_class_folders(root / s) for s in ("train", "test")}
    if not listing["train"]:
        raise DataError(f"{root / 'train'} holds no class folders; {FOLDER_LAYOUT}")
    if set(listing["train"]) != set(listing["test"]):
        only_train = sorted(set(listing["train"]) - set(listing["test"]))
        only_test = sorted(set(listing["test"]) - set(listing["train"]))
        raise DataError(
            f"class folders differ between {root / 'train'} and {root / 'test'}: "
            f"only in train {only_train}, only in test {only_test}; {FOLDER_LAYOUT}"
        )
    classes = sorted(listing["train"])
    paths, labels = {}, {}
    for split in ("train", "test"):
        empty = [c for c in classes if not listing[split][c]]
        if empty:
            raise DataError(
                f"{root / split} has class folders without images: {empty}; {FOLDER_LAYOUT}"
            )
        paths[split] = [p for c in classes for p in listing[split][c]]
        labels[split] = torch.tensor([i for i, c in enumerate(classes) for _ in listing[split][c]])
    return FolderListing(root, classes, paths, labels)


def _load_torchvision(
    name: str, root: str | os.PathLike, download: bool, *, train: bool
) -> ImageSet:
    from torchvision import datasets

    cls = {"cifar10": datasets.CIFAR10, "cifar100": datasets.CIFAR100}[name]
    try:
        ds = cls(root=str(root), train=train, download=download)
    except (RuntimeError, OSError) as err:
        raise DataError(
            f"could not load {name} from {root} ({err}); it downloads once into --data-root "
            "(needs internet), or pass an ImageFolder path instead"
        ) from err
    images = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()  # (N, 3, 32, 32)
    return ImageSet(images, torch.tensor(ds.targets, dtype=torch.int64), list(ds.classes))


def load_test_set(
    data: str,
    *,
    data_root: str | os.PathLike = "./data",
    image_size: int = 32,
    download: bool = True,
    progress: bool = True,
) -> ImageSet:
    """Only the test split of ``data`` (see ``load_splits``), e.g. to evaluate a checkpoint."""
    if data.lower() in ("cifar10", "cifar100"):
        return _load_torchvision(data.lower(), data_root, download, train=False)
    return list_image_folder(data).decode("test", image_size=image_size, progress=progress)


def _balanced_pick(
    labels: torch.Tensor, n: int, num_classes: int, generator: torch.Generator
) -> torch.Tensor:
    """``n`` indices into ``labels``, as equal per class as possible, in random order."""
    per_class = [torch.nonzero(labels == c).flatten() for c in range(num_classes)]
    per_class = [idx[torch.randperm(len(idx), generator=generator)] for idx in per_class]
    quota = [n // num_classes + (1 if c < n % num_classes else 0) for c in range(num_classes)]
    picked = torch.cat([idx[:q] for idx, q in zip(per_class, quota)])
    if len(picked) < n:  # some classes are small: fill from the rest
        rest = torch.cat([idx[q:] for idx, q in zip(per_class, quota)])
        picked = torch.cat(
            [picked, rest[torch.randperm(len(rest), generator=generator)][: n - len(picked)]]
        )
    return picked[torch.randperm(len(picked), generator=generator)]


def load_splits(
    data: str,
    *,
    data_root: str | os.PathLike = "./data",
    val_size: int = 5000,
    subset: int | None = None,
    seed: int = 0,
    image_size: int = 32,
    download: bool = True,
    progress: bool = True,
) -> Splits:
    """Load ``data`` ("cifar10", "cifar100" or an ImageFolder path) and split it.

    The validation set is ``val_size`` training images held out with a fixed ``seed``
    (class-balanced); ``subset`` then keeps a class-balanced ``subset`` of the remaining training
    images. The test set is the source's own test split.
    """
    if val_size < 0:
        raise DataError(f"val_size must be >= 0, got {val_size}")
    if subset is not None and subset < 1:
        raise DataError(f"subset must be a positive number of images, got {subset}")
    listing = None
    if data.lower() in ("cifar10", "cifar100"):
        train = _load_torchvision(data.lower(), data_root, download, train=True)
        test = _load_torchvision(data.lower(), data_root, download, train=False)
        train_labels, classes = train.labels, train.classes
    else:  # list first, decode only the images that the splits use
        listing = list_image_folder(data)
        train_labels, classes = listing.labels["train"], listing.classes
    g = torch.Generator().manual_seed(seed)
    if val_size >= len(train_labels):
        raise DataError(
            f"val_size={val_size} leaves no training images ({len(train_labels)} in {data}); use a smaller --val-size"
        )
    val_idx = (
        _balanced_pick(train_labels, val_size, len(classes), g)
        if val_size
        else torch.zeros(0, dtype=torch.int64)
    )
    keep = torch.ones(len(train_labels), dtype=torch.bool)
    keep[val_idx] = False
    train_idx = torch.nonzero(keep).flatten()
    if subset is not None and subset < len(train_idx):
        train_idx = train_idx[_balanced_pick(train_labels[train_idx], subset, len(classes), g)]
    source = {"data": str(data), "val_size": val_size, "subset": subset, "seed": seed}
    if listing is not None:
        kw = {"image_size": image_size, "progress": progress}
        return Splits(
            train=listing.decode("train", train_idx, **kw),
            val=listing.decode("train", val_idx, **kw),
            test=listing.decode("test", **kw),
            source=source,
        )
    if train.images.shape[-2:] != (image_size, image_size):
        raise DataError(
            f"{data} holds {tuple(train.images.shape[-2:])} images, the model expects {image_size}"
        )
    return Splits(
        train=train.subset(train_idx), val=train.subset(val_idx), test=test, source=source
    )


# ----------------------------------------------------------------------------- augmentation


@functools.lru_cache(maxsize=32)
def _norm_constants(
    device: torch.device, mean: tuple[float, ...], std: tuple[float, ...]
) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, std) * 255 as (1, C, 1, 1) tensors on ``device``, made once per device: building
    them per batch would be a blocking host-to-GPU copy on every batch."""
    with torch.inference_mode(False):  # cached: never inference tensors, whoever asks first
        m = (torch.tensor(mean).view(1, -1, 1, 1) * 255.0).to(device)
        s = (torch.tensor(std).view(1, -1, 1, 1) * 255.0).to(device)
    return m, s


def normalize(
    images: torch.Tensor, mean: Sequence[float] = CIFAR10_MEAN, std: Sequence[float] = CIFAR10_STD
) -> torch.Tensor:
    """uint8 (B, C, H, W) -> float32 normalised with per-channel ``mean``/``std`` (on [0, 1] scale)."""
    m, s = _norm_constants(images.device, tuple(map(float, mean)), tuple(map(float, std)))
    return (images.float() - m) / s


def sample_transform(cfg: AugmentConfig, image_size: int = 32) -> v2.Compose:
    """The per-sample training transform on a uint8 (C, H, W) tensor (or PIL image) -> uint8."""
    ops: list[Callable] = (
        [v2.RandomCrop(image_size, padding=cfg.crop_padding)] if cfg.crop_padding else []
    )
    if cfg.flip:
        ops.append(v2.RandomHorizontalFlip())
    if cfg.randaug_ops:
        ops.append(v2.RandAugment(num_ops=cfg.randaug_ops, magnitude=cfg.randaug_magnitude))
    return v2.Compose(ops)


def make_mixer(cfg: AugmentConfig, num_classes: int) -> Callable | None:
    """torchvision's batch-level Mixup/CutMix, one chosen per batch; None when both are off.

    The callable maps (float images (B, C, H, W), int labels (B,)) -> (images, soft labels (B, K)).
    """
    mixers = []
    if cfg.mixup_alpha > 0:
        mixers.append(v2.MixUp(alpha=cfg.mixup_alpha, num_classes=num_classes))
    if cfg.cutmix_alpha > 0:
        mixers.append(v2.CutMix(alpha=cfg.cutmix_alpha, num_classes=num_classes))
    if not mixers:
        return None
    return mixers[0] if len(mixers) == 1 else v2.RandomChoice(mixers)


def finish_batch(
    images: torch.Tensor, labels: torch.Tensor, mixer: Callable | None, num_classes: int
):
    """uint8 images + int labels -> normalised float images + soft labels (B, K), mixed if ``mixer``."""
    x = normalize(images)
    if mixer is None:
        return x, torch.nn.functional.one_hot(labels, num_classes).float()
    return mixer(x, labels)


class _Collate:
    """Stack per-sample uint8 tensors, then normalise and mix the batch (runs in the workers)."""

    def __init__(self, mixer: Callable | None, num_classes: int) -> None:
        self.mixer, self.num_classes = mixer, num_classes

    def __call__(self, batch):
        images = torch.stack([b[0] for b in batch])
        labels = torch.tensor([b[1] for b in batch], dtype=torch.int64)
        return finish_batch(images, labels, self.mixer, self.num_classes)


class _Augmented(torch.utils.data.Dataset):
    def __init__(self, data: ImageSet, transform: Callable) -> None:
        self.data, self.transform = data, transform

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int):
        return self.transform(self.data.images[i]), int(self.data.labels[i])


class _TrainLoader:
    """Shared epoch bookkeeping: ``set_epoch`` seeds the shuffle, ``mix`` switches Mixup/CutMix."""

    def __init__(self, data: ImageSet, *, batch_size: int, aug: AugmentConfig, seed: int) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if len(data) < batch_size:
            raise DataError(
                f"the training set has {len(data)} images, fewer than one batch of {batch_size}; "
                "lower --batch-size or use more data"
            )
        self.data, self.batch_size, self.seed = data, batch_size, seed
        self.num_classes = len(data.classes)
        self.mixer = make_mixer(aug, self.num_classes)
        self.mix = True
        self.epoch = 0

    def set_epoch(self, epoch: int, *, mix: bool = True) -> None:
        self.epoch, self.mix = epoch, mix

    @property
    def epoch_seed(self) -> int:
        """The seed of this epoch's shuffle (and, per batch, of its augmentation)."""
        return self.seed * 100_003 + self.epoch

    def __len__(self) -> int:  # whole batches per epoch (the last partial batch is dropped)
        return len(self.data) // self.batch_size


class SampleLoader(_TrainLoader):
    """Per-sample torchvision augmentation in ``num_workers`` processes; yields CPU batches."""

    def __init__(
        self,
        data: ImageSet,
        *,
        batch_size: int,
        aug: AugmentConfig,
        seed: int = 0,
        num_workers: int = 2,
    ) -> None:
        super().__init__(data, batch_size=batch_size, aug=aug, seed=seed)
        self.dataset = _Augmented(data, sample_transform(aug, data.images.shape[-1]))
        self.num_workers = num_workers

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        loader = torch.utils.data.DataLoader(
            self.dataset,
            batch_size=self.batch_size,
            shuffle=True,
            drop_last=True,
            num_workers=self.num_workers,
            collate_fn=_Collate(self.mixer if self.mix else None, self.num_classes),
            generator=torch.Generator().manual_seed(self.epoch_seed),
        )
        yield from loader


class BatchLoader(_TrainLoader):
    """Batched augmentation (``vitcifar.gpu_aug.BatchAugment``) where ``data`` lives.

    - Data on a GPU: each batch is augmented there; nothing runs on the CPU.
    - Data in CPU RAM: ``threads`` Python threads augment the next batches ahead (each batch with
      its own seeded generator, so the result does not depend on thread timing); batches are
      then moved to ``device`` (pinned, non-blocking) where Mixup/CutMix and normalisation run.

    ``repeats`` > 1 is repeated augmentation (Hoffer et al. 2020; DeiT's RASampler): each epoch
    draws len(data) / repeats images and shows each ``repeats`` times, differently augmented,
    next to each other (so within one batch, except where a group straddles two).
    """

    def __init__(
        self,
        data: ImageSet,
        *,
        batch_size: int,
        aug: AugmentConfig,
        seed: int = 0,
        repeats: int = 1,
        device: torch.device | str | None = None,
        threads: int = 2,
    ) -> None:
        super().__init__(data, batch_size=batch_size, aug=aug, seed=seed)
        if repeats < 1:
            raise ValueError(f"repeats must be >= 1, got {repeats}")
        if threads < 0:
            raise ValueError(f"threads must be >= 0, got {threads}")
        self.repeats, self.threads = repeats, threads
        self.device = torch.device(device) if device is not None else data.images.device
        self.augment = BatchAugment.from_config(aug)

    def _order(self, generator: torch.Generator) -> torch.Tensor:
        n = len(self.data)
        perm = torch.randperm(n, generator=generator)
        if self.repeats == 1:
            return perm
        base = perm[: (n + self.repeats - 1) // self.repeats]
        return base.repeat_interleave(self.repeats)[:n]

    def _augmented(self, order: torch.Tensor, b: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Batch ``b`` of this epoch: augmented uint8 images and int labels, on the data's device."""
        src = self.data.images.device
        idx = order[b * self.batch_size : (b + 1) * self.batch_size]
        g = torch.Generator(device=src).manual_seed((self.epoch_seed * 1_000_003 + b) % 2**63)
        return self.augment(self.data.images[idx], generator=g), self.data.labels[idx]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = self._order(torch.Generator().manual_seed(self.epoch_seed))
        order = order.to(self.data.images.device)  # once per epoch: no host sync per batch
        mixer = self.mixer if self.mix else None
        pin = self.device.type == "cuda" and self.data.images.device.type == "cpu"
        for images, labels in self._batches(order):
            if pin:
                images, labels = images.pin_memory(), labels.pin_memory()
            images = images.to(self.device, non_blocking=True)
            labels = labels.to(self.device, non_blocking=True)
            yield finish_batch(images, labels, mixer, self.num_classes)

    def _batches(self, order: torch.Tensor) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self)
        if self.data.images.device.type != "cpu" or self.threads == 0:
            for b in range(n):
                yield self._augmented(order, b)
            return
        ahead = 2 * self.threads
        with ThreadPoolExecutor(max_workers=self.threads) as pool:
            pending = deque(pool.submit(self._augmented, order, b) for b in range(min(n, ahead)))
            for b in range(n):
                result = pending.popleft().result()
                if b + ahead < n:
                    pending.append(pool.submit(self._augmented, order, b + ahead))
                yield result


def eval_batches(
    data: ImageSet, *, batch_size: int, device: torch.device
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Normalised, un-augmented (images, int labels) batches on ``device``, in order."""
    for i in range(0, len(data), batch_size):
        images = data.images[i : i + batch_size].to(device, non_blocking=True)
        yield normalize(images), data.labels[i : i + batch_size].to(device, non_blocking=True)
