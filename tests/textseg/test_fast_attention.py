"""textseg.fast_attention against transformers' own modules: the fusion attention at its
real width, the deformable attention with points inside, on and outside every level, and
whole GroundingDINO / MM-GroundingDINO models (the encoder layers' feed-forward in chunks
included), with the same weights."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForZeroShotObjectDetection, AutoProcessor

from textseg import fast_attention
from textseg.detector import GroundingDinoDetector
from textseg.images import load_image

FAMILIES = ["grounding-dino", "mm-grounding-dino"]


def _fusion_module(family: str) -> torch.nn.Module:
    """A BiMultiHeadAttention of grounding-dino-tiny's width (256 → 4 heads of 256) with
    random weights (std 0.05, so that no term is negligible)."""
    if family == "grounding-dino":
        from transformers import GroundingDinoConfig as Config
        from transformers.models.grounding_dino.modeling_grounding_dino import (
            GroundingDinoBiMultiHeadAttention as Attention,
        )
    else:
        from transformers import MMGroundingDinoConfig as Config
        from transformers.models.mm_grounding_dino.modeling_mm_grounding_dino import (
            MMGroundingDinoBiMultiHeadAttention as Attention,
        )
    torch.manual_seed(0)
    module = Attention(Config()).eval()
    for p in module.parameters():
        torch.nn.init.normal_(p, std=0.05)
    return module


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("tokens", [1, 9, 256])
@pytest.mark.parametrize("masked", [False, True])
def test_fusion_attention_equals_transformers(family, tokens, masked):
    module = _fusion_module(family)
    gen = torch.Generator().manual_seed(1)
    image_tokens = 700 if tokens < 256 else 64
    vision = torch.randn(2, image_tokens, 256, generator=gen)
    text = torch.randn(2, tokens, 256, generator=gen)
    masks = (None, None)
    if masked:  # padding: the last image tokens of sample 0, the last text token of sample 1
        vmask = torch.zeros(2, image_tokens, dtype=torch.bool)
        vmask[0, -50:] = True
        tmask = torch.zeros(2, tokens, dtype=torch.bool)
        tmask[1, -1] = tokens > 1
        masks = (vmask, tmask)
    with torch.inference_mode():
        (v_ref, vw_ref), (t_ref, tw_ref) = module(vision, text, *masks)
        assert fast_attention.enable(module) == 1
        (v, vw), (t, tw) = module(vision, text, *masks)
        fast_attention.disable(module)
        (v_again, _), _ = module(vision, text, *masks)
    assert v.shape == v_ref.shape and t.shape == t_ref.shape
    assert vw.shape == vw_ref.shape and tw.shape == tw_ref.shape
    torch.testing.assert_close(v, v_ref, rtol=1e-5, atol=2e-5)
    torch.testing.assert_close(t, t_ref, rtol=1e-5, atol=2e-5)
    torch.testing.assert_close(vw, vw_ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(tw, tw_ref, rtol=1e-5, atol=1e-6)
    assert torch.equal(v_again, v_ref)  # disable() gives transformers' forward back


def test_fusion_attention_in_training_is_transformers_own():
    module = _fusion_module("grounding-dino").train()
    vision, text = torch.randn(1, 40, 256), torch.randn(1, 5, 256)
    (ref, _), _ = module(vision, text)
    fast_attention.enable(module)
    (out, _), _ = module(vision, text)
    assert torch.equal(out, ref)


def _deformable_inputs(batch: int, seed: int):
    gen = torch.Generator().manual_seed(seed)
    shapes = [(7, 9), (4, 5), (2, 3), (1, 1)]
    heads, dim, queries, points = 4, 8, 60, 3
    value = torch.randn(batch, sum(h * w for h, w in shapes), heads, dim, generator=gen)
    # inside, on the border and beyond every level, then exact pixel centres and edges
    loc = torch.rand(batch, queries, heads, len(shapes), points, 2, generator=gen) * 1.6 - 0.3
    for level, (h, w) in enumerate(shapes):
        loc[:, :5, :, level, :, 0] = (torch.arange(5)[:, None, None] % w + 0.5) / w
        loc[:, :5, :, level, :, 1] = (torch.arange(5)[:, None, None] % h + 0.5) / h
    far = torch.tensor([0.0, 1.0, -3.0, 3.0])[:, None, None, None, None]
    loc[:, 5:9] = far.expand_as(loc[:, 5:9])
    loc[:, 9, 0, 0, 0, 0] = float("nan")  # a broken point: NaN out for that head, no crash
    weights = torch.rand(batch, queries, heads, len(shapes), points, generator=gen)
    spatial = torch.tensor(shapes)
    starts = torch.cat([spatial.new_zeros(1), (spatial[:, 0] * spatial[:, 1]).cumsum(0)[:-1]])
    return value, spatial, shapes, starts, loc, weights


@pytest.mark.parametrize("batch", [1, 2])
def test_deformable_attention_equals_transformers_grid_sample(batch):
    from transformers.models.grounding_dino.modeling_grounding_dino import (
        MultiScaleDeformableAttention,
    )

    module = MultiScaleDeformableAttention().eval()
    args = _deformable_inputs(batch, seed=batch)
    with torch.inference_mode():
        ref = module(*args, 64)
        assert fast_attention.enable(module) == 1
        out = module(*args, 64)
        value, spatial, _, starts, loc, weights = args  # the shapes as a tensor only
        from_tensor = module(value, spatial, None, starts, loc, weights, 64)
    assert torch.equal(from_tensor.nan_to_num(), out.nan_to_num())
    assert out.shape == ref.shape == (batch, 60, 4 * 8)
    assert ref[:, 9, :8].isnan().all()  # transformers' own answer for the NaN point
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5, equal_nan=True)
    assert torch.equal(out[:, 7:9], torch.zeros_like(out[:, 7:9]))  # all points at -3 or 3


@pytest.fixture(scope="module")
def family_dirs(model_dirs, mm_dir):
    return {"grounding-dino": model_dirs["detector"], "mm-grounding-dino": mm_dir}


@pytest.mark.parametrize("family", FAMILIES)
def test_whole_model_gives_transformers_outputs(family, family_dirs, sample_image, monkeypatch):
    monkeypatch.setattr(fast_attention, "LAYER_CHUNK", 100)  # several chunks, the last one short
    folder = family_dirs[family]
    model = AutoModelForZeroShotObjectDetection.from_pretrained(folder).eval()
    processor = AutoProcessor.from_pretrained(folder)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("vision_param", "text_param")):
                p.fill_(1.0)  # let text and image mix fully (layer scale starts at 1e-4)
            elif ".sampling_offsets.weight" in name or ".attention_weights.weight" in name:
                # start at 0 (a fixed grid of points, equal weights): make them read the query
                p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
    image = load_image(sample_image)
    # two images of different shapes: one of them is padded, so masks matter too
    inputs = processor(
        images=[image, image.crop((0, 0, 200, 140))],
        text=["cat. remote control.", "cat. remote control."],
        return_tensors="pt",
    )
    assert not inputs["pixel_mask"].all()
    with torch.inference_mode():
        ref = model(**inputs, output_attentions=True)
        n = fast_attention.enable(model)
        fast = model(**inputs, output_attentions=True)
        fast_attention.disable(model)
        again = model(**inputs)
    config = model.config
    assert fast_attention.enabled_modules(model) == 0  # all off again after disable()
    # per encoder layer: fusion, deformable attention, the layer; per decoder layer: deformable
    assert n == 3 * config.encoder_layers + config.decoder_layers
    height, width = inputs["pixel_values"].shape[-2:]
    assert (height // 8) * (width // 8) > 3 * 100  # the first level alone fills 3 chunks
    torch.testing.assert_close(fast.logits, ref.logits, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(fast.pred_boxes, ref.pred_boxes, rtol=1e-4, atol=1e-5)
    # the encoder's attention weights (fusion both ways, text, deformable) per layer too
    kinds = zip(fast.encoder_attentions, ref.encoder_attentions, strict=True)
    for fast_kind, ref_kind in kinds:
        for got, want in zip(fast_kind, ref_kind, strict=True):
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    assert torch.equal(again.logits, ref.logits)


def test_detector_turns_it_on_for_the_cpu_only_by_default(model_dirs, runtime):
    folder = model_dirs["detector"]
    assert runtime.device.type == "cpu"
    on = GroundingDinoDetector.from_pretrained(folder, runtime=runtime)
    assert fast_attention.enabled_modules(on.model) > 0
    off = GroundingDinoDetector.from_pretrained(folder, runtime=runtime, fast_attention=False)
    assert fast_attention.enabled_modules(off.model) == 0
    with pytest.raises(ValueError, match="fast_attention must be None, True or False"):
        GroundingDinoDetector.from_pretrained(folder, runtime=runtime, fast_attention="yes")
