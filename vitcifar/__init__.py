"""vitcifar: train a Vision Transformer from scratch on CIFAR-10, fast.

from vitcifar import load_splits, config_for_preset, train, evaluate
splits = load_splits("cifar10", subset=5000)
model_cfg, cfg = config_for_preset("vit-fast", epochs=30)
run = train(model_cfg, splits, cfg, "runs/demo")
report = evaluate(run.out_dir / "best.pt", splits.test)
"""

from vitcifar.checkpoint import CheckpointError, load_checkpoint
from vitcifar.data import AugmentConfig, DataError, ImageSet, Splits, load_splits, load_test_set
from vitcifar.evaluate import EvalReport, evaluate, load_model
from vitcifar.model import PRESETS, ViT, ViTConfig, attention_map, vit_from_preset
from vitcifar.train import (
    TRAIN_PRESETS,
    TrainConfig,
    TrainingDiverged,
    TrainingOutOfMemory,
    config_for_preset,
    train,
)

__all__ = [
    "PRESETS",
    "TRAIN_PRESETS",
    "AugmentConfig",
    "CheckpointError",
    "DataError",
    "EvalReport",
    "ImageSet",
    "Splits",
    "TrainConfig",
    "TrainingDiverged",
    "TrainingOutOfMemory",
    "ViT",
    "ViTConfig",
    "attention_map",
    "config_for_preset",
    "evaluate",
    "load_checkpoint",
    "load_model",
    "load_splits",
    "load_test_set",
    "train",
    "vit_from_preset",
]
