"""Outputs that never overwrite or crash: safe folder names, save() that replaces its own
results only, and a batch that survives save errors (API and CLI)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from textseg import Segmentation, load, save
from textseg.cli import main
from textseg.errors import OutputError
from textseg.export import folder_name, output_dir

FORCE = ["--box-threshold", "0", "--text-threshold", "0"]


def _model_args(model_dirs) -> list[str]:
    """The CLI flags that load the tests' tiny models."""
    return ["--detector", str(model_dirs["detector"]), "--segmenter", str(model_dirs["segmenter"])]


def _seg(n: int, source: str | None = "a.png", h: int = 20, w: int = 30) -> Segmentation:
    masks = np.zeros((n, h, w), bool)
    for i in range(n):
        masks[i, i : i + 5, i : i + 6] = True
    return Segmentation(
        boxes=np.array([[i, i, i + 6, i + 5] for i in range(n)], np.float32).reshape(n, 4),
        scores=np.full(n, 0.5), labels=["cat"] * n, masks=masks, mask_scores=np.full(n, 0.9),
        image_size=(h, w), prompt="cat.", phrases=("cat",), image=Image.new("RGB", (w, h)),
        source=source,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("source", "name"),
    [
        ("photos/cat.jpg", "cat"),
        ("..", "image"),
        ("...png", "png"),
        ("../../etc/passwd", "passwd"),
        (".", "image"),
        ("a b?*.jpg", "a_b"),
        ("C:\\pics\\dog.png", "dog"),
        (None, "image"),
    ],
)
def test_folder_names_stay_inside_the_output_folder(source, name, tmp_path):
    assert folder_name(source) == name
    path, _ = output_dir(tmp_path, source, used=set())
    assert path.parent == tmp_path and path.name not in ("", ".", "..")


def test_save_replaces_its_own_previous_masks(tmp_path):
    save(_seg(3), tmp_path / "a")
    assert len(list((tmp_path / "a").glob("mask_*.png"))) == 3
    files = save(_seg(1), tmp_path / "a")  # fewer objects than last time
    assert sorted(p.name for p in (tmp_path / "a").glob("mask_*.png")) == ["mask_00_cat.png"]
    assert files.masks == [tmp_path / "a" / "mask_00_cat.png"] and len(load(tmp_path / "a")) == 1
    assert not list((tmp_path / "a").glob(".*tmp"))  # the atomic JSON write left nothing


def test_save_can_write_the_overlay_as_jpeg(tmp_path):
    files = save(_seg(1), tmp_path, overlay_format="jpeg")
    assert files.overlay == tmp_path / "overlay.jpg" and Image.open(files.overlay).format == "JPEG"
    with pytest.raises(ValueError, match="overlay_format"):
        save(_seg(1), tmp_path, overlay_format="gif")


def test_save_refuses_another_images_results_unless_told(tmp_path):
    save(_seg(2, source="a.png"), tmp_path / "x")
    with pytest.raises(OutputError, match=r"holds the results of a\.png.*overwrite=True"):
        save(_seg(1, source="b.png"), tmp_path / "x")
    assert json.loads((tmp_path / "x" / "segmentation.json").read_text())["source"] == "a.png"
    save(_seg(1, source="b.png"), tmp_path / "x", overwrite=True)
    assert load(tmp_path / "x").source == "b.png"


@pytest.mark.parametrize("blocker", ["out_is_file", "parent_is_file"])
def test_save_into_a_file_is_a_one_line_error(tmp_path, blocker):
    (tmp_path / "f").write_text("not a folder")
    out = tmp_path / "f" if blocker == "out_is_file" else tmp_path / "f" / "sub"
    with pytest.raises(OutputError) as info:
        save(_seg(1), out)
    assert str(out) in str(info.value) and "\n" not in str(info.value)


def test_output_dir_never_takes_another_images_folder(tmp_path):
    save(_seg(1, source="one/photo.jpg"), tmp_path / "photo")
    (tmp_path / "img").write_text("a file in the way")
    same, note = output_dir(tmp_path, "one/photo.jpg", used=set())
    assert same == tmp_path / "photo" and note is None  # its own results: replaced
    other, note = output_dir(tmp_path, "two/photo.jpg", used=set())
    assert other == tmp_path / "photo_2" and "holds the results of one/photo.jpg" in note
    file_in_way, note = output_dir(tmp_path, "img.png", used=set())
    assert file_in_way == tmp_path / "img_2" and "is a file" in note
    used: set[str] = set()
    first, _ = output_dir(tmp_path, "new/x.png", used=used)
    second, note = output_dir(tmp_path, "old/x.png", used=used)
    assert (first.name, second.name) == ("x", "x_2") and "this run" in note


@pytest.mark.slow
def test_cli_never_overwrites_another_images_results(model_dirs, sample_image, tmp_path, capsys):
    models = _model_args(model_dirs)
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    Image.open(sample_image).save(a / "photo.png")
    Image.open(sample_image).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(b / "photo.png")
    out = tmp_path / "out"
    args = ["--prompt", "cat", "--out", str(out), "--max-objects", "1", *FORCE, *models]
    assert main([str(a / "photo.png"), *args]) == 0
    assert main([str(b / "photo.png"), *args]) == 0  # same file name, another image
    captured = capsys.readouterr()
    assert f"-> {out / 'photo_2'}" in captured.out and "holds the results of" in captured.err
    assert load(out / "photo").source == str(a / "photo.png")
    assert load(out / "photo_2").source == str(b / "photo.png")
    assert main([str(a / "photo.png"), *args]) == 0  # again: replaces its own folder
    assert f"-> {out / 'photo'}\n" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["photo", "photo_2"]


@pytest.mark.slow
def test_cli_goes_around_whatever_is_in_the_way(model_dirs, sample_image, tmp_path, capsys):
    models = _model_args(model_dirs)
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("a.png", "b.png", "...png"):
        Image.open(sample_image).save(folder / name, format="PNG")
    out = tmp_path / "out"
    out.mkdir()
    (out / "a").write_text("a file where a's folder would go")
    (out / "b").mkdir()
    (out / "b" / "segmentation.json").write_text('{"source": "elsewhere/b.png"}')
    (out / "b_2").mkdir()
    (out / "b_2" / "notes.txt").write_text("foreign files")
    args = ["--prompt", "cat", "--out", str(out), "--max-objects", "1", *FORCE, *models]
    assert main([str(folder), *args]) == 0
    captured = capsys.readouterr()
    assert {p.name for p in out.iterdir()} == {"a", "a_2", "b", "b_2", "b_3", "png"}
    assert captured.err.count("note:") == 2 and "Traceback" not in captured.err
    assert (out / "a").read_text() == "a file where a's folder would go"
    assert (out / "b" / "segmentation.json").read_text() == '{"source": "elsewhere/b.png"}'
    assert [p.name for p in (out / "b_2").iterdir()] == ["notes.txt"]
    assert load(out / "png").source == str(folder / "...png")


@pytest.mark.slow
def test_cli_save_error_skips_one_image_not_the_batch(model_dirs, sample_image, tmp_path, capsys):
    """b's folder name is taken by a dangling symlink: saving b fails (one line, exit 1),
    a and c are still written."""
    models = _model_args(model_dirs)
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("a.png", "b.png", "c.png"):
        Image.open(sample_image).save(folder / name, format="PNG")
    out = tmp_path / "out"
    out.mkdir()
    (out / "b").symlink_to(tmp_path / "gone")
    args = ["--prompt", "cat", "--out", str(out), "--max-objects", "1", *FORCE, *models]
    assert main([str(folder), *args]) == 1
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "b.png" in line]
    assert len(lines) == 1 and "skipped" in lines[0] and "not saved" in lines[0]
    assert "2 of 3 inputs done, 1 skipped" in err and "Traceback" not in err
    assert (out / "a" / "segmentation.json").is_file() and (
        out / "c" / "segmentation.json"
    ).is_file()


@pytest.mark.parametrize("where", ["out_is_file", "out_below_file"])
def test_cli_out_that_cannot_be_a_folder_is_a_one_line_usage_error(
    where, sample_image, tmp_path, capsys
):
    (tmp_path / "f").write_text("x")
    out = tmp_path / "f" if where == "out_is_file" else tmp_path / "f" / "deeper" / "out"
    with pytest.raises(SystemExit) as info:
        main([str(sample_image), "--prompt", "cat", "--out", str(out)])
    err = capsys.readouterr().err
    assert info.value.code == 2 and len(err.strip().splitlines()) == 1
    assert "--out" in err and "Traceback" not in err
