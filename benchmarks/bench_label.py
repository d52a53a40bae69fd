"""`textseg label` against a plain loop, measured in the same run: images/s, memory over a
long run, and the merge.

    plain loop     for each image: TextSegmenter.segment(), then its objects appended to a
                   list as COCO annotations (encode_rle), and one json.dump at the end
    label_dataset  the same images and options through textseg.label_dataset (COCO only,
                   no per-image files: the per-image writer is not what is compared), with
                   its manifest records, atomic writes and merge

Both use the same TextSegmenter (random weights via textseg.testing: --models tiny is
grounding-dino-tiny's and sam2.1_hiera_t's real architectures, --models test the tiny test
ones), every call keeps exactly --objects objects (thresholds 0), and the two alternate
--rounds times on fresh output folders; medians are printed.

--rss-images N labels N generated images (test models) with a thread sampling the process's
resident memory; it prints the peak RSS up to image 100 and up to image N, and the growth.
--merge-images N writes N images' records (each with --objects generated masks) and times
textseg.label.merge alone.

    python benchmarks/bench_label.py --models tiny --images 4 --rounds 2
    python benchmarks/bench_label.py --models test --images 20 --rss-images 1000 --merge-images 1000
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
import time
from pathlib import Path

import numpy as np


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def make_images(folder: Path, n: int, *, size: tuple[int, int]) -> Path:
    from textseg.testing import make_sample_image

    for i in range(n):
        make_sample_image(folder / f"{i:05d}.jpg", height=size[0], width=size[1], seed=i)
    return folder


def plain_loop(ts, folder: Path, out: Path, options: dict) -> float:
    """segment() per image plus a hand-written COCO file; returns seconds."""
    from textseg import encode_rle

    start = time.perf_counter()
    images, annotations = [], []
    for i, path in enumerate(sorted(folder.glob("*.jpg"))):
        seg = ts.segment(path, options["prompt"], **options["kw"])
        images.append({"id": i + 1, "file_name": path.name, "height": seg.image_size[0],
                       "width": seg.image_size[1]})  # fmt: skip
        for k, label in enumerate(seg.labels):
            x0, y0, x1, y1 = (float(v) for v in seg.boxes[k])
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": i + 1,
                    "category_id": seg.phrases.index(label) + 1,
                    "segmentation": encode_rle(seg.masks[k]),
                    "area": int(seg.masks[k].sum()),
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "score": float(seg.scores[k]),
                    "iscrowd": 0,
                }
            )
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "annotations.json", "w") as f:
        json.dump({"images": images, "annotations": annotations, "categories": []}, f)
    return time.perf_counter() - start


def labelled(ts, folder: Path, out: Path, options: dict) -> float:
    from textseg import label_dataset

    start = time.perf_counter()
    label_dataset(ts, folder, options["prompt"], out=out, per_image=False, progress=False,
                  model="bench", **options["kw"])  # fmt: skip
    return time.perf_counter() - start


def build(models: str, root: Path):
    from textseg import TextSegmenter
    from textseg.testing import make_grounding_dino, make_sam2

    det = root / f"dino-{models}"
    sam = root / f"sam2-{models}"
    if not (det / "tokenizer_config.json").is_file():
        make_grounding_dino(det, size=models)
    if not (sam / "model.pt").is_file():
        make_sam2(sam, size=models)
    return TextSegmenter.from_pretrained(detector=det, segmenter=sam, device="cpu")


def bench_speed(ts, root: Path, args) -> None:
    folder = make_images(root / "speed", args.images, size=(240, 320))
    options = {
        "prompt": "car, person, tree",
        "kw": dict(box_threshold=0.0, text_threshold=0.0, max_objects=args.objects),
    }
    plain_loop(ts, folder, root / "warm", options)  # warm-up: first calls allocate
    plain, label = [], []
    for r in range(args.rounds):
        plain.append(args.images / plain_loop(ts, folder, root / f"plain{r}", options))
        label.append(args.images / labelled(ts, folder, root / f"label{r}", options))
    p, q = statistics.median(plain), statistics.median(label)
    print(f"| plain loop (segment + hand-written COCO) | {p:.3f} images/s | 1.00 |")
    print(f"| textseg label_dataset                    | {q:.3f} images/s | {q / p:.2f} |")


def bench_rss(ts, root: Path, args) -> None:
    from textseg import label_dataset

    folder = make_images(root / "rss", args.rss_images, size=(64, 96))
    out = root / "rss-out"
    records = out / ".textseg-label" / "records"
    samples: list[tuple[int, float]] = []
    stop = threading.Event()

    def sample() -> None:
        shown = 0
        while not stop.is_set():
            done = len(list(records.glob("*.json"))) if records.is_dir() else 0
            samples.append((done, rss_mb()))
            if done >= shown + 100:  # a line per 100 images, so a long run shows its trend
                shown = done - done % 100
                peak = max(r for _, r in samples)
                print(f"  {done} images: peak RSS {peak:.0f} MB", flush=True)
            stop.wait(0.5)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    start = time.perf_counter()
    label_dataset(ts, folder, "car, person, tree", out=out, progress=False, model="bench",
                  box_threshold=0.0, text_threshold=0.0, max_objects=args.objects)  # fmt: skip
    seconds = time.perf_counter() - start
    stop.set()
    thread.join()
    at_100 = max(r for n, r in samples if n <= 100)
    at_end = max(r for _, r in samples)
    print(f"| peak RSS up to image 100 | {at_100:.0f} MB |")
    print(
        f"| peak RSS up to image {args.rss_images} | {at_end:.0f} MB | growth {at_end - at_100:+.0f} MB |"
    )
    print(f"| {args.rss_images} images, per-image files on | {seconds:.1f} s |")


def bench_merge(root: Path, args) -> None:
    from textseg.export import mask_to_rle, write_json_atomic
    from textseg.label import STATE_DIR, _entries, _stamp, merge

    folder = root / "merge-images"
    folder.mkdir()
    h, w = 240, 320
    rng = np.random.default_rng(0)
    files = []
    for i in range(args.merge_images):
        (folder / f"{i:05d}.jpg").write_bytes(b"x")  # records name the file; never read
        files.append(f"{i:05d}.jpg")
    out = root / "merge-out"
    records = out / STATE_DIR / "records"
    records.mkdir(parents=True)
    yy, xx = np.mgrid[:h, :w]
    entries = _entries(folder, files)
    for entry in entries:
        objects = []
        for _ in range(args.objects):
            cx, cy, r = rng.integers(40, 280), rng.integers(40, 200), rng.integers(10, 40)
            mask = (xx - cx) ** 2 + (yy - cy) ** 2 < r * r
            box = [float(cx - r), float(cy - r), float(cx + r), float(cy + r)]
            objects.append({"category_id": 1, "label": "car", "score": 0.5, "box_xyxy": box,
                            "area": int(mask.sum()), "rle": mask_to_rle(mask)})  # fmt: skip
        record = {"file": entry.file, "stamp": _stamp(entry.path), "status": "done",
                  "height": h, "width": w, "objects": objects, "empty_masks": 0}  # fmt: skip
        write_json_atomic(records / entry.record, record)
    for formats in (("coco",), ("coco", "yolo")):
        start = time.perf_counter()
        merge(out, entries, ["car"], formats=formats, segmentation="rle")
        print(f"| merge of {args.merge_images} images ({' + '.join(formats)}) "
              f"| {time.perf_counter() - start:.2f} s |")  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", choices=["test", "tiny"], default="tiny")
    p.add_argument("--images", type=int, default=4)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--objects", type=int, default=3)
    p.add_argument("--rss-images", type=int, default=0)
    p.add_argument("--merge-images", type=int, default=0)
    p.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "bench_label")
    args = p.parse_args()
    args.cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if args.images:
            bench_speed(build(args.models, args.cache), root, args)
        if args.rss_images:
            bench_rss(build("test", args.cache), root, args)
        if args.merge_images:
            bench_merge(root, args)


if __name__ == "__main__":
    main()
