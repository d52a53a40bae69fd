"""Seconds per frame of textseg's video path at real model sizes (random weights, nothing
downloaded), against the image path run on every frame, measured in the same run.

Builds grounding-dino-tiny's architecture (~172M parameters) and sam2.1_hiera_t as
released (~39M) with random weights via textseg.testing, loads them through
TextSegmenter.from_pretrained(<local folders>), generates a clip with
textseg.testing.make_sample_video and times:

    decode      PyAV decoding + SAM 2's resized uint8 copy of every frame
    finder      GroundingDINO on the key frames (every --every frames)
    tracking    SAM 2's video predictor: image encoder + memory attention + mask decoder
                + memory encoder per frame and object
    total       segment_video, all of the above
    write       save_video: overlay.mp4 + preview.gif + segmentation.json
    baseline    TextSegmenter.segment on single frames (finder + SAM 2 image path on
                every frame), on --baseline-frames frames

Random weights make the number of detections arbitrary, so every key frame keeps exactly
--objects boxes (box_threshold=0 with max_objects); SAM 2 may still lose some of them.
Wall seconds and process CPU seconds (all threads) are both printed.

    python benchmarks/bench_video.py                          # CPU, 8 frames of 640x480
    python benchmarks/bench_video.py --device cuda --frames 64
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path


class _Clock:
    """Wall and process-CPU seconds of a block, GPU work included."""

    def __enter__(self) -> _Clock:
        import torch

        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc) -> None:
        import torch

        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.wall, self.cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu


class _TimedDetector:
    """Delegates to a detector and adds up the time its detect() takes."""

    def __init__(self, detector) -> None:
        self.detector, self.wall, self.cpu, self.calls = detector, 0.0, 0.0, 0

    def check_prompt(self, prompt) -> None:
        self.detector.check_prompt(prompt)

    def detect(self, image, prompt, **kwargs):
        with _Clock() as clock:
            found = self.detector.detect(image, prompt, **kwargs)
        self.wall, self.cpu, self.calls = (
            self.wall + clock.wall,
            self.cpu + clock.cpu,
            self.calls + 1,
        )
        return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto (default cpu)")
    parser.add_argument("--frames", type=int, default=8, help="clip length (default 8)")
    parser.add_argument("--every", type=int, default=4, help="detection stride (default 4)")
    parser.add_argument("--objects", type=int, default=3, help="boxes kept per key frame")
    parser.add_argument("--baseline-frames", type=int, default=2, help="frames for the baseline")
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument(
        "--models", type=Path, default=None, help="reuse/keep models in this folder"
    )
    args = parser.parse_args()

    import torch

    from textseg import TextSegmenter, save_video
    from textseg.testing import make_grounding_dino, make_sam2, make_sample_video
    from textseg.video import read_video
    from textseg.video_io import iter_frames

    tmp = tempfile.TemporaryDirectory()
    root = args.models or Path(tmp.name)
    dino, sam = root / "grounding-dino-tiny-random", root / "sam2.1-hiera-tiny-random"
    if not (dino / "config.json").is_file():
        make_grounding_dino(dino, size="tiny")
    if not (sam / "model.pt").is_file():
        make_sam2(sam, size="tiny")
    ts = TextSegmenter.from_pretrained(detector=dino, segmenter=sam, device=args.device)
    clip = make_sample_video(
        Path(tmp.name) / "clip.mp4", frames=args.frames, height=args.height, width=args.width
    )
    prompt = "red ball, blue box"
    opts = dict(box_threshold=0.0, text_threshold=0.0, max_objects=args.objects)
    frames = list(iter_frames(clip))
    ts.segment(frames[0], prompt, **opts)  # one-off start-up costs, not timed
    rss_models = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    image_size = int(ts.segmenter.predictor.model.image_size)
    with _Clock() as decode:
        read_video(clip, image_size=image_size, every=args.every)
    timed = _TimedDetector(ts.detector)
    video_ts = TextSegmenter(timed, ts.segmenter)
    with _Clock() as total:
        vseg = video_ts.segment_video(clip, prompt, every=args.every, progress=False, **opts)
    rss_video = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    with _Clock() as write:
        save_video(vseg, Path(tmp.name) / "out")
    baseline = []
    for frame in frames[: args.baseline_frames]:
        ts.segmenter.reset()
        with _Clock() as one:
            ts.segment(frame, prompt, **opts)
        baseline.append(one)

    n = vseg.num_frames
    per_frame_objects = sum(len(f) for f in vseg.frames) / n
    track_wall = total.wall - decode.wall - timed.wall
    track_cpu = total.cpu - decode.cpu - timed.cpu
    base_wall = sum(b.wall for b in baseline) / len(baseline)
    base_cpu = sum(b.cpu for b in baseline) / len(baseline)
    device = ts.segmenter.runtime.device

    def row(name: str, wall: float, cpu: float, per: int, unit: str) -> str:
        return f"| {name:<46} | {wall / per:>10.2f} | {cpu / per:>10.2f} | {unit:<9} |"

    print(
        f"\ntextseg video, real-size random weights: grounding-dino-tiny + sam2.1-hiera-tiny; "
        f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    print(
        f"clip {args.width}x{args.height}, {n} frames, finder every {args.every} frames "
        f"({timed.calls} key frames), {args.objects} boxes per key frame, "
        f"{per_frame_objects:.1f} objects tracked per frame on average\n"
    )
    print(f"| {'step':<46} | {'wall s':>10} | {'CPU s':>10} | {'per':<9} |")
    print(f"|{'-' * 48}|{'-' * 12}|{'-' * 12}|{'-' * 11}|")
    print(row("decode (PyAV + SAM 2 input copy)", decode.wall, decode.cpu, n, "frame"))
    print(row("finder (GroundingDINO)", timed.wall, timed.cpu, timed.calls, "key frame"))
    print(row("tracking (SAM 2 video predictor)", track_wall, track_cpu, n, "frame"))
    print(row("segment_video, total", total.wall, total.cpu, n, "frame"))
    print(row("save_video (MP4 + GIF + JSON)", write.wall, write.cpu, n, "frame"))
    print(row("baseline: segment() on every frame", base_wall, base_cpu, 1, "frame"))
    print(f"\nsegment_video / baseline per frame = {total.wall / n / base_wall:.2f} (wall)")
    print(
        f"peak RSS: {rss_models:.0f} MB after loading the models, {rss_video:.0f} MB after the clip"
    )
    tmp.cleanup()


if __name__ == "__main__":
    main()
