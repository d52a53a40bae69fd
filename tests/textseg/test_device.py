"""Device and precision are chosen explicitly, at call time."""

from __future__ import annotations

import pytest
import torch

from textseg.device import resolve_runtime


def test_auto_follows_cuda_availability():
    rt = resolve_runtime(None)
    assert rt.device.type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_runtime("auto").device == rt.device


def test_cpu_is_float32_without_autocast():
    rt = resolve_runtime(" CPU ")
    assert rt.device == torch.device("cpu") and rt.dtype == torch.float32
    assert not rt.autocast_enabled


@pytest.mark.parametrize("bad", ["tpu", "gpu0", "mps"])
def test_unknown_devices_are_refused_with_the_choices(bad):
    with pytest.raises(ValueError, match="'cpu'"):
        resolve_runtime(bad)


def test_precision_is_checked():
    with pytest.raises(ValueError, match="float32, float16, bfloat16"):
        resolve_runtime("cpu", precision="half")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="needs a CUDA device"):
        resolve_runtime("cpu", precision="bfloat16")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message when no GPU is present")
def test_cuda_without_gpu_says_what_to_do():
    with pytest.raises(ValueError, match="device='cpu'"):
        resolve_runtime("cuda")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_precision_never_bf16_without_hardware_support():
    rt = resolve_runtime("cuda")
    major, _ = torch.cuda.get_device_capability()
    assert rt.dtype == (torch.bfloat16 if major >= 8 else torch.float32)
    if major < 8:
        with pytest.raises(ValueError, match="cannot run bfloat16"):
            resolve_runtime("cuda", precision="bfloat16")
    assert resolve_runtime("cuda", precision="float16").dtype == torch.float16
