"""RandAugment's one record per op (vitcifar.gpu_aug.OPS) against torchvision's op space, and
BatchAugment.from_config: the one place where AugmentConfig meets BatchAugment."""

from __future__ import annotations

from dataclasses import fields

import pytest
import torch
from torchvision.transforms import v2

from vitcifar.config import AugmentConfig
from vitcifar.data import BatchLoader, ImageSet
from vitcifar.gpu_aug import KERNEL_RUNS, OPS, RANDAUG_OPS, SIGNED_OPS, BatchAugment

SPACE = v2.RandAugment._AUGMENTATION_SPACE
GEOMETRIC = {"ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate"}  # torchvision's affine ops


def test_each_record_is_torchvisions_op():
    assert [op.name for op in OPS] == list(SPACE) == list(RANDAUG_OPS)
    for op in OPS:
        bins_fn, signed = SPACE[op.name]
        assert op.signed == signed, op.name
        assert op.geometric == (op.name in GEOMETRIC), op.name
        assert (op.bins is None) == (bins_fn(31, 32, 32) is None), op.name
        assert (op.kernel is None) == (op.name == "Identity"), op.name
    assert {op.name for op in OPS if op.signed} == SIGNED_OPS


def test_kernel_runs_are_derived_from_the_records():
    """Every op with a kernel is covered by exactly one (first, last, kernel) run, with its own
    kernel; the geometric ops share one run (one gather per batch)."""
    covered = {}
    for first, last, kernel in KERNEL_RUNS:
        for index in range(first, last + 1):
            assert index not in covered
            covered[index] = kernel
    assert covered == {i: op.kernel for i, op in enumerate(OPS) if op.kernel is not None}
    geometric = [i for i, op in enumerate(OPS) if op.geometric]
    assert any((first, last) == (min(geometric), max(geometric)) for first, last, _ in KERNEL_RUNS)


@pytest.mark.parametrize(
    "aug",
    [
        AugmentConfig(),
        AugmentConfig(crop_padding=2, flip=False, randaug_ops=3, randaug_magnitude=17),
        AugmentConfig(crop_padding=0, randaug_ops=0),
    ],
)
def test_from_config_takes_the_batched_fields(aug):
    augment = BatchAugment.from_config(aug)
    assert (augment.crop_padding, augment.flip, augment.num_ops, augment.magnitude) == (
        aug.crop_padding,
        aug.flip,
        aug.randaug_ops,
        aug.randaug_magnitude,
    )
    data = ImageSet(torch.zeros(32, 3, 8, 8, dtype=torch.uint8), torch.arange(32) % 4, list("abcd"))
    assert repr(BatchLoader(data, batch_size=8, aug=aug).augment) == repr(augment)


def test_every_augment_field_is_read_by_the_batch_or_the_mixer():
    """A new AugmentConfig field is either batched (from_config) or a Mixup/CutMix setting."""
    batched = {"crop_padding", "flip", "randaug_ops", "randaug_magnitude"}
    mixing = {"mixup_alpha", "cutmix_alpha"}
    assert {f.name for f in fields(AugmentConfig)} == batched | mixing
    base = BatchAugment.from_config(AugmentConfig())
    for name in batched:
        value = {"crop_padding": 1, "flip": False, "randaug_ops": 1, "randaug_magnitude": 3}[name]
        changed = BatchAugment.from_config(AugmentConfig(**{name: value}))
        assert repr(changed) != repr(base), name
