"""Exceptions raised by textseg. Each message says what was wrong and what to do next."""

from __future__ import annotations

__all__ = [
    "ImageLoadError",
    "LabelError",
    "ModelLoadError",
    "OutputError",
    "PromptError",
    "TextsegError",
    "VideoLoadError",
]


class TextsegError(Exception):
    """Base class of every error textseg raises on purpose (bad input, missing model)."""


class ImageLoadError(TextsegError, ValueError):
    """An image could not be read or converted (corrupt, empty, too large, not an image)."""


class PromptError(TextsegError, ValueError):
    """A text prompt is empty, has no words, or is longer than the text encoder can read."""


class ModelLoadError(TextsegError, RuntimeError):
    """A detector or segmenter could not be built (offline, wrong id, package missing)."""


class VideoLoadError(TextsegError, ValueError):
    """A video could not be read (missing, corrupt, unsupported, no frames, frames too large)."""


class OutputError(TextsegError, OSError):
    """Results could not be written (a file in the way, no permission, another image's results)."""


class LabelError(TextsegError, ValueError):
    """A data set cannot be labelled as asked (textseg.label_dataset): changed settings on
    resume, an --out that holds something else, bad classes or thresholds."""
