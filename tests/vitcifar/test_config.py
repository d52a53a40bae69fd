"""The one preset table (vitcifar.config.PRESET_TABLE): its views, and a new row end to end
through the CLI, a tiny training run and the notebook; the machine's messages (vitcifar.machine)
written for another reader than the CLI."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import pytest
import torch

import vitcifar
from vitcifar import config
from vitcifar.checkpoint import load_checkpoint
from vitcifar.cli import build_parser, main
from vitcifar.config import PRESET_TABLE, AugmentConfig, TrainConfig, ViTConfig, config_for_preset
from vitcifar.machine import Knobs, divergence_advice, out_of_memory_message, resolve_device
from vitcifar.model import PRESETS, vit_from_preset
from vitcifar.train import TRAIN_PRESETS

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "q1_vit.ipynb"

TINY_ROW = (
    ViTConfig(patch_size=8, dim=32, depth=2, heads=2, dropout=0.0, emb_dropout=0.0),
    TrainConfig(epochs=2, batch_size=16, lr=2e-3, augment=AugmentConfig(randaug_ops=0)),
)


def test_the_views_are_the_two_halves_of_the_table():
    assert list(PRESETS) == list(TRAIN_PRESETS) == list(PRESET_TABLE)
    for name, (model_cfg, train_cfg) in PRESET_TABLE.items():
        assert PRESETS[name] is model_cfg and TRAIN_PRESETS[name] is train_cfg
        assert config_for_preset(name) == (model_cfg, train_cfg)
    assert vitcifar.PRESETS is PRESETS and vitcifar.TRAIN_PRESETS is TRAIN_PRESETS


def test_an_unknown_preset_names_the_table_rows():
    with pytest.raises(ValueError, match="choose one of 'deit-tiny', 'vit-fast'"):
        config_for_preset("tiny-test")
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--preset", "tiny-test", "--data", "d", "--out", "o"])


@pytest.mark.slow
def test_a_new_preset_is_one_row_end_to_end(monkeypatch, image_folder, tmp_path, tiny_train_args):
    monkeypatch.setitem(PRESET_TABLE, "tiny-test", TINY_ROW)
    # every reader of the table sees the row
    assert PRESETS["tiny-test"] is TINY_ROW[0] and TRAIN_PRESETS["tiny-test"] is TINY_ROW[1]
    assert vit_from_preset("tiny-test").config == TINY_ROW[0]
    assert "tiny-test" in vitcifar.preset_names()
    args = tiny_train_args(image_folder, tmp_path / "run", "--preset", "tiny-test")
    assert build_parser().parse_args(args).preset == "tiny-test"
    # and a run trains with it: the model half and the recipe half, with the CLI's overrides
    assert main(args) == 0
    ckpt = load_checkpoint(tmp_path / "run" / "last.pt")
    assert ckpt["model_config"] == replace(TINY_ROW[0], num_classes=4).to_dict()
    stored = TrainConfig.from_dict(ckpt["train_config"])
    assert stored.lr == TINY_ROW[1].lr and stored.augment == TINY_ROW[1].augment
    assert (stored.epochs, stored.batch_size, stored.device) == (1, 16, "cpu")  # the overrides
    assert ckpt["epoch"] == 1 and torch.isfinite(torch.tensor(ckpt["history"][0]["val_loss"]))


def _train_help() -> str:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    return sub.choices["train"].format_help()


def test_the_cli_help_lists_every_row(monkeypatch):
    monkeypatch.setitem(PRESET_TABLE, "tiny-test", TINY_ROW)
    assert re.search(r"deit-tiny \(the original notebook\), tiny-test, vit-fast", _train_help())


def _code_cells(nb: dict) -> list[tuple[list[str], str]]:
    return [
        (c.get("metadata", {}).get("tags", []), "".join(c["source"]))
        for c in nb["cells"]
        if c["cell_type"] == "code"
    ]


def test_the_notebook_reads_the_preset_names_from_the_table(monkeypatch):
    """Only the parameters cell names a preset (its default value); the run cell lists the
    table's names and builds the configs with config_for_preset, so a new row needs no notebook
    edit."""
    cells = _code_cells(json.loads(NOTEBOOK.read_text()))
    params = next(src for tags, src in cells if "parameters" in tags)
    namespace: dict = {}
    exec(params, namespace)  # the parameters cell is plain assignments
    assert namespace["PRESET"] in PRESET_TABLE
    names = set(PRESET_TABLE) | {"tiny-test"}
    for tags, src in cells:
        if "parameters" in tags:
            continue
        code = "\n".join(line.split("#")[0] for line in src.splitlines())  # comments aside
        assert not any(repr(n) in code or f'"{n}"' in code for n in names), code
    run = next(src for _, src in cells if "config_for_preset(PRESET" in src)
    assert "vitcifar.preset_names()" in run
    monkeypatch.setitem(PRESET_TABLE, "tiny-test", TINY_ROW)
    assert "tiny-test" in vitcifar.preset_names()  # what that cell prints
    assert vitcifar.config_for_preset("tiny-test")[0] is TINY_ROW[0]  # what that cell calls


# ----------------------------------------------------------------------------- machine messages

NOTEBOOK_KNOBS = Knobs(
    {"batch_size": "BATCH_SIZE", "lr": "LR", "amp": "AMP", "device": "DEVICE", "out": "RUN_NAME"},
    assign="{name} = {value!r}",
)


def test_the_cli_messages_name_flags_and_a_notebook_can_name_its_parameters():
    fp16 = divergence_advice(torch.device("cuda"), torch.float16, 1024)
    assert "lower --lr" in fp16 and "--amp off" in fp16 and "--batch-size 256" in fp16
    nb = divergence_advice(torch.device("cuda"), torch.float16, 1024, knobs=NOTEBOOK_KNOBS)
    assert "lower LR" in nb and "AMP = 'off'" in nb and "BATCH_SIZE = 256" in nb
    assert "--" not in nb
    cfg, model_cfg = TrainConfig(batch_size=512), ViTConfig()
    msg = out_of_memory_message(
        cfg, model_cfg, torch.float16, phase="training", epochs_done=3, knobs=NOTEBOOK_KNOBS
    )
    assert "at BATCH_SIZE = 512" in msg and "rerun with BATCH_SIZE = 256" in msg
    assert "new RUN_NAME" in msg and "--" not in msg
    assert "--batch-size 256" in out_of_memory_message(
        cfg, model_cfg, None, phase="training", epochs_done=0
    )
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="DEVICE = 'cuda' was asked for.*DEVICE = 'cpu'"):
            resolve_device("cuda", knobs=NOTEBOOK_KNOBS)


def test_config_module_imports_no_other_vitcifar_module():
    import ast

    tree = ast.parse(Path(config.__file__).read_text())
    imported = [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module] + [
        a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names
    ]
    assert not [m for m in imported if m.startswith("vitcifar")]
