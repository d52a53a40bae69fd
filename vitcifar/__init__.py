"""vitcifar: train a Vision Transformer from scratch on CIFAR-10, fast.

from vitcifar import load_splits, config_for_preset, train, evaluate, predict, export_model
splits = load_splits("cifar10", subset=5000)
model_cfg, cfg = config_for_preset("vit-fast", epochs=30)
run = train(model_cfg, splits, cfg, "runs/demo")
report = evaluate(run.out_dir / "best.pt", splits.test)
preds = predict(run.out_dir / "best.pt", ["cat.jpg", "photos/"])   # your own images
export_model(run.out_dir / "best.pt", "model.onnx")                 # needs the export extra
"""

from vitcifar.checkpoint import CheckpointError, MirrorPolicy, load_checkpoint
from vitcifar.config import (
    PRESET_TABLE,
    TRAIN_PRESETS,
    AugmentConfig,
    TrainConfig,
    ViTConfig,
    config_for_preset,
    preset_names,
)
from vitcifar.data import DataError, ImageSet, Splits, load_splits, load_test_set
from vitcifar.evaluate import EvalReport, evaluate, load_model
from vitcifar.export import export_model
from vitcifar.machine import TrainingDiverged, TrainingOutOfMemory
from vitcifar.model import PRESETS, ViT, attention_map, vit_from_preset
from vitcifar.predict import Predictions, predict
from vitcifar.train import train

__all__ = [
    "PRESETS",
    "PRESET_TABLE",
    "TRAIN_PRESETS",
    "AugmentConfig",
    "CheckpointError",
    "DataError",
    "EvalReport",
    "ImageSet",
    "MirrorPolicy",
    "Predictions",
    "Splits",
    "TrainConfig",
    "TrainingDiverged",
    "TrainingOutOfMemory",
    "ViT",
    "ViTConfig",
    "attention_map",
    "config_for_preset",
    "evaluate",
    "export_model",
    "load_checkpoint",
    "load_model",
    "load_splits",
    "load_test_set",
    "predict",
    "preset_names",
    "train",
    "vit_from_preset",
]
