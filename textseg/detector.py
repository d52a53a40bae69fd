"""GroundingDINO adapter ("the finder"): text phrases in, XYXY boxes with phrase ids out.

Runs `AutoModelForZeroShotObjectDetection` + `AutoProcessor` from transformers (4.56
through 5.x), loaded from a hub id or a local folder written with `save_pretrained`. Any
member of the GroundingDINO family that transformers loads works: grounding-dino tiny/base
and MM-GroundingDINO (e.g. "openmmlab-community/mm_grounding_dino_tiny_o365v1_goldg"); the
transformers class is picked from the checkpoint's config, labels are always the user's
phrases.

The image backbone (Swin + its position embeddings) does not depend on the text, so its
output is cached per image (`cache_images` entries, keyed by the pixels and the input size,
like SAM 2's embedding cache): a second prompt on the same image runs only the text encoder
and the text-conditioned encoder/decoder. transformers has no input for precomputed image
features, so during a call the adapter gives this model's backbone *instance* a forward that
returns the cached output (the class and other models are untouched; restored after the
call; calls from several threads take turns). The tests check that the boxes equal an
uncached run exactly.

What a second prompt still runs, the text-conditioned encoder, is most of a prompt's time on
a CPU; there the adapter gives the model's encoder (image-text fusion, deformable attention,
the layers' token-wise rest) the cheaper forms of `textseg.fast_attention` (the same sums
regrouped; results agree with transformers' to float rounding). `fast_attention=False`
keeps transformers' own.

The raw outputs are decoded here rather than with the processor's
`post_process_grounded_object_detection`, for two reasons: its labels are rebuilt from the
tokens above `text_threshold`, which merges phrases ("plant flower") and leaks word pieces
("##van"), and its argument names changed between releases (`box_threshold` became
`threshold`). The box arithmetic is the same (the tests check it against the processor).
"""

from __future__ import annotations

import logging
import math
import os
import threading
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from textseg.boxes import clip_boxes
from textseg.errors import ModelLoadError, PromptError
from textseg.hub import image_key, load_error, looks_like_path, pretrained_source
from textseg.parts import Detections
from textseg.prompt import Prompt, phrase_scores, token_phrase_ids

if TYPE_CHECKING:
    from collections.abc import Iterator

    import torch
    from PIL import Image

    from textseg.device import Runtime

__all__ = [
    "DEFAULT_DETECTOR",
    "Detections",  # re-exported: it lives in textseg.parts (the Detector contract)
    "GroundingDinoDetector",
    "decode_boxes",
    "image_key",  # re-exported from textseg.hub, for one release
    "looks_like_path",  # re-exported from textseg.hub, for one release
]

logger = logging.getLogger(__name__)

DEFAULT_DETECTOR = "IDEA-Research/grounding-dino-tiny"  # or "IDEA-Research/grounding-dino-base"


def decode_boxes(pred_boxes: torch.Tensor | np.ndarray, *, height: int, width: int) -> np.ndarray:
    """(Q, 4) normalised (cx, cy, w, h) → (Q, 4) float32 XYXY pixels, clipped to the image."""
    b = np.asarray(pred_boxes, dtype=np.float32).reshape(-1, 4)
    cx, cy, bw, bh = b[:, 0], b[:, 1], b[:, 2], b[:, 3]
    xyxy = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], axis=1)
    xyxy *= np.array([width, height, width, height], dtype=np.float32)
    return clip_boxes(xyxy, height=height, width=width)


_DINO_HINT = (
    "Pass a hub id such as 'IDEA-Research/grounding-dino-tiny' or "
    "'IDEA-Research/grounding-dino-base' (the first use downloads it, so it needs internet; "
    "later runs read ~/.cache/huggingface), or a local folder holding the model and its "
    "processor saved with save_pretrained() (textseg.testing.make_grounding_dino writes one)."
)


def _size_field(size: Any, name: str) -> Any:
    """A field of an image processor's `size` (a dict, or a SizeDict in transformers 5)."""
    return size.get(name) if isinstance(size, dict) else getattr(size, name, None)


# The shortest side, in pixels of the model's input, that an image keeps after the
# processor's resize. The resize caps the longest side (1333 at 800), so a 10000 x 10 image
# would get a side of 0 pixels (transformers then fails with "SizeDict(height=0 ...)"); such
# an image is padded instead (black, on both sides of its short side, so it stays in the
# middle) until its short side survives, and the boxes are mapped back onto the image.
MIN_INPUT_SIDE = 64


def _pad_to_aspect(image: Image.Image, *, longest: int) -> tuple[Image.Image, tuple[int, int]]:
    """`image` padded (black, centred) so that when the processor resizes its longest side
    to at most `longest` pixels its shortest keeps MIN_INPUT_SIDE, and where the image's
    top left corner went (dx, dy); `image` itself and (0, 0) when it already does."""
    from PIL import Image as PILImage

    w, h = image.size
    need = math.ceil(max(w, h) * MIN_INPUT_SIDE / max(1, longest))
    if min(w, h) >= need:
        return image, (0, 0)
    size = (w, max(h, need)) if w >= h else (max(w, need), h)
    corner = ((size[0] - w) // 2, (size[1] - h) // 2)
    padded = PILImage.new("RGB", size)
    padded.paste(image.convert("RGB"), corner)
    return padded, corner


@dataclass
class _ImageEntry:
    """What the finder keeps per image: the processor's pixels and the backbone's output."""

    pixel_values: torch.Tensor
    pixel_mask: torch.Tensor | None
    features: list | None = None  # [(feature_map, mask), ...] per backbone level
    positions: list | None = None  # position embedding per level


class GroundingDinoDetector:
    """Open-set detector: finds boxes for the phrases of a prompt.

    Build it with `from_pretrained`, or pass a transformers GroundingDINO-family model and
    its processor. The model runs in float32 on `runtime.device`, without autocast.

    cache_images: how many images' backbone outputs to keep (least recently used goes
        first; 0 turns the cache off). One entry of grounding-dino-tiny at 800 pixels is
        about 45 MB. `backbone_runs` counts backbone runs, so callers can see the cache.
    fast_attention: run the text-conditioned encoder in textseg.fast_attention's cheaper
        order (on 2 CPU cores a first prompt 1.8x and a second prompt 2.6x faster, measured
        in benchmarks/bench_textseg.py). None (default): on the CPU only, the device where
        it was measured; True/False: always/never. It changes this model instance in place.
    """

    def __init__(
        self,
        *,
        model: Any,
        processor: Any,
        runtime: Runtime,
        cache_images: int = 1,
        fast_attention: bool | None = None,
    ):
        if isinstance(cache_images, bool) or not isinstance(cache_images, int) or cache_images < 0:
            raise ValueError(f"cache_images must be a whole number >= 0, got {cache_images!r}")
        if fast_attention not in (None, True, False):
            raise ValueError(f"fast_attention must be None, True or False, got {fast_attention!r}")
        from textseg import fast_attention as fast

        self.model = model.eval().to(runtime.device)
        if fast_attention is None:
            fast_attention = runtime.device.type == "cpu"
        if fast_attention:
            fast.enable(self.model)
        else:
            fast.disable(self.model)
        self.processor = processor
        self.runtime = runtime
        self.cache_images = cache_images
        self.backbone_runs = 0
        self._cache: OrderedDict[str, _ImageEntry] = OrderedDict()
        # one call at a time: the cache and the backbone's swapped forward are shared state
        self._lock = threading.Lock()
        self._backbone = getattr(getattr(model, "model", None), "backbone", None)
        if self._backbone is None or not hasattr(self._backbone, "conv_encoder"):
            logger.warning(
                "%s has no GroundingDINO backbone where expected; the image cache is off",
                type(model).__name__,
            )
            self._backbone = None

    @classmethod
    def from_pretrained(
        cls,
        model_id_or_path: str | os.PathLike = DEFAULT_DETECTOR,
        *,
        runtime: Runtime,
        cache_images: int = 1,
        fast_attention: bool | None = None,
    ) -> GroundingDinoDetector:
        """Load a GroundingDINO-family model from a hub id or a local `save_pretrained`
        folder (the transformers class follows the checkpoint's config)."""
        try:
            from transformers import AutoModelForZeroShotObjectDetection, AutoProcessor
        except ImportError as err:
            raise ModelLoadError(
                "transformers is not installed; run `pip install 'transformers>=4.56'`"
            ) from err
        spec = str(model_id_or_path)
        source, local_only = pretrained_source(spec, what="GroundingDINO", hint=_DINO_HINT)
        try:
            processor = AutoProcessor.from_pretrained(source, local_files_only=local_only)
            model = AutoModelForZeroShotObjectDetection.from_pretrained(
                source, local_files_only=local_only
            )
        except Exception as err:  # offline, unknown id, broken files: all end up here
            raise load_error("GroundingDINO", spec, err, _DINO_HINT) from err
        model_type = getattr(model.config, "model_type", "")
        if "grounding-dino" not in model_type:
            raise ModelLoadError(
                f"{spec!r} is a {model_type!r} model, not GroundingDINO. {_DINO_HINT}"
            )
        logger.info("loaded %s %s on %s", type(model).__name__, spec, runtime.device)
        return cls(
            model=model,
            processor=processor,
            runtime=runtime,
            cache_images=cache_images,
            fast_attention=fast_attention,
        )

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

    @property
    def default_size(self) -> int:
        """The processor's input size: the shortest image side in pixels (800 as released)."""
        return int(_size_field(self.processor.image_processor.size, "shortest_edge") or 800)

    def _size_kwargs(self, size: int | None) -> dict:
        """Image-processor kwargs for an input whose shortest side is `size` pixels (the
        longest side scaled in proportion, 1333 at 800), or {} for the processor's own."""
        if size is None:
            return {}
        if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 32:
            raise ValueError(f"detector_size must be None or a whole number >= 32, got {size!r}")
        current = self.processor.image_processor.size
        short = int(_size_field(current, "shortest_edge") or 800)
        long = int(_size_field(current, "longest_edge") or round(short * 1333 / 800))
        return {"size": {"shortest_edge": int(size), "longest_edge": round(long * size / short)}}

    def _longest_edge(self, size: int | None) -> int:
        """The longest side the processor resizes an image to, for input size `size`."""
        given = self._size_kwargs(size).get("size")
        current = given or self.processor.image_processor.size
        long = _size_field(current, "longest_edge")
        if long:
            return int(long)
        short = int(_size_field(current, "shortest_edge") or 800)
        return round(short * 1333 / 800)

    def clear_cache(self) -> None:
        """Forget every cached image."""
        self._cache.clear()

    def _image_entry(self, image: Image.Image, size: int | None) -> _ImageEntry:
        array = np.array(image)  # a writable copy: torch warns on a read-only array
        key = image_key(array, size)
        entry = self._cache.get(key)
        if entry is not None:
            self._cache.move_to_end(key)
            return entry
        # The HWC array, said to be channels-last: unambiguous on every supported version.
        # A PIL image with input_data_format="channels_last" is permuted twice by
        # transformers 5.9-5.20 (the PIL image is made channels-first, then permuted again),
        # and a PIL image or array without it is guessed at, wrongly for a 3-pixel-tall image.
        pixels = self.processor.image_processor(
            images=array,
            return_tensors="pt",
            input_data_format="channels_last",
            **self._size_kwargs(size),
        )
        mask = pixels.get("pixel_mask")
        entry = _ImageEntry(
            pixel_values=pixels["pixel_values"].to(self.runtime.device),
            pixel_mask=mask.to(self.runtime.device) if mask is not None else None,
        )
        if self.cache_images > 0:
            self._cache[key] = entry
            while len(self._cache) > self.cache_images:
                self._cache.popitem(last=False)
        return entry

    @contextmanager
    def _cached_backbone(self, entry: _ImageEntry) -> Iterator[None]:
        """Within the block, this model's backbone returns `entry`'s cached output (running
        itself once to fill it). Fresh lists each call: the model appends to them."""
        backbone = self._backbone
        if backbone is None:
            yield
            return
        run = backbone.forward  # the class's forward, bound to this instance

        def forward(pixel_values: torch.Tensor, pixel_mask: torch.Tensor) -> tuple:
            if entry.features is None:
                features, positions = run(pixel_values, pixel_mask)
                self.backbone_runs += 1
                if self.cache_images > 0:
                    entry.features, entry.positions = list(features), list(positions)
                return features, positions
            return list(entry.features), list(entry.positions)

        backbone.forward = forward
        try:
            yield
        finally:
            del backbone.forward  # back to the class's forward

    def detect(
        self,
        image: Image.Image,
        prompt: Prompt,
        *,
        box_threshold: float,
        text_threshold: float,
        size: int | None = None,
    ) -> Detections:
        """Find the prompt's phrases in an RGB image.

        A query becomes a detection when the best token of its best phrase scores above
        `box_threshold` and above `text_threshold`; its label is that phrase (never a
        merge of phrases, never a word piece). Returns boxes in the image's pixels.
        size: the model's input size as the shortest image side in pixels (None: the
            processor's, 800 as released; e.g. 512 is about twice as fast on a CPU).
        """
        import torch

        self.check_prompt(prompt)
        token_phrase = token_phrase_ids(self._tokenize(prompt)["offset_mapping"], prompt.spans)
        text = self.processor.tokenizer(prompt.text, return_tensors="pt")
        inputs = {k: v.to(self.runtime.device) for k, v in text.items()}
        seen, (dx, dy) = _pad_to_aspect(image, longest=self._longest_edge(size))  # 10000 x 10
        with self._lock:
            entry = self._image_entry(seen, size)
            inputs["pixel_values"] = entry.pixel_values
            if entry.pixel_mask is not None:
                inputs["pixel_mask"] = entry.pixel_mask
            with torch.inference_mode(), self._cached_backbone(entry):
                outputs = self.model(**inputs)
        probs = torch.sigmoid(outputs.logits[0].float()).cpu().numpy()  # (Q, 256)
        per_phrase = phrase_scores(probs, token_phrase, len(prompt.phrases))  # (Q, P)
        best = per_phrase.argmax(axis=1)
        score = per_phrase.max(axis=1)
        keep = (score > box_threshold) & (score > text_threshold)
        boxes = decode_boxes(
            outputs.pred_boxes[0].float().cpu(), height=seen.height, width=seen.width
        )
        if seen is not image:  # padded: back onto the image, keep what lies on it
            boxes = boxes - np.array([dx, dy, dx, dy], dtype=np.float32)
            boxes = clip_boxes(boxes, height=image.height, width=image.width)
            keep &= (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        return Detections(
            boxes=boxes[keep],
            scores=score[keep].astype(np.float32),
            phrase_ids=best[keep].astype(np.int64),
        )
