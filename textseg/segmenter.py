"""SAM 2 adapter ("the painter"): boxes in, one pixel mask per box out.

Uses Meta's `sam2` package (`SAM2ImagePredictor`). A model is addressed by
- a hub id, e.g. "facebook/sam2.1-hiera-tiny" (or a short size name: "tiny", "small",
  "base-plus", "large" for SAM 2.1), downloaded by `sam2.build_sam.build_sam2_hf`;
- a local checkpoint `.pt` file: Meta's files (e.g. "sam2.1_hiera_tiny.pt") find their
  config by name, any other needs `config=`;
- a local folder holding `config.yaml` (a full model config) and `model.pt`
  ({"model": state_dict}), as `textseg.testing.make_sam2` writes;
- `Sam2Segmenter.from_local(config=..., checkpoint=...)`, where config is a YAML file
  or one of sam2's config names such as "configs/sam2.1/sam2.1_hiera_t.yaml".

The image embedding is computed once per image and reused for every later prompt on the
same pixels. `sam2` is imported only when a model is built (importing it sets up Hydra).
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from textseg.errors import ModelLoadError
from textseg.hub import load_error

if TYPE_CHECKING:
    from textseg.device import Runtime

__all__ = ["SAM2_SIZES", "Sam2Segmenter", "default_sam2", "instantiate", "sam2_config_name"]

logger = logging.getLogger(__name__)

SAM2_SIZES = {
    "tiny": "facebook/sam2.1-hiera-tiny",
    "small": "facebook/sam2.1-hiera-small",
    "base-plus": "facebook/sam2.1-hiera-base-plus",
    "large": "facebook/sam2.1-hiera-large",
}

# What sam2's build_sam2(apply_postprocessing=True) adds: fall back to the best of the
# multi-mask outputs when a single mask is unstable.
_POSTPROCESSING = {
    "dynamic_multimask_via_stability": True,
    "dynamic_multimask_stability_delta": 0.05,
    "dynamic_multimask_stability_thresh": 0.98,
}

_INSTALL_HINT = (
    "SAM 2 is not installed. Install it after torch with "
    "`SAM2_BUILD_CUDA=0 pip install --no-build-isolation sam2` "
    "(scripts/setup.sh and the notebook's set-up cell do this)."
)
_SAM2_HINT = (
    "Pass a hub id such as 'facebook/sam2.1-hiera-tiny' (the first use downloads it, so it "
    "needs internet), a downloaded checkpoint such as 'sam2.1_hiera_tiny.pt', or a local "
    "folder with config.yaml and model.pt (textseg.testing.make_sam2 writes one)."
)


def default_sam2(runtime: Runtime) -> str:
    """SAM 2.1 large on a GPU (about 0.1 s per image there), tiny on the CPU."""
    return SAM2_SIZES["large"] if runtime.device.type == "cuda" else SAM2_SIZES["tiny"]


def _import_sam2() -> Any:
    try:
        import sam2.build_sam as build_sam
    except ImportError as err:
        raise ModelLoadError(_INSTALL_HINT) from err
    except RuntimeError as err:  # sam2 refuses to import when shadowed by its repo folder
        raise ModelLoadError(f"sam2 cannot be imported: {err}") from err
    return build_sam


def compose_config(name: str, *, overrides: list[str] | tuple[str, ...] = ()) -> Any:
    """sam2's config `name` (e.g. "configs/sam2.1/sam2.1_hiera_t.yaml") with Hydra overrides,
    as an OmegaConf object with a `model` node."""
    _import_sam2()
    from hydra import compose
    from omegaconf import OmegaConf

    try:
        cfg = compose(config_name=name, overrides=list(overrides))
    except Exception as err:  # hydra raises several types for unknown names / bad overrides
        raise ModelLoadError(
            f"sam2 has no config {name!r} (or an override is wrong: {err}); use a name like "
            "'configs/sam2.1/sam2.1_hiera_t.yaml' or a path to a .yaml file"
        ) from err
    OmegaConf.resolve(cfg)
    return cfg


def sam2_config_name(name: str | os.PathLike) -> str | None:
    """The name Hydra knows a config of the installed sam2 package by, for `name` given in
    full ("configs/sam2.1/sam2.1_hiera_t.yaml"), without "configs/", or as the bare file
    name (".yaml" optional); None when sam2 is missing or has no such config. Does not
    import sam2."""
    import importlib.util

    try:
        spec = importlib.util.find_spec("sam2")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    root = Path(next(iter(spec.submodule_search_locations)))
    text = str(name).replace("\\", "/").strip("/")
    if not text.endswith((".yaml", ".yml")):
        text += ".yaml"
    for candidate in (text, f"configs/{text}"):
        if ".." not in candidate.split("/") and (root / candidate).is_file():
            return candidate
    matches = (
        sorted((root / "configs").rglob(Path(text).name)) if (root / "configs").is_dir() else []
    )
    if len(matches) == 1:
        return matches[0].relative_to(root).as_posix()
    return None


def _load_config(config: str | os.PathLike) -> Any:
    from omegaconf import OmegaConf

    path = Path(config).expanduser()
    if path.is_file():
        _import_sam2()
        try:
            cfg = OmegaConf.load(path)
        except Exception as err:
            raise ModelLoadError(f"{path}: not a readable YAML config ({err})") from err
        if "model" not in cfg:
            raise ModelLoadError(f"{path}: a SAM 2 config needs a top-level 'model' entry")
        return cfg
    _import_sam2()
    name = sam2_config_name(config)
    if name is None:
        raise ModelLoadError(
            f"sam2 has no config {str(config)!r}, and it is not a file; use a name like "
            "'configs/sam2.1/sam2.1_hiera_t.yaml' (or just 'sam2.1_hiera_t.yaml') or a path "
            "to a .yaml file"
        )
    return compose_config(name)


def instantiate(cfg: Any) -> Any:
    """Build the SAM 2 model a Hydra config describes, with textseg's post-processing
    settings (ModelLoadError when the config does not build one)."""
    from hydra.utils import instantiate as hydra_instantiate
    from omegaconf import OmegaConf

    cfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    extra = cfg.model.get("sam_mask_decoder_extra_args") or {}
    cfg.model.sam_mask_decoder_extra_args = {**_POSTPROCESSING, **extra}
    try:
        return hydra_instantiate(cfg.model, _recursive_=True)
    except Exception as err:
        raise ModelLoadError(f"the SAM 2 config does not build a model: {err}") from err


def _load_weights(model: Any, checkpoint: str | os.PathLike) -> None:
    import torch

    path = Path(checkpoint).expanduser()
    if not path.is_file():
        raise ModelLoadError(f"no such SAM 2 checkpoint: {str(checkpoint)!r}. {_SAM2_HINT}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ModelLoadError(f"{path}: not a readable torch checkpoint ({err})") from err
    state = state.get("model", state) if isinstance(state, dict) else state
    if not isinstance(state, Mapping):
        raise ModelLoadError(
            f"{path} holds a {type(state).__name__}, not SAM 2 weights: a checkpoint is a "
            "state dict (parameter name -> tensor) or {'model': state_dict}"
        )
    mismatch = _state_mismatch(model.state_dict(), state)
    if mismatch:
        raise ModelLoadError(
            f"{path} does not fit its config: {mismatch}; pass the config the checkpoint "
            "was made with (--segmenter-config / config=)"
        )
    try:
        model.load_state_dict(state, strict=True)
    except (RuntimeError, TypeError) as err:
        raise ModelLoadError(
            f"{path} does not fit its config ({str(err).splitlines()[0]}); pass the config "
            "the checkpoint was made with"
        ) from err


def _state_mismatch(own: Mapping[str, Any], state: Mapping[str, Any], *, show: int = 3) -> str:
    """'' when `state` has exactly the model's keys and shapes, else a short account that
    names the first few missing, unexpected and mis-shaped keys."""

    def first(keys: list[str]) -> str:
        more = f", ... ({len(keys) - show} more)" if len(keys) > show else ""
        return ", ".join(keys[:show]) + more

    missing = [k for k in own if k not in state]
    unexpected = [str(k) for k in state if k not in own]
    shapes = [
        f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)} in the model"
        for k, v in own.items()
        if k in state and tuple(getattr(state[k], "shape", ())) != tuple(v.shape)
    ]
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing keys ({first(missing)})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected keys ({first(unexpected)})")
    if shapes:
        parts.append(f"{len(shapes)} keys of another shape ({first(shapes)})")
    return "; ".join(parts)


def _config_for_checkpoint(checkpoint: Path) -> str:
    build_sam = _import_sam2()
    for config_name, filename in build_sam.HF_MODEL_ID_TO_FILENAMES.values():
        if checkpoint.name == filename:
            return config_name
    raise ModelLoadError(
        f"cannot tell which SAM 2 config fits {checkpoint.name!r}; pass config= (Python) or "
        "--segmenter-config (CLI), e.g. 'configs/sam2.1/sam2.1_hiera_t.yaml'"
    )


class Sam2Segmenter:
    """Box-prompted SAM 2 with the image embedding cached per image.

    encode_count counts image-encoder runs, so callers can see the cache at work.
    Thread-safe: `lock` (re-entrant) guards the embedded image; hold it around a
    set_image -> predict sequence so another thread's set_image cannot come between
    (TextSegmenter does). Each method holds it too.
    """

    def __init__(self, *, model: Any, runtime: Runtime, mask_threshold: float = 0.0) -> None:
        from sam2.sam2_image_predictor import SAM2ImagePredictor

        self.runtime = runtime
        model = model.eval().to(runtime.device)
        # No hole filling / sprinkle removal (max_hole_area = max_sprinkle_area = 0): those
        # need sam2's optional CUDA extension and warn on every call without it.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.jit")
            warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*")
            self.predictor = SAM2ImagePredictor(model, mask_threshold=mask_threshold)
        size = int(model.image_size)
        if size != 1024:
            # The predictor hard-codes the feature-map sizes of a 1024-pixel input.
            self.predictor._bb_feat_sizes = [(size // s, size // s) for s in (4, 8, 16)]
        self.mask_threshold = mask_threshold
        self.encode_count = 0
        self.lock = threading.RLock()
        self._image_key: str | None = None
        self._image_hw: tuple[int, int] = (0, 0)

    @classmethod
    def from_pretrained(
        cls,
        model_id_or_path: str | os.PathLike | None = None,
        *,
        runtime: Runtime,
        config: str | os.PathLike | None = None,
    ) -> Sam2Segmenter:
        """Build SAM 2 from a hub id, a size name, a checkpoint file or a local folder
        (see the module docstring). None picks `default_sam2(runtime)`."""
        spec = str(model_id_or_path) if model_id_or_path is not None else default_sam2(runtime)
        spec = SAM2_SIZES.get(spec, spec)
        path = Path(spec).expanduser()
        if path.is_dir():
            ckpts = sorted(path.glob("*.pt"))
            yamls = sorted(path.glob("*.yaml"))
            cfg = config or (path / "config.yaml" if (path / "config.yaml").is_file() else None)
            cfg = cfg or (yamls[0] if len(yamls) == 1 else None)
            ckpt = path / "model.pt" if (path / "model.pt").is_file() else None
            ckpt = ckpt or (ckpts[0] if len(ckpts) == 1 else None)
            if cfg is None and ckpt is not None:  # a folder holding Meta's sam2.1_hiera_*.pt
                try:
                    cfg = _config_for_checkpoint(ckpt)
                except ModelLoadError:
                    cfg = None
            if cfg is None or ckpt is None:
                raise ModelLoadError(
                    f"{spec!r} must hold config.yaml and model.pt (found {len(yamls)} .yaml "
                    f"and {len(ckpts)} .pt files). {_SAM2_HINT}"
                )
            return cls.from_local(config=cfg, checkpoint=ckpt, runtime=runtime)
        if path.suffix in (".pt", ".pth"):
            if not path.is_file():
                raise ModelLoadError(f"no such SAM 2 checkpoint: {spec!r}. {_SAM2_HINT}")
            return cls.from_local(
                config=config or _config_for_checkpoint(path), checkpoint=path, runtime=runtime
            )
        build_sam = _import_sam2()
        if spec not in build_sam.HF_MODEL_ID_TO_FILENAMES:
            known = ", ".join([*SAM2_SIZES, *build_sam.HF_MODEL_ID_TO_FILENAMES])
            raise ModelLoadError(
                f"unknown SAM 2 model {spec!r}: not a folder or .pt file here, and not one of "
                f"{known}. {_SAM2_HINT}"
            )
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", category=FutureWarning)
                model = build_sam.build_sam2_hf(spec, device=str(runtime.device))
        except Exception as err:
            raise _wrap(spec, err) from err
        logger.info("loaded SAM 2 %s on %s", spec, runtime.device)
        return cls(model=model, runtime=runtime)

    @classmethod
    def from_local(
        cls,
        *,
        config: str | os.PathLike,
        checkpoint: str | os.PathLike | None,
        runtime: Runtime,
    ) -> Sam2Segmenter:
        """Build SAM 2 from a config (YAML path or sam2 config name) and a checkpoint.

        checkpoint=None keeps random weights (for tests and benchmarks only).
        """
        model = instantiate(_load_config(config))
        if checkpoint is not None:
            _load_weights(model, checkpoint)
        else:
            logger.warning("SAM 2 built without a checkpoint: random weights, meaningless masks")
        return cls(model=model, runtime=runtime)

    def _autocast(self) -> Any:
        import torch

        return torch.autocast(
            device_type=self.runtime.device.type,
            dtype=self.runtime.dtype,
            enabled=self.runtime.autocast_enabled,
        )

    def set_image(self, image: np.ndarray) -> bool:
        """Embed an (H, W, 3) uint8 RGB image unless it is the one already embedded.

        Returns True when the image encoder ran, False when the cached embedding was reused.
        """
        array = np.ascontiguousarray(image, dtype=np.uint8)
        if not array.flags.writeable:  # np.asarray(PIL image) is read-only; torch warns on it
            array = array.copy()
        if array.ndim != 3 or array.shape[2] != 3:
            raise ValueError(f"set_image needs an (H, W, 3) uint8 RGB array, got {array.shape}")
        digest = hashlib.blake2b(array.data, digest_size=16)
        digest.update(str(array.shape).encode())
        key = digest.hexdigest()
        with self.lock:
            if key == self._image_key:
                return False
            self._image_key = None
            with self._autocast():
                self.predictor.set_image(array)
            self._image_key = key
            self._image_hw = (int(array.shape[0]), int(array.shape[1]))
            self.encode_count += 1
            return True

    def reset(self) -> None:
        """Forget the cached embedding."""
        with self.lock:
            self.predictor.reset_predictor()
            self._image_key = None

    def predict(
        self,
        boxes: np.ndarray | None = None,
        *,
        points: np.ndarray | None = None,
        point_labels: np.ndarray | None = None,
        output_size: tuple[int, int] | None = None,
        multimask: bool = False,
        chunk: int = 16,
    ) -> tuple[np.ndarray, np.ndarray]:
        """One mask per object on the image given to `set_image`. An object is prompted by
        a box, by a group of points, or by both together.

        boxes: (N, 4) XYXY pixels of that image, or None.
        points: (N, K, 2) (x, y) pixels, K points per object, or None; with boxes, the
            i-th points refine the i-th box. point_labels: (N, K), 1 = on the object,
            0 = not on it (default all 1).
        output_size: (H, W) of the masks; default the embedded image's size. A larger size
            upsamples the mask logits (used when a very large photo was embedded from a
            downscaled copy).
        multimask: let SAM 2 propose three masks per object and keep the best-scored one
            (what SAM's authors advise for a single point, which is ambiguous).
        Returns masks (N, H, W) bool and mask_scores (N,) float32 (SAM 2's predicted IoU).
        """
        boxes, points, point_labels = _check_prompts(boxes, points, point_labels)
        with self.lock:
            return self._predict(boxes, points, point_labels, output_size, multimask, chunk)

    def _predict(
        self,
        boxes: np.ndarray | None,
        points: np.ndarray | None,
        point_labels: np.ndarray | None,
        output_size: tuple[int, int] | None,
        multimask: bool,
        chunk: int,
    ) -> tuple[np.ndarray, np.ndarray]:
        import torch
        import torch.nn.functional as F

        if self._image_key is None:
            raise RuntimeError("call set_image(image) before predict(boxes)")
        n = len(boxes) if boxes is not None else len(points)
        h, w = self._image_hw
        out_h, out_w = output_size or (h, w)
        masks = np.zeros((n, out_h, out_w), dtype=bool)
        scores = np.zeros(n, dtype=np.float32)
        for start in range(0, n, chunk):
            part = slice(start, min(start + chunk, n))
            size = part.stop - part.start
            with self._autocast():
                logits, iou, _ = self.predictor.predict(
                    point_coords=points[part] if points is not None else None,
                    point_labels=point_labels[part] if points is not None else None,
                    box=boxes[part] if boxes is not None else None,
                    multimask_output=multimask,
                    return_logits=True,
                )
            logits = logits.reshape(size, -1, h, w)  # (B, C, h, w)
            iou = iou.reshape(size, -1)  # (B, C)
            best = iou.argmax(axis=1)
            for i, c in enumerate(best):
                one = logits[i, c]
                if (out_h, out_w) != (h, w):
                    t = torch.from_numpy(np.ascontiguousarray(one))[None, None]
                    one = F.interpolate(t, (out_h, out_w), mode="bilinear", align_corners=False)
                    one = one[0, 0].numpy()
                masks[start + i] = one > self.mask_threshold
                scores[start + i] = iou[i, c]
        return masks, scores


def _check_prompts(
    boxes: np.ndarray | None, points: np.ndarray | None, point_labels: np.ndarray | None
) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]:
    """Shapes of `predict`'s prompts: (N, 4) boxes, (N, K, 2) points, (N, K) labels."""
    if boxes is None and points is None:
        raise ValueError("predict needs boxes, points, or both")
    if boxes is not None:
        boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    if points is None:
        if point_labels is not None:
            raise ValueError("point_labels were given without points")
        return boxes, None, None
    points = np.asarray(points, dtype=np.float32)
    if points.ndim != 3 or points.shape[2] != 2 or points.shape[1] == 0:
        raise ValueError(f"points must be (N, K, 2) with K >= 1, got shape {points.shape}")
    if point_labels is None:
        point_labels = np.ones(points.shape[:2], dtype=np.int64)
    point_labels = np.asarray(point_labels).astype(np.int64)
    if point_labels.shape != points.shape[:2]:
        raise ValueError(
            f"point_labels must be {points.shape[:2]} (one per point), got {point_labels.shape}"
        )
    if not np.isin(point_labels, (0, 1)).all():
        raise ValueError("point_labels must be 1 (on the object) or 0 (not on it)")
    if boxes is not None and len(boxes) != len(points):
        raise ValueError(f"{len(boxes)} boxes but {len(points)} point groups; give one per box")
    return boxes, points, point_labels


def _wrap(spec: str, err: BaseException) -> ModelLoadError:
    return load_error("SAM 2", spec, err, _SAM2_HINT)
