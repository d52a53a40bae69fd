"""Bad input ends in one clear line (exit status 2) or in correct data, never in a traceback or in
a destroyed run; and the figures show the whole run."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from vitcifar.cli import main
from vitcifar.data import DataError, decode_training_image, load_splits, to_rgb8
from vitcifar.plots import plot_attention, plot_confusion, plot_curves

pytestmark = pytest.mark.slow


def one_error_line(capsys, code) -> str:
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


def test_out_below_a_file(image_folder, tmp_path, capsys, tiny_train_args):
    (tmp_path / "notes.txt").write_text("x")
    err = one_error_line(
        capsys, main(tiny_train_args(image_folder, tmp_path / "notes.txt" / "run"))
    )
    assert "cannot write the run folder" in err and "notes.txt is a file" in err


def test_folder_of_another_run_without_last_pt_is_refused_untouched(
    image_folder, tmp_path, capsys, tiny_train_args
):
    out = tmp_path / "theirs"
    out.mkdir()
    (out / "best.pt").write_bytes(b"their best weights")
    (out / "metrics.jsonl").write_text('{"epoch": 7}\n')
    err = one_error_line(capsys, main(tiny_train_args(image_folder, out, "--no-eval")))
    assert "holds best.pt, metrics.jsonl but no last.pt" in err and "another --out" in err
    assert (out / "best.pt").read_bytes() == b"their best weights"
    assert (out / "metrics.jsonl").read_text() == '{"epoch": 7}\n'


def test_zero_byte_checkpoint(image_folder, tmp_path, capsys):
    (tmp_path / "best.pt").write_bytes(b"")
    args = ["evaluate", "--checkpoint", str(tmp_path / "best.pt"), "--data", str(image_folder)]
    err = one_error_line(capsys, main(args))
    assert "best.pt is empty (0 bytes)" in err


def test_decompression_bomb_among_training_images(
    image_folder, tmp_path, capsys, monkeypatch, tiny_train_args
):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(image_folder, data)
    Image.new("RGB", (400, 300)).save(data / "train" / "red" / "huge.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100_000)  # 400 x 300 is over it
    with pytest.raises(DataError, match=r"huge.png is too large to decode safely"):
        decode_training_image(data / "train" / "red" / "huge.png", 32)
    args = tiny_train_args(data, tmp_path / "run")
    del args[args.index("--subset") : args.index("--subset") + 2]  # decode every image
    err = one_error_line(capsys, main(args))
    assert "huge.png" in err and "decompression bomb" in err


@pytest.mark.parametrize("mode", ["I;16", "I"])
def test_sixteen_bit_greyscale_png_keeps_its_brightness(tmp_path, mode):
    path = tmp_path / ("grey16.png" if mode == "I;16" else "grey32.tif")  # older PIL: PNG -> "I"
    values = np.array([[0, 16384], [32768, 65535]], dtype=np.uint16)
    im = Image.fromarray(values.astype(np.int32 if mode == "I" else np.uint16))
    assert im.mode == mode
    im.save(path)
    with Image.open(path) as reopened:
        assert reopened.mode in ("I;16", "I")  # PIL keeps 16 bits
        rgb = np.asarray(to_rgb8(reopened))
    assert rgb.shape == (2, 2, 3)
    assert rgb[..., 0].tolist() == [[0, 64], [128, 255]]  # not clipped to white
    assert (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all()


def test_sixteen_bit_pngs_in_an_image_folder_decode_to_their_8_bit_values(image_folder, tmp_path):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(image_folder, data)
    for p in (data / "test" / "green").iterdir():
        grey = (
            np.asarray(Image.open(p).convert("L"), dtype=np.uint16) * 257
        )  # the same picture in 16 bits
        p.unlink()
        Image.fromarray(grey).save(p.with_suffix(".png"))
    splits = load_splits(str(data), val_size=8, subset=32, progress=False)
    green = splits.test.images[splits.test.labels == splits.classes.index("green")]
    reference = load_splits(str(image_folder), val_size=8, subset=32, progress=False)
    ref_green = reference.test.images[reference.test.labels == reference.classes.index("green")]
    ref_grey = torch.from_numpy(
        np.stack(
            [
                np.asarray(Image.fromarray(x.permute(1, 2, 0).numpy()).convert("L"))
                for x in ref_green
            ]
        )
    )
    assert torch.equal(green[:, 0], ref_grey)  # exact 8-bit values, not 98 % white


# ----------------------------------------------------------------------------- figures


def history(n):
    return [
        {
            "epoch": e,
            "train_loss": 2.0 / e,
            "val_loss": 2.1 / e,
            "train_acc": 0.1 * e,
            "val_acc": 0.1 * e,
            "lr": 1e-3,
        }
        for e in range(1, n + 1)
    ]


def test_curves_show_every_epoch_with_markers_even_for_one_epoch():
    fig = plot_curves(history(1))
    lines = fig.axes[0].get_lines()
    assert lines and all(line.get_marker() == "o" for line in lines)
    fig = plot_curves(history(4), best_epoch=2)
    assert list(fig.axes[1].get_lines()[1].get_xdata()) == [1, 2, 3, 4]


def test_evaluate_plots_the_whole_run_not_only_up_to_best(image_folder, tiny_cfg, tmp_path):
    import shutil

    from vitcifar.evaluate import evaluate
    from vitcifar.train import TrainConfig, train

    splits = load_splits(str(image_folder), val_size=16, subset=64, progress=False)
    cfg = TrainConfig(epochs=3, batch_size=16, lr=3e-3, device="cpu", num_workers=0)
    train(tiny_cfg, splits, cfg, tmp_path / "run", progress=False, stop_after=1)
    shutil.copy(tmp_path / "run" / "last.pt", tmp_path / "epoch1.pt")
    train(tiny_cfg, splits, cfg, tmp_path / "run", progress=False)
    shutil.copy(
        tmp_path / "epoch1.pt", tmp_path / "run" / "best.pt"
    )  # a run whose best was epoch 1
    report = evaluate(tmp_path / "run" / "best.pt", splits.test, device="cpu", save=False)
    acc_axis = report.figures["curves"].axes[1]
    assert list(acc_axis.get_lines()[0].get_xdata()) == [1, 2, 3]


def test_confusion_matrix_with_100_classes_stays_readable():
    rng = np.random.default_rng(0)
    cm = rng.integers(0, 20, (100, 100))
    fig = plot_confusion(cm, [f"class{i}" for i in range(100)])
    width, height = fig.get_size_inches()
    assert width <= 16 and height <= 16
    assert len(fig.axes[0].texts) == 0  # no numbers in 10,000 cells
    small = plot_confusion(cm[:10, :10], [f"c{i}" for i in range(10)])
    assert len(small.axes[0].texts) == 100


def test_attention_figure_has_a_colour_bar_and_a_caption():
    images = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8)
    heat = torch.rand(3, 8, 8)
    fig = plot_attention(images, heat, ["a", "b", "c"])
    assert len(fig.axes) == 2 * 3 + 1  # the image row, the heat-map row, one colour bar
    assert fig.axes[-1].get_ylabel() == "relative attention"
    assert "attention" in fig._supxlabel.get_text()
