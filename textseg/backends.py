"""The one table of backends: who finds objects by text, and how its models are built.

    BACKENDS = {name: Backend(label, build, check, models)}

`TextSegmenter.from_pretrained(backend=name)`, the CLI's `--backend` choices and its checks,
the UI's "Models" menu and `textseg.testing.make_backend_models` all read this table, and the
tests run every row on an image, a video, the CLI and the UI. A new backend is one adapter
file (a Detector or a TextMasker, see textseg.parts) plus one row here; a program may also add
a row at run time (`BACKENDS["mine"] = Backend(...)`).

build(*, runtime, detector, segmenter, segmenter_config, sam3) -> Parts: loads the models on
    one runtime (textseg.device.Runtime); the model arguments are `from_pretrained`'s (None:
    the backend's default). It may ignore the ones `check` refuses.
check(given, flag): raises ValueError (one line) when `given` ({option name: value} of the
    options the user set, e.g. {"detector": ..., "detector_size": 512}) holds one this
    backend does not use; `flag(name)` spells an option the caller's way ("detector=" in
    Python, "--detector" on the command line).
models: the model arguments the backend loads, for textseg.testing to make tiny ones of.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from textseg.parts import Parts

if TYPE_CHECKING:
    import os

    from textseg.device import Runtime

__all__ = ["BACKENDS", "DEFAULT_BACKEND", "Backend", "get_backend", "menu", "refuse"]

DEFAULT_BACKEND = "groundingdino+sam2"


@dataclass(frozen=True)
class Backend:
    """One row of BACKENDS (see the module docstring)."""

    label: str  # what the UI's menu shows
    build: Callable[..., Parts]
    check: Callable[[Mapping[str, Any], Callable[[str], str]], None]
    models: tuple[str, ...] = ()


def _build_groundingdino_sam2(
    *,
    runtime: Runtime,
    detector: str | os.PathLike | None = None,
    segmenter: str | os.PathLike | None = None,
    segmenter_config: str | os.PathLike | None = None,
    sam3: str | os.PathLike | None = None,
) -> Parts:
    """GroundingDINO finds, SAM 2 paints; SAM 3, when given, checks (experimental)."""
    from textseg.detector import DEFAULT_DETECTOR, GroundingDinoDetector
    from textseg.sam3 import Sam3TextMasker
    from textseg.segmenter import Sam2Segmenter

    return Parts(
        detector=GroundingDinoDetector.from_pretrained(
            detector or DEFAULT_DETECTOR, runtime=runtime
        ),
        segmenter=Sam2Segmenter.from_pretrained(
            segmenter, runtime=runtime, config=segmenter_config
        ),
        checker=Sam3TextMasker.from_pretrained(sam3, runtime=runtime) if sam3 else None,
    )


def _check_groundingdino_sam2(given: Mapping[str, Any], flag: Callable[[str], str]) -> None:
    if "min_text_match" in given and "sam3" not in given:
        raise ValueError(
            f"{flag('min_text_match')} needs the SAM 3 checker: add {flag('sam3')} ID_OR_PATH"
        )


def _build_sam3(
    *,
    runtime: Runtime,
    segmenter: str | os.PathLike | None = None,
    segmenter_config: str | os.PathLike | None = None,
    sam3: str | os.PathLike | None = None,
    **_unused: Any,
) -> Parts:
    """SAM 3 finds and paints; SAM 2 is loaded too, for boxes, points and video tracking."""
    from textseg.sam3 import DEFAULT_SAM3, Sam3TextMasker
    from textseg.segmenter import Sam2Segmenter

    return Parts(
        masker=Sam3TextMasker.from_pretrained(sam3 or DEFAULT_SAM3, runtime=runtime),
        segmenter=Sam2Segmenter.from_pretrained(
            segmenter, runtime=runtime, config=segmenter_config
        ),
    )


def refuse(
    given: Mapping[str, Any],
    flag: Callable[[str], str],
    *,
    backend: str,
    options: Mapping[str, str],
) -> None:
    """The usual `check`: ValueError for the first of `options` ({name: whose it is, e.g.
    "GroundingDINO's"}) that is in `given`."""
    for name, whose in options.items():
        if name in given:
            raise ValueError(f"{flag(name)} is {whose}; backend {backend!r} does not use it")


def _check_sam3(given: Mapping[str, Any], flag: Callable[[str], str]) -> None:
    refuse(
        given,
        flag,
        backend="sam3",
        options={
            "detector": "GroundingDINO's",
            "detector_size": "GroundingDINO's",
            "min_text_match": "the check of GroundingDINO's objects",
        },
    )


BACKENDS: dict[str, Backend] = {
    DEFAULT_BACKEND: Backend(
        label="GroundingDINO + SAM 2",
        build=_build_groundingdino_sam2,
        check=_check_groundingdino_sam2,
        models=("detector", "segmenter"),
    ),
    "sam3": Backend(
        label="SAM 3",
        build=_build_sam3,
        check=_check_sam3,
        models=("sam3", "segmenter"),
    ),
}


def get_backend(name: str) -> Backend:
    """The row of `name`; ValueError naming the backends there are otherwise."""
    try:
        return BACKENDS[name]
    except (KeyError, TypeError):
        raise ValueError(f"backend={name!r} is not one of {', '.join(BACKENDS)}") from None


def menu() -> list[tuple[str, str]]:
    """(label, name) per backend, in table order: the UI's "Models" menu."""
    return [(row.label, name) for name, row in BACKENDS.items()]
