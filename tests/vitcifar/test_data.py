import shutil

import pytest
import torch

from vitcifar.data import AugmentConfig, BatchLoader, DataError, SampleLoader, load_splits


def test_folder_splits_are_disjoint_balanced_and_seeded(image_folder):
    s = load_splits(str(image_folder), val_size=8, subset=20, progress=False)
    assert s.classes == ["blue", "green", "red", "yellow"]
    assert len(s.train) == 20 and len(s.val) == 8 and len(s.test) == 64
    assert s.train.images.dtype == torch.uint8 and s.train.images.shape[1:] == (3, 32, 32)
    assert torch.bincount(s.train.labels, minlength=4).tolist() == [5, 5, 5, 5]
    assert torch.bincount(s.val.labels, minlength=4).tolist() == [2, 2, 2, 2]
    # no validation image is used for training
    train_rows = {tuple(im.flatten().tolist()) for im in s.train.images}
    assert not any(tuple(im.flatten().tolist()) in train_rows for im in s.val.images)
    again = load_splits(str(image_folder), val_size=8, subset=20, progress=False)
    assert torch.equal(again.val.images, s.val.images) and torch.equal(
        again.train.labels, s.train.labels
    )
    other = load_splits(str(image_folder), val_size=8, subset=20, seed=1, progress=False)
    assert not torch.equal(other.val.images, s.val.images)


def test_val_size_zero_keeps_all_training_images(image_folder):
    s = load_splits(str(image_folder), val_size=0, progress=False)
    assert len(s.val) == 0 and len(s.train) == 4 * 48


def test_other_image_sizes_are_resized(image_folder):
    s = load_splits(str(image_folder), val_size=4, subset=8, image_size=16, progress=False)
    assert s.train.images.shape[1:] == (3, 16, 16)


@pytest.fixture
def folder_copy(image_folder, tmp_path):
    dst = tmp_path / "data"
    shutil.copytree(image_folder, dst)
    return dst


def test_missing_path(tmp_path):
    with pytest.raises(
        DataError, match=r"does-not-exist does not exist; expected DATA/train/<class>"
    ):
        load_splits(str(tmp_path / "does-not-exist"))


def test_empty_folder(tmp_path):
    with pytest.raises(DataError, match=r"has no train/ or test/ folder"):
        load_splits(str(tmp_path))


def test_missing_test_folder(folder_copy):
    shutil.rmtree(folder_copy / "test")
    with pytest.raises(DataError, match=r"has no test/ folder"):
        load_splits(str(folder_copy))


def test_class_folders_differ(folder_copy):
    (folder_copy / "test" / "red").rename(folder_copy / "test" / "crimson")
    with pytest.raises(DataError, match=r"only in train \['red'\], only in test \['crimson'\]"):
        load_splits(str(folder_copy))


def test_class_folder_without_images(folder_copy):
    for f in (folder_copy / "test" / "blue").iterdir():
        f.unlink()
    with pytest.raises(DataError, match=r"class folders without images: \['blue'\]"):
        load_splits(str(folder_copy))


def test_corrupt_image_is_named(folder_copy):
    bad = folder_copy / "test" / "green" / "0003.png"
    bad.write_bytes(b"\x89PNG not really")
    with pytest.raises(DataError, match=r"cannot read image .*green/0003.png"):
        load_splits(str(folder_copy), val_size=8, progress=False)


def test_macos_resource_forks_in_a_zip_made_on_a_mac_are_not_images(image_folder, folder_copy):
    """A zip made on a Mac holds "._name.png" beside each image (AppleDouble metadata, no
    image): they are skipped as hidden files, as predict skips them; they failed the run."""
    for png in list((folder_copy / "train").rglob("*.png")) + list(
        (folder_copy / "test").rglob("*.png")
    ):
        (png.parent / f"._{png.name}").write_bytes(b"\x00\x05\x16\x07Mac OS X        ")
    s = load_splits(str(folder_copy), val_size=8, subset=20, progress=False)
    plain = load_splits(str(image_folder), val_size=8, subset=20, progress=False)
    assert len(s.test) == len(plain.test) == 64
    assert torch.equal(s.train.images, plain.train.images)
    assert torch.equal(s.test.images, plain.test.images)


def test_val_size_too_large(image_folder):
    with pytest.raises(DataError, match="leaves no training images"):
        load_splits(str(image_folder), val_size=10_000, progress=False)


@pytest.mark.parametrize("loader_cls", [SampleLoader, BatchLoader])
def test_loaders_yield_normalised_images_and_soft_targets(image_folder, loader_cls):
    s = load_splits(str(image_folder), val_size=0, progress=False)
    kw = {"num_workers": 0} if loader_cls is SampleLoader else {}
    loader = loader_cls(s.train, batch_size=32, aug=AugmentConfig(), seed=0, **kw)
    assert len(loader) == len(s.train) // 32
    batches = list(loader)
    assert len(batches) == len(loader)
    x, y = batches[0]
    assert x.shape == (32, 3, 32, 32) and x.dtype == torch.float32
    assert y.shape == (32, 4)
    torch.testing.assert_close(y.sum(-1), torch.ones(32))
    assert -3.0 < x.mean().item() < 3.0
    # Mixup/CutMix switched off -> one-hot targets
    loader.set_epoch(1, mix=False)
    _, y = next(iter(loader))
    assert set(y.flatten().tolist()) <= {0.0, 1.0} and torch.equal(y.sum(-1), torch.ones(32))


def test_batch_loader_epochs_are_reproducible_and_differ(image_folder):
    s = load_splits(str(image_folder), val_size=0, progress=False)
    a = BatchLoader(
        s.train, batch_size=32, aug=AugmentConfig(mixup_alpha=0, cutmix_alpha=0), seed=3
    )
    b = BatchLoader(
        s.train, batch_size=32, aug=AugmentConfig(mixup_alpha=0, cutmix_alpha=0), seed=3
    )
    a.set_epoch(2)
    b.set_epoch(2)
    for (xa, ya), (xb, yb) in zip(a, b):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    b.set_epoch(3)
    assert not torch.equal(next(iter(a))[0], next(iter(b))[0])


def test_repeated_augmentation_repeats_inside_a_batch(image_folder):
    s = load_splits(str(image_folder), val_size=0, progress=False)
    loader = BatchLoader(
        s.train, batch_size=48, aug=AugmentConfig(mixup_alpha=0, cutmix_alpha=0), repeats=3
    )
    order = loader._order(torch.Generator().manual_seed(0))
    assert len(order) == len(s.train)
    assert torch.equal(order[0:3], order[0].repeat(3)) and len(order.unique()) == len(s.train) // 3


def test_batch_smaller_than_dataset_required(image_folder):
    s = load_splits(str(image_folder), val_size=0, subset=8, progress=False)
    with pytest.raises(DataError, match="fewer than one batch of 32"):
        SampleLoader(s.train, batch_size=32, aug=AugmentConfig())


def test_batch_loader_threads_do_not_change_the_batches(image_folder):
    s = load_splits(str(image_folder), val_size=0, progress=False)
    aug = AugmentConfig(mixup_alpha=0, cutmix_alpha=0)
    serial = BatchLoader(s.train, batch_size=16, aug=aug, seed=5, threads=0)
    threaded = BatchLoader(s.train, batch_size=16, aug=aug, seed=5, threads=2)
    pairs = list(zip(serial, threaded))
    assert len(pairs) == len(serial) == 12
    for (xa, ya), (xb, yb) in pairs:
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
