import json
import subprocess
import sys

import pytest

from vitcifar.cli import main

pytestmark = pytest.mark.slow


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "vitcifar", *args], capture_output=True, text=True, timeout=300
    )


def test_train_then_evaluate_end_to_end(image_folder, tmp_path, capsys, tiny_train_args):
    out = tmp_path / "run"
    code = main(tiny_train_args(image_folder, out, "--preset", "deit-tiny"))
    assert code == 0
    printed = capsys.readouterr().out
    assert "32 train / 8 val / 64 test images, 4 classes" in printed and "test accuracy" in printed
    for name in (
        "last.pt",
        "best.pt",
        "metrics.jsonl",
        "metrics.json",
        "confusion.png",
        "curves.png",
        "misclassified.png",
    ):
        assert (out / name).stat().st_size > 0, name
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["num_parameters"] == 5_362_762 - 6 * 193  # a 4-class head instead of 10
    cm = metrics["confusion_matrix"]
    assert len(cm) == 4 and sum(map(sum, cm)) == 64
    assert metrics["test_accuracy"] == pytest.approx(sum(cm[i][i] for i in range(4)) / 64)

    ev = tmp_path / "eval"
    assert (
        main(
            [
                "evaluate",
                "--checkpoint",
                str(out / "best.pt"),
                "--data",
                str(image_folder),
                "--out",
                str(ev),
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    again = json.loads((ev / "metrics.json").read_text())
    assert again["test_accuracy"] == metrics["test_accuracy"]

    # --resume continues with the run's own split, whatever --subset/--seed now say
    capsys.readouterr()
    assert (
        main(
            [
                "train",
                "--data",
                str(image_folder),
                "--out",
                str(out),
                "--resume",
                "--seed",
                "7",
                "--device",
                "cpu",
                "--num-workers",
                "0",
                "--quiet",
                "--no-eval",
            ]
        )
        == 0
    )
    assert "32 train / 8 val / 64 test images" in capsys.readouterr().out


@pytest.mark.parametrize(
    "args,message",
    [
        (
            ["train", "--data", "cifar10", "--out", "x", "--batch-size", "0"],
            "--batch-size: must be > 0",
        ),
        (["train", "--data", "cifar10", "--out", "x", "--epochs", "-3"], "--epochs: must be > 0"),
        (
            ["train", "--data", "cifar10", "--out", "x", "--preset", "vit-huge"],
            "invalid choice: 'vit-huge'",
        ),
        (["train", "--out", "x"], "the following arguments are required: --data"),
        (["train", "--data", "/no/such/folder", "--out", "x"], "/no/such/folder does not exist"),
        (
            ["evaluate", "--checkpoint", "/no/best.pt", "--data", "cifar10"],
            "/no/best.pt does not exist",
        ),
    ],
)
def test_bad_arguments_one_line_exit_2(args, message, capsys):
    try:
        code = main(args)
    except SystemExit as exit_:  # argparse errors
        code = exit_.code
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "Traceback" not in err
    assert len(err.splitlines()) == 1, err


def test_bad_argument_in_a_real_process_prints_no_traceback():
    res = run_cli("train", "--data", "/no/such/folder", "--out", "x")
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [
        "vitcifar: error: data path /no/such/folder does not exist; "
        "expected DATA/train/<class>/*.jpg and DATA/test/<class>/*.jpg with the same class folders"
    ]


def test_help_documents_every_option(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    for opt in (
        "--preset",
        "--data",
        "--data-root",
        "--out",
        "--epochs",
        "--batch-size",
        "--lr",
        "--subset",
        "--val-size",
        "--device",
        "--resume",
        "--gpu-aug",
        "--compile",
        "--amp",
        "--loader",
    ):
        assert opt in text


def _interrupted(command: list[str], started, env=None) -> subprocess.CompletedProcess:
    """Run ``command``, press Ctrl-C (a real SIGINT) once ``started()`` is true, wait for it.
    SIGINT is reset to its default in the child, so that Python installs its Ctrl-C handler
    even where CI starts this process with SIGINT ignored."""
    import signal
    import time

    proc = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 240
    while not started() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, f"finished before Ctrl-C: {proc.communicate()}"
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=240)
    return subprocess.CompletedProcess(command, proc.returncode, out, err)


@pytest.mark.kill  # a real signal to our own process handling: stack (a) runs it
def test_ctrl_c_during_training_is_one_line_and_the_same_command_resumes(
    image_folder, tmp_path, tiny_train_args
):
    out = tmp_path / "run"
    args = tiny_train_args(image_folder, out, "--epochs", "5", "--no-eval")
    done = _interrupted(
        [sys.executable, "-m", "vitcifar", *args], lambda: (out / "metrics.jsonl").exists()
    )
    assert done.returncode == 130, done.stderr
    assert done.stderr.strip() == (
        "vitcifar: interrupted (Ctrl-C); the same command again resumes from the last "
        "finished epoch"
    )
    epochs = len((out / "metrics.jsonl").read_text().splitlines())
    assert 1 <= epochs < 5
    again = run_cli(*args)
    assert again.returncode == 0, again.stderr
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 5
