"""Hugging Face Hub helpers shared by the adapters that load transformers models
(GroundingDINO, SAM 3): hub id or local folder, load and gated-repository errors, and the
image cache key."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from textseg.errors import ModelLoadError

__all__ = [
    "gated_hint",
    "image_key",
    "is_gated_error",
    "load_error",
    "looks_like_path",
    "pretrained_source",
]


def looks_like_path(spec: str) -> bool:
    """Hub ids are "name" or "owner/name"; anything else with a path shape is a path, and
    so is "x/y" when a local "x" exists (a typo in a local path never goes to the hub)."""
    return (
        spec.startswith((".", "/", "~"))
        or "\\" in spec
        or spec.count("/") > 1
        or Path(spec).suffix in (".json", ".safetensors", ".bin", ".pt", ".pth", ".yaml", ".yml")
        or ("/" in spec and Path(spec.split("/", 1)[0]).exists())
    )


def pretrained_source(spec: str, *, what: str, hint: str) -> tuple[str, bool]:
    """(source, local_files_only) for transformers' ``from_pretrained``: an existing folder
    (it must hold config.json), or a hub id. A path that does not exist is an error naming
    ``what``, never a hub request (see ``looks_like_path``)."""
    path = Path(spec).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ModelLoadError(
                f"{spec!r} has no config.json: a local {what} is a folder written by "
                "model.save_pretrained() and processor.save_pretrained()"
            )
        return str(path), True
    if looks_like_path(spec):
        raise ModelLoadError(f"no such {what} folder: {spec!r}. {hint}")
    return spec, False


def load_error(what: str, spec: str, err: BaseException, hint: str) -> ModelLoadError:
    """The one-line ModelLoadError for a model that failed to load: the error's first line,
    then what to pass instead (`hint`)."""
    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    first = first.rstrip(" .")  # "...is on." + ". Pass..." read "is on.. Pass..."
    return ModelLoadError(f"could not load {what} {spec!r}: {first}. {hint}")


def gated_hint(spec: str) -> str:
    return (
        f"{spec!r} is gated on the Hugging Face Hub: open https://huggingface.co/{spec}, log "
        "in and ask for access (accept Meta's licence; approval can take a while). Then make a "
        "read token at https://huggingface.co/settings/tokens and log in here: `hf auth login` "
        "in a terminal, `from huggingface_hub import login; login()` in a notebook, or on "
        "Colab add it as the secret HF_TOKEN (key icon in the left bar)."
    )


def is_gated_error(err: BaseException) -> bool:
    """Whether a loading error (or one it wraps) is the hub refusing a gated repository."""
    try:
        from huggingface_hub.errors import GatedRepoError
    except ImportError:  # very old huggingface_hub
        GatedRepoError = ()  # type: ignore[assignment]  # noqa: N806
    seen: BaseException | None = err
    while seen is not None:
        if GatedRepoError and isinstance(seen, GatedRepoError):
            return True
        text = str(seen).lower()
        if "gated repo" in text or "access to model" in text and "restricted" in text:
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def image_key(array: np.ndarray, *extra: object) -> str:
    """A digest of an image's pixels and shape (plus any `extra` settings): the cache key."""
    digest = hashlib.blake2b(np.ascontiguousarray(array).data, digest_size=16)
    digest.update(repr((array.shape, str(array.dtype), *extra)).encode())
    return digest.hexdigest()
