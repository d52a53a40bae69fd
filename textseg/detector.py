"""GroundingDINO adapter ("the finder"): text phrases in, XYXY boxes with phrase ids out.

Runs `AutoModelForZeroShotObjectDetection` + `AutoProcessor` from transformers (4.56
through 5.x), loaded from a hub id or a local folder written with `save_pretrained`.

The raw outputs are decoded here rather than with the processor's
`post_process_grounded_object_detection`, for two reasons: its labels are rebuilt from the
tokens above `text_threshold`, which merges phrases ("plant flower") and leaks word pieces
("##van"), and its argument names changed between releases (`box_threshold` became
`threshold`). The box arithmetic is the same (the tests check it against the processor).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from textseg.boxes import clip_boxes
from textseg.errors import ModelLoadError, PromptError
from textseg.prompt import Prompt, phrase_scores, token_phrase_ids

if TYPE_CHECKING:
    import torch
    from PIL import Image

    from textseg.device import Runtime

__all__ = [
    "DEFAULT_DETECTOR",
    "Detections",
    "GroundingDinoDetector",
    "decode_boxes",
    "looks_like_path",
]

logger = logging.getLogger(__name__)

DEFAULT_DETECTOR = "IDEA-Research/grounding-dino-tiny"  # or "IDEA-Research/grounding-dino-base"


@dataclass
class Detections:
    """Detector output for one image, before duplicate removal.

    boxes: (N, 4) float32, XYXY pixels of the image passed to `detect`.
    scores: (N,) float32, the best token probability of the detection's phrase.
    phrase_ids: (N,) int64 index into `Prompt.phrases`.
    """

    boxes: np.ndarray
    scores: np.ndarray
    phrase_ids: np.ndarray


def decode_boxes(pred_boxes: torch.Tensor | np.ndarray, *, height: int, width: int) -> np.ndarray:
    """(Q, 4) normalised (cx, cy, w, h) → (Q, 4) float32 XYXY pixels, clipped to the image."""
    b = np.asarray(pred_boxes, dtype=np.float32).reshape(-1, 4)
    cx, cy, bw, bh = b[:, 0], b[:, 1], b[:, 2], b[:, 3]
    xyxy = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], axis=1)
    xyxy *= np.array([width, height, width, height], dtype=np.float32)
    return clip_boxes(xyxy, height=height, width=width)


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


def _load_error(what: str, spec: str, err: BaseException, hint: str) -> ModelLoadError:
    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return ModelLoadError(f"could not load {what} {spec!r}: {first}. {hint}")


_DINO_HINT = (
    "Pass a hub id such as 'IDEA-Research/grounding-dino-tiny' or "
    "'IDEA-Research/grounding-dino-base' (the first use downloads it, so it needs internet; "
    "later runs read ~/.cache/huggingface), or a local folder holding the model and its "
    "processor saved with save_pretrained() (textseg.testing.make_grounding_dino writes one)."
)


class GroundingDinoDetector:
    """Open-set detector: finds boxes for the phrases of a prompt.

    Build it with `from_pretrained`, or pass a transformers GroundingDINO model and its
    processor. The model runs in float32 on `runtime.device`, without autocast.
    """

    def __init__(self, *, model: Any, processor: Any, runtime: Runtime) -> None:
        self.model = model.eval().to(runtime.device)
        self.processor = processor
        self.runtime = runtime

    @classmethod
    def from_pretrained(
        cls, model_id_or_path: str | os.PathLike = DEFAULT_DETECTOR, *, runtime: Runtime
    ) -> GroundingDinoDetector:
        """Load GroundingDINO from a hub id or a local `save_pretrained` folder."""
        try:
            from transformers import AutoModelForZeroShotObjectDetection, AutoProcessor
        except ImportError as err:
            raise ModelLoadError(
                "transformers is not installed; run `pip install 'transformers>=4.56'`"
            ) from err
        spec = str(model_id_or_path)
        path = Path(spec).expanduser()
        if path.exists():
            if not (path / "config.json").is_file():
                raise ModelLoadError(
                    f"{spec!r} has no config.json: a local GroundingDINO is a folder written "
                    "by model.save_pretrained() and processor.save_pretrained()"
                )
            source, local_only = str(path), True
        elif looks_like_path(spec):
            raise ModelLoadError(f"no such GroundingDINO folder: {spec!r}. {_DINO_HINT}")
        else:
            source, local_only = spec, False
        try:
            processor = AutoProcessor.from_pretrained(source, local_files_only=local_only)
            model = AutoModelForZeroShotObjectDetection.from_pretrained(
                source, local_files_only=local_only
            )
        except Exception as err:  # offline, unknown id, broken files: all end up here
            raise _load_error("GroundingDINO", spec, err, _DINO_HINT) from err
        model_type = getattr(model.config, "model_type", "")
        if "grounding-dino" not in model_type:
            raise ModelLoadError(
                f"{spec!r} is a {model_type!r} model, not GroundingDINO. {_DINO_HINT}"
            )
        logger.info("loaded GroundingDINO %s on %s", spec, runtime.device)
        return cls(model=model, processor=processor, runtime=runtime)

    @property
    def max_text_tokens(self) -> int:
        """How many tokens the text encoder reads, [CLS] and [SEP] included (256)."""
        return int(self.model.config.max_text_len)

    def _tokenize(self, prompt: Prompt) -> dict:
        return self.processor.tokenizer(prompt.text, return_offsets_mapping=True, verbose=False)

    def check_prompt(self, prompt: Prompt) -> None:
        """Raise PromptError if the prompt is longer than the text encoder can read."""
        n = len(self._tokenize(prompt)["input_ids"])
        if n > self.max_text_tokens:
            raise PromptError(
                f"the prompt is {n} tokens long but GroundingDINO reads at most "
                f"{self.max_text_tokens} (counting [CLS], [SEP] and one '.' per phrase); "
                "shorten it or split the phrases over several calls"
            )

    def detect(
        self, image: Image.Image, prompt: Prompt, *, box_threshold: float, text_threshold: float
    ) -> Detections:
        """Find the prompt's phrases in an RGB image.

        A query becomes a detection when the best token of its best phrase scores above
        `box_threshold` and above `text_threshold`; its label is that phrase (never a
        merge of phrases, never a word piece). Returns boxes in the image's pixels.
        """
        import torch

        self.check_prompt(prompt)
        token_phrase = token_phrase_ids(self._tokenize(prompt)["offset_mapping"], prompt.spans)
        inputs = self.processor(
            images=image, text=prompt.text, return_tensors="pt", input_data_format="channels_last"
        )
        inputs = {k: v.to(self.runtime.device) for k, v in inputs.items()}
        with torch.inference_mode():
            outputs = self.model(**inputs)
        probs = torch.sigmoid(outputs.logits[0].float()).cpu().numpy()  # (Q, 256)
        per_phrase = phrase_scores(probs, token_phrase, len(prompt.phrases))  # (Q, P)
        best = per_phrase.argmax(axis=1)
        score = per_phrase.max(axis=1)
        keep = (score > box_threshold) & (score > text_threshold)
        boxes = decode_boxes(
            outputs.pred_boxes[0].float().cpu(), height=image.height, width=image.width
        )
        return Detections(
            boxes=boxes[keep],
            scores=score[keep].astype(np.float32),
            phrase_ids=best[keep].astype(np.int64),
        )
