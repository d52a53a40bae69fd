"""Seconds per image of textseg at real model sizes (random weights, nothing downloaded).

Builds grounding-dino-tiny's architecture (Swin-T + BERT-base, ~172M parameters) and
sam2.1_hiera_t as released (~39M) with random weights via textseg.testing, loads them through
TextSegmenter.from_pretrained(<local folders>) as users would, and times, per image:

    first prompt   a new image: GroundingDINO + SAM 2 image encoder + SAM 2 mask decoder
    second prompt  another prompt on the same image: the SAM 2 embedding is reused
    baseline       the same second prompt with the embedding cache emptied (re-encoded)

and prints the ratio second / baseline, measured in the same run. To compare like with like,
every call keeps exactly --objects boxes (box_threshold=0 with max_objects), since random
weights make the number of detections arbitrary.

    python benchmarks/bench_textseg.py                 # CPU, 3 images
    python benchmarks/bench_textseg.py --device cuda --repeats 10
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path


def _timed(fn, *args, **kwargs) -> tuple[float, object]:
    """(seconds, result) of fn(*args, **kwargs), GPU work included."""
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto (default cpu)")
    parser.add_argument("--repeats", type=int, default=3, help="images timed (default 3)")
    parser.add_argument("--objects", type=int, default=5, help="objects kept per call (default 5)")
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument(
        "--models", type=Path, default=None, help="reuse/keep models in this folder"
    )
    args = parser.parse_args()

    import numpy as np
    import torch

    from textseg import TextSegmenter, load_image, parse_prompt
    from textseg.testing import make_grounding_dino, make_sam2, make_sample_image

    tmp = tempfile.TemporaryDirectory()
    root = args.models or Path(tmp.name)
    dino, sam = root / "grounding-dino-tiny-random", root / "sam2.1-hiera-tiny-random"
    start = time.perf_counter()
    if not (dino / "config.json").is_file():
        make_grounding_dino(dino, size="tiny")
    if not (sam / "model.pt").is_file():
        make_sam2(sam, size="tiny")
    built = time.perf_counter() - start
    ts = TextSegmenter.from_pretrained(detector=dino, segmenter=sam, device=args.device)
    n_dino = sum(p.numel() for p in ts.detector.model.parameters()) / 1e6
    n_sam = sum(p.numel() for p in ts.segmenter.predictor.model.parameters()) / 1e6
    images = [
        make_sample_image(
            Path(tmp.name) / f"img{i}.jpg", height=args.height, width=args.width, seed=i
        )
        for i in range(args.repeats + 1)
    ]
    thresholds = dict(box_threshold=0.0, text_threshold=0.0)
    opts = dict(**thresholds, max_objects=args.objects)
    ts.segment(images[-1], "warm up", **opts)  # one-off start-up costs, not timed

    first, second, baseline = [], [], []
    finder, encoder, painter = [], [], []
    prompt = parse_prompt("cat, remote")
    for path in images[:-1]:
        first.append(_timed(ts.segment, path, "cat, remote", **opts)[0])
        encodes = ts.segmenter.encode_count
        second.append(_timed(ts.segment, path, "skateboard, cap", **opts)[0])
        assert ts.segmenter.encode_count == encodes, "the second prompt re-encoded the image"
        ts.segmenter.reset()
        baseline.append(_timed(ts.segment, path, "skateboard, cap", **opts)[0])
        # the parts, on the same image
        image = load_image(path)
        seconds, found = _timed(ts.detector.detect, image, prompt, **thresholds)
        finder.append(seconds)
        ts.segmenter.reset()
        encoder.append(_timed(ts.segmenter.set_image, np.asarray(image))[0])
        painter.append(_timed(ts.segmenter.predict, found.boxes[: args.objects])[0])

    def row(name: str, xs: list[float]) -> str:
        sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
        cell = f"{statistics.mean(xs):.2f} ± {sd:.2f}"
        return f"| {name:<52} | {cell:>19} |"

    device = ts.segmenter.runtime.device
    print(f"\ntextseg, real-size random weights: grounding-dino-tiny ({n_dino:.0f}M) + "
          f"sam2.1-hiera-tiny ({n_sam:.0f}M)")  # fmt: skip
    print(f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{args.width}x{args.height} images, {args.objects} objects per call, "
          f"{args.repeats} images (models built in {built:.0f} s)\n")  # fmt: skip
    print(f"| {'call':<52} | s/image (mean ± sd) |")
    print(f"|{'-' * 54}|{'-' * 21}|")
    print(row("first prompt, new image (finder + encoder + painter)", first))
    print(row("second prompt, same image (embedding reused)", second))
    print(row("baseline: second prompt, embedding recomputed", baseline))
    print(row("  parts: finder (GroundingDINO)", finder))
    print(row("  parts: painter's image encoder (SAM 2 set_image)", encoder))
    print(row(f"  parts: painter's mask decoder ({args.objects} boxes)", painter))
    ratio = statistics.mean(second) / statistics.mean(baseline)
    print(f"\nsecond prompt / baseline = {ratio:.2f} (time saved by the cache: {1 - ratio:.0%})")
    tmp.cleanup()


if __name__ == "__main__":
    main()
