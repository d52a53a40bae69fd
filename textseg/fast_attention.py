"""GroundingDINO's text-conditioned encoder with the same sums taken in a cheaper order
(for the CPU, where it is most of a prompt's time).

A second prompt on the same image reuses GroundingDINO's image backbone (detector.py), but
the 6-layer encoder that fuses image and text has to run again over every image token
(~18k of them at 800 pixels). Measured on 2 CPU cores (benchmarks/bench_textseg.py), three
of its parts cost more than their arithmetic needs:

1. Image-text fusion (`GroundingDinoBiMultiHeadAttention`, and MM-GroundingDINO's copy).
   transformers projects every image token into 1024 features three times (queries, values,
   output): 3 * 256 * 1024 multiply-adds per token and layer. But the image only meets the
   text through T tokens (a prompt is a few, at most 256), so the products can be grouped
   the other way round. Per head h, with image tokens x, text keys k and values v, and
   attention probabilities p:

       (x Wq + bq) kᵀ  =  x (Wq kᵀ) + bq kᵀ              queries, never made
       (p v) Wo        =  p (v Wo)                       image output, values folded in
       p (x Wv + bv)   =  (p x) Wv + bv                  text output (p's rows sum to 1)

   which is 3 * 256 * (heads * T) multiply-adds per image token: 25 times fewer for a
   10-token prompt, and never more (heads * T <= 4 * 256 = 1024).
2. Multi-scale deformable attention (`MultiScaleDeformableAttention`). transformers' portable
   form runs grid_sample per level, then stacks, weights and sums a (heads, 32, queries, 16)
   tensor. Here each sampling point's four bilinear corner weights are multiplied into its
   attention weight and one `F.embedding_bag` gathers and sums the 64 value rows per query
   and head. grid_sample's zero padding becomes a zero border around each level.
3. The encoder layer (`GroundingDinoDeformableLayer`): once the values are projected, the
   rest works token by token (sampling offsets and weights, the gather, the output
   projection, the 256 → 2048 → 256 feed-forward block, residuals and LayerNorms), so it
   runs LAYER_CHUNK image tokens at a time and its intermediates (a (tokens, 2048)
   activation, the gather's indices) stay in the CPU's cache instead of each making a
   round trip to memory (145 MB for the activation alone, per layer). Each token's
   arithmetic is unchanged, except that its sampling point is taken as
   (reference * size - 0.5) + offset rather than (reference + offset / size) * size - 0.5.

All three are the same arithmetic in another order, so results agree to float rounding
(about 1e-6 relative in float32), not bit for bit; the tests compare them with transformers' own
modules, alone and inside whole models of both families. Training mode runs transformers'
forward (dropout sits between the products regrouped here).

`enable(model)` gives the matching modules of one model instance these forwards (its
weights, state dict and every other model are untouched); `disable(model)` takes them away.
GroundingDinoDetector enables them on the CPU (see `fast_attention` there).
"""

from __future__ import annotations

import types
from typing import Any

import torch
import torch.nn.functional as F

__all__ = ["LAYER_CHUNK", "disable", "enable", "enabled_modules"]

LAYER_CHUNK = 512  # image tokens per step of an encoder layer: its (512, 2048) activation is 4 MB

_FUSION_PARTS = (
    "vision_proj", "text_proj", "values_vision_proj", "values_text_proj",
    "out_vision_proj", "out_text_proj",
)  # fmt: skip


def _fusion_forward(
    self: Any,
    vision_features: torch.Tensor,
    text_features: torch.Tensor,
    vision_attention_mask: torch.Tensor | None = None,
    text_attention_mask: torch.Tensor | None = None,
) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """BiMultiHeadAttention.forward with the image-side products regrouped (module doc).
    Masks are True where a token is padding, as in transformers."""
    if self.training:
        return type(self).forward(
            self, vision_features, text_features, vision_attention_mask, text_attention_mask
        )
    B, N, C = vision_features.shape  # image tokens: (B, N, C)
    T = text_features.shape[1]  # text tokens
    h, d = self.num_heads, self.head_dim
    keys = self.text_proj(text_features).view(B, T, h, d)
    values = self.values_text_proj(text_features).view(B, T, h, d)

    # logits[b, n, h*T + t] = (x Wq_h + bq_h) · k_ht * scale, without making the queries
    wq = self.vision_proj.weight.view(h, d, C) * self.scale
    bq = self.vision_proj.bias.view(h, d) * self.scale
    qk = torch.einsum("hdc,bthd->bcht", wq, keys).reshape(B, C, h * T)
    qk_bias = torch.einsum("hd,bthd->bht", bq, keys).reshape(B, 1, h * T)
    logits = torch.baddbmm(qk_bias, vision_features, qk)  # (B, N, h*T)
    # the same stabilisation as transformers: one global max, then a clamp
    logits = torch.clamp(logits - logits.max(), min=-50000, max=50000)

    # text side: each (head, text token) attends over the N image tokens
    text_logits = logits.transpose(1, 2)  # (B, h*T, N)
    text_logits = text_logits - text_logits.max(dim=-1, keepdim=True)[0]
    text_logits = torch.clamp(text_logits, min=-50000, max=50000)
    if vision_attention_mask is not None:
        text_logits = text_logits.masked_fill(vision_attention_mask[:, None, :], float("-inf"))
    text_probs = text_logits.softmax(dim=-1)  # (B, h*T, N)

    # image side: each image token attends over the T text tokens, per head
    vision_logits = logits.view(B, N, h, T)
    if text_attention_mask is not None:
        vision_logits = vision_logits.masked_fill(
            text_attention_mask[:, None, None, :], float("-inf")
        )
    vision_probs = vision_logits.softmax(dim=-1)  # (B, N, h, T)

    # image output: p (v Wo) + bo, the text values pushed through the output projection
    wo = self.out_vision_proj.weight.view(C, h, d)
    value_out = torch.einsum("bthd,chd->bhtc", values, wo).reshape(B, h * T, C)
    vision_out = torch.baddbmm(
        self.out_vision_proj.bias.view(1, 1, C), vision_probs.reshape(B, N, h * T), value_out
    )  # (B, N, C)

    # text output: (p x) Wv + bv per head, then transformers' own output projection
    pooled = torch.bmm(text_probs, vision_features).view(B, h, T, C)
    wv = self.values_vision_proj.weight.view(h, d, C)
    text_att = torch.einsum("bhtc,hdc->bthd", pooled, wv) + self.values_vision_proj.bias.view(h, d)
    text_out = self.out_text_proj(text_att.reshape(B, T, h * d))  # (B, T, C)

    # the attention weights in transformers' shapes: (B*h, N, T) and (B*h, T, N)
    vision_weights = vision_probs.permute(0, 2, 1, 3).reshape(B * h, N, T)
    return (vision_out, vision_weights), (text_out, text_probs.view(B * h, T, N))


def _level_shapes(
    shapes_list: list[tuple[int, int]] | None, shapes: torch.Tensor | None
) -> list[tuple[int, int]]:
    """Each level's (height, width) as ints, from the list transformers passes (or its tensor)."""
    if shapes_list is None:
        shapes_list = shapes.tolist()
    return [(int(h), int(w)) for h, w in shapes_list]


class _ValueTable:
    """Multi-scale deformable attention's values, laid out for one weighted gather.

    value (B, S, heads, D) over the levels' (h, w) maps flattened one after the other. Each
    level's map sits inside a zero border (1 pixel before, 2 after); row
    ((b*S2 + s)*heads + head) of `rows` holds one value vector, so a bilinear corner outside
    a map lands on the border and adds nothing, as grid_sample's zero padding does."""

    def __init__(self, value: torch.Tensor, shapes: list[tuple[int, int]]) -> None:
        B, _, H, D = value.shape
        self.batch, self.heads, self.dim = B, H, D
        per_batch = sum((h + 3) * (w + 3) for h, w in shapes)
        table = value.new_zeros(B, per_batch, H, D)
        firsts, first = [], 0
        for (h, w), level in zip(shapes, value.split([h * w for h, w in shapes], dim=1)):
            block = table[:, first : first + (h + 3) * (w + 3)].view(B, h + 3, w + 3, H, D)
            block[:, 1 : h + 1, 1 : w + 1] = level.reshape(B, h, w, H, D)
            firsts.append(first)
            first += (h + 3) * (w + 3)
        self.rows = table.view(-1, D)  # (B*S2*H, D)
        # row arithmetic runs in floating point: exact for whole numbers below 2**24
        exact = torch.float32 if self.rows.shape[0] < 2**24 else torch.float64
        self.exact = exact
        self.itype = torch.int32 if self.rows.shape[0] < 2**31 else torch.int64
        dev, L = value.device, len(shapes)
        self.wh = torch.tensor([[w, h] for h, w in shapes], dtype=exact, device=dev)  # (L, 2)

        # What sample() needs per call, made once (the encoder layer samples chunk by chunk).
        # Top-left corner (x, y) of level l, head j, sample b is row
        # ((b*S2 + first_l + (y+1)(w+3) + (x+1)) * H + j); the other three corners are
        # +H (right), +(w+3)H (below) and both.
        width = self.wh[:, 0].view(L, 1)
        self.step = (width + 3) * H  # (L, 1): one map row down
        offset = (torch.tensor(firsts, dtype=exact, device=dev).view(L, 1) + width + 4) * H
        offset = offset + torch.arange(H, dtype=exact, device=dev).view(H, 1, 1)  # (H, L, 1)
        if B > 1:
            batch = torch.arange(B, dtype=exact, device=dev) * (per_batch * H)
            offset = offset + batch.view(B, 1, 1, 1, 1)
        self.offset = offset
        self.down = self.step.to(self.itype)
        self.minus_one = torch.tensor(-1.0, dtype=exact, device=dev)

    def sample(self, xy: torch.Tensor, attention_weights: torch.Tensor) -> torch.Tensor:
        """Sum over levels and points of attention weight × bilinear sample.

        xy (B, Q, heads, L, P, 2): pixel coordinates (x, y) per level as grid_sample with
        align_corners=False takes them (location * size - 0.5), in self.exact;
        attention_weights (B, Q, heads, L, P). Returns (B, Q, heads*D)."""
        B, H, D = self.batch, self.heads, self.dim
        Q, L, P = xy.shape[1], xy.shape[3], xy.shape[4]
        dev, itype = xy.device, self.itype
        # clamp to [-1, size]: beyond a map, both corners of that axis land on the border,
        # or the one inside gets a weight of exactly 0
        xy = torch.clamp(xy, self.minus_one, self.wh.view(L, 1, 2))
        low = xy.floor().nan_to_num_(nan=-1.0)  # a NaN point reads the border...
        frac = xy - low  # ...with NaN weights: NaN out, as grid_sample gives

        # the four corners' rows (see __init__)
        corner = torch.add(torch.addcmul(self.offset, low[..., 1], self.step), low[..., 0], alpha=H)
        corner = corner.to(itype)  # (B, Q, H, L, P)
        index = torch.empty(B, Q, H, 4, L, P, dtype=itype, device=dev)
        index[:, :, :, 0] = corner
        torch.add(corner, H, out=index[:, :, :, 1])
        torch.add(corner, self.down, out=index[:, :, :, 2])
        torch.add(corner, self.down + H, out=index[:, :, :, 3])

        # bilinear corner weights times the attention weight
        dtype = self.rows.dtype
        frac = frac.to(dtype)
        near = 1 - frac
        weight = attention_weights.to(dtype)
        top, bottom = near[..., 1] * weight, frac[..., 1] * weight
        weights = torch.empty(B, Q, H, 4, L, P, dtype=dtype, device=dev)
        torch.mul(near[..., 0], top, out=weights[:, :, :, 0])
        torch.mul(frac[..., 0], top, out=weights[:, :, :, 1])
        torch.mul(near[..., 0], bottom, out=weights[:, :, :, 2])
        torch.mul(frac[..., 0], bottom, out=weights[:, :, :, 3])

        out = F.embedding_bag(
            index.view(B * Q * H, 4 * L * P),
            self.rows,
            per_sample_weights=weights.view(B * Q * H, 4 * L * P),
            mode="sum",
        )  # (B*Q*H, D)
        return out.view(B, Q, H * D)

    def pixels(self, locations: torch.Tensor) -> torch.Tensor:
        """(x, y) in [0, 1] of each level, (..., L, P, 2) → pixel coordinates for sample()."""
        minus_half = torch.tensor(-0.5, dtype=self.exact, device=locations.device)
        return torch.addcmul(minus_half, locations.to(self.exact), self.wh.view(-1, 1, 2))


def _deformable_forward(
    self: Any,
    value: torch.Tensor,
    value_spatial_shapes: torch.Tensor,
    value_spatial_shapes_list: list[tuple[int, int]],
    level_start_index: torch.Tensor,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
    im2col_step: int,
) -> torch.Tensor:
    """MultiScaleDeformableAttention.forward as one weighted gather (module doc).

    value (B, S, heads, D) over the levels' (h, w) maps flattened one after the other;
    sampling_locations (B, Q, heads, L, P, 2) as (x, y) in [0, 1] of each level;
    attention_weights (B, Q, heads, L, P). Returns (B, Q, heads*D). Sampling follows
    grid_sample(mode="bilinear", padding_mode="zeros", align_corners=False)."""
    if self.training:
        return type(self).forward(
            self, value, value_spatial_shapes, value_spatial_shapes_list, level_start_index,
            sampling_locations, attention_weights, im2col_step,
        )  # fmt: skip
    table = _ValueTable(value, _level_shapes(value_spatial_shapes_list, value_spatial_shapes))
    return table.sample(table.pixels(sampling_locations), attention_weights)


def _layer_forward(
    self: Any,
    hidden_states: torch.Tensor,
    attention_mask: torch.Tensor,
    position_embeddings: torch.Tensor | None = None,
    reference_points: torch.Tensor | None = None,
    spatial_shapes: torch.Tensor | None = None,
    spatial_shapes_list: list[tuple[int, int]] | None = None,
    level_start_index: torch.Tensor | None = None,
    output_attentions: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """GroundingDinoDeformableLayer.forward, everything after the values taken LAYER_CHUNK
    image tokens at a time (module doc). hidden_states: (B, N, C); reference_points
    (B, N, L, 2) as (x, y) in [0, 1]. Returns (B, N, C) and the attention weights
    (B, N, heads, L, P), as transformers does."""
    attn = self.self_attn
    if self.training or reference_points is None or reference_points.shape[-1] != 2:
        return type(self).forward(
            self, hidden_states, attention_mask, position_embeddings, reference_points,
            spatial_shapes, spatial_shapes_list, level_start_index, output_attentions,
        )  # fmt: skip
    B, N, C = hidden_states.shape
    H, L, P = attn.n_heads, attn.n_levels, attn.n_points
    shapes = _level_shapes(spatial_shapes_list, spatial_shapes)
    queries = hidden_states if position_embeddings is None else hidden_states + position_embeddings
    value = attn.value_proj(hidden_states)
    if attention_mask is not None:  # True where a token is real
        value = value.masked_fill(~attention_mask[..., None], 0.0)
    table = _ValueTable(value.view(B, N, H, C // H), shapes)
    # pixel = (reference + offset / size) * size - 0.5 = (reference * size - 0.5) + offset
    anchors = table.pixels(reference_points[:, :, None, :, None, :])  # (B, N, 1, L, 1, 2)

    out = torch.empty_like(hidden_states)
    weights_out = hidden_states.new_empty(B, N, H, L, P)
    for start in range(0, N, LAYER_CHUNK):
        stop = min(start + LAYER_CHUNK, N)
        q = queries[:, start:stop]
        n = stop - start
        offsets = attn.sampling_offsets(q).view(B, n, H, L, P, 2)
        weights = attn.attention_weights(q).view(B, n, H, L * P)
        weights = F.softmax(weights, -1).view(B, n, H, L, P)
        weights_out[:, start:stop] = weights
        xy = anchors[:, start:stop] + offsets.to(table.exact)
        attended = attn.output_proj(table.sample(xy, weights))  # (B, n, C)
        x = self.self_attn_layer_norm(hidden_states[:, start:stop] + attended)
        y = self.fc2(self.activation_fn(self.fc1(x)))
        out[:, start:stop] = self.final_layer_norm(x + y)
    return out, weights_out


_LAYER_PARTS = ("self_attn", "self_attn_layer_norm", "fc1", "fc2", "final_layer_norm")


def _kind(module: torch.nn.Module) -> str | None:
    """Which of the two kernels this module is: "fusion", "deformable" or None."""
    name = type(module).__name__
    if name.endswith("BiMultiHeadAttention") and all(hasattr(module, p) for p in _FUSION_PARTS):
        return "fusion"
    if name == "MultiScaleDeformableAttention" and not any(True for _ in module.parameters()):
        return "deformable"
    if name.endswith("DeformableLayer") and all(hasattr(module, p) for p in _LAYER_PARTS):
        return "layer"
    return None


_FORWARDS = {"fusion": _fusion_forward, "deformable": _deformable_forward, "layer": _layer_forward}


def enable(model: torch.nn.Module) -> int:
    """Give this model's fusion, deformable-attention and encoder-layer modules the
    regrouped forwards; returns how many modules now have them (0 for a model without any)."""
    count = 0
    for module in model.modules():
        kind = _kind(module)
        if kind is not None:
            module.forward = types.MethodType(_FORWARDS[kind], module)
            count += 1
    return count


def disable(model: torch.nn.Module) -> None:
    """Back to transformers' own forwards on this model."""
    for module in model.modules():
        if _kind(module) is not None:
            vars(module).pop("forward", None)


def enabled_modules(model: torch.nn.Module) -> int:
    """How many of this model's modules run the regrouped forwards."""
    return sum(
        1 for module in model.modules() if _kind(module) is not None and "forward" in vars(module)
    )
