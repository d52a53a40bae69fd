"""predict: images of any size and mode prepared as the training data, probabilities, CLI."""

import csv
import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

from vitcifar.cli import main
from vitcifar.data import DataError, decode_training_image, load_splits, normalize
from vitcifar.model import ViT
from vitcifar.predict import Predictions, find_images, predict, prepare_image
from vitcifar.train import TrainConfig, train

S = 32  # the tiny models' image size
COLOURS = {  # the classes of conftest's image_folder, and their colours
    "red": (200, 40, 40),
    "green": (40, 190, 60),
    "blue": (40, 60, 210),
    "yellow": (220, 210, 40),
}


def pixels(image) -> tuple[int, int, int]:
    """The mean colour of a prepared (3, S, S) uint8 image, rounded."""
    return tuple(int(round(v)) for v in image.float().mean(dim=(1, 2)).tolist())


@pytest.fixture
def model(tiny_cfg) -> ViT:
    torch.manual_seed(0)
    m = ViT(tiny_cfg).eval()
    for p in m.parameters():  # larger weights than the init: logits that differ between images
        torch.nn.init.normal_(p, std=0.2)
    return m


def colour_photo(rgb, size=(57, 43)) -> Image.Image:
    """A noisy picture of one colour, not of the training size."""
    rng = np.random.default_rng(1)
    a = np.clip(np.array(rgb)[None, None] + rng.normal(0, 20, (size[1], size[0], 3)), 0, 255)
    return Image.fromarray(a.astype(np.uint8))


# ----------------------------------------------------------------------------- preparing images


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
@pytest.mark.parametrize("size", [(57, 43), (S, S), (8, 8)])
def test_files_are_prepared_exactly_as_the_training_data(tmp_path, suffix, size):
    path = tmp_path / f"x{suffix}"
    colour_photo((200, 90, 30), size).save(path)
    expected = torch.from_numpy(decode_training_image(path, S).copy()).permute(2, 0, 1)
    got = prepare_image(path, image_size=S)
    assert got.dtype == torch.uint8 and got.shape == (3, S, S)
    assert torch.equal(got, expected)


def _sixteen_bit_png(path, value):
    Image.fromarray(np.full((20, 30), value, dtype=np.uint16)).save(path)
    return path


@pytest.mark.parametrize(
    "make,expected",
    [
        (lambda p: Image.new("RGBA", (40, 30), (200, 40, 40, 60)), (200, 40, 40)),  # alpha dropped
        (lambda p: Image.new("LA", (40, 30), (90, 10)), (90, 90, 90)),
        (lambda p: Image.new("La", (40, 30), (90, 255)), (90, 90, 90)),
        (lambda p: Image.new("L", (40, 30), 77), (77, 77, 77)),
        (lambda p: Image.new("1", (40, 30), 1), (255, 255, 255)),
        (lambda p: Image.new("RGB", (40, 30), (10, 20, 30)).convert("P"), (10, 20, 30)),
        (lambda p: Image.new("CMYK", (40, 30), (255, 0, 0, 0)), (0, 255, 255)),  # cyan
        # 16-bit: PIL's convert("RGB") would clip 32896 to 255; it is 50 % grey.
        (lambda p: Image.open(_sixteen_bit_png(p / "g16.png", 128 * 257)), (128, 128, 128)),
        (lambda p: Image.fromarray(np.full((30, 40), 40000, dtype=np.int32)), (156, 156, 156)),
        (lambda p: Image.fromarray(np.full((30, 40), 0.5, dtype=np.float32)), (128, 128, 128)),
    ],
    ids=["RGBA", "LA", "La", "L", "1", "P", "CMYK", "I;16 png", "I", "F"],
)
def test_every_mode_becomes_rgb_with_the_right_colour(tmp_path, make, expected):
    got = prepare_image(make(tmp_path), image_size=S)
    assert got.shape == (3, S, S) and got.dtype == torch.uint8
    assert pixels(got) == pytest.approx(expected, abs=1)


def test_photos_are_turned_upright_by_their_exif_orientation(tmp_path):
    a = np.zeros((32, 64, 3), np.uint8)
    a[:, :32] = (255, 0, 0)  # left half red, right half blue, as stored
    a[:, 32:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display": the left edge goes on top
    Image.fromarray(a).save(tmp_path / "phone.jpg", exif=exif, quality=95)
    got = prepare_image(tmp_path / "phone.jpg", image_size=S)
    top, bottom = pixels(got[:, :12]), pixels(got[:, -12:])
    assert top[0] > 200 and top[2] < 50, top
    assert bottom[2] > 200 and bottom[0] < 50, bottom


def test_arrays_tensors_and_bytes_agree_with_the_file(tmp_path):
    photo = colour_photo((30, 160, 90))
    photo.save(tmp_path / "p.png")
    from_file = prepare_image(tmp_path / "p.png", image_size=S)
    hwc = np.array(photo)
    same = [
        photo,
        (tmp_path / "p.png").read_bytes(),
        hwc,
        torch.from_numpy(hwc).permute(2, 0, 1),  # (C, H, W) uint8, as torchvision gives
        torch.from_numpy(hwc).permute(2, 0, 1).float() / 255,  # float on [0, 1]
        hwc.astype(np.int64),  # e.g. torch.randint's default dtype, values within 0-255
        hwc.astype(np.uint16) * 257,  # 16-bit
    ]
    for image in same:
        assert torch.equal(prepare_image(image, image_size=S), from_file), type(image)


@pytest.mark.parametrize(
    "image,message",
    [
        (np.full((8, 8, 3), 200.0), "float pixel values must be on the [0, 1] scale"),
        (np.zeros((8, 8, 2), np.uint8), "got shape (8, 8, 2)"),
        (torch.zeros(2, 8, 8), "got shape (2, 8, 8)"),
        (np.full((8, 8), 300, np.int32), "must lie in [0, 255], got [300, 300]"),
        (np.full((8, 8), np.nan, np.float32), "NaN"),
        (b"", "empty"),
        (b"not an image at all", "not an image that PIL can read"),
        ([1, 2, 3], "expected a path, bytes, a PIL image"),
    ],
)
def test_bad_images_raise_one_line_errors(image, message):
    with pytest.raises(DataError) as err:
        prepare_image(image, image_size=S, name="my-image")
    assert message in str(err.value) and "my-image" in str(err.value)
    assert "\n" not in str(err.value)


def test_bad_files_name_the_file(tmp_path):
    (tmp_path / "junk.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is no jpeg")
    buf = io.BytesIO()
    colour_photo((1, 2, 3), (64, 64)).save(buf, format="PNG")
    (tmp_path / "cut.png").write_bytes(buf.getvalue()[:200])  # truncated
    for name in ("junk.jpg", "cut.png", "missing.png"):
        with pytest.raises(DataError, match=name):
            prepare_image(tmp_path / name, image_size=S)
    with pytest.raises(DataError, match="cut.png: corrupt or truncated"):
        prepare_image(Image.open(tmp_path / "cut.png"), image_size=S)  # opened lazily by the caller


def test_find_images_walks_folders_and_keeps_named_files(tmp_path):
    for rel in ("b/2.png", "b/sub/1.JPG", "a.png", "b/notes.txt", "b/.hidden/3.png"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    named = tmp_path / "b" / "notes.txt"
    found = find_images([tmp_path / "b", tmp_path / "a.png", named])
    assert found == [tmp_path / "b/2.png", tmp_path / "b/sub/1.JPG", tmp_path / "a.png", named]
    again = find_images([tmp_path / "a.png", tmp_path, tmp_path / "b" / "2.png"])
    assert again == [tmp_path / "a.png", tmp_path / "b/2.png", tmp_path / "b/sub/1.JPG"]
    with pytest.raises(DataError, match="nope: no such file or folder"):
        find_images([tmp_path / "nope"])


# ----------------------------------------------------------------------------- predict


def test_probabilities_are_the_models_softmax_on_prepared_images(model):
    photos = [colour_photo(rgb, (40 + 9 * i, 33)) for i, rgb in enumerate(COLOURS.values())]
    preds = predict(model, photos, top_k=2, device="cpu")
    x = torch.stack([prepare_image(p, image_size=S) for p in photos])
    with torch.no_grad():
        expected = model(normalize(x)).softmax(dim=-1).numpy()
    assert preds.probabilities.shape == (4, 4) and preds.probabilities.dtype == np.float32
    np.testing.assert_allclose(preds.probabilities, expected, atol=1e-6)
    np.testing.assert_allclose(preds.probabilities.sum(axis=1), 1.0, atol=1e-5)
    assert preds.classes == ["0", "1", "2", "3"] and preds.top_k == 2 and not preds.tta
    order = np.argsort(-expected, axis=1)
    assert preds.labels == [str(i) for i in order[:, 0]]
    for i in range(4):
        assert [c for c, _ in preds.top(i)] == [str(j) for j in order[i, :2]]
        assert preds.top(i)[0][1] >= preds.top(i)[1][1]
    assert preds.sources == [f"<Image {i}>" for i in range(4)]


def test_tta_averages_the_logits_of_the_image_and_its_mirror(model):
    photo = colour_photo((120, 60, 200))
    x = normalize(prepare_image(photo, image_size=S)[None])
    with torch.no_grad():
        expected = ((model(x) + model(x.flip(-1))) / 2).softmax(-1).numpy()
        plain = model(x).softmax(-1).numpy()
    got = predict(model, photo, tta=True, device="cpu")
    np.testing.assert_allclose(got.probabilities, expected, atol=1e-6)
    assert got.tta and not np.allclose(expected, plain, atol=1e-4)  # the mirror mattered


def test_batches_top_k_classes_and_mode(model):
    batch = torch.randint(0, 256, (5, 3, 40, 40), dtype=torch.uint8)
    model.train()
    preds = predict(model, batch, top_k=10, classes="abcd", batch_size=2, device="cpu")
    assert model.training  # restored
    assert len(preds) == 5 and preds.top_k == 4  # at most the number of classes
    assert preds.classes == list("abcd") and set(preds.labels) <= set("abcd")
    one_by_one = np.concatenate(
        [predict(model, t, device="cpu").probabilities for t in batch]  # (3, H, W) each
    )
    np.testing.assert_allclose(preds.probabilities, one_by_one, atol=1e-6)
    with pytest.raises(ValueError, match="top_k must be >= 1"):
        predict(model, batch, top_k=0)
    with pytest.raises(ValueError, match="3 class names given for a model with 4 classes"):
        predict(model, batch, classes=["a", "b", "c"])


def test_unreadable_images_raise_or_are_skipped(model, tmp_path):
    colour_photo((200, 40, 40)).save(tmp_path / "good.png")
    (tmp_path / "bad.png").write_bytes(b"garbage")
    with pytest.raises(DataError, match="bad.png"):
        predict(model, tmp_path, device="cpu")
    preds = predict(model, tmp_path, skip_errors=True, device="cpu")
    assert preds.sources == [str(tmp_path / "good.png")]
    named = [tmp_path / "good.png", tmp_path, tmp_path / "gone.png"]  # good.png reached twice
    again = predict(model, named, skip_errors=True, device="cpu")
    assert again.sources == [str(tmp_path / "good.png")]
    assert [s for s, _ in again.skipped] == [str(tmp_path / "bad.png"), str(tmp_path / "gone.png")]
    assert again.skipped[1][1].endswith("gone.png: no such file")
    assert [s for s, _ in preds.skipped] == [str(tmp_path / "bad.png")]
    assert "not an image that PIL can read" in preds.skipped[0][1]


def test_save_csv_and_json(tmp_path):
    probs = np.array([[0.1, 0.7, 0.2], [0.5, 0.2, 0.3]], dtype=np.float32)
    preds = Predictions(["a.png", "b.png"], ["cat", "dog", "frog"], probs, 2, False, [("c", "x")])
    with (preds.save(tmp_path / "p.csv")).open() as f:
        rows = list(csv.DictReader(f))
    assert rows[0] == {
        "source": "a.png",
        "class_1": "dog",
        "prob_1": "0.7",
        "class_2": "frog",
        "prob_2": "0.2",
    }
    assert rows[1]["class_1"] == "cat" and rows[1]["class_2"] == "frog"
    doc = json.loads(preds.save(tmp_path / "p.json").read_text())
    assert doc["predictions"][1]["top"][0] == {"class": "cat", "probability": 0.5}
    assert doc["predictions"][0]["probabilities"] == pytest.approx([0.1, 0.7, 0.2])
    assert doc["skipped"] == [{"source": "c", "error": "x"}]
    with pytest.raises(ValueError, match="use a .csv or .json"):
        preds.save(tmp_path / "p.txt")
    table = preds.table().splitlines()
    assert len(table) == 3 and "a.png" in table[1] and "dog" in table[1] and "70.0%" in table[1]


# ----------------------------------------------------------------------------- a trained model


@pytest.fixture(scope="module")
def checkpoint(image_folder, tmp_path_factory):
    """A tiny ViT trained on the coloured squares until it tells the colours apart."""
    from vitcifar.data import AugmentConfig
    from vitcifar.model import ViTConfig

    cfg = ViTConfig(patch_size=8, dim=32, depth=2, heads=2, num_classes=4, dropout=0.0)
    splits = load_splits(str(image_folder), val_size=16, progress=False)
    tcfg = TrainConfig(
        epochs=8,
        batch_size=32,
        lr=3e-3,
        warmup_frac=0.1,
        device="cpu",
        num_workers=0,
        seed=0,
        augment=AugmentConfig(randaug_ops=0, mixup_alpha=0, cutmix_alpha=0),
    )
    out = tmp_path_factory.mktemp("predict-run")
    run = train(cfg, splits, tcfg, out, progress=False)
    assert run.best_val_acc >= 0.75
    return out / "best.pt"


@pytest.mark.slow
def test_a_trained_checkpoint_names_the_colour_of_new_pictures(checkpoint, tmp_path):
    for name, rgb in COLOURS.items():  # big pictures, other sizes and modes than in training
        colour_photo(rgb, (120, 90)).convert("RGBA").save(tmp_path / f"{name}.png")
    preds = predict(checkpoint, tmp_path, top_k=2, device="cpu")
    assert preds.classes == sorted(COLOURS)  # the checkpoint's class names
    assert dict(zip(preds.sources, preds.labels)) == {
        str(tmp_path / f"{n}.png"): n for n in COLOURS
    }
    assert (preds.probabilities.max(axis=1) > 0.25).all()  # above chance (4 classes)


@pytest.mark.slow
def test_cli_predicts_writes_and_skips(checkpoint, image_folder, tmp_path, capsys):
    folder = image_folder / "test" / "red"
    out = tmp_path / "preds.csv"
    assert main(["predict", "--checkpoint", str(checkpoint), str(folder), "--out", str(out)]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].split()[:3] == ["image", "top-1", "prob"]
    assert len(printed) == 1 + 16 + 1 and printed[-1] == f"wrote {out}"
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 16 and sum(r["class_1"] == "red" for r in rows) >= 12
    assert {"class_3", "prob_3"} <= set(rows[0])  # --top-k default 3

    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"no jpeg")
    good = folder / "0000.png"
    js = tmp_path / "p.json"
    args = ["predict", "--checkpoint", str(checkpoint), str(good), str(bad), "--top-k", "1"]
    assert main([*args, "--tta", "--out", str(js)]) == 1
    captured = capsys.readouterr()
    assert len(captured.out.splitlines()) == 1 + 1 + 1
    err = captured.err.splitlines()
    assert err[0].startswith(f"skipped: {bad}: not an image")
    assert err[-1] == "vitcifar: 1 of 2 images predicted, 1 skipped"
    doc = json.loads(js.read_text())
    assert doc["tta"] and doc["top_k"] == 1 and doc["skipped"][0]["source"] == str(bad)
    assert [p["source"] for p in doc["predictions"]] == [str(good)]


@pytest.mark.slow
@pytest.mark.parametrize(
    "case,message",
    [
        ("no checkpoint", "/no/best.pt does not exist; point to RUN_DIR/best.pt"),
        ("no such image", "nothing-here.png: no such file or folder"),
        ("empty folder", "no image files found in"),
        ("bad --out", "--out p.txt: use a .csv or .json file name"),
        ("bad --top-k", "--top-k: must be > 0"),
    ],
)
def test_cli_usage_errors_exit_2_with_one_line(
    checkpoint, image_folder, tmp_path, capsys, case, message
):
    (tmp_path / "empty").mkdir()
    ckpt, images = ["--checkpoint", str(checkpoint)], [str(image_folder / "test")]
    args = {
        "no checkpoint": ["--checkpoint", "/no/best.pt", *images],
        "no such image": [*ckpt, str(tmp_path / "nothing-here.png")],
        "empty folder": [*ckpt, str(tmp_path / "empty")],
        "bad --out": [*ckpt, *images, "--out", "p.txt"],
        "bad --top-k": [*ckpt, *images, "--top-k", "0"],
    }[case]
    try:
        code = main(["predict", *args])
    except SystemExit as exit_:  # argparse errors
        code = exit_.code
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "Traceback" not in "".join(err)
    assert message in err[-1], err
    if case != "empty folder":  # there logging may also name the empty folder on a line before
        assert len(err) == 1, err
