"""BatchAugment (vitcifar/gpu_aug.py) against torchvision's per-sample RandAugment path.

The reference for every op is the call torchvision's own RandAugment makes for one image,
``RandAugment._apply_image_or_video_transform(img, op, magnitude, interpolation=NEAREST, fill)``,
so these tests pin equivalence to the real per-sample pipeline, not to a re-derivation of it.

Tolerance: none. Every op, geometric ones included, is compared for exact equality. The batched
kernels repeat torchvision's float32 arithmetic (the affine grid is built with torchvision's
formula and rounded by the same ``grid_sample`` nearest rule), so exactness is achievable, and a
tolerance such as "99% of pixels equal" would let a half-pixel convention error on the image
border or a rare rounding difference in a blend slip through.
"""

import pytest
import torch
from torchvision.transforms import v2
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as F

from vitcifar.gpu_aug import RANDAUG_OPS, SIGNED_OPS, AugmentParams, BatchAugment, magnitude_bins

SPACE = v2.RandAugment._AUGMENTATION_SPACE
GEOMETRIC = ("ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate")


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """The tensors here are tiny, so intra-op threads only add synchronisation; on a busy
    2-core machine they made this file ten times slower (34 s instead of 3 s)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _structured(height: int, width: int) -> torch.Tensor:
    """(6, 3, H, W) uint8 images with structure: colour gradients, stripes, a disc, a flat image,
    a two-level image and a dark low-contrast one (edge cases of AutoContrast and Equalize)."""
    y = torch.linspace(0, 1, height).view(height, 1).expand(height, width)
    x = torch.linspace(0, 1, width).view(1, width).expand(height, width)
    gradient = torch.stack([x, y, (x + y) / 2]) * 255
    stripes = torch.stack([(torch.sin(20 * x) + 1) * 127, (torch.cos(13 * y) + 1) * 127, x * 200])
    disc = ((x - 0.4) ** 2 + (y - 0.6) ** 2 < 0.1).float()
    disc = torch.stack([disc * 230 + 10, disc * 40 + 100, (1 - disc) * 180 + y * 60])
    flat = torch.full((3, height, width), 77.0)
    two_level = torch.where(x > 0.5, 200.0, 30.0).expand(3, -1, -1)
    dark = 10 + 30 * torch.stack([x, y, x * y])
    images = torch.stack([gradient, stripes, disc, flat, two_level, dark])
    return images.round().clamp(0, 255).to(torch.uint8)


def _images(
    n_random: int, *, height: int = 32, width: int = 32, channels: int = 3, seed: int = 0
) -> torch.Tensor:
    """(n_random + 6, C, H, W) uint8: fresh random images followed by the structured ones."""
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randint(0, 256, (n_random, 3, height, width), generator=generator)
    images = torch.cat([noise.to(torch.uint8), _structured(height, width)])
    return images[:, :channels].contiguous()


def _torchvision_op(images: torch.Tensor, op: str, magnitude: float, *, fill) -> torch.Tensor:
    """torchvision's RandAugment applying `op` at `magnitude` to each image separately."""
    augment = v2.RandAugment(fill=fill)
    return torch.stack(
        [
            augment._apply_image_or_video_transform(
                image, op, magnitude, interpolation=InterpolationMode.NEAREST, fill=augment._fill
            )
            for image in images
        ]
    )


def _randaugment_magnitudes(op: str, *, height: int, width: int) -> list[float]:
    """The values torchvision's RandAugment can hand to `op` at bins 0, 9 (default) and 30,
    both signs for signed ops."""
    magnitudes_fn, signed = SPACE[op]
    bins = magnitudes_fn(31, height, width)
    if bins is None:
        return [0.0]
    values = [float(bins[i]) for i in (0, 9, 30)]
    return values + [-v for v in values if v != 0] if signed else values


def _per_sample_reference(
    images: torch.Tensor, params: AugmentParams, augment: BatchAugment
) -> torch.Tensor:
    """What RandomCrop(padding) + RandomHorizontalFlip + RandAugment do to each image, with the
    draws of `params` (torchvision's own kernels, one image at a time)."""
    height, width = images.shape[-2:]
    randaugment = v2.RandAugment(fill=augment.fill)
    outputs = []
    for i, image in enumerate(images):
        pad = augment.crop_padding
        image = F.pad(image, [pad, pad, pad, pad], fill=0)
        image = F.crop(image, int(params.crop_top[i]), int(params.crop_left[i]), height, width)
        if params.flip[i]:
            image = F.horizontal_flip(image)
        for slot in range(augment.num_ops):
            op = RANDAUG_OPS[int(params.ops[i, slot])]
            magnitudes_fn, signed = SPACE[op]
            bins = magnitudes_fn(augment.num_magnitude_bins, height, width)
            magnitude = 0.0 if bins is None else float(bins[augment.magnitude])
            if signed and params.negate[i, slot]:
                magnitude = -magnitude
            image = randaugment._apply_image_or_video_transform(
                image,
                op,
                magnitude,
                interpolation=InterpolationMode.NEAREST,
                fill=randaugment._fill,
            )
        outputs.append(image)
    return torch.stack(outputs)


# --- op table ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("height", "width"), [(32, 32), (24, 40)])
def test_op_names_signs_and_magnitudes_mirror_torchvision(height: int, width: int) -> None:
    assert RANDAUG_OPS == tuple(SPACE)
    assert SIGNED_OPS == {op for op, (_, signed) in SPACE.items() if signed}
    for op, (magnitudes_fn, _) in SPACE.items():
        expected = magnitudes_fn(31, height, width)
        ours = magnitude_bins(op, num_bins=31, height=height, width=width)
        if expected is None:
            assert ours is None, op
        else:
            torch.testing.assert_close(ours, expected, rtol=0, atol=0, msg=op)


# --- single ops, exact equality --------------------------------------------------------------------


@pytest.mark.parametrize("op", RANDAUG_OPS)
@pytest.mark.parametrize(("height", "width"), [(32, 32), (27, 35)])
def test_apply_op_equals_torchvision_per_image(op: str, height: int, width: int) -> None:
    images = _images(18, height=height, width=width, seed=RANDAUG_OPS.index(op) + height)
    augment = BatchAugment()
    magnitudes = _randaugment_magnitudes(op, height=height, width=width)
    if op == "Rotate" and height == width:
        magnitudes += [90.0, -180.0, 45.0]  # beyond RandAugment's range: angles with symmetry
    for magnitude in magnitudes:
        expected = _torchvision_op(images, op, magnitude, fill=None)
        torch.testing.assert_close(
            augment.apply_op(images, op, magnitude),
            expected,
            rtol=0,
            atol=0,
            msg=f"{op} at {magnitude}",
        )


@pytest.mark.parametrize("op", GEOMETRIC)
def test_geometric_ops_fill_like_torchvision(op: str) -> None:
    images = _images(6, height=28, width=28, seed=3)
    augment = BatchAugment(fill=128)
    for magnitude in _randaugment_magnitudes(op, height=28, width=28)[1:]:
        expected = _torchvision_op(images, op, magnitude, fill=128)
        assert (expected == 128).any()
        torch.testing.assert_close(
            augment.apply_op(images, op, magnitude), expected, rtol=0, atol=0
        )


@pytest.mark.parametrize(
    "op",
    [
        "Brightness",
        "Contrast",
        "Sharpness",
        "Posterize",
        "Solarize",
        "AutoContrast",
        "Equalize",
        "Color",
        "Rotate",
    ],
)
def test_apply_op_single_channel(op: str) -> None:
    images = _images(6, height=20, width=20, channels=1, seed=5)
    magnitude = _randaugment_magnitudes(op, height=20, width=20)[-1]
    expected = _torchvision_op(images, op, magnitude, fill=None)
    torch.testing.assert_close(
        BatchAugment().apply_op(images, op, magnitude), expected, rtol=0, atol=0
    )


# --- the whole pipeline, exact equality for the same draws ---------------------------------------


@pytest.mark.parametrize("strategy", ["index", "mask"])
@pytest.mark.parametrize(
    ("height", "width", "settings"),
    [
        (32, 32, {}),
        (24, 40, {"fill": 200}),
        (28, 28, {"num_ops": 3, "magnitude": 17, "num_magnitude_bins": 21, "crop_padding": 2}),
    ],
)
def test_pipeline_equals_per_sample_torchvision_for_same_draws(
    strategy: str, height: int, width: int, settings: dict
) -> None:
    """Both selection strategies ("index" runs on CPU, "mask" on GPUs) against torchvision."""
    images = _images(90, height=height, width=width, seed=11)
    augment = BatchAugment(**settings)
    params = augment.sample_params(len(images), generator=torch.Generator().manual_seed(7))
    ours = augment._augment(images, params, strategy=strategy)
    torch.testing.assert_close(ours, _per_sample_reference(images, params, augment), rtol=0, atol=0)


def test_call_draws_with_sample_params_and_is_reproducible() -> None:
    images = _images(26, seed=2)
    augment = BatchAugment()
    first = augment(images, generator=torch.Generator().manual_seed(123))
    again = augment(images, generator=torch.Generator().manual_seed(123))
    params = augment.sample_params(len(images), generator=torch.Generator().manual_seed(123))
    torch.testing.assert_close(first, again, rtol=0, atol=0)
    torch.testing.assert_close(first, augment.apply(images, params), rtol=0, atol=0)
    other = augment(images, generator=torch.Generator().manual_seed(124))
    assert not torch.equal(first, other)


# --- draws ---------------------------------------------------------------------------------------


def _chi_square_uniform(values: torch.Tensor, num_values: int) -> float:
    counts = torch.bincount(values.flatten(), minlength=num_values).double()
    assert counts.numel() == num_values, "values out of range"
    expected = values.numel() / num_values
    return float(((counts - expected) ** 2 / expected).sum())


def test_draw_frequencies_are_those_of_the_per_sample_pipeline() -> None:
    """20k draws: uniform ops per slot, fair signs and flips, uniform crop offsets.

    Chi-square bounds are the 1 - 1e-6 quantiles (df 13: 52.7, df 80: 155.1); proportions
    must lie within 5 sigma of 0.5 (sigma = 0.5 / sqrt(n)).
    """
    n = 20_000
    params = BatchAugment().sample_params(n, generator=torch.Generator().manual_seed(0))
    assert params.ops.shape == params.negate.shape == (n, 2)
    for slot in range(2):
        assert _chi_square_uniform(params.ops[:, slot], 14) < 52.7
    signed = (params.ops >= 1) & (params.ops <= 9)
    for draws in (params.negate[signed].double(), params.flip.double()):
        assert abs(draws.mean().item() - 0.5) < 5 * 0.5 / draws.numel() ** 0.5
    for offsets in (params.crop_top, params.crop_left):
        assert offsets.min().item() == 0 and offsets.max().item() == 8
    assert _chi_square_uniform(params.crop_top * 9 + params.crop_left, 81) < 155.1
    # the two slots are drawn independently: same-op pairs occur 1/14 of the time
    same = (params.ops[:, 0] == params.ops[:, 1]).double().mean().item()
    assert abs(same - 1 / 14) < 5 * (1 / 14 * 13 / 14 / n) ** 0.5


def test_flip_false_and_no_padding_leave_geometry_alone() -> None:
    images = _images(10, seed=4)
    augment = BatchAugment(crop_padding=0, flip=False, num_ops=0)
    params = augment.sample_params(len(images))
    assert not params.flip.any() and not params.crop_top.any() and not params.crop_left.any()
    torch.testing.assert_close(augment(images), images, rtol=0, atol=0)


# --- per-sample randomness, shapes, dtypes ---------------------------------------------------------


def test_identical_images_get_different_augmentations() -> None:
    images = _structured(32, 32)[:1].expand(64, -1, -1, -1).contiguous()
    out = BatchAugment()(images, generator=torch.Generator().manual_seed(0))
    distinct = {tuple(image.flatten().tolist()) for image in out}
    assert len(distinct) >= 60


@pytest.mark.parametrize(
    ("height", "width", "channels"), [(24, 24, 3), (40, 40, 3), (24, 40, 3), (32, 32, 1)]
)
def test_output_shape_dtype_device_and_input_untouched(
    height: int, width: int, channels: int
) -> None:
    images = _images(10, height=height, width=width, channels=channels)
    before = images.clone()
    out = BatchAugment()(images, generator=torch.Generator().manual_seed(0))
    assert out.shape == images.shape and out.dtype == torch.uint8 and out.device == images.device
    torch.testing.assert_close(images, before, rtol=0, atol=0)


def test_distribution_matches_per_sample_compose() -> None:
    """Same image 1,200 times through ours and through torchvision's per-sample Compose (own
    random draws each): per-image mean, per-image std and the share of black pixels agree within
    4 standard errors."""
    n = 1200
    image = _structured(32, 32)[2]
    ours = BatchAugment()(
        image.expand(n, -1, -1, -1).contiguous(), generator=torch.Generator().manual_seed(1)
    )
    compose = v2.Compose(
        [v2.RandomCrop(32, padding=4), v2.RandomHorizontalFlip(), v2.RandAugment(2, 9)]
    )
    torch.manual_seed(1)
    theirs = torch.stack([compose(image) for _ in range(n)])

    def stats(batch: torch.Tensor) -> dict[str, torch.Tensor]:
        values = batch.double().flatten(1)
        return {
            "mean": values.mean(1),
            "std": values.std(1),
            "black": (batch == 0).all(1).double().flatten(1).mean(1),
        }

    for name, a in stats(ours).items():
        b = stats(theirs)[name]
        standard_error = (a.var() / n + b.var() / n).sqrt().item()
        assert abs(a.mean().item() - b.mean().item()) < 4 * standard_error, name


# --- bad input -----------------------------------------------------------------------------------


def test_bad_images_raise_value_errors_that_name_the_expectation() -> None:
    augment = BatchAugment()
    with pytest.raises(ValueError, match="torch.uint8"):
        augment(torch.rand(2, 3, 32, 32))
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        augment(torch.zeros(3, 32, 32, dtype=torch.uint8))
    with pytest.raises(ValueError, match="C = 1 or 3"):
        augment(torch.zeros(2, 4, 32, 32, dtype=torch.uint8))
    with pytest.raises(ValueError, match="torch.uint8"):
        augment.apply_op(torch.rand(2, 3, 8, 8), "Rotate", 9.0)
    with pytest.raises(ValueError, match="expected one of"):
        augment.apply_op(torch.zeros(2, 3, 8, 8, dtype=torch.uint8), "Invert", 0.0)
    with pytest.raises(ValueError, match="Posterize"):
        augment.apply_op(torch.zeros(2, 3, 8, 8, dtype=torch.uint8), "Posterize", 9.0)
    params = augment.sample_params(3)
    with pytest.raises(ValueError, match="sample_params"):
        augment.apply(torch.zeros(2, 3, 8, 8, dtype=torch.uint8), params)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"magnitude": 31},
        {"magnitude": -1},
        {"num_ops": -1},
        {"fill": 256},
        {"crop_padding": -2},
        {"num_magnitude_bins": 1},
    ],
)
def test_bad_settings_raise_value_errors(kwargs: dict) -> None:
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        BatchAugment(**kwargs)


# --- CUDA ------------------------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_equals_per_sample_torchvision_on_cuda_without_host_sync() -> None:
    images = _images(90, seed=9).cuda()
    augment = BatchAugment()
    generator = torch.Generator(device="cuda").manual_seed(0)
    augment(images, generator=generator)  # first call per size copies the op table to the GPU
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        params = augment.sample_params(len(images), device="cuda", generator=generator)
        ours = augment.apply(images, params)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert ours.device == images.device
    torch.testing.assert_close(ours, _per_sample_reference(images, params, augment), rtol=0, atol=0)
    with pytest.raises(ValueError, match="generator"):
        augment(images, generator=torch.Generator())
