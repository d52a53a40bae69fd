"""What is Colab-specific in textseg: Colab's own upload and download, and its widget manager.

Colab's ``google.colab.files.upload()`` sends a file in chunks, so it has no size limit, unlike
an ipywidgets FileUpload there (see ``textseg.ui.upload_limit``); ``files.download(path)``
hands a file to the browser, where a large ``data:`` link may be blocked by the output frame.
Elsewhere every function here is a no-op (``on_colab()`` is False). Nothing runs at import.
"""

from __future__ import annotations

import logging
import os
import sys

__all__ = ["download", "enable_widgets", "on_colab", "upload"]

logger = logging.getLogger(__name__)


def on_colab() -> bool:
    """True inside a Colab runtime (its ``google.colab`` module is loaded there)."""
    return "google.colab" in sys.modules


def upload() -> list[tuple[str, bytes]]:
    """Colab's file picker (any size): [(file name, bytes)] of the chosen files, [] when none
    were chosen or off Colab. Colab also saves them in the working folder."""
    if not on_colab():
        return []
    from google.colab import files

    return [(str(name), bytes(data)) for name, data in (files.upload() or {}).items()]


def download(path: str | os.PathLike) -> bool:
    """Hand the file at `path` to the browser through Colab (True), or do nothing off Colab
    (False)."""
    if not on_colab():
        return False
    from google.colab import files

    files.download(os.fspath(path))
    return True


def enable_widgets() -> None:
    """Turn on Colab's custom widget manager, which third-party widgets (ipyevents' clicks on
    the picture) need there; a no-op elsewhere."""
    if not on_colab():
        return
    try:
        from google.colab import output

        output.enable_custom_widget_manager()
    except Exception:  # noqa: BLE001 - clicks are optional; the rest of the UI works
        logger.warning("could not enable Colab's custom widget manager; clicks may not work")
