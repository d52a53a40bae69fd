"""What is Colab-specific in the q1 notebook: the GPU check and the Google Drive mount.

Elsewhere both are no-ops: the GPU check only names the device, and the run folder stays where
the notebook says. Nothing here prints (the notebook prints the lines these return; only the
handler that ``show_epoch_lines`` installs writes vitcifar's log lines), and nothing happens at
import.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import torch

from vitcifar.machine import Knobs

__all__ = [
    "DRIVE_MOUNT",
    "NOTEBOOK_KNOBS",
    "NO_GPU",
    "check_gpu",
    "on_colab",
    "runs_folder",
    "show_epoch_lines",
]

NO_GPU = "no GPU: Runtime \u2192 Change runtime type \u2192 T4 GPU"
DRIVE_MOUNT = "/content/drive"  # where Colab mounts Google Drive

# How q1's messages name its parameters (the CLI's table is machine.CLI_KNOBS).
NOTEBOOK_KNOBS = Knobs(
    {
        "batch_size": "BATCH_SIZE",
        "eval_batch_size": "EVAL_BATCH_SIZE",
        "lr": "LR",
        "amp": "AMP",
        "device": "DEVICE",
        "out": "RUN_NAME",
        "resume": "RESUME",
        "data": "DATA",
        "subset": "SUBSET",
        "val_size": "VAL_SIZE",
        "seed": "PRESET",  # the seed is the preset's
        "max_churn_bytes": "DRIVE_TRASH_GB",
    },
    assign="{name} = {value!r}",
    turn_on="set {name} = True",
)


def on_colab() -> bool:
    """True inside a Colab runtime (its ``google.colab`` module is loaded there)."""
    return "google.colab" in sys.modules


def check_gpu(device: str = "auto") -> tuple[bool, str]:
    """(ok, one line) for the device a run will use.

    With a GPU: (True, "GPU: <its name>"). ``device="cpu"``: (True, "device: CPU ...").
    On Colab without a GPU, for "auto" or "cuda": (False, NO_GPU), so the notebook can stop
    before a CPU run crashes the session or takes a day. Elsewhere without a GPU: (True, a line
    saying the CPU is used)."""
    if device == "cpu":
        return True, 'device: CPU (DEVICE = "cpu")'
    if torch.cuda.is_available():
        return True, f"GPU: {torch.cuda.get_device_name(0)}"
    if on_colab():
        return False, NO_GPU
    return True, "no GPU found: training runs on the CPU (slow)"


def runs_folder(
    *, save_to_drive: bool, drive_folder: str | Path, session_folder: str | Path
) -> tuple[Path, str | None]:
    """(the folder that holds run folders, a warning or None).

    On Colab with ``save_to_drive``, Google Drive is mounted at DRIVE_MOUNT (Colab asks for
    access in every new session) and ``drive_folder`` is used. A refused or failed mount (the
    consent popup closed, a scope left unticked, "credential propagation was unsuccessful")
    is not an error: the run goes to ``session_folder`` and the warning says that it is lost
    with the session. Elsewhere: ``session_folder``, no warning."""
    session = Path(session_folder)
    if not (save_to_drive and on_colab()):
        return session, None
    try:
        from google.colab import drive

        drive.mount(DRIVE_MOUNT)
    except Exception as err:  # noqa: BLE001 - any failed mount falls back to the session
        why = " ".join(str(err).split()) or type(err).__name__
        return session, (
            f"warning: Google Drive was not mounted ({why}); the run folder is in this "
            f"session ({session.resolve()}) and is lost when the session ends. Run all again "
            "and allow Drive access to keep it."
        )
    return Path(drive_folder), None


class _Lines(logging.Handler):
    """Writes a record's message to the notebook: ``sys.stdout`` as it is when the line comes
    (the running cell's output)."""

    def emit(self, record: logging.LogRecord) -> None:
        sys.stdout.write(self.format(record) + "\n")
        sys.stdout.flush()


def show_epoch_lines(logger: str = "vitcifar") -> None:
    """Let vitcifar's INFO lines (one per epoch with ``progress=False``, resume notes) reach the
    notebook, which configures no logging. Calling it again adds nothing."""
    log = logging.getLogger(logger)
    if not any(isinstance(h, _Lines) for h in log.handlers):
        log.addHandler(_Lines())
    if log.getEffectiveLevel() > logging.INFO:
        log.setLevel(logging.INFO)
