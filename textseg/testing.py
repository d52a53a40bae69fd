"""Build GroundingDINO, SAM 2 and SAM 3 with random weights into local folders — no download.

The tests, the benchmark and the notebook's CI run use these to go through exactly the
code path users take (`from_pretrained(<folder>)`), offline. The masks they produce are
meaningless; shapes, types, coordinates and files are not.

    make_grounding_dino(folder, size="test")   # ~0.2M parameters, ~0.1 s per image
    make_grounding_dino(folder, size="tiny")   # grounding-dino-tiny's architecture (~172M)
    make_grounding_dino(folder, family="mm-grounding-dino")   # MM-GroundingDINO, same sizes
    make_sam2(folder, size="test")             # SAM 2.1 tiny shrunk by Hydra overrides
    make_sam2(folder, size="tiny")             # sam2.1_hiera_t as released (~39M)
    make_sam3(folder, size="test")             # transformers' Sam3Model, ~0.3M parameters
    make_backend_models("sam3", folder)        # tiny models of a BACKENDS row: from_pretrained's
                                               # keywords, e.g. {"sam3": ..., "segmenter": ...}
    make_sample_image(path)                    # a photo-like picture to segment
    make_sample_video(path)                    # a short clip: a red ball moves, a blue box enters
"""

from __future__ import annotations

import json
import os
import string
from pathlib import Path
from typing import Literal

import numpy as np

__all__ = [
    "make_backend_models",
    "make_grounding_dino",
    "make_sam2",
    "make_sam3",
    "make_sample_image",
    "make_sample_video",
    "write_clip_vocab",
    "write_vocab",
]

DinoSize = Literal["test", "tiny"]
DinoFamily = Literal["grounding-dino", "mm-grounding-dino"]
Sam2Size = Literal["test", "tiny"]
Sam3Size = Literal["test"]

SAM2_TINY_CONFIG = "configs/sam2.1/sam2.1_hiera_t.yaml"

# Hydra overrides that shrink sam2.1_hiera_t to ~6.6M parameters and a 256-pixel input
# (the mask decoder keeps its real width, 256). Block 3 is the only global-attention block:
# global attention on a block that also pools (a stage's first block) is not supported.
SAM2_TEST_OVERRIDES = (
    "++model.image_size=256",
    "++model.image_encoder.trunk.embed_dim=16",
    "++model.image_encoder.trunk.stages=[1,1,2,1]",
    "++model.image_encoder.trunk.global_att_blocks=[3]",
    "++model.image_encoder.neck.backbone_channel_list=[128,64,32,16]",
    "++model.memory_attention.num_layers=1",
    "++model.memory_attention.layer.dim_feedforward=64",
)

# GroundingDINO's text encoder marks phrase boundaries by bert-base-uncased ids
# ([CLS]=101, [SEP]=102, "."=1012, "?"=1029), so a generated vocabulary keeps them there.
_FIXED_IDS = {0: "[PAD]", 100: "[UNK]", 101: "[CLS]", 102: "[SEP]", 103: "[MASK]"}
_WORDS = (
    "a an the of and in on with cat cats dog remote control skateboard cap hat person "
    "man woman car tree flower plant sky road building cup bottle chair table red blue "
    "green black white small big left right"
).split()


def write_vocab(folder: str | os.PathLike, *, size: int | None = None) -> Path:
    """Write a WordPiece vocab.txt in bert-base-uncased's layout for the ids that matter.

    Holds the special tokens, ASCII punctuation and digits at their BERT ids ("." = 1012),
    lower-case letters and "##" pieces (so every ASCII word tokenises), and a few words.
    size: pad with "[unusedN]" entries up to this many (30522 = bert-base-uncased).
    """
    tokens: list[str] = []
    for i in range(999):
        tokens.append(_FIXED_IDS.get(i, f"[unused{i}]"))
    tokens += [chr(c) for c in range(33, 127) if not chr(c).isupper()]  # "!"=999 … "."=1012
    tokens += ["##" + c for c in string.ascii_lowercase + string.digits]
    tokens += [w for w in _WORDS if w not in tokens]
    if size is not None:
        if size < len(tokens):
            raise ValueError(f"size must be at least {len(tokens)}, got {size}")
        tokens += [f"[unused{i}]" for i in range(len(tokens), size)]
    if tokens.index(".") != 1012 or tokens.index("?") != 1029:  # guards the layout above
        raise RuntimeError("vocab layout broken: '.' must be id 1012 and '?' id 1029")
    path = Path(folder) / "vocab.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(tokens) + "\n", encoding="utf-8")
    return path


def _dino_configs(
    size: DinoSize, vocab_size: int, family: DinoFamily = "grounding-dino"
) -> tuple[object, dict]:
    from transformers import BertConfig, SwinConfig

    if family == "grounding-dino":
        from transformers import GroundingDinoConfig
    elif family == "mm-grounding-dino":  # same fields; its own classes since transformers 4.56
        from transformers import MMGroundingDinoConfig as GroundingDinoConfig
    else:
        raise ValueError(f"family={family!r} is not one of 'grounding-dino', 'mm-grounding-dino'")

    if size == "test":
        swin = SwinConfig(
            image_size=224, window_size=7, embed_dim=8, depths=[1, 1, 1, 1],
            num_heads=[1, 1, 1, 1], out_indices=[2, 3, 4],
        )  # fmt: skip
        bert = BertConfig(
            vocab_size=vocab_size, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
            intermediate_size=32, max_position_embeddings=512,
        )  # fmt: skip
        config = GroundingDinoConfig(
            backbone_config=swin, text_config=bert, d_model=32, encoder_layers=1,
            decoder_layers=2, encoder_attention_heads=2, decoder_attention_heads=2,
            encoder_ffn_dim=32, decoder_ffn_dim=32, num_queries=30, encoder_n_points=2,
            decoder_n_points=2,
        )  # fmt: skip
        return config, {"shortest_edge": 128, "longest_edge": 192}
    if size == "tiny":
        # IDEA-Research/grounding-dino-tiny: Swin-T backbone, bert-base-uncased text encoder,
        # the GroundingDinoConfig defaults for the rest (d_model 256, 6+6 layers, 900 queries).
        swin = SwinConfig(
            image_size=224, window_size=7, embed_dim=96, depths=[2, 2, 6, 2],
            num_heads=[3, 6, 12, 24], out_indices=[2, 3, 4],
        )  # fmt: skip
        bert = BertConfig(vocab_size=vocab_size)
        return GroundingDinoConfig(backbone_config=swin, text_config=bert), {
            "shortest_edge": 800,
            "longest_edge": 1333,
        }
    raise ValueError(f"size={size!r} is not one of 'test', 'tiny'")


def make_grounding_dino(
    folder: str | os.PathLike,
    *,
    size: DinoSize = "test",
    family: DinoFamily = "grounding-dino",
    seed: int = 0,
) -> Path:
    """Save a random-weight GroundingDINO and its processor to `folder`; returns the folder.

    size: "test" (a few layers, small widths; for tests) or "tiny" (the architecture of
    IDEA-Research/grounding-dino-tiny; for timing).
    family: "grounding-dino" or "mm-grounding-dino" (transformers'
    MMGroundingDinoForObjectDetection, e.g. openmmlab-community/mm_grounding_dino_tiny_*).
    Load it with `GroundingDinoDetector.from_pretrained(folder)` or `--detector folder`.
    """
    import torch
    from transformers import (
        AutoModelForZeroShotObjectDetection,
        BertTokenizerFast,
        GroundingDinoImageProcessor,
        GroundingDinoProcessor,
    )

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    vocab_dir = out / "_vocab"
    write_vocab(vocab_dir, size=30522 if size == "tiny" else None)
    (vocab_dir / "tokenizer_config.json").write_text(
        json.dumps(
            {"tokenizer_class": "BertTokenizer", "do_lower_case": True, "model_max_length": 512}
        )
    )
    tokenizer = BertTokenizerFast.from_pretrained(str(vocab_dir))
    config, image_size = _dino_configs(size, vocab_size=len(tokenizer), family=family)
    torch.manual_seed(seed)
    model = AutoModelForZeroShotObjectDetection.from_config(config).eval()
    processor = GroundingDinoProcessor(
        image_processor=GroundingDinoImageProcessor(size=image_size), tokenizer=tokenizer
    )
    model.save_pretrained(out)
    processor.save_pretrained(out)
    for f in vocab_dir.iterdir():
        f.unlink()
    vocab_dir.rmdir()
    return out


def make_sam2(folder: str | os.PathLike, *, size: Sam2Size = "test", seed: int = 0) -> Path:
    """Save a random-weight SAM 2 as `folder`/config.yaml + `folder`/model.pt.

    size: "test" (sam2.1_hiera_t shrunk by SAM2_TEST_OVERRIDES; for tests) or "tiny"
    (sam2.1_hiera_t as released, ~39M parameters; for timing). Load it with
    `Sam2Segmenter.from_pretrained(folder)` or `--segmenter folder`.
    """
    import torch
    from omegaconf import OmegaConf

    from textseg.segmenter import compose_config, instantiate

    if size not in ("test", "tiny"):
        raise ValueError(f"size={size!r} is not one of 'test', 'tiny'")
    overrides = SAM2_TEST_OVERRIDES if size == "test" else ()
    cfg = compose_config(SAM2_TINY_CONFIG, overrides=overrides)
    torch.manual_seed(seed)
    model = instantiate(cfg)
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, out / "config.yaml")
    torch.save({"model": model.state_dict()}, out / "model.pt")
    return out


def write_clip_vocab() -> tuple[dict[str, int], list[str]]:
    """A byte-level BPE vocabulary in CLIP's layout with no merges: every byte as a word
    piece and as a word end ("a</w>"), then <|startoftext|> and <|endoftext|>. Every
    string tokenises (one token per byte); returns (vocab, merges) for CLIPTokenizer."""
    printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    chars, extra = [], 0
    for byte in range(256):  # GPT-2's byte-to-unicode table: printable bytes stand for
        if byte in printable:  # themselves, the others move past 255
            chars.append(chr(byte))
        else:
            chars.append(chr(256 + extra))
            extra += 1
    tokens = [*chars, *(c + "</w>" for c in chars), "<|startoftext|>", "<|endoftext|>"]
    return {t: i for i, t in enumerate(tokens)}, []


def make_sam3(folder: str | os.PathLike, *, size: Sam3Size = "test", seed: int = 0) -> Path:
    """Save a random-weight SAM 3 (transformers' real Sam3Model and Sam3Processor, shrunk
    to ~0.3M parameters and a 112-pixel input) to `folder`; returns the folder.

    Load it with `Sam3TextMasker.from_pretrained(folder)`, `--sam3 folder`, or
    `TextSegmenter.from_pretrained(backend="sam3", sam3=folder)`. Raises ModelLoadError with
    the fix when the installed transformers has no SAM 3.
    """
    from textseg.sam3 import import_sam3

    if size != "test":
        raise ValueError(f"size={size!r} is not one of 'test'")
    import torch

    tf = import_sam3()
    vocab, merges = write_clip_vocab()
    tokenizer = tf.CLIPTokenizer(vocab=vocab, merges=merges)
    small = dict(num_attention_heads=2, intermediate_size=64)
    # A 112-pixel input in 14-pixel patches is an 8x8 grid; the neck scales it by 4, 2, 1, 0.5.
    vit = tf.Sam3ViTConfig(
        hidden_size=32, num_hidden_layers=2, image_size=112, patch_size=14, window_size=4,
        global_attn_indexes=[1], pretrain_image_size=56, **small,
    )  # fmt: skip
    config = tf.Sam3Config(
        vision_config=tf.Sam3VisionConfig(
            backbone_config=vit, fpn_hidden_size=32, backbone_feature_sizes=[[32, 32], [16, 16], [8, 8]]
        ),
        text_config=tf.CLIPTextConfig(
            vocab_size=len(vocab), hidden_size=32, num_hidden_layers=1, projection_dim=32,
            max_position_embeddings=32, bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, **small,
        ),
        geometry_encoder_config=tf.Sam3GeometryEncoderConfig(hidden_size=32, num_layers=1, **small),
        detr_encoder_config=tf.Sam3DETREncoderConfig(hidden_size=32, num_layers=1, **small),
        detr_decoder_config=tf.Sam3DETRDecoderConfig(
            hidden_size=32, num_layers=1, num_queries=20, **small
        ),
        mask_decoder_config=tf.Sam3MaskDecoderConfig(hidden_size=32, num_attention_heads=2),
    )  # fmt: skip
    torch.manual_seed(seed)
    model = tf.Sam3Model(config).eval()
    image_processor = tf.Sam3ImageProcessor(
        size={"height": 112, "width": 112}, mask_size={"height": 32, "width": 32}
    )
    processor = tf.Sam3Processor(image_processor=image_processor, tokenizer=tokenizer)
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


def make_backend_models(backend: str, folder: str | os.PathLike) -> dict[str, Path]:
    """Tiny random models for every model a backend loads (its BACKENDS row's `models`),
    each in `folder`/<argument>; returns the `from_pretrained` keywords naming them, e.g.
    {"detector": folder/"detector", "segmenter": folder/"segmenter"} for the default backend.
    Models already made in `folder` are reused, so backends that share one (SAM 2) build it
    once."""
    from textseg.backends import get_backend

    makers = {"detector": make_grounding_dino, "segmenter": make_sam2, "sam3": make_sam3}
    out: dict[str, Path] = {}
    for name in get_backend(backend).models:
        if name not in makers:
            raise ValueError(
                f"backend {backend!r} loads a model {name!r} that textseg.testing cannot make; "
                f"it makes {', '.join(makers)}"
            )
        path = Path(folder) / name
        # the file each maker writes last: a half-made model is made again
        done = path / ("model.pt" if name == "segmenter" else "tokenizer_config.json")
        out[name] = path if done.is_file() else makers[name](path)
    return out


def make_sample_image(
    path: str | os.PathLike, *, height: int = 480, width: int = 640, seed: int = 0
) -> Path:
    """Write a photo-like RGB image (sky gradient, ground, a few shapes, noise) to `path`.

    The format follows the suffix (.jpg, .png, ...)."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    y = np.linspace(0, 1, height, dtype=np.float32)[:, None, None]
    sky = (
        np.array([110, 160, 230], np.float32) * (1 - y) + np.array([230, 235, 245], np.float32) * y
    )
    pixels = np.broadcast_to(sky, (height, width, 3)).copy()
    pixels[int(height * 0.6) :] = np.array([90, 120, 60], np.float32)
    pixels += rng.normal(0, 6, pixels.shape).astype(np.float32)
    img = Image.fromarray(pixels.clip(0, 255).astype(np.uint8), mode="RGB")
    draw = ImageDraw.Draw(img)
    for _ in range(4):
        x0, y0 = rng.integers(0, width * 3 // 4), rng.integers(height // 3, height * 3 // 4)
        w, h = rng.integers(width // 10, width // 4), rng.integers(height // 10, height // 4)
        color = tuple(int(c) for c in rng.integers(0, 255, 3))
        if rng.random() < 0.5:
            draw.ellipse([x0, y0, x0 + w, y0 + h], fill=color)
        else:
            draw.rectangle([x0, y0, x0 + w, y0 + h], fill=color)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    img.save(out)
    return out


def make_sample_video(
    path: str | os.PathLike,
    *,
    frames: int = 8,
    height: int = 240,
    width: int = 320,
    fps: float = 8.0,
    seed: int = 0,
) -> Path:
    """Write a short clip: a red ball crosses the frame left to right, and a blue box
    enters at frame `frames // 2` (halfway) on the right and drifts left.

    path: an .mp4 file (H.264, written with PyAV) or, without a suffix, a folder of PNG
    frames 00000.png, 00001.png, ... Pure red (220, 30, 30) and pure blue (30, 60, 220) on a
    grey-green background, so the objects can be found by colour. Returns `path`.
    """
    from PIL import Image, ImageDraw

    from textseg.video_io import write_mp4

    if frames < 1:
        raise ValueError(f"frames must be at least 1, got {frames}")
    rng = np.random.default_rng(seed)
    y = np.linspace(0, 1, height, dtype=np.float32)[:, None, None]
    background = np.broadcast_to(
        np.array([150, 165, 150], np.float32) * (1 - y) + np.array([95, 115, 85], np.float32) * y,
        (height, width, 3),
    )
    radius, side = round(height * 0.12), round(height * 0.22)
    images = []
    for t in range(frames):
        noise = rng.normal(0, 3, background.shape).astype(np.float32)
        img = Image.fromarray((background + noise).clip(0, 255).astype(np.uint8), mode="RGB")
        draw = ImageDraw.Draw(img)
        progress = t / max(1, frames - 1)
        cx, cy = round(width * (0.15 + 0.45 * progress)), round(height * 0.62)
        draw.ellipse([cx - radius, cy - radius, cx + radius, cy + radius], fill=(220, 30, 30))
        if t >= frames // 2:
            x0 = round(width * 0.9) - side - round(width * 0.02) * (t - frames // 2)
            y0 = round(height * 0.18)
            draw.rectangle([x0, y0, x0 + side, y0 + side], fill=(30, 60, 220))
        images.append(img)
    out = Path(path)
    if out.suffix:
        out.parent.mkdir(parents=True, exist_ok=True)
        write_mp4(images, out, fps=fps)
    else:
        out.mkdir(parents=True, exist_ok=True)
        for t, img in enumerate(images):
            img.save(out / f"{t:05d}.png")
    return out
