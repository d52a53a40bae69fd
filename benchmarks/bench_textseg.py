"""Seconds per image of textseg against the plain composition, at real model sizes (random
weights, nothing downloaded), measured in the same run.

Builds grounding-dino-tiny's architecture (Swin-T + BERT-base, ~172M parameters) and
sam2.1_hiera_t as released (~39M) with random weights via textseg.testing, loads them through
TextSegmenter.from_pretrained(<local folders>) as users would, and times, per image:

    plain composition   the original notebook's recipe on the same weights, loaded as it
                        loads them (a second, untouched copy of the GroundingDINO model):
                        processor → model → post_process_grounded_object_detection →
                        SAM2ImagePredictor (set_image + predict on the boxes)
    first prompt        textseg on a new image: GroundingDINO (backbone cached as it runs,
                        fast attention on the CPU) + SAM 2 image encoder + mask decoder
    second prompt       another prompt on the same image: GroundingDINO's image backbone
                        and SAM 2's embedding are both reused
    512 first / second  the same with detector_size=512 (GroundingDINO reads a 512-pixel
                        shortest side instead of 800), on other new images
    other attention     first / second with textseg.fast_attention switched the other way
                        (off where the detector turns it on, i.e. the CPU: transformers' own
                        encoder; on elsewhere), on other new images

and prints the ratios first / plain and second / first. To compare like with like, every
call keeps exactly --objects boxes (threshold 0, the best N by score), since random weights
make the number of detections arbitrary, and both sides run in the same precision: the
detector in float32, SAM 2 under autocast in textseg's runtime dtype (bfloat16 on an Ampere or
newer GPU, float32 on the CPU), as SAM 2's own README runs its predictor. Every timer, the
per-part hooks included, synchronises CUDA before reading the clock.

Without sam2 (or hydra-core / omegaconf) it prints one line "skipped: ..." and exits 77; so
it does with --device cuda where torch sees no GPU. --json PATH writes the figures as one
JSON object (benchmarks/gpu_check.sh reads it).

    python benchmarks/bench_textseg.py                 # CPU, 3 images
    python benchmarks/bench_textseg.py --device cuda --repeats 10
"""

from __future__ import annotations

import argparse
import importlib.util
import inspect
import json
import statistics
import sys
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


SKIPPED = 77  # exit status of a skipped run (no sam2, no CUDA): not a failure, not a result


def _sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def plain_composition(model, processor, predictor, image, text: str, objects: int, runtime):
    """The original notebook's recipe, written the way transformers' and SAM 2's docs show
    it: GroundingDINO boxes from the processor's post-processing, then SAM 2 on the boxes,
    under autocast in ``runtime.dtype`` as SAM 2's README runs it (and as textseg does), so
    that a ratio against textseg measures code, not precision.
    Returns (masks, boxes) of the `objects` best-scored boxes."""
    import numpy as np
    import torch

    device = next(model.parameters()).device
    inputs = processor(images=image, text=text, return_tensors="pt").to(device)
    with torch.inference_mode():
        outputs = model(**inputs)
    post = processor.post_process_grounded_object_detection
    threshold = (
        "threshold" if "threshold" in inspect.signature(post).parameters else "box_threshold"
    )
    found = post(
        outputs,
        inputs["input_ids"],
        text_threshold=0.0,
        target_sizes=[image.size[::-1]],
        **{threshold: 0.0},
    )[0]
    best = found["scores"].argsort(descending=True)[:objects]
    boxes = found["boxes"][best].cpu().numpy()
    amp = torch.autocast(runtime.device.type, dtype=runtime.dtype, enabled=runtime.autocast_enabled)
    with amp:
        predictor.set_image(np.asarray(image))
        masks, _, _ = predictor.predict(box=boxes, multimask_output=False)
    return masks, boxes


class PartTimer:
    """Seconds spent inside some submodules, summed over calls (forward hooks; CUDA is
    synchronised on entry and exit, so a part's GPU work is counted in that part)."""

    def __init__(self, modules: dict) -> None:
        self.seconds = {name: 0.0 for name in modules}
        self._start: dict[str, float] = {}
        for name, module in modules.items():
            module.register_forward_pre_hook(lambda *_, n=name: self._enter(n))
            module.register_forward_hook(lambda *_, n=name: self._leave(n))

    def _enter(self, name: str) -> None:
        _sync()
        self._start[name] = time.perf_counter()

    def _leave(self, name: str) -> None:
        _sync()
        self.seconds[name] += time.perf_counter() - self._start.pop(name)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto (default cpu)")
    parser.add_argument("--repeats", type=int, default=3, help="images timed (default 3)")
    parser.add_argument("--objects", type=int, default=5, help="objects kept per call (default 5)")
    parser.add_argument("--small", type=int, default=512, help="the small detector_size (512)")
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument(
        "--model-size", default="tiny", choices=["tiny", "test"],
        help="tiny: the released architectures (default); test: the tests' small models, "
        "to check this script quickly",
    )  # fmt: skip
    parser.add_argument(
        "--models", type=Path, default=None, help="reuse/keep models in this folder"
    )
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args()

    import torch

    missing = [m for m in ("sam2", "hydra", "omegaconf") if importlib.util.find_spec(m) is None]
    if missing:
        print(f"skipped: no {', '.join(missing)} for this Python (install sam2 with "
              "scripts/setup.sh, or carry the wheels of benchmarks/gpu_prep.sh)")  # fmt: skip
        return SKIPPED
    from textseg import TextSegmenter, load_image
    from textseg.testing import make_grounding_dino, make_sam2, make_sample_image

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("skipped: no CUDA (torch sees no GPU; --device cpu times the CPU)")
        return SKIPPED
    tmp = tempfile.TemporaryDirectory()
    root = args.models or Path(tmp.name)
    size = args.model_size
    dino, sam = root / f"grounding-dino-{size}-random", root / f"sam2.1-hiera-{size}-random"
    start = time.perf_counter()
    if not (dino / "config.json").is_file():
        make_grounding_dino(dino, size=size)
    if not (sam / "model.pt").is_file():
        make_sam2(sam, size=size)
    built = time.perf_counter() - start
    ts = TextSegmenter.from_pretrained(detector=dino, segmenter=sam, device=args.device)
    from transformers import AutoModelForZeroShotObjectDetection, AutoProcessor

    from textseg import fast_attention

    # the plain composition gets its own copy, loaded as the original notebook loads it
    model = AutoModelForZeroShotObjectDetection.from_pretrained(dino).eval()
    model.to(ts.detector.runtime.device)
    processor = AutoProcessor.from_pretrained(dino)
    fast = fast_attention.enabled_modules(ts.detector.model)
    sam2_model = ts.segmenter.predictor.model
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    predictor = SAM2ImagePredictor(sam2_model)  # the same weights, Meta's own predictor
    predictor._bb_feat_sizes = ts.segmenter.predictor._bb_feat_sizes  # (only differs for "test")
    n_dino = sum(p.numel() for p in model.parameters()) / 1e6
    n_sam = sum(p.numel() for p in sam2_model.parameters()) / 1e6
    images = [
        make_sample_image(
            Path(tmp.name) / f"img{i}.jpg", height=args.height, width=args.width, seed=i
        )
        for i in range(3 * args.repeats + 1)
    ]
    opts = dict(box_threshold=0.0, text_threshold=0.0, max_objects=args.objects)
    warm = load_image(images[-1])  # one-off start-up costs, not timed
    rt = ts.segmenter.runtime
    plain_composition(model, processor, predictor, warm, "warm up.", args.objects, rt)
    ts.segment(warm, "warm up", **opts)
    ts.segment(warm, "warm up", detector_size=args.small, **opts)

    inner = ts.detector.model.model
    parts = PartTimer(
        {
            "image backbone": inner.backbone,
            "text encoder": inner.text_backbone,
            "encoder (text-conditioned)": inner.encoder,
            "decoder": inner.decoder,
        }
    )
    rows: dict[str, list[float]] = {
        k: [] for k in ("plain", "first", "second", "sfirst", "ssecond", "ofirst", "osecond")
    }
    for i in range(args.repeats):
        image, other = load_image(images[i]), load_image(images[args.repeats + i])
        plain = (plain_composition, model, processor, predictor, image, "cat. remote.")
        if i % 2:  # alternate who goes first, against drifting load on a shared machine
            rows["plain"].append(_timed(*plain, args.objects, rt)[0])
        runs = ts.detector.backbone_runs
        before = dict(parts.seconds)
        rows["first"].append(_timed(ts.segment, image, "cat, remote", **opts)[0])
        first_parts = {k: parts.seconds[k] - before[k] for k in before}
        if i % 2 == 0:
            rows["plain"].append(_timed(*plain, args.objects, rt)[0])
        encodes = ts.segmenter.encode_count
        rows["second"].append(_timed(ts.segment, image, "skateboard, cap", **opts)[0])
        assert ts.segmenter.encode_count == encodes, "the second prompt re-encoded the image"
        assert ts.detector.backbone_runs == runs + 1, "the second prompt reran the backbone"
        for k, v in first_parts.items():
            rows.setdefault(f"part {k}", []).append(v)
        small = dict(detector_size=args.small, **opts)
        rows["sfirst"].append(_timed(ts.segment, other, "cat, remote", **small)[0])
        rows["ssecond"].append(_timed(ts.segment, other, "skateboard, cap", **small)[0])
        third = load_image(images[2 * args.repeats + i])
        switch = (fast_attention.disable, fast_attention.enable)
        switch[not fast](ts.detector.model)  # the other way round for these two calls
        rows["ofirst"].append(_timed(ts.segment, third, "cat, remote", **opts)[0])
        rows["osecond"].append(_timed(ts.segment, third, "skateboard, cap", **opts)[0])
        switch[bool(fast)](ts.detector.model)  # back as the detector set it

    def mean(key: str) -> float:
        return statistics.mean(rows[key])

    def row(name: str, key: str, ratio: str) -> str:
        xs = rows[key]
        sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
        cell = f"{statistics.mean(xs):.2f} ± {sd:.2f}"
        return f"| {name:<62} | {cell:>19} | {ratio:>22} |"

    device = ts.segmenter.runtime.device
    which = "real-size" if size == "tiny" else "small test-size"
    print(f"\ntextseg vs the plain composition, {which} random weights: grounding-dino-{size} "
          f"({n_dino:.0f}M) + sam2.1-hiera-{size} ({n_sam:.0f}M)")  # fmt: skip
    print(f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{args.width}x{args.height} images, {args.objects} objects per call, "
          f"{args.repeats} images per row (models built in {built:.0f} s); fast attention "
          f"in {fast} of textseg's GroundingDINO modules; SAM 2 in {rt.dtype} on both "
          "sides\n")  # fmt: skip
    print(f"| {'call':<62} | s/image (mean ± sd) | {'ratio':>22} |")
    print(f"|{'-' * 64}|{'-' * 21}|{'-' * 24}|")
    p, f, s = mean("plain"), mean("first"), mean("second")
    print(row("plain composition (processor → model → post-process → SAM 2)", "plain", "1.00"))
    print(row("textseg, first prompt on a new image", "first", f"{f / p:.2f} × plain"))
    print(row("textseg, second prompt on the same image", "second", f"{s / f:.2f} × first"))
    sf, ss = mean("sfirst"), mean("ssecond")
    print(
        row(f"textseg, first prompt, detector_size={args.small}", "sfirst", f"{sf / p:.2f} × plain")
    )
    print(row(f"textseg, second prompt, detector_size={args.small}", "ssecond",
              f"{ss / sf:.2f} × its first"))  # fmt: skip
    of, os_ = mean("ofirst"), mean("osecond")
    flipped = f"fast_attention={not fast}"
    print(row(f"textseg, first prompt, {flipped}", "ofirst", f"{of / p:.2f} × plain"))
    print(row(f"textseg, second prompt, {flipped}", "osecond", f"{os_ / of:.2f} × its first"))
    for k in parts.seconds:
        print(
            row(
                f"  in the first prompt, GroundingDINO's {k}",
                f"part {k}",
                f"{mean(f'part {k}') / f:.2f} × first",
            )
        )
    print(f"\ntargets: first ≤ 1.0 × plain ({f / p:.2f}), second ≤ 0.5 × first ({s / f:.2f})")
    if args.json:
        figures = {
            "benchmark": "textseg",
            "device": str(device),
            "sam2_dtype": str(rt.dtype).replace("torch.", ""),
            "model_size": size,
            "repeats": args.repeats,
            "s_per_image": {k: round(mean(k), 4) for k in rows},
            "first_over_plain": round(f / p, 3),
            "second_over_first": round(s / f, 3),
        }
        args.json.write_text(json.dumps(figures) + "\n")
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
