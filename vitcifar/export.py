"""Export a trained model to ONNX (to run anywhere) or TorchScript (for C++ / no Python code).

export_model("runs/vit-fast/best.pt", "model.onnx", format="onnx")

The exported graph takes RGB images (batch, 3, H, W) on the 0-255 scale, H = W = the model's
``image_size``, and returns logits (batch, num_classes); the batch axis is dynamic. The CIFAR-10
mean/std normalisation is inside the graph, so a caller only resizes (bicubic, as in training)
and stacks pixels. ONNX input dtype: uint8 (default) or float32 (``input_dtype``); TorchScript
takes either. The class names, input layout and normalisation constants are written into the
file: ONNX ``metadata_props`` and a TorchScript extra file ``vitcifar.json``.

ONNX needs the optional ``export`` extra (``pip install -e ".[export]"``: onnx, onnxscript and,
to run or test the file, onnxruntime).
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import io
import json
import logging
import os
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from vitcifar.checkpoint import check_not_a_link_loop, hold_folder, write_in_order
from vitcifar.config import check_choice
from vitcifar.data import CIFAR10_MEAN, CIFAR10_STD
from vitcifar.model import ViT

__all__ = [
    "EXPORT_FORMAT",
    "ExportFormat",
    "Preprocessed",
    "export_model",
    "read_metadata",
    "supported_opsets",
]

log = logging.getLogger(__name__)

ExportFormat = Literal["onnx", "torchscript"]
InputDtype = Literal["uint8", "float32"]
EXPORT_FORMAT = "vitcifar-export/1"
TORCHSCRIPT_METADATA = "vitcifar.json"  # the extra file inside a TorchScript archive
INSTALL_HINT = (
    'install the export extra: pip install -e ".[export]" (onnx, onnxscript, onnxruntime)'
)


class Preprocessed(nn.Module):
    """``model`` behind its input normalisation: (B, 3, H, W) pixels on 0-255 -> (B, K) logits.

    The same arithmetic as ``data.normalize``: ``(x - 255 * mean) / (255 * std)`` in float32.
    """

    def __init__(
        self,
        model: ViT,
        *,
        mean: Sequence[float] = CIFAR10_MEAN,
        std: Sequence[float] = CIFAR10_STD,
    ) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1) * 255.0)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1) * 255.0)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model((images.float() - self.mean) / self.std)


def _metadata(model: ViT, classes: list[str], input_dtype: str, source: str) -> dict[str, Any]:
    s = model.config.image_size
    return {
        "format": EXPORT_FORMAT,
        "classes": classes,
        "input": f"images (batch, 3, {s}, {s}) RGB on the 0-255 scale ({input_dtype}); "
        f"resize to {s}x{s} with a bicubic filter first, as in training",
        "input_dtype": input_dtype,
        "image_size": s,
        "normalization": "inside the graph: (x / 255 - mean) / std",
        "mean": list(CIFAR10_MEAN),
        "std": list(CIFAR10_STD),
        "output": "logits (batch, num_classes); softmax gives probabilities",
        "model_config": model.config.to_dict(),
        "source": source,
    }


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The metadata written by ``export_model``, from a ``.onnx`` or TorchScript file."""
    path = Path(path)
    if path.suffix.lower() == ".onnx":
        try:
            import onnx
        except ImportError as err:
            raise ImportError(f"reading ONNX metadata needs onnx; {INSTALL_HINT}") from err
        props = {
            p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props
        }
        return {k: json.loads(v) for k, v in props.items()}
    extra = {TORCHSCRIPT_METADATA: ""}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # recent torch deprecates torch.jit
        torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    return json.loads(extra[TORCHSCRIPT_METADATA])


def _supported(fn, kwargs: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments ``fn`` accepts in this torch version (dropped ones are logged)."""
    params = inspect.signature(fn).parameters
    dropped = sorted(set(kwargs) - set(params))
    if dropped:
        log.debug("this torch's %s has no %s; left out", fn.__name__, dropped)
    return {k: v for k, v in kwargs.items() if k in params}


@contextlib.contextmanager
def _quiet_exporter_logs() -> Iterator[None]:
    """The exporter's INFO lines (one per rewrite rule) at WARNING, for this call only."""
    loggers = [
        logging.getLogger(n) for n in ("onnxscript", "onnx_ir", "torch.onnx", "torch.export")
    ]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(max(lg.getEffectiveLevel(), logging.WARNING))
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


# Every vitcifar ViT attends through F.scaled_dot_product_attention, which ONNX writes from
# opset 14 on; below it both exporters fail, the TorchScript-based one after printing its whole
# IR graph (hundreds of lines) to stdout.
MIN_OPSET = 14


def supported_opsets() -> tuple[int, int]:
    """(lowest, highest) ONNX opset that ``export_model`` accepts here: from ``MIN_OPSET`` (the
    first with the model's attention) to the newest that the installed onnx defines."""
    try:
        import onnx
    except ImportError as err:
        raise ImportError(f"ONNX export needs onnx and onnxscript ({err}); {INSTALL_HINT}") from err
    return MIN_OPSET, int(onnx.defs.onnx_opset_version())


def _opset_of(proto: Any) -> int | None:
    return next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)


def _export_onnx(wrapped: Preprocessed, sample: torch.Tensor, opset: int | None) -> Any:
    """The exported ``onnx.ModelProto``, built in memory (nothing is written here).

    torch's torch.export-based exporter first (it needs onnxscript); when it fails, or cannot
    write the opset asked for (below 18 it converts, and may keep 18), the TorchScript-based
    one (deprecated from torch 2.9). A result in another opset than ``opset`` is an error.
    """
    import onnx

    common = dict(input_names=["images"], output_names=["logits"])
    errors = []
    if "dynamo" in inspect.signature(torch.onnx.export).parameters:
        try:
            from torch.export import Dim

            kwargs = dict(
                common,
                dynamo=True,
                dynamic_shapes={"images": {0: Dim("batch")}},
                external_data=False,  # one self-contained file (the model is ~21 MB)
                opset_version=opset,
                verbose=False,
            )
            with warnings.catch_warnings(), _silent("onnxscript", "onnx_ir"):
                warnings.simplefilter("ignore")  # the exporter's own progress chatter
                program = torch.onnx.export(
                    wrapped, (sample,), None, **_supported(torch.onnx.export, kwargs)
                )
            proto = program.model_proto
            if opset is None or _opset_of(proto) == opset:
                return proto
            errors.append(f"torch.export-based exporter: wrote opset {_opset_of(proto)}")
            log.info("%s, not %s; trying the TorchScript-based exporter", errors[-1], opset)
        except ImportError as err:  # onnxscript missing: the legacy exporter may still work
            errors.append(f"torch.export-based exporter: {err}")
            log.info("%s; using the TorchScript-based exporter", errors[-1])
        except Exception as err:  # noqa: BLE001 - any exporter failure: try the other one
            errors.append(f"torch.export-based exporter: {str(err).splitlines()[0][:300]}")
            log.warning("%s; falling back to the TorchScript-based exporter", errors[-1])
    kwargs = dict(
        common,
        dynamo=False,
        dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}},
        opset_version=opset or 17,
        do_constant_folding=True,
    )
    buffer = io.BytesIO()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # deprecation and tracer warnings (shape checks)
            torch.onnx.export(wrapped, (sample,), buffer, **_supported(torch.onnx.export, kwargs))
    except ImportError as err:
        raise ImportError(f"ONNX export needs onnx and onnxscript ({err}); {INSTALL_HINT}") from err
    except Exception as err:
        errors.append(f"TorchScript-based exporter: {str(err).splitlines()[0][:300]}")
        raise RuntimeError("ONNX export failed: " + "; ".join(errors)) from err
    proto = onnx.load_from_string(buffer.getvalue())
    if opset is not None and _opset_of(proto) != opset:
        raise RuntimeError(
            f"ONNX export failed: this exporter cannot write opset {opset} for this model "
            f"({'; '.join(errors)}; TorchScript-based exporter: wrote opset {_opset_of(proto)}); "
            "choose a newer --opset or leave it out"
        )
    return proto


@contextlib.contextmanager
def _silent(*names: str) -> Iterator[None]:
    """These loggers quiet for the call: the converter logs a whole traceback for an opset it
    cannot reach, which ``_export_onnx`` reports in one line."""
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _stamp_onnx(proto: Any, metadata: dict[str, Any]) -> None:
    del proto.metadata_props[:]
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, json.dumps(value)


def export_model(
    model_or_checkpoint: ViT | str | os.PathLike,
    out: str | os.PathLike,
    *,
    format: ExportFormat = "onnx",
    input_dtype: InputDtype = "uint8",
    classes: Sequence[str] | None = None,
    opset: int | None = None,
) -> Path:
    """Write ``model_or_checkpoint`` (a checkpoint path, its EMA weights if any, or a ``ViT``) to
    ``out`` as ONNX or TorchScript, with normalisation inside and a dynamic batch axis.

    input_dtype: the ONNX graph's input type, "uint8" or "float32" (both on 0-255).
    classes: class names for the metadata; default the checkpoint's, or "0", "1", ....
    opset: ONNX opset (default: the exporter's).
    Raises ``ImportError`` with the install command when onnx/onnxscript are missing.
    """
    from vitcifar.evaluate import model_and_classes

    check_choice("format", format, ExportFormat)
    check_choice("input_dtype", input_dtype, InputDtype)
    out = Path(out)
    check_not_a_link_loop(out, "output file", ValueError)
    if out.is_dir():
        suffix = ".onnx" if format == "onnx" else ".pt"
        raise ValueError(
            f"output file {out} is a folder; name the file to write, e.g. {out / ('model' + suffix)}"
        )
    if format == "onnx" and opset is not None:
        low, high = supported_opsets()
        if not low <= opset <= high:
            raise ValueError(
                f"--opset {opset} is outside what the installed exporter writes ({low} to {high}); "
                "choose one in that range, or leave it out for the exporter's default"
            )
    model, names, ckpt = model_and_classes(model_or_checkpoint, classes=classes)
    source = "<ViT>" if ckpt is None else str(model_or_checkpoint)
    with hold_folder(out.parent, command="export"):  # refuses an unwritable folder before exporting
        data = _exported_bytes(
            model, names, source, format=format, input_dtype=input_dtype, opset=opset
        )
        write_in_order(out.parent, [(out.name, lambda f: f.write(data))])  # metadata included
    log.debug("wrote %s (%s, %.1f MB)", out, format, out.stat().st_size / 1e6)
    return out


def _exported_bytes(
    model: ViT, names: list[str], source: str, *, format: str, input_dtype: str, opset: int | None
) -> bytes:
    """The whole exported file (graph and metadata), in memory: written once, atomically."""
    wrapped = Preprocessed(copy.deepcopy(model).cpu().float().eval()).eval()  # caller's untouched
    s, c = model.config.image_size, model.config.in_channels
    dtype = torch.uint8 if input_dtype == "uint8" else torch.float32
    sample = torch.randint(0, 256, (2, c, s, s), generator=torch.Generator().manual_seed(0))
    sample = sample.to(dtype)  # batch 2: a batch of 1 could be specialised by the tracer
    meta = _metadata(model, names, input_dtype if format == "onnx" else "uint8 or float", source)
    if format == "onnx":
        with _quiet_exporter_logs():
            proto = _export_onnx(wrapped, sample, opset)
        _stamp_onnx(proto, meta)
        return proto.SerializeToString()
    buffer = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        # The deprecation notice of recent torch and the tracer's note on the shape check in
        # ViT._tokens (a constant for a fixed image size, which is the graph's contract).
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(wrapped, (sample,))
        torch.jit.save(traced, buffer, _extra_files={TORCHSCRIPT_METADATA: json.dumps(meta)})
    return buffer.getvalue()
