"""export: ONNX (run with onnxruntime) and TorchScript give PyTorch's logits, any batch size."""

import logging
import warnings

import numpy as np
import pytest
import torch

from vitcifar.cli import main
from vitcifar.data import normalize
from vitcifar.export import export_model, read_metadata
from vitcifar.model import ViT, ViTConfig

TOL = 1e-4  # max abs difference of logits allowed between the exported graph and PyTorch


def onnx_session(path):
    ort = pytest.importorskip(
        "onnxruntime", reason='onnxruntime is not installed (pip install -e ".[export]")'
    )
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def needs_onnx_export():
    for name in ("onnx", "onnxscript"):
        pytest.importorskip(name, reason=f'{name} is not installed (pip install -e ".[export]")')


def jit_load(path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # recent torch deprecates torch.jit
        return torch.jit.load(str(path), map_location="cpu")


@pytest.fixture(
    params=[dict(pool="cls", pos_embed="learned"), dict(pool="mean", pos_embed="sincos2d")],
    ids=["deit-tiny-like", "vit-fast-like"],
)
def model(request, tiny_cfg) -> ViT:
    torch.manual_seed(0)
    cfg = ViTConfig.from_dict({**tiny_cfg.to_dict(), **request.param, "drop_path": 0.1})
    m = ViT(cfg)
    for p in m.parameters():  # larger than the init, so the logits are far from zero
        if p.requires_grad:
            torch.nn.init.normal_(p, std=0.3)
    return m.eval()


def reference(model, images: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return model(normalize(images)).numpy()


def images(n: int) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator())


@pytest.mark.parametrize("input_dtype", ["uint8", "float32"])
def test_onnx_logits_match_pytorch_for_any_batch(model, tmp_path, input_dtype):
    needs_onnx_export()
    path = export_model(model, tmp_path / "m.onnx", format="onnx", input_dtype=input_dtype)
    sess = onnx_session(path)
    (inp,), (outp,) = sess.get_inputs(), sess.get_outputs()
    assert inp.name == "images" and inp.type == f"tensor({input_dtype})".replace("32", "")
    assert isinstance(inp.shape[0], str) and inp.shape[1:] == [3, 32, 32]  # dynamic batch
    assert outp.name == "logits"
    for n in (1, 2, 7):
        x = images(n)
        got = sess.run(None, {"images": x.numpy().astype(input_dtype)})[0]
        ref = reference(model, x)
        assert got.shape == (n, 4) and np.abs(ref).max() > 0.1
        assert np.abs(got - ref).max() <= TOL
    assert not model.training  # the caller's model is untouched


def test_onnx_metadata_states_the_input_contract(model, tmp_path):
    needs_onnx_export()
    path = export_model(model, tmp_path / "m.onnx", classes=["r", "g", "b", "y"])
    meta = read_metadata(path)
    assert meta["classes"] == ["r", "g", "b", "y"] and meta["image_size"] == 32
    assert meta["input_dtype"] == "uint8" and "0-255" in meta["input"]
    assert meta["normalization"].startswith("inside the graph")
    assert meta["mean"] == pytest.approx([0.4914, 0.4822, 0.4465])
    assert meta["model_config"] == model.config.to_dict()


def test_torchscript_logits_match_pytorch_for_uint8_and_float(model, tmp_path):
    path = export_model(model, tmp_path / "m.pt", format="torchscript", classes="abcd")
    loaded = jit_load(path)
    for n in (1, 5):
        x = images(n)
        ref = reference(model, x)
        with torch.no_grad():
            for inp in (x, x.float()):
                got = loaded(inp).numpy()
                assert got.shape == (n, 4) and np.abs(got - ref).max() <= TOL
    assert read_metadata(path)["classes"] == list("abcd")


def test_bad_format_is_refused(model, tmp_path):
    with pytest.raises(ValueError, match="format='tflite' is not supported; choose one of"):
        export_model(model, tmp_path / "m.tflite", format="tflite")


@pytest.mark.slow
def test_cli_exports_a_checkpoint(image_folder, tmp_path, capsys, caplog):
    needs_onnx_export()
    from vitcifar.data import load_splits
    from vitcifar.evaluate import load_model
    from vitcifar.train import TrainConfig, train

    cfg = ViTConfig(patch_size=8, dim=32, depth=2, heads=2, num_classes=4)
    splits = load_splits(str(image_folder), val_size=16, progress=False)
    tcfg = TrainConfig(epochs=1, batch_size=32, device="cpu", num_workers=0, ema_decay=0.9)
    train(cfg, splits, tcfg, tmp_path / "run", progress=False)
    ckpt = tmp_path / "run" / "best.pt"
    model, _ = load_model(ckpt)  # the EMA weights, as predict and evaluate use
    x = splits.test.images[:6]

    caplog.set_level(logging.INFO)  # as the CLI's own logging set-up
    assert main(["export", "--checkpoint", str(ckpt)]) == 0  # default: best.onnx beside it
    chatter = [r for r in caplog.records if r.levelno < logging.WARNING and "onnx" in r.name]
    assert not chatter, chatter[:3]  # the exporter's hundreds of INFO lines are kept quiet
    assert capsys.readouterr().out.startswith(f"wrote {tmp_path / 'run' / 'best.onnx'} (onnx, ")
    sess = onnx_session(tmp_path / "run" / "best.onnx")
    got = sess.run(None, {"images": x.numpy()})[0]
    assert np.abs(got - reference(model, x)).max() <= TOL
    assert read_metadata(tmp_path / "run" / "best.onnx")["classes"] == splits.classes

    out = tmp_path / "ts" / "model.pt"
    args = ["export", "--checkpoint", str(ckpt), "--format", "torchscript", "--out", str(out)]
    assert main(args) == 0
    with torch.no_grad():
        assert np.abs(jit_load(out)(x).numpy() - reference(model, x)).max() <= TOL

    assert main(["export", "--checkpoint", str(ckpt), "--out", str(ckpt)]) == 2
    assert "would overwrite the checkpoint" in capsys.readouterr().err
    assert main(["export", "--checkpoint", str(tmp_path / "none.pt")]) == 2
    assert "none.pt does not exist" in capsys.readouterr().err
