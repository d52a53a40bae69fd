"""Batched RandAugment training augmentation for uint8 image batches, on any device.

`BatchAugment` does to every image of a ``(B, C, H, W)`` uint8 batch, independently, what this
per-sample torchvision pipeline does to one image::

    v2.Compose([v2.RandomCrop(H, padding=4), v2.RandomHorizontalFlip(),
                v2.RandAugment(num_ops=2, magnitude=9)])

but for the whole batch at once and on the batch's device (the CIFAR-10 training set is 150 MB of
uint8, so on a GPU it stays resident and each batch is augmented there).

How it stays equal to the per-sample path (tests/vitcifar/test_gpu_aug.py checks each point):

* Crop and flip are one integer gather per batch (zero padding, as ``RandomCrop``'s ``fill=0``).
* Each op is torchvision's tensor kernel rewritten with per-sample parameters broadcast as
  ``(B, 1, 1, 1)`` tensors. With a fixed magnitude bin there are only 10 geometric transforms
  (5 ops x 2 signs); for each, torchvision's inverse affine matrix, affine grid and
  ``grid_sample(mode="nearest")`` rounding are applied once to an image of pixel indices, which
  gives a map from output to input pixels; a batch then needs one uint8 ``gather`` with a map per
  sample. The colour ops repeat torchvision's float32 arithmetic. torchvision blends with
  ``add_(other, alpha=...)``, a fused multiply-add on CPU and CUDA; with a per-sample ``alpha``
  tensor we form that sum in float64, where it is exact, and round once to float32, which
  reproduces the fused result bit for bit. (Sharpness forms its 3x3 filter sum exactly instead
  of convolving; see `_sharpness` for why the rounded result is the same.)
* Per op slot each sample draws one of 14 ops. On CPU the batch is sorted by op, each op
  transforms its contiguous slice, and the batch is unsorted (every pixel is transformed once
  per slot). On other devices every op runs on the full batch and ``torch.where`` keeps it for
  the samples that drew it, so no group size is read on the host: ``__call__`` never
  synchronises with a GPU (apart from copying a small parameter table to the device on the
  first call per image size).

All randomness comes from ``torch`` draws on the images' device (``generator`` if given), so a
seeded generator reproduces the output exactly.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

import torch
import torch.nn.functional as nnf
from torchvision.transforms.v2 import functional as F

from vitcifar.config import AugmentConfig

__all__ = [
    "KERNEL_RUNS",
    "OPS",
    "RANDAUG_OPS",
    "SIGNED_OPS",
    "AugmentParams",
    "BatchAugment",
    "RandAugmentOp",
    "magnitude_bins",
]


def _inverse_affine(
    *,
    center: tuple[float, float],
    angle: float,
    translate: tuple[float, float],
    shear: tuple[float, float],
) -> list[float]:
    """torchvision's ``_get_inverse_affine_matrix`` at scale 1 (angles in degrees; center and
    translate in pixels, center relative to the image centre).

    Returns the 2x3 matrix, row-major, that maps an output pixel to the input pixel it reads.
    """
    rot = math.radians(angle)
    sx = math.radians(shear[0])
    sy = math.radians(shear[1])
    cx, cy = center
    tx, ty = translate
    cos_sy = math.cos(sy)
    tan_sx = math.tan(sx)
    rot_minus_sy = rot - sy
    cx_plus_tx = cx + tx
    cy_plus_ty = cy + ty
    a = math.cos(rot_minus_sy) / cos_sy
    b = -(a * tan_sx + math.sin(rot))
    c = math.sin(rot_minus_sy) / cos_sy
    d = math.cos(rot) - c * tan_sx
    matrix = [d, -b, 0.0, -c, a, 0.0]
    matrix[2] += cx - matrix[0] * cx_plus_tx - matrix[1] * cy_plus_ty
    matrix[5] += cy - matrix[3] * cx_plus_tx - matrix[4] * cy_plus_ty
    return matrix


# ----------------------------------------------------------------------------- per-op parameters
# Each takes (magnitude, height, width) and returns the `_OpTable` fields the op sets; the others
# stay neutral (`_NEUTRAL`). They repeat how torchvision's RandAugment computes its arguments.


def _shear(axis: int) -> Callable[[float, int, int], dict[str, Any]]:
    def params(magnitude: float, height: int, width: int) -> dict[str, Any]:
        # torchvision: shear angle atan(magnitude) in degrees, about the top-left corner.
        degrees = math.degrees(math.atan(magnitude))
        shear = (degrees, 0.0) if axis == 0 else (0.0, degrees)
        theta = _inverse_affine(
            center=(-0.5 * width, -0.5 * height), angle=0.0, translate=(0.0, 0.0), shear=shear
        )
        return {"theta": theta}

    return params


def _translate(axis: int) -> Callable[[float, int, int], dict[str, Any]]:
    def params(magnitude: float, height: int, width: int) -> dict[str, Any]:
        shift = float(int(magnitude))  # torchvision truncates to whole pixels
        translate = (shift, 0.0) if axis == 0 else (0.0, shift)
        theta = _inverse_affine(center=(0.0, 0.0), angle=0.0, translate=translate, shear=(0.0, 0.0))
        return {"theta": theta}

    return params


def _rotate_params(magnitude: float, height: int, width: int) -> dict[str, Any]:
    # F.rotate: counter-clockwise degrees, about the centre; affine takes the negated angle.
    theta = _inverse_affine(
        center=(0.0, 0.0), angle=-(magnitude % 360), translate=(0.0, 0.0), shear=(0.0, 0.0)
    )
    return {"theta": theta}


def _enhance(op: str) -> Callable[[float, int, int], dict[str, Any]]:
    def params(magnitude: float, height: int, width: int) -> dict[str, Any]:
        factor = 1.0 + magnitude
        if factor < 0:
            raise ValueError(
                f"{op} magnitude {magnitude} gives the enhance factor 1 + magnitude = {factor}, "
                f"which must be >= 0; use a magnitude >= -1"
            )
        return {"factor": factor, "alpha": 1.0 - factor}  # alpha: the degenerate image's weight

    return params


def _posterize_params(magnitude: float, height: int, width: int) -> dict[str, Any]:
    bits = int(magnitude)
    if not 0 <= bits <= 8:
        raise ValueError(f"Posterize keeps int(magnitude) bits, in [0, 8]; got {magnitude}")
    return {"keep_bits": 255 if bits == 8 else ((1 << bits) - 1) << (8 - bits)}


def _solarize_params(magnitude: float, height: int, width: int) -> dict[str, Any]:
    threshold = 255.0 * magnitude
    if threshold > 255.0:
        raise ValueError(
            f"Solarize inverts pixels >= 255 * magnitude, magnitude must be <= 1; got {magnitude}"
        )
    return {"threshold": threshold}


_IDENTITY_AFFINE = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
# The value of each `_OpTable` field for an op that does not use it.
_NEUTRAL: dict[str, Any] = {
    "theta": _IDENTITY_AFFINE,
    "factor": 1.0,
    "alpha": 0.0,
    "keep_bits": 255,
    "threshold": 256.0,
}


@dataclass(frozen=True)
class _OpTable:
    """Op parameters, one row per (op, signed magnitude); a leading dim R (rows) or B (samples),
    and for per-sample use scalars shaped (B, 1, 1, 1) so that they broadcast over images.

    source: (R, H*W) int64, the input pixel (flat index) each output pixel of a geometric op
        reads, H*W where it reads from outside the image (the fill); identity for other ops.
    factor: float32, enhance factor 1 + magnitude of Brightness/Color/Contrast/Sharpness, else 1.
    alpha: float64 (float32 where the device has no float64), float32(1 - factor): the weight of
        the degenerate image in torchvision's blends; 0 for other ops.
    keep_bits: uint8, bit mask kept by Posterize; 255 for other ops.
    threshold: float32, Solarize inverts pixels >= threshold; 256 (never) for other ops.
    """

    source: torch.Tensor
    factor: torch.Tensor
    alpha: torch.Tensor
    keep_bits: torch.Tensor
    threshold: torch.Tensor

    @classmethod
    def build(
        cls,
        rows: list[tuple[str, float]],
        *,
        height: int,
        width: int,
        device: torch.device,
    ) -> _OpTable:
        """Table of `rows` [(op, magnitude), ...] for (height, width) images on `device`."""
        params = [_op_row(op, magnitude, height=height, width=width) for op, magnitude in rows]
        theta, factor, alpha, keep_bits, threshold = (
            [p[name] for p in params]
            for name in ("theta", "factor", "alpha", "keep_bits", "threshold")
        )
        # alpha is rounded to float32 first, as torchvision's kernels do with a Python scalar.
        alpha32 = torch.tensor(alpha, dtype=torch.float32)
        theta = torch.tensor(theta, dtype=torch.float32).view(-1, 2, 3).to(device)
        return cls(
            source=_source_maps(theta, height=height, width=width),
            factor=torch.tensor(factor, dtype=torch.float32).to(device),
            alpha=alpha32.to(_exact_dtype(device)).to(device),
            keep_bits=torch.tensor(keep_bits, dtype=torch.uint8).to(device),
            threshold=torch.tensor(threshold, dtype=torch.float32).to(device),
        )

    def take(self, rows: torch.Tensor) -> _OpTable:
        """Per-sample parameters for `rows` (B,) int64: source (B, H*W), the rest (B, 1, 1, 1)."""
        taken = {}
        for field in fields(self):
            value = getattr(self, field.name)[rows]
            taken[field.name] = value if field.name == "source" else value.view(-1, 1, 1, 1)
        return _OpTable(**taken)


def _source_maps(theta: torch.Tensor, *, height: int, width: int) -> torch.Tensor:
    """Where each output pixel reads from, for inverse affine matrices theta (R, 2, 3) float32.

    torchvision's ``_affine_grid`` (pixel centres relative to the image centre, through theta,
    over (W/2, H/2)) and ``grid_sample(mode="nearest", align_corners=False)``, applied to an image
    that holds 1 + each pixel's flat index, so the rounding is grid_sample's own.

    Returns (R, H*W) int64: flat input index per output pixel, H*W where it falls outside.
    """
    if height * width >= 2**24:
        raise ValueError(f"images of {height}x{width} pixels are too large: at most 2**24 pixels")
    rows, device = theta.shape[0], theta.device
    base_grid = torch.empty(1, height, width, 3, dtype=torch.float32, device=device)
    x = torch.linspace((1.0 - width) * 0.5, (width - 1.0) * 0.5, steps=width, device=device)
    y = torch.linspace((1.0 - height) * 0.5, (height - 1.0) * 0.5, steps=height, device=device)
    base_grid[..., 0].copy_(x)
    base_grid[..., 1].copy_(y.unsqueeze(-1))
    base_grid[..., 2].fill_(1)
    half_size = torch.tensor([0.5 * width, 0.5 * height], dtype=torch.float32).to(device)
    rescaled = theta.transpose(1, 2).div(half_size)  # (R, 3, 2)
    grid = base_grid.view(1, height * width, 3).expand(rows, -1, -1).bmm(rescaled)
    index_image = torch.arange(1, height * width + 1, dtype=torch.float32, device=device)
    sampled = nnf.grid_sample(
        index_image.view(1, 1, height, width).expand(rows, -1, -1, -1),
        grid.view(rows, height, width, 2),
        mode="nearest",
        padding_mode="zeros",
        align_corners=False,
    )  # (R, 1, H, W): 1 + flat index of the input pixel, 0 outside
    sampled = sampled.view(rows, height * width).long()
    return torch.where(sampled > 0, sampled - 1, height * width)


def _exact_dtype(device: torch.device) -> torch.dtype:
    """Dtype in which a float32 multiply-add is exact before its single rounding to float32."""
    return torch.float32 if device.type == "mps" else torch.float64  # MPS has no float64


def _blend(images: torch.Tensor, other: torch.Tensor, p: _OpTable) -> torch.Tensor:
    """torchvision's ``_blend``: ``images * factor + other * (1 - factor)``, clamped, truncated.

    images (b, C, H, W) uint8, other broadcastable float32/uint8 -> (b, C, H, W) uint8.
    torchvision computes ``images.mul(factor).add_(other, alpha=1 - factor)``; the ``add_`` is a
    fused multiply-add, so the sum is formed exactly (float64) and rounded once to float32.
    """
    scaled = images.mul(p.factor)  # float32, rounded like torchvision's
    exact = scaled.to(p.alpha.dtype).add_(other.to(p.alpha.dtype) * p.alpha)
    return exact.to(torch.float32).clamp_(0, 255).to(torch.uint8)


def _geometric(x: torch.Tensor, p: _OpTable, fill: int) -> torch.Tensor:
    """ShearX/ShearY/TranslateX/TranslateY/Rotate: each sample reads its pixels through its own
    source map p.source (b, H*W), precomputed per op row by `_source_maps`."""
    b, c, h, w = x.shape
    flat = torch.cat([x.reshape(b, c, h * w), x.new_full((b, c, 1), fill)], dim=2)  # + fill pixel
    out = flat.gather(2, p.source.unsqueeze(1).expand(-1, c, -1))  # (b, C, H*W)
    return out.view(b, c, h, w)


def _brightness(x: torch.Tensor, p: _OpTable, fill: int) -> torch.Tensor:
    """F.adjust_brightness: (x * factor) clamped to [0, 255], truncated."""
    return x.mul(p.factor).clamp_(0, 255).to(torch.uint8)


def _color(x: torch.Tensor, p: _OpTable, fill: int) -> torch.Tensor:
    """F.adjust_saturation: blend with the floored grey image (unchanged for C = 1)."""
    if x.shape[1] == 1:
        return x.clone()
    grey = F.rgb_to_grayscale(x)  # (b, 1, H, W) uint8 == floor of torchvision's float grey
    return _blend(x, grey, p)


def _contrast(x: torch.Tensor, p: _OpTable, fill: int) -> torch.Tensor:
    """F.adjust_contrast: blend with the mean of the floored grey image."""
    grey = F.rgb_to_grayscale(x) if x.shape[1] == 3 else x
    mean = grey.to(torch.float32).mean(dim=(-3, -2, -1), keepdim=True)  # (b, 1, 1, 1)
    return _blend(x, mean, p)


def _sharpness(x: torch.Tensor, p: _OpTable, fill: int) -> torch.Tensor:
    """F.adjust_sharpness: blend the interior with the rounded 3x3 smoothed image."""
    h, w = x.shape[-2:]
    if h <= 2 or w <= 2:
        return x.clone()
    out = x.to(torch.float32)
    # torchvision convolves with [[1, 1, 1], [1, 5, 1], [1, 1, 1]] / 13 and rounds. That sum is
    # k / 13 for an integer k, at least 0.5 / 13 away from a rounding tie, so forming k exactly
    # (3x3 box sum + 4 * centre, integers in float32) and rounding k / 13 gives the same pixels.
    rows = out[..., :, :-2] + out[..., :, 1:-1] + out[..., :, 2:]  # (b, C, H, W-2)
    box = rows[..., :-2, :] + rows[..., 1:-1, :] + rows[..., 2:, :]  # (b, C, H-2, W-2)
    view = out[..., 1:-1, 1:-1]
    blurred = box.add_(view, alpha=4).div_(13).round_()
    # torchvision: view.add_(blurred - view, alpha=1 - factor), a fused multiply-add.
    exact = view.to(p.alpha.dtype).add_(blurred.sub_(view).to(p.alpha.dtype) * p.alpha)
    view.copy_(exact)
    return out.clamp_(0, 255).to(torch.uint8)


def _posterize(x: torch.Tensor, p: _OpTable, fill: int) -> torch.Tensor:
    """F.posterize: keep the top bits."""
    return x & p.keep_bits


def _solarize(x: torch.Tensor, p: _OpTable, fill: int) -> torch.Tensor:
    """F.solarize: invert pixels >= threshold (compared in float32, as torchvision does)."""
    return torch.where(x >= p.threshold, x.bitwise_not(), x)


def _autocontrast(x: torch.Tensor, p: _OpTable, fill: int) -> torch.Tensor:
    """F.autocontrast: stretch each channel to [0, 255] (torch.where instead of its masked
    assignment, which would need the mask's size)."""
    xf = x.to(torch.float32)
    low = xf.amin(dim=(-2, -1), keepdim=True)  # (b, C, 1, 1)
    high = xf.amax(dim=(-2, -1), keepdim=True)
    flat = high == low
    inv_scale = torch.where(flat, 1.0, (high - low).mul_(1.0 / 255))
    low = torch.where(flat, 0.0, low)
    return xf.sub_(low).div_(inv_scale).clamp_(0, 255).to(torch.uint8)


def _equalize(x: torch.Tensor, p: _OpTable, fill: int) -> torch.Tensor:
    """F.equalize, which already treats leading dims as a batch and has no host sync."""
    return F.equalize(x)


# ----------------------------------------------------------------------------- the op table

_Kernel = Callable[[torch.Tensor, _OpTable, int], torch.Tensor]
_Bins = Callable[[int, int, int], torch.Tensor]  # (num_bins, height, width) -> (num_bins,)


def _linspace(start: float, end: float) -> _Bins:
    return lambda num_bins, height, width: torch.linspace(start, end, num_bins)


@dataclass(frozen=True)
class RandAugmentOp:
    """One op of RandAugment: everything about it in one place.

    name: torchvision's name (``v2.RandAugment._AUGMENTATION_SPACE``).
    signed: the magnitude gets a random sign (torchvision's ``signed`` flag).
    geometric: moves pixels (reads them through a source map; ``fill`` comes in from outside).
    bins: the magnitude of each bin, ``bins(num_bins, height, width)``, a copy of torchvision's
        space; None for the ops without a magnitude.
    params: the op's ``_OpTable`` fields at a magnitude, ``params(magnitude, height, width)``.
    kernel: the batched op, ``kernel(images, per-sample params, fill)``; None for Identity.
    """

    name: str
    signed: bool = False
    geometric: bool = False
    bins: _Bins | None = None
    params: Callable[[float, int, int], dict[str, Any]] | None = None
    kernel: _Kernel | None = None


# The 14 ops of torchvision's v2.RandAugment, in the order of its _AUGMENTATION_SPACE; the op
# index drawn per sample indexes this tuple. A new op is one row (the tests compare every row
# with torchvision).
OPS: tuple[RandAugmentOp, ...] = (
    RandAugmentOp("Identity"),
    RandAugmentOp("ShearX", True, True, _linspace(0.0, 0.3), _shear(0), _geometric),
    RandAugmentOp("ShearY", True, True, _linspace(0.0, 0.3), _shear(1), _geometric),
    RandAugmentOp(
        "TranslateX",
        True,
        True,
        lambda n, height, width: torch.linspace(0.0, 150.0 / 331.0 * width, n),
        _translate(0),
        _geometric,
    ),
    RandAugmentOp(
        "TranslateY",
        True,
        True,
        lambda n, height, width: torch.linspace(0.0, 150.0 / 331.0 * height, n),
        _translate(1),
        _geometric,
    ),
    RandAugmentOp("Rotate", True, True, _linspace(0.0, 30.0), _rotate_params, _geometric),
    RandAugmentOp(
        "Brightness", True, False, _linspace(0.0, 0.9), _enhance("Brightness"), _brightness
    ),
    RandAugmentOp("Color", True, False, _linspace(0.0, 0.9), _enhance("Color"), _color),
    RandAugmentOp("Contrast", True, False, _linspace(0.0, 0.9), _enhance("Contrast"), _contrast),
    RandAugmentOp("Sharpness", True, False, _linspace(0.0, 0.9), _enhance("Sharpness"), _sharpness),
    RandAugmentOp(
        "Posterize",
        bins=lambda n, height, width: (8 - (torch.arange(n) / ((n - 1) / 4))).round().int(),
        params=_posterize_params,
        kernel=_posterize,
    ),
    RandAugmentOp("Solarize", bins=_linspace(1.0, 0.0), params=_solarize_params, kernel=_solarize),
    RandAugmentOp("AutoContrast", kernel=_autocontrast),
    RandAugmentOp("Equalize", kernel=_equalize),
)
_BY_NAME = {op.name: op for op in OPS}
RANDAUG_OPS: tuple[str, ...] = tuple(op.name for op in OPS)
SIGNED_OPS = frozenset(op.name for op in OPS if op.signed)
GEOMETRIC_OPS = frozenset(op.name for op in OPS if op.geometric)
_SIGNED_OPS, _GEOMETRIC_OPS = SIGNED_OPS, GEOMETRIC_OPS  # the old private names


def _runs_of_kernels() -> tuple[tuple[int, int, _Kernel], ...]:
    """(first, last, kernel): each run of consecutive ops with the same kernel, inclusive (the
    five geometric ops share one gather). Derived from ``OPS``; Identity has no kernel."""
    runs: list[list] = []
    for index, op in enumerate(OPS):
        if op.kernel is None:
            continue
        if runs and runs[-1][2] is op.kernel and runs[-1][1] == index - 1:
            runs[-1][1] = index
        else:
            runs.append([index, index, op.kernel])
    return tuple((first, last, kernel) for first, last, kernel in runs)


KERNEL_RUNS = _runs_of_kernels()


def _op(name: str) -> RandAugmentOp:
    try:
        return _BY_NAME[name]
    except KeyError:
        raise ValueError(f"unknown op {name!r}; expected one of {RANDAUG_OPS}") from None


def magnitude_bins(op: str, *, num_bins: int, height: int, width: int) -> torch.Tensor | None:
    """Magnitude of ``op`` per bin, a copy of torchvision's ``RandAugment._AUGMENTATION_SPACE``.

    Returns a (num_bins,) tensor, or None for the ops without a magnitude.
    """
    bins = _op(op).bins
    return None if bins is None else bins(num_bins, height, width)


_magnitude_bins = magnitude_bins  # the old private name


def _op_row(op: str, magnitude: float, *, height: int, width: int) -> dict[str, Any]:
    """Every ``_OpTable`` field of ``op`` at ``magnitude`` (theta: the 6 numbers of the inverse
    affine matrix), neutral where the op does not use it."""
    params = _op(op).params
    return {**_NEUTRAL, **(params(magnitude, height, width) if params is not None else {})}


@dataclass(frozen=True)
class AugmentParams:
    """The random draws for one batch of B images; every tensor is on the images' device.

    crop_top, crop_left: (B,) int64 in [0, 2 * crop_padding], the crop's top-left corner in the
        zero-padded image (pixels).
    flip: (B,) bool, mirror left-right (after the crop).
    ops: (B, num_ops) int64, indices into RANDAUG_OPS, applied in column order.
    negate: (B, num_ops) bool, use -magnitude; only read for the signed ops (``SIGNED_OPS``).
    """

    crop_top: torch.Tensor
    crop_left: torch.Tensor
    flip: torch.Tensor
    ops: torch.Tensor
    negate: torch.Tensor


class BatchAugment:
    """RandomCrop(padding) + RandomHorizontalFlip + RandAugment on a uint8 batch, per sample.

    Same distribution as torchvision's per-image ``v2.Compose([v2.RandomCrop(H, padding=
    crop_padding), v2.RandomHorizontalFlip(), v2.RandAugment(num_ops, magnitude,
    num_magnitude_bins, fill=fill)])`` with nearest interpolation, and for the same drawn
    parameters the same output.

    Args:
        crop_padding: zero padding on each side before the random crop back to (H, W), pixels;
            0 disables the crop.
        flip: apply a random horizontal flip with probability 0.5.
        num_ops: RandAugment ops applied in sequence to each image.
        magnitude: RandAugment magnitude bin index, in [0, num_magnitude_bins).
        num_magnitude_bins: number of RandAugment magnitude bins (>= 2).
        fill: value (0..255, all channels) of the pixels that the geometric RandAugment ops move
            in from outside the image, as RandAugment's ``fill``; the crop always pads with 0.

    Example::

        augment = BatchAugment()
        images = augment(images_uint8)  # (B, 3, 32, 32) uint8 -> (B, 3, 32, 32) uint8
    """

    def __init__(
        self,
        *,
        crop_padding: int = 4,
        flip: bool = True,
        num_ops: int = 2,
        magnitude: int = 9,
        num_magnitude_bins: int = 31,
        fill: int = 0,
    ) -> None:
        if not isinstance(crop_padding, int) or crop_padding < 0:
            raise ValueError(f"crop_padding must be an int >= 0, got {crop_padding!r}")
        if not isinstance(num_ops, int) or num_ops < 0:
            raise ValueError(f"num_ops must be an int >= 0, got {num_ops!r}")
        if not isinstance(num_magnitude_bins, int) or num_magnitude_bins < 2:
            raise ValueError(f"num_magnitude_bins must be an int >= 2, got {num_magnitude_bins!r}")
        if not isinstance(magnitude, int) or not 0 <= magnitude < num_magnitude_bins:
            raise ValueError(
                f"magnitude is a bin index: an int in [0, {num_magnitude_bins - 1}] for "
                f"num_magnitude_bins={num_magnitude_bins}, got {magnitude!r}"
            )
        if not isinstance(fill, int) or not 0 <= fill <= 255:
            raise ValueError(f"fill must be an int in [0, 255] (a uint8 pixel value), got {fill!r}")
        self.crop_padding = crop_padding
        self.flip = flip
        self.num_ops = num_ops
        self.magnitude = magnitude
        self.num_magnitude_bins = num_magnitude_bins
        self.fill = fill
        self._tables: dict[tuple[int, int, str], _OpTable] = {}

    @classmethod
    def from_config(cls, aug: AugmentConfig, **overrides: Any) -> BatchAugment:
        """The batched half of ``aug`` (crop, flip, RandAugment; Mixup/CutMix run after it, in
        ``data``). The one place where AugmentConfig's fields meet this class's arguments."""
        return cls(
            crop_padding=aug.crop_padding,
            flip=aug.flip,
            num_ops=aug.randaug_ops,
            magnitude=aug.randaug_magnitude,
            **overrides,
        )

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(crop_padding={self.crop_padding}, flip={self.flip}, "
            f"num_ops={self.num_ops}, magnitude={self.magnitude}, "
            f"num_magnitude_bins={self.num_magnitude_bins}, fill={self.fill})"
        )

    def __call__(
        self, images: torch.Tensor, *, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Augment every image of the batch with its own random crop, flip and ops.

        Args:
            images: (B, C, H, W) uint8, C in {1, 3}, on any device; not modified.
            generator: source of all randomness, on the same device as `images`; None uses the
                default generator of that device.

        Returns:
            (B, C, H, W) uint8, a new tensor on the same device as `images`.
        """
        _check_images(images)
        params = self.sample_params(images.shape[0], device=images.device, generator=generator)
        return self.apply(images, params)

    def sample_params(
        self,
        batch_size: int,
        *,
        device: torch.device | str = "cpu",
        generator: torch.Generator | None = None,
    ) -> AugmentParams:
        """Draw the random parameters that `__call__` uses for a batch of `batch_size` images.

        Distributions, as in the per-sample torchvision pipeline: crop offsets uniform over
        0..2*crop_padding each; flip with probability 0.5 (never with ``flip=False``); each op
        uniform over the 14 RANDAUG_OPS, with replacement; negate with probability 0.5
        (torchvision: ``torch.rand(()) <= 0.5``).
        """
        device = torch.device(device)
        if generator is not None and generator.device.type != device.type:
            raise ValueError(
                f"generator is on {generator.device} but the images are on {device}; create it "
                f"with torch.Generator(device={str(device)!r})"
            )
        size = (batch_size,)
        span = 2 * self.crop_padding + 1
        crop_top = torch.randint(0, span, size, device=device, generator=generator)
        crop_left = torch.randint(0, span, size, device=device, generator=generator)
        flip = torch.rand(size, device=device, generator=generator) < 0.5
        if not self.flip:
            flip = torch.zeros_like(flip)
        slots = (batch_size, self.num_ops)
        ops = torch.randint(0, len(RANDAUG_OPS), slots, device=device, generator=generator)
        negate = torch.rand(slots, device=device, generator=generator) <= 0.5
        return AugmentParams(
            crop_top=crop_top, crop_left=crop_left, flip=flip, ops=ops, negate=negate
        )

    def apply(self, images: torch.Tensor, params: AugmentParams) -> torch.Tensor:
        """Augment `images` (B, C, H, W) uint8 with `params` drawn by `sample_params`.

        Returns a new (B, C, H, W) uint8 tensor on the same device.
        """
        strategy = "index" if images.device.type == "cpu" else "mask"
        return self._augment(images, params, strategy=strategy)

    def apply_op(self, images: torch.Tensor, op: str, magnitude: float) -> torch.Tensor:
        """Apply one named op at a fixed signed magnitude to every image of the batch.

        Deterministic. `magnitude` is the value RandAugment hands to the op, not a bin index:
        e.g. 0.27 for Brightness is a factor of 1.27, 9.0 for Rotate is 9 degrees
        counter-clockwise, 4.35 for TranslateX is a shift of int(4.35) = 4 pixels.

        Args:
            images: (B, C, H, W) uint8, C in {1, 3}.
            op: one of RANDAUG_OPS.
            magnitude: the op's magnitude value.

        Returns:
            (B, C, H, W) uint8, a new tensor on the same device.
        """
        _check_images(images)
        kernel = _op(op).kernel
        if kernel is None:  # Identity
            return images.clone()
        height, width = images.shape[-2:]
        table = _OpTable.build(
            [(op, float(magnitude))], height=height, width=width, device=images.device
        )
        rows = torch.zeros(images.shape[0], dtype=torch.long, device=images.device)
        return kernel(images, table.take(rows), self.fill)

    # ----------------------------------------------------------------------------------------
    # internals

    def _table(self, *, height: int, width: int, device: torch.device) -> _OpTable:
        """The op table for this image size and device, built once (a small host-to-device copy).

        Two rows per op: row 2*k is RANDAUG_OPS[k] at +magnitude, row 2*k + 1 at -magnitude
        (the same as +magnitude for unsigned ops), magnitude from the bin `self.magnitude`.
        """
        key = (height, width, str(device))
        cached = self._tables.get(key)
        if cached is not None:
            return cached
        rows = []
        for op in OPS:
            bins = None if op.bins is None else op.bins(self.num_magnitude_bins, height, width)
            magnitude = 0.0 if bins is None else float(bins[self.magnitude])
            rows.append((op.name, magnitude))
            rows.append((op.name, -magnitude if op.signed else magnitude))
        table = _OpTable.build(rows, height=height, width=width, device=device)
        self._tables[key] = table
        return table

    def _augment(
        self, images: torch.Tensor, params: AugmentParams, *, strategy: str
    ) -> torch.Tensor:
        """`apply` with an explicit strategy, "index" or "mask" (see `_apply_slot`)."""
        _check_images(images)
        batch_size, _, height, width = images.shape
        if params.ops.shape != (batch_size, self.num_ops):
            raise ValueError(
                f"params.ops has shape {tuple(params.ops.shape)} but this batch needs "
                f"({batch_size}, {self.num_ops}) = (batch size, num_ops); draw params with "
                f"sample_params({batch_size}, ...)"
            )
        if params.ops.device != images.device:
            raise ValueError(
                f"params are on {params.ops.device} but the images are on {images.device}; draw "
                f"them with sample_params(..., device=images.device)"
            )
        table = self._table(height=height, width=width, device=images.device)
        out = self._crop_flip(images, params)
        for slot in range(self.num_ops):
            ops = params.ops[:, slot]
            rows = 2 * ops + params.negate[:, slot].long()  # (B,) row in `table`
            out = self._apply_slot(out, ops, rows, table, strategy=strategy)
        return out

    def _crop_flip(self, images: torch.Tensor, params: AugmentParams) -> torch.Tensor:
        """Per-sample crop of the zero-padded image, then optional mirror, as one gather.

        (B, C, H, W) uint8 -> new (B, C, H, W) uint8.
        """
        batch_size, channels, height, width = images.shape
        pad = self.crop_padding
        padded = nnf.pad(images, [pad, pad, pad, pad]) if pad else images  # (B, C, H+2p, W+2p)
        device = images.device
        cols = torch.arange(width, device=device)  # (W,)
        cols = torch.where(params.flip[:, None], width - 1 - cols, cols)  # (B, W)
        cols = cols + params.crop_left[:, None]  # (B, W): column in the padded image
        rows = torch.arange(height, device=device) + params.crop_top[:, None]  # (B, H)
        index = rows[:, :, None] * (width + 2 * pad) + cols[:, None, :]  # (B, H, W)
        flat = padded.reshape(batch_size, channels, -1)  # (B, C, (H+2p)*(W+2p))
        out = flat.gather(2, index.view(batch_size, 1, -1).expand(-1, channels, -1))
        return out.view(batch_size, channels, height, width)

    def _apply_slot(
        self,
        images: torch.Tensor,
        ops: torch.Tensor,
        rows: torch.Tensor,
        table: _OpTable,
        *,
        strategy: str,
    ) -> torch.Tensor:
        """Apply op `ops[i]` with the parameters of table row `rows[i]` to each image i.

        images (B, C, H, W) uint8 -> new (B, C, H, W) uint8; ops, rows (B,) int64.
        "index" (CPU): sort the samples by op, transform each op's contiguous slice, unsort;
        reads the group sizes on the host. "mask" (other devices): per kernel, transform the
        whole batch and keep the result where the sample drew that op; no host
        synchronisation. Both give the same output.
        """
        if strategy == "index":
            order = torch.argsort(ops, stable=True)  # samples grouped by op, in RANDAUG_OPS order
            ends = torch.bincount(ops, minlength=len(RANDAUG_OPS)).cumsum(0).tolist()
            starts = [0, *ends[:-1]]
            grouped = images.index_select(0, order)
            grouped_rows = rows.index_select(0, order)
            for first, last, kernel in KERNEL_RUNS:
                start, end = starts[first], ends[last]  # a kernel's ops are consecutive
                if start == end:
                    continue
                params = table.take(grouped_rows[start:end])
                grouped[start:end] = kernel(grouped[start:end], params, self.fill)
            return grouped.index_select(0, torch.argsort(order))
        if strategy == "mask":
            params = table.take(rows)
            for first, last, kernel in KERNEL_RUNS:
                chosen = ((ops >= first) & (ops <= last)).view(-1, 1, 1, 1)
                images = torch.where(chosen, kernel(images, params, self.fill), images)
            return images
        raise ValueError(f"strategy must be 'index' or 'mask', got {strategy!r}")


def _check_images(images: torch.Tensor) -> None:
    """Raise ValueError unless `images` is a (B, C, H, W) uint8 tensor with C in {1, 3}."""
    if not isinstance(images, torch.Tensor):
        raise ValueError(
            f"images must be a torch.Tensor of shape (B, C, H, W) and dtype torch.uint8, "
            f"got {type(images).__name__}"
        )
    if images.dtype != torch.uint8:
        raise ValueError(
            f"images must have dtype torch.uint8 (pixel values 0..255), got {images.dtype}; "
            f"convert float images in [0, 1] with (images * 255).round().to(torch.uint8)"
        )
    if images.ndim != 4:
        raise ValueError(
            f"images must have shape (B, C, H, W), got {images.ndim} dims "
            f"{tuple(images.shape)}; add a batch dimension with images.unsqueeze(0)"
        )
    if images.shape[1] not in (1, 3):
        raise ValueError(
            f"images must have C = 1 or 3 channels in (B, C, H, W), got shape "
            f"{tuple(images.shape)}; channels-last input needs images.permute(0, 3, 1, 2)"
        )
