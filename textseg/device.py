"""Device and precision, chosen at call time and passed explicitly (never at import)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    import torch

__all__ = ["Precision", "Runtime", "resolve_runtime"]

Precision = Literal["auto", "float32", "float16", "bfloat16"]
_PRECISIONS = ("auto", "float32", "float16", "bfloat16")


@dataclass(frozen=True)
class Runtime:
    """Where and in which precision the models run.

    `dtype` is the autocast dtype used *locally* inside the segmenter's predict calls
    (torch.float32 means no autocast). The detector always runs in float32.
    """

    device: torch.device
    dtype: torch.dtype

    @property
    def autocast_enabled(self) -> bool:
        import torch

        return self.device.type == "cuda" and self.dtype != torch.float32


def resolve_runtime(
    device: str | torch.device | None = None, *, precision: Precision = "auto"
) -> Runtime:
    """Pick the device and precision.

    device: None or "auto" → "cuda" when torch sees a GPU, else "cpu"; "cpu", "cuda",
        "cuda:N" or a torch.device are taken as given (a missing GPU is an error).
    precision: "auto" → bfloat16 on a GPU that supports it (Ampere and newer), float32 on
        a GPU without bf16 (e.g. T4; fp16 is selectable but not the default because SAM 2
        was trained in bf16/fp32) and float32 on the CPU. bf16 is refused where the GPU
        cannot do it.
    """
    import torch

    if precision not in _PRECISIONS:
        raise ValueError(f"precision={precision!r} is not one of {', '.join(_PRECISIONS)}")
    if device is None or (isinstance(device, str) and device.strip().lower() == "auto"):
        dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        try:
            dev = torch.device(device.strip().lower() if isinstance(device, str) else device)
        except (RuntimeError, TypeError) as err:
            raise ValueError(
                f"device={device!r} is not a device; use 'auto', 'cpu', 'cuda' or 'cuda:N'"
            ) from err
        if dev.type not in ("cpu", "cuda"):
            raise ValueError(f"device={device!r} is not supported; use 'auto', 'cpu' or 'cuda'")
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(
                f"device={device!r} was asked for but torch sees no CUDA GPU; "
                "pass device='cpu' (or 'auto'), or install a CUDA build of torch"
            )

    if dev.type != "cuda":
        if precision in ("float16", "bfloat16"):
            raise ValueError(f"precision={precision!r} needs a CUDA device; on {dev} use 'float32'")
        return Runtime(device=dev, dtype=torch.float32)
    # Native bf16 needs compute capability 8.0 (Ampere). torch.cuda.is_bf16_supported()
    # answers True on a T4 too (it counts emulation), so ask for the capability instead.
    bf16_ok = torch.cuda.get_device_capability(dev)[0] >= 8
    if precision == "bfloat16" and not bf16_ok:
        raise ValueError(
            f"this GPU ({torch.cuda.get_device_name(dev)}) cannot run bfloat16; "
            "use precision='float16' or 'float32'"
        )
    if precision == "auto":
        dtype = torch.bfloat16 if bf16_ok else torch.float32
    else:
        dtype = getattr(torch, precision)
    return Runtime(device=dev, dtype=dtype)
