"""Model loading that says what is wrong: sam2 config names, odd checkpoints, mismatched
keys, and local-looking paths that never go to the hub."""

from __future__ import annotations

import shutil

import pytest
import torch

from textseg.cli import main
from textseg.detector import GroundingDinoDetector, looks_like_path
from textseg.errors import ModelLoadError
from textseg.segmenter import Sam2Segmenter, sam2_config_name

TINY = "configs/sam2.1/sam2.1_hiera_t.yaml"


@pytest.mark.parametrize(
    "name", [TINY, "sam2.1/sam2.1_hiera_t.yaml", "sam2.1_hiera_t.yaml", "sam2.1_hiera_t"]
)
def test_sam2_config_names_as_the_hints_spell_them(name):
    assert sam2_config_name(name) == TINY


@pytest.mark.parametrize("name", ["nope.yaml", "configs/sam2.1/../../setup.py", ""])
def test_unknown_config_names(name):
    assert sam2_config_name(name) is None


def _copy_segmenter(model_dirs, tmp_path):
    folder = tmp_path / "sam"
    shutil.copytree(model_dirs["segmenter"], folder)
    return folder


def test_a_checkpoint_holding_a_list_is_a_clear_error(model_dirs, tmp_path, runtime):
    folder = _copy_segmenter(model_dirs, tmp_path)
    torch.save([torch.zeros(2), torch.ones(2)], folder / "model.pt")
    with pytest.raises(ModelLoadError, match=r"holds a list, not SAM 2 weights"):
        Sam2Segmenter.from_pretrained(folder, runtime=runtime)


def test_mismatched_weights_name_the_first_keys(model_dirs, tmp_path, runtime):
    folder = _copy_segmenter(model_dirs, tmp_path)
    state = torch.load(folder / "model.pt", weights_only=True)["model"]
    keys = list(state)
    state.pop(keys[0])
    state["extra.weight"] = torch.zeros(1)
    state[keys[1]] = torch.zeros(7, 7)
    torch.save({"model": state}, folder / "model.pt")
    with pytest.raises(ModelLoadError) as info:
        Sam2Segmenter.from_pretrained(folder, runtime=runtime)
    message = str(info.value)
    assert f"1 missing keys ({keys[0]})" in message
    assert "1 unexpected keys (extra.weight)" in message
    assert f"1 keys of another shape ({keys[1]} (7, 7) vs" in message
    assert "\n" not in message


def test_a_local_looking_path_never_goes_to_the_hub(
    tmp_path, monkeypatch, runtime, sample_image, capsys
):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    assert looks_like_path("models/nope") and looks_like_path("./x")
    assert not looks_like_path("IDEA-Research/grounding-dino-tiny")
    with pytest.raises(ModelLoadError, match="no such GroundingDINO folder: 'models/nope'"):
        GroundingDinoDetector.from_pretrained("models/nope", runtime=runtime)
    with pytest.raises(SystemExit) as info:
        main([str(sample_image), "--prompt", "cat", "--out", "o", "--detector", "models/nope"])
    assert info.value.code == 2
    assert "--detector models/nope: no such file or folder" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_accepts_the_sam2_config_name_its_hint_suggests(
    model_dirs, sample_image, tmp_path, capsys
):
    """A .pt with an unknown name plus --segmenter-config <sam2 config name>: the name is
    taken (no "no such file"); the test checkpoint is a shrunk model, so the load then
    fails on its keys, in one line that names them."""
    ckpt = tmp_path / "my_sam.pt"
    shutil.copy(model_dirs["segmenter"] / "model.pt", ckpt)
    argv = [str(sample_image), "--prompt", "cat", "--out", str(tmp_path / "o"),
            "--detector", str(model_dirs["detector"]), "--segmenter", str(ckpt)]  # fmt: skip
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert "--segmenter-config" in err  # the hint: the unnamed .pt needs a config
    assert main([*argv, "--segmenter-config", TINY]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no such file" not in err
    assert "does not fit its config" in err and "keys of another shape (" in err


@pytest.mark.parametrize(
    "load, spec",
    [
        (GroundingDinoDetector, "nobody-here/no-such-model"),
        (Sam2Segmenter, "facebook/sam2.1-hiera-tiny"),
    ],
)
def test_a_hub_id_that_cannot_be_fetched_is_one_sentence_then_the_hint(
    load, spec, runtime, tmp_path, monkeypatch
):
    """The hub's own message ends in a full stop, and ours adds the hint after one: it read
    "...couldn't find them in the cached files.. Pass a hub id...". Offline, with an empty
    cache (offline by the hub's own switch: unswitched, its retries take minutes here)."""
    import huggingface_hub.constants as hub

    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path / "cache"))
    with pytest.raises(ModelLoadError) as info:
        load.from_pretrained(spec, runtime=runtime)
    message = str(info.value)
    assert "could not load" in message and repr(spec) in message and ". Pass " in message
    assert ".." not in message.replace("...", "")
    assert "\n" not in message
