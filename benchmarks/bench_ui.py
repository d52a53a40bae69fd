"""What one Run of the textseg UI costs around the models, for a large upload.

A stand-in segmenter returns N rectangular masks at once, so only the UI's own work is
timed: reading the upload, drawing the overlay, encoding the picture for the page and
building the download. Compared in the same run against the baseline of drawing the overlay
at full size and sending it as PNG, with a PNG overlay in the zip, after decoding the upload
(what the UI did on every Run before issue 9). The segmenter's own time is not included.

    python benchmarks/bench_ui.py                        # 4000×3000 JPEG, 5 objects
    python benchmarks/bench_ui.py --width 6000 --height 4000 --objects 10
"""

from __future__ import annotations

import argparse
import base64
import datetime
import io
import statistics
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np


class _Stub:
    """A segmenter that returns `objects` rectangles at once (no model)."""

    def __init__(self, objects: int) -> None:
        self.objects = objects

    def segment(self, image, prompt=None, **_):
        from textseg import Segmentation

        h, w, n = image.height, image.width, self.objects
        masks = np.zeros((n, h, w), bool)
        boxes = []
        for i in range(n):
            y0, y1, x0, x1 = (
                h * i // (n + 1),
                h * (i + 2) // (n + 1),
                w * i // (n + 1),
                w * (i + 2) // (n + 1),
            )
            masks[i, y0:y1, x0:x1] = True
            boxes.append([x0, y0, x1, y1])
        return Segmentation(boxes=boxes, scores=[0.9] * n, labels=["cat"] * n, masks=masks,
                            mask_scores=[0.9] * n, image_size=(h, w), prompt="cat.",
                            phrases=("cat",), image=image)  # fmt: skip


def _photo(width: int, height: int) -> bytes:
    from PIL import Image

    rng = np.random.default_rng(0)
    y = np.linspace(0, 255, height, dtype=np.float32)[:, None, None]
    pixels = np.broadcast_to(y, (height, width, 3)) + rng.normal(0, 20, (height, width, 3))
    buffer = io.BytesIO()
    Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def _baseline(seg) -> tuple[int, int]:
    """Full-size overlay as PNG for the page, and a zip with a PNG overlay (bytes sent)."""
    from textseg import overlay, save

    picture = io.BytesIO()
    overlay(seg.image, seg).save(picture, format="PNG")
    buffer = io.BytesIO()
    with tempfile.TemporaryDirectory() as tmp:
        files = save(seg, tmp)
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
            for path in [files.json, files.overlay, *files.masks]:
                zf.write(path, arcname=Path(path).name)
    return len(picture.getvalue()), len(base64.b64encode(buffer.getvalue()))


def main() -> None:
    from textseg.images import load_image
    from textseg.ui import build_app, run

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--width", type=int, default=4000)
    p.add_argument("--height", type=int, default=3000)
    p.add_argument("--objects", type=int, default=5)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    data = _photo(args.width, args.height)
    value = ({"name": "photo.jpg", "type": "image/jpeg", "size": len(data), "content": memoryview(data),
              "last_modified": datetime.datetime.now(tz=datetime.UTC)},)  # fmt: skip
    app = build_app(_Stub(args.objects), max_upload_bytes=len(data) + 1)
    app.upload.value = value
    app.prompt.value = "cat"
    ui, base = [], []
    for _ in range(args.repeats):
        start = time.perf_counter()
        run(app)
        ui.append(time.perf_counter() - start)
        seg = app.last
        start = time.perf_counter()
        load_image(data, name="photo.jpg")  # the baseline decoded the upload on every Run
        picture_bytes, zip_b64 = _baseline(seg)
        base.append(time.perf_counter() - start)
    sent_ui = len(bytes(app.image.value)), len(app.download.value)
    print(f"upload {args.width}×{args.height} JPEG ({len(data) / 1e6:.1f} MB), {args.objects} objects, "
          f"{args.repeats} repeats")  # fmt: skip
    print("| | seconds per Run (mean ± sd) | picture sent to the page | download in the page |")
    print("|---|---|---|---|")
    print(f"| this UI (display-size overlay, JPEG) | {statistics.mean(ui):.2f} ± {statistics.pstdev(ui):.2f} "
          f"| {sent_ui[0] / 1e6:.2f} MB | {sent_ui[1] / 1e6:.2f} MB |")  # fmt: skip
    print(f"| baseline (full-size PNG overlay, PNG in the zip) | {statistics.mean(base):.2f} ± "
          f"{statistics.pstdev(base):.2f} | {picture_bytes / 1e6:.2f} MB | {zip_b64 / 1e6:.2f} MB |")  # fmt: skip
    print(f"time ratio this / baseline = {statistics.mean(ui) / statistics.mean(base):.2f}")


if __name__ == "__main__":
    main()
