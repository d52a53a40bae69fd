"""How long the review gallery (textseg.ui.review) takes to open and to page on a large data
set, with the thumbnail cache cold (first opening: thumbnails made from the images) and
warm (reopening: thumbnails read from DATASET/.textseg-review/thumbs), in the same run.

A synthetic data set stands in for `textseg label`'s output: N small generated images, an
annotations.json with K rectangular objects each (compressed RLE, random scores) and the
run.json that names the image folder; and optionally a review.jsonl of D decisions, so that
reopening a half-reviewed set is timed too. No model is used.

    python benchmarks/bench_review.py                       # 10,000 images, 3 objects each
    python benchmarks/bench_review.py --images 2000 --pages 5
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


def make_dataset(root: Path, n: int, objects: int, size: tuple[int, int]) -> Path:
    from PIL import Image

    from textseg.export import mask_to_rle

    photos, out = root / "photos", root / "dataset"
    photos.mkdir()
    (out / ".textseg-label").mkdir(parents=True)
    w, h = size
    rng = np.random.default_rng(0)
    images, annotations = [], []
    base = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
    for i in range(n):
        name = f"img{i:05d}.jpg"
        Image.fromarray(np.roll(base, i, axis=1)).save(photos / name, quality=80)
        images.append({"id": i + 1, "file_name": name, "height": h, "width": w})
        for k in range(objects):
            x0, y0 = int(rng.integers(0, w // 2)), int(rng.integers(0, h // 2))
            x1, y1 = x0 + w // 3, y0 + h // 3
            mask = np.zeros((h, w), bool)
            mask[y0:y1, x0:x1] = True
            annotations.append(
                {
                    "id": len(annotations) + 1, "image_id": i + 1, "category_id": k % 2 + 1,
                    "segmentation": mask_to_rle(mask), "area": int(mask.sum()),
                    "bbox": [x0, y0, x1 - x0, y1 - y0], "iscrowd": 0,
                    "score": round(float(rng.random()), 6),
                }
            )  # fmt: skip
    coco = {
        "info": {},
        "images": images,
        "categories": [{"id": 1, "name": "car"}, {"id": 2, "name": "person"}],
        "annotations": annotations,
    }
    (out / "annotations.json").write_text(json.dumps(coco))
    (out / ".textseg-label" / "run.json").write_text(json.dumps({"folder": str(photos)}))
    return out


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--objects", type=int, default=3, help="objects per image")
    parser.add_argument("--size", type=int, nargs=2, default=(160, 120), metavar=("W", "H"))
    parser.add_argument("--pages", type=int, default=10, help="pages turned per measurement")
    parser.add_argument("--decisions", type=int, default=5_000, help="in review.jsonl, reopened")
    args = parser.parse_args()

    from textseg.review import build_review, show_page
    from textseg.review_log import ReviewLog, load_items

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        dataset = make_dataset(Path(tmp), args.images, args.objects, tuple(args.size))
        made = time.perf_counter() - t0
        n_objects = args.images * args.objects
        print(f"data set: {args.images} images, {n_objects} objects, made in {made:.1f} s\n")

        holder: dict = {}
        cold_open = timed(lambda: holder.update(app=build_review(dataset, user="bench")))
        app = holder["app"]
        cold_pages = [timed(lambda p=p: show_page(app, p)) for p in range(1, args.pages + 1)]
        warm_open = timed(lambda: holder.update(app=build_review(dataset, user="bench")))
        app = holder["app"]
        warm_pages = [timed(lambda p=p: show_page(app, p)) for p in range(1, args.pages + 1)]
        load = statistics.median(timed(lambda: load_items(dataset)) for _ in range(3))

        log = ReviewLog(dataset, user="bench")
        items = sorted(load_items(dataset).items, key=lambda it: it.sureness)
        for i, item in enumerate(items[: args.decisions]):
            log.decide(item, "accept" if i % 3 else "reject")
        decided_open = timed(lambda: holder.update(app=build_review(dataset, user="bench")))
        decide = timed(lambda: holder["app"].cards[0].accept.click())

    cold_page, warm_page = statistics.median(cold_pages), statistics.median(warm_pages)
    print("| what | seconds | vs cold |")
    print("|---|---|---|")
    print(f"| open, thumbnail cache cold (baseline) | {cold_open:.3f} | 1.00 |")
    print(f"| open, thumbnail cache warm | {warm_open:.3f} | {warm_open / cold_open:.2f} |")
    print(f"| one page, cache cold (median of {args.pages}, baseline) | {cold_page:.3f} | 1.00 |")
    print(f"| one page, cache warm (median of {args.pages}) | {warm_page:.3f} | "
          f"{warm_page / cold_page:.2f} |")  # fmt: skip
    print(f"| of an open: reading annotations.json (median of 3) | {load:.3f} | |")
    print(f"| reopen after {args.decisions} decisions (its page cold) | {decided_open:.3f} | |")
    print(f"| one decision (append + fsync + redraw) | {decide:.4f} | |")


if __name__ == "__main__":
    main()
