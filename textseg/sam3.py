"""SAM 3 adapter ("the text masker"): phrases in, every instance's mask, box and score out.

Runs transformers' `Sam3Model` + `Sam3Processor` (transformers 5.0 or newer), loaded from
"facebook/sam3" (gated on the Hugging Face Hub: ask for access first) or a local folder
written with `save_pretrained` (`textseg.testing.make_sam3` writes a tiny random one).

Unlike the finder + painter pair, SAM 3 reads the text itself and segments every instance of
a phrase, and its presence head scores whether the phrase is in the image at all. It reads
one phrase per call, so a prompt of P phrases runs the text-conditioned part P times on one
cached image embedding (kept per image, like SAM 2's).

Precision follows the runtime, like SAM 2: fp32 on the CPU and on a T4, bf16 autocast on
Ampere and newer.
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

import numpy as np

from textseg.errors import ModelLoadError, PromptError
from textseg.hub import gated_hint, image_key, is_gated_error, load_error, pretrained_source
from textseg.parts import TextMasks

if TYPE_CHECKING:
    from PIL import Image

    from textseg.device import Runtime
    from textseg.prompt import Prompt

__all__ = [
    "DEFAULT_SAM3",
    "Sam3TextMasker",
    "TextMasks",
    "is_gated_error",
]  # TextMasks, is_gated_error:
# re-exported from textseg.parts and textseg.hub (their homes since 0.2), for one release

logger = logging.getLogger(__name__)

DEFAULT_SAM3 = "facebook/sam3"

_SAM3_HINT = (
    "Pass 'facebook/sam3' (gated: see https://huggingface.co/facebook/sam3) or a local folder "
    "holding the model and its processor saved with save_pretrained() "
    "(textseg.testing.make_sam3 writes one)."
)


def sam3_load_error(spec: str, err: BaseException) -> ModelLoadError:
    """The ModelLoadError for a SAM 3 that failed to load: how to get access when the
    repository is gated, what to pass otherwise."""
    if is_gated_error(err):
        return ModelLoadError(f"could not load SAM 3: {gated_hint(spec)}")
    return load_error("SAM 3", spec, err, _SAM3_HINT)


def import_sam3() -> Any:
    """transformers, checked to have SAM 3; ModelLoadError with the fix otherwise."""
    try:
        import transformers
    except ImportError as err:
        raise ModelLoadError(
            "transformers is not installed; run `pip install 'transformers>=5'`"
        ) from err
    names = ("Sam3Model", "Sam3Processor")
    if any(getattr(transformers, name, None) is None for name in names):
        raise ModelLoadError(
            "SAM 3 needs a transformers release with Sam3Model and Sam3Processor (5.0 or "
            f"newer); this environment has transformers {transformers.__version__}. Run "
            "`pip install -U 'transformers>=5'` (on Colab, then restart the session)."
        )
    return transformers


class Sam3TextMasker:
    """Text-prompted instance segmentation with SAM 3 (transformers' Sam3Model).

    cache_images: how many images' embeddings to keep (0: none). `encode_count` counts
    image-encoder runs. mask_threshold: probability above which a pixel is in a mask.
    """

    def __init__(
        self,
        *,
        model: Any,
        processor: Any,
        runtime: Runtime,
        cache_images: int = 1,
        mask_threshold: float = 0.5,
    ) -> None:
        self.model = model.eval().to(runtime.device)
        self.processor = processor
        self.runtime = runtime
        self.cache_images = cache_images
        self.mask_threshold = mask_threshold
        self.encode_count = 0
        self._cache: OrderedDict[str, Any] = OrderedDict()

    @classmethod
    def from_pretrained(
        cls, model_id_or_path: str | os.PathLike = DEFAULT_SAM3, *, runtime: Runtime
    ) -> Sam3TextMasker:
        """Load SAM 3 from a hub id ("facebook/sam3", gated) or a local folder."""
        tf = import_sam3()
        spec = str(model_id_or_path)
        source, local_only = pretrained_source(spec, what="SAM 3", hint=_SAM3_HINT)
        try:
            processor = tf.Sam3Processor.from_pretrained(source, local_files_only=local_only)
            model = tf.Sam3Model.from_pretrained(source, local_files_only=local_only)
        except Exception as err:  # gated, offline, unknown id, broken files
            raise sam3_load_error(spec, err) from err
        logger.info("loaded SAM 3 %s on %s", spec, runtime.device)
        return cls(model=model, processor=processor, runtime=runtime)

    def _autocast(self) -> Any:
        import torch

        return torch.autocast(
            device_type=self.runtime.device.type,
            dtype=self.runtime.dtype,
            enabled=self.runtime.autocast_enabled,
        )

    @property
    def max_text_tokens(self) -> int:
        """How many tokens SAM 3's text encoder reads per phrase (32)."""
        return int(self.model.config.text_config.max_position_embeddings)

    def check_prompt(self, prompt: Prompt) -> None:
        """Raise PromptError if a phrase is longer than SAM 3's text encoder reads."""
        for phrase in prompt.phrases:
            n = len(self.processor.tokenizer(phrase)["input_ids"])
            if n > self.max_text_tokens:
                raise PromptError(
                    f"the phrase {phrase!r} is {n} tokens long but SAM 3 reads at most "
                    f"{self.max_text_tokens} per phrase; shorten it"
                )

    def clear_cache(self) -> None:
        """Forget every cached image embedding."""
        self._cache.clear()

    def _embed(self, image: Image.Image) -> Any:
        key = image_key(np.asarray(image))
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        pixels = self.processor(images=image, return_tensors="pt")["pixel_values"]
        with self._autocast():
            embeds = self.model.get_vision_features(pixel_values=pixels.to(self.runtime.device))
        self.encode_count += 1
        if self.cache_images > 0:
            self._cache[key] = embeds
            while len(self._cache) > self.cache_images:
                self._cache.popitem(last=False)
        return embeds

    def segment_text(
        self,
        image: Image.Image,
        prompt: Prompt,
        *,
        threshold: float,
        output_size: tuple[int, int] | None = None,
    ) -> TextMasks:
        """Every instance of each phrase whose score (query × presence) is above
        `threshold`. output_size: (H, W) of masks and boxes; default the image's size."""
        import torch

        self.check_prompt(prompt)
        h, w = output_size or (image.height, image.width)
        boxes, scores, ids, masks = [], [], [], []
        presence = np.zeros(len(prompt.phrases), dtype=np.float32)
        with torch.inference_mode():
            embeds = self._embed(image)
            for p, phrase in enumerate(prompt.phrases):
                text = self.processor(text=phrase, return_tensors="pt")
                with self._autocast():
                    out = self.model(
                        vision_embeds=embeds,
                        input_ids=text["input_ids"].to(self.runtime.device),
                        attention_mask=text["attention_mask"].to(self.runtime.device),
                    )
                presence[p] = float(torch.sigmoid(out.presence_logits.float()).reshape(-1)[0])
                for name in ("pred_masks", "pred_boxes", "pred_logits", "presence_logits"):
                    setattr(out, name, getattr(out, name).float())
                found = self.processor.post_process_instance_segmentation(
                    out,
                    threshold=threshold,
                    mask_threshold=self.mask_threshold,
                    target_sizes=[(h, w)],
                )[0]
                boxes.append(found["boxes"].cpu().numpy().reshape(-1, 4))
                scores.append(found["scores"].cpu().numpy().reshape(-1))
                masks.append(found["masks"].cpu().numpy().astype(bool).reshape(-1, h, w))
                ids.append(np.full(len(scores[-1]), p, dtype=np.int64))
        return TextMasks(
            boxes=np.concatenate(boxes).astype(np.float32),
            scores=np.concatenate(scores).astype(np.float32),
            phrase_ids=np.concatenate(ids),
            masks=np.concatenate(masks),
            presence=presence,
        )
