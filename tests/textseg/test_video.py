"""Video: a generated 8-frame clip (a red ball moves; a blue box enters at frame 4).

Detection is not under test here, so the finder is `ColourDetector`, a tiny detector whose
behaviour is known: it reads the frame and boxes the pixels of the colour a phrase names.
The id rules (`track_objects`) are checked with a propagator whose masks are known (the
colour blobs it was seeded on), since random-weight SAM 2 masks are noise; SAM 2's real video
predictor (tiny, random weights, textseg.testing) is checked for its wiring: shared weights,
CPU offload, prompts in and per-frame masks out at the clip's size, files and JSON.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from PIL import Image

import textseg
from textseg import TextSegmenter, VideoLoadError, VideoSegmentation
from textseg.detector import Detections
from textseg.testing import make_sample_video
from textseg.video import (
    KeyFrameObjects,
    Sam2VideoPropagator,
    mask_box,
    match_boxes,
    read_video,
    save_video,
    track_objects,
    video_from_json,
    video_to_json,
)
from textseg.video_io import iter_frames, probe_video, write_mp4

H, W, FRAMES, ENTERS = 240, 320, 8, 4  # make_sample_video's defaults: the box enters halfway


def colour_mask(pixels: np.ndarray, colour: str) -> np.ndarray:
    """(H, W) bool: the pixels of the clip's red ball or blue box (tolerant of H.264)."""
    p = np.asarray(pixels).astype(int)
    r, g, b = p[..., 0], p[..., 1], p[..., 2]
    if colour == "red":
        return (r > 150) & (g < 100) & (b < 100)
    if colour == "blue":
        return (b > 150) & (r < 100) & (g < 140)
    raise ValueError(colour)


class ColourDetector:
    """A finder with known behaviour: phrase "red"/"blue" -> the box around that colour's
    pixels (score 0.9), if there are any. Implements the Detector Protocol."""

    def __init__(self) -> None:
        self.sizes: list[tuple[int, int]] = []  # (H, W) of every image it was given

    def check_prompt(self, prompt) -> None:
        pass

    def detect(self, image, prompt, *, box_threshold, text_threshold) -> Detections:
        self.sizes.append((image.height, image.width))
        boxes, ids = [], []
        for k, phrase in enumerate(prompt.phrases):
            mask = colour_mask(np.asarray(image), phrase)
            if mask.sum() >= 4:
                boxes.append(mask_box(mask))
                ids.append(k)
        return Detections(
            boxes=np.array(boxes, np.float32).reshape(-1, 4),
            scores=np.full(len(ids), 0.9, np.float32),
            phrase_ids=np.array(ids, np.int64),
        )


def _needs_av() -> None:
    """Clips are written and read with PyAV (a dependency; the lent GPU machine lacks it)."""
    pytest.importorskip("av")


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> object:
    _needs_av()
    return make_sample_video(tmp_path_factory.mktemp("video") / "clip.mp4")


@pytest.fixture(scope="module")
def decoded(clip) -> list[np.ndarray]:
    return [np.asarray(f) for f in iter_frames(clip)]


# --------------------------------------------------------------------------- the clip


def test_sample_clip_decodes_with_a_moving_ball_and_a_box_entering_halfway(clip, decoded):
    info = probe_video(clip)
    assert info.size == (H, W) and info.fps == pytest.approx(8.0)
    assert len(decoded) == FRAMES and decoded[0].shape == (H, W, 3)
    red_x = [np.nonzero(colour_mask(f, "red"))[1].mean() for f in decoded]
    assert all(b > a + 5 for a, b in zip(red_x, red_x[1:]))  # it moves right every frame
    blue = [int(colour_mask(f, "blue").sum()) for f in decoded]
    assert all(n == 0 for n in blue[:ENTERS]) and all(n > 1000 for n in blue[ENTERS:])
    folder = make_sample_video(clip.parent / "frames")  # the same clip as PNG frames
    assert len(list(iter_frames(folder))) == FRAMES


def test_without_pyav_frames_decode_and_a_video_file_is_one_line(tmp_path, monkeypatch):
    """The lent GPU machine has no PyAV: a folder of frames needs none, a video file says how
    to get it (sys.modules["av"] = None makes `import av` fail, as where it is not installed)."""
    folder = make_sample_video(tmp_path / "frames")  # PNG frames, written without PyAV
    (tmp_path / "clip.mp4").write_bytes(b"not decoded: PyAV is missing")
    monkeypatch.setitem(sys.modules, "av", None)
    assert len(list(iter_frames(folder))) == FRAMES and probe_video(folder).size == (H, W)
    for call in (
        lambda: list(iter_frames(tmp_path / "clip.mp4")),
        lambda: probe_video(tmp_path / "clip.mp4"),
        lambda: write_mp4([np.zeros((H, W, 3), np.uint8)], tmp_path / "out.mp4", fps=8),
    ):
        with pytest.raises(VideoLoadError, match=r"PyAV, which is not installed: pip install av"):
            call()
    assert not (tmp_path / "out.mp4").exists()


# --------------------------------------------------------------------------- id rules


def test_match_boxes_pairs_one_to_one_by_best_iou():
    tracked = np.array([[0, 0, 10, 10], [20, 20, 30, 30]], np.float32)
    found = np.array([[21, 21, 31, 31], [1, 0, 11, 10], [50, 50, 60, 60], [0, 0, 10, 9]])
    # IoU with tracked box 0: [1,0,11,10] 0.82, [0,0,10,9] 0.90 (wins it); [21,21,31,31]
    # with tracked box 1: 0.68; [50,50,60,60] overlaps nothing
    assert match_boxes(found, tracked, iou=0.5) == [1, None, None, 0]
    assert match_boxes(found, tracked, iou=0.85) == [None, None, None, 0]
    assert match_boxes(found, tracked, iou=0.95) == [None, None, None, None]
    assert match_boxes(found, np.zeros((0, 4)), iou=0.5) == [None] * 4
    assert match_boxes(np.zeros((0, 4)), tracked, iou=0.5) == []


class KnownPropagator:
    """Tracks perfectly: each seeded id follows the colour blob its prompt covered.
    lose={id: frame} empties that object's mask from that frame on."""

    def __init__(self, frames: list[np.ndarray], *, lose: dict[int, int] | None = None) -> None:
        self.frames = frames
        self.lose = lose or {}
        self.seeds: list[tuple[int, dict, dict]] = []

    def _colour(self, frame: int, region: np.ndarray) -> str:
        overlap = {c: (colour_mask(self.frames[frame], c) & region).sum() for c in ("red", "blue")}
        return max(overlap, key=overlap.get)

    def seed(self, frame, *, boxes, masks):
        self.seeds.append((frame, dict(boxes), dict(masks)))
        self.start, self.colours = frame, {}
        for obj_id, box in boxes.items():
            region = np.zeros((H, W), bool)
            x0, y0, x1, y1 = (int(round(v)) for v in box)
            region[y0:y1, x0:x1] = True
            self.colours[obj_id] = self._colour(frame, region)
        for obj_id, mask in masks.items():
            self.colours[obj_id] = self._colour(frame, mask)

    def propagate(self, start, last):
        assert start == self.start
        for f in range(start, last + 1):
            out = {}
            for obj_id, colour in self.colours.items():
                mask = colour_mask(self.frames[f], colour)
                if f >= self.lose.get(obj_id, FRAMES + 1):
                    mask[:] = False
                out[obj_id] = np.where(mask, 8.0, -8.0).astype(np.float32)
            yield f, out


def _finder(frames, *, miss: dict[int, set[str]] | None = None):
    detector = ColourDetector()
    prompt = textseg.parse_prompt("red, blue")

    def find(index: int) -> KeyFrameObjects:
        det = detector.detect(
            Image.fromarray(frames[index]), prompt, box_threshold=0, text_threshold=0
        )
        labels = [prompt.phrases[i] for i in det.phrase_ids]
        keep = [i for i, label in enumerate(labels) if label not in (miss or {}).get(index, ())]
        return KeyFrameObjects(det.boxes[keep], det.scores[keep], [labels[i] for i in keep])

    return find


def _ids_per_frame(frames_out) -> list[list[int]]:
    return [sorted(f) for f in frames_out]


def _track(decoded):
    """track_objects on the test clip: key frames every 3 frames, known masks."""
    return track_objects(
        num_frames=FRAMES,
        find=_finder(decoded),
        propagator=KnownPropagator(decoded),
        every=3,
        match_iou=0.5,
    )


def test_ids_stay_stable_and_the_entering_object_gets_a_new_id_at_the_next_detection_frame(
    decoded,
):
    # key frames 0, 3, 6: the box enters at frame 4, so it is found at frame 6
    objects, frames, keys = _track(decoded)
    assert keys == (0, 3, 6)
    assert [(o.id, o.label, o.first_frame, o.last_frame) for o in objects] == [
        (0, "red", 0, 7),
        (1, "blue", 6, 7),
    ]
    assert _ids_per_frame(frames) == [[0]] * 6 + [[0, 1]] * 2
    for f in range(FRAMES):  # and each id holds its own object's mask
        red = colour_mask(decoded[f], "red")
        assert np.array_equal(textseg.decode_rle(frames[f][0].rle), red)
        assert frames[f][0].score == pytest.approx(1 / (1 + np.exp(-8.0)))
        assert np.array_equal(frames[f][0].box, mask_box(red))


def test_a_missed_object_is_carried_by_its_mask_and_a_lost_one_ends(decoded):
    # the finder misses the ball on key frame 3: it keeps id 0, carried by its own mask
    propagator = KnownPropagator(decoded)
    objects, frames, _ = track_objects(
        num_frames=FRAMES,
        find=_finder(decoded, miss={3: {"red"}}),
        propagator=propagator,
        every=3,
        match_iou=0.5,
    )
    assert [o.id for o in objects] == [0, 1] and _ids_per_frame(frames)[3] == [0]
    frame3, boxes, masks = propagator.seeds[1]
    assert frame3 == 3 and not boxes and list(masks) == [0]
    assert np.array_equal(masks[0], colour_mask(decoded[3], "red"))

    # the tracker loses the ball from frame 5: its track ends (last_frame 4) and when the
    # finder sees the ball again on key frame 6 it is a new object with a new id
    objects, frames, _ = track_objects(
        num_frames=FRAMES,
        find=_finder(decoded),
        propagator=KnownPropagator(decoded, lose={0: 5}),
        every=3,
        match_iou=0.5,
    )
    assert [(o.id, o.label, o.first_frame, o.last_frame) for o in objects] == [
        (0, "red", 0, 4),
        (1, "red", 6, 7),
        (2, "blue", 6, 7),
    ]
    assert _ids_per_frame(frames) == [[0]] * 5 + [[]] + [[1, 2]] * 2


def _same_objects(a: VideoSegmentation, b: VideoSegmentation) -> bool:
    def key(o):
        return (o.id, o.label, o.first_frame, o.last_frame, round(o.score, 5))

    return [key(o) for o in a.objects] == [key(o) for o in b.objects]


def test_json_round_trip_is_exact_and_textseg_load_reads_it(decoded, tmp_path):
    objects, frames, keys = _track(decoded)
    vseg = VideoSegmentation(
        objects=objects, frames=frames, image_size=(H, W), fps=8.0, prompt="red. blue.",
        phrases=("red", "blue"), every=3, detection_frames=keys, source="clip.mp4",
    )  # fmt: skip
    path = tmp_path / "segmentation.json"
    path.write_text(json.dumps(video_to_json(vseg)))
    back = textseg.load(tmp_path)
    assert isinstance(back, VideoSegmentation)
    assert _same_objects(back, vseg) and back.detection_frames == keys
    for f in range(FRAMES):
        assert back.ids(f) == vseg.ids(f)
        for i in vseg.ids(f):
            assert np.array_equal(back.mask(f, i), vseg.mask(f, i))
            assert back.frames[f][i].score == pytest.approx(vseg.frames[f][i].score, abs=1e-6)
            assert np.array_equal(back.frames[f][i].box, vseg.frames[f][i].box)
    assert np.array_equal(back.masks(1), vseg.masks(1))
    seg = back.frame(7)  # a frame as an image Segmentation
    assert seg.labels == ["red", "blue"] and seg.masks.shape == (2, H, W)
    with pytest.raises(ValueError, match="not a textseg"):
        video_from_json({"kind": "video", "image": {"height": 1}})


def test_save_video_refuses_another_clip_and_leaves_the_folder_as_it_was(decoded, clip, tmp_path):
    objects, frames, keys = _track(decoded)
    vseg = VideoSegmentation(
        objects=objects, frames=frames, image_size=(H, W), fps=8.0, prompt="red. blue.",
        phrases=("red", "blue"), every=3, detection_frames=keys, source=str(clip),
    )  # fmt: skip
    out = tmp_path / "out"
    files = save_video(vseg, out)  # a complete result first
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert set(before) == {"overlay.mp4", "preview.gif", "segmentation.json"}
    assert len(list(iter_frames(files.overlay))) == FRAMES
    shorter = make_sample_video(tmp_path / "short.mp4", frames=5)
    other_size = make_sample_video(tmp_path / "small.mp4", height=120, width=160)
    for wrong, message in [(shorter, "holds 5 frames"), (other_size, "frames are 120x160")]:
        with pytest.raises(VideoLoadError, match=message):
            save_video(vseg, out, video=wrong)
        assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # untouched, no temp


# --------------------------------------------------------------------------- bad input


def test_bad_videos_give_one_line_errors(tmp_path, clip, monkeypatch):
    cases = {}
    cases["missing.mp4"] = tmp_path / "missing.mp4"
    (tmp_path / "empty.mp4").write_bytes(b"")
    cases["empty"] = tmp_path / "empty.mp4"
    (tmp_path / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 20)
    cases["corrupt"] = tmp_path / "corrupt.mp4"
    data = clip.read_bytes()
    (tmp_path / "truncated.mp4").write_bytes(data[: len(data) // 2])
    cases["truncated"] = tmp_path / "truncated.mp4"
    (tmp_path / "noframes").mkdir()
    cases["no frames"] = tmp_path / "noframes"
    Image.new("RGB", (8, 8)).save(tmp_path / "still.png")
    cases["an image"] = tmp_path / "still.png"
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    Image.new("RGB", (8, 8)).save(mixed / "1.png")
    Image.new("RGB", (9, 8)).save(mixed / "2.png")
    cases["mixed sizes"] = mixed
    import av

    # a video file whose frames change size: two MPEG-TS streams end to end (as `cat` joins
    # them); read as one clip, frame 3 is 64x96 after three 32x48 frames
    parts = [_encode(tmp_path / f"part{h}.ts", [np.zeros((h, w, 3), np.uint8)] * 3, fmt="mpegts")
             for h, w in [(32, 48), (64, 96)]]  # fmt: skip
    (tmp_path / "resized.mpg").write_bytes(b"".join(part.read_bytes() for part in parts))
    cases["frames change size"] = tmp_path / "resized.mpg"

    with av.open(str(tmp_path / "zero.mp4"), "w", format="mp4") as c:  # header, no frame
        s = c.add_stream("libx264", rate=8)
        s.width, s.height, s.pix_fmt = 64, 64, "yuv420p"
        c.start_encoding()
    cases["zero frames"] = tmp_path / "zero.mp4"
    expected = {
        "missing.mp4": "no such file",
        "empty": "empty",
        "corrupt": "not a video",
        "truncated": "not a video",
        "no frames": "no image frames",
        "an image": "is an image, not a video",
        "mixed sizes": "all frames must have one size",
        "frames change size": "frame 3 is 64x96 (H x W) but the first frame is 32x48",
        "zero frames": "zero-frame",
    }
    for name, path in cases.items():
        with pytest.raises(VideoLoadError) as info:
            list(iter_frames(path))
        message = str(info.value)
        assert expected[name] in message and "\n" not in message, (name, message)
        assert path.name in message
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)
    with pytest.raises(VideoLoadError, match="downscale the video"):
        probe_video(clip)


def _encode(path, frames, *, fmt="mp4", rotation=None):
    """Write (H, W, 3) uint8 frames with PyAV as H.264, optionally with a display rotation
    (counter-clockwise degrees, what a phone writes for a clip filmed upright)."""
    import av

    with av.open(str(path), "w", format=fmt) as container:
        stream = container.add_stream("libx264", rate=8)
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        if rotation is not None:
            stream.set_display_rotation(rotation)
        for pixels in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")))
        container.mux(stream.encode(None))
    return path


@pytest.mark.parametrize(("rotation", "red_side"), [(90, "bottom"), (-90, "top"), (180, "right")])
def test_a_phone_clip_is_read_upright_as_players_show_it(tmp_path, rotation, red_side):
    """A phone stores a clip filmed upright as landscape frames plus a display rotation;
    frames, masks and overlay must be upright (FFmpeg's autorotate: 90 counter-clockwise)."""
    _needs_av()
    stored = np.full((64, 96, 3), 128, np.uint8)
    stored[:, :16] = (220, 30, 30)  # red on the stored frame's left edge
    clip = _encode(tmp_path / "phone.mp4", [stored] * 3, rotation=rotation)
    frames = [np.asarray(f) for f in iter_frames(clip)]
    upright = (96, 64, 3) if rotation in (90, -90) else (64, 96, 3)
    assert len(frames) == 3 and all(f.shape == upright for f in frames)
    red = colour_mask(frames[0], "red")
    edge = {"bottom": red[-1], "top": red[0], "right": red[:, -1], "left": red[:, 0]}
    assert {side for side, pixels in edge.items() if pixels.all()} == {red_side}
    assert read_video(clip, image_size=32, every=2).size == upright[:2]


def test_write_mp4_pads_odd_sizes_and_reads_back(tmp_path):
    _needs_av()
    frames = [np.full((33, 45, 3), 40 * i, np.uint8) for i in range(3)]
    assert write_mp4(frames, tmp_path / "odd.mp4", fps=5) == 3
    back = list(iter_frames(tmp_path / "odd.mp4"))
    assert len(back) == 3 and back[0].size == (46, 34)


# --------------------------------------------------------------------------- SAM 2


@pytest.fixture(scope="module")
def sam2_segmenter(text_segmenter):
    return text_segmenter.segmenter


@pytest.mark.slow
def test_the_video_predictor_shares_the_image_models_weights(sam2_segmenter):
    from sam2.sam2_video_predictor import SAM2VideoPredictor

    image_model = sam2_segmenter.predictor.model
    video = Sam2VideoPropagator(sam2_segmenter).predictor
    assert isinstance(video, SAM2VideoPredictor) and video is not image_model
    pairs = list(zip(video.state_dict().items(), image_model.state_dict().items()))
    assert len(pairs) == len(image_model.state_dict()) > 100
    for (name_v, v), (name_i, i) in pairs:
        assert name_v == name_i and v.data_ptr() == i.data_ptr()  # the same memory


@pytest.mark.slow
def test_sam2_propagator_takes_prompts_and_yields_masks_at_the_clip_size(
    sam2_segmenter, clip, decoded
):
    propagator = Sam2VideoPropagator(sam2_segmenter)
    frames = read_video(clip, image_size=propagator.image_size, every=3, max_frames=6)
    assert len(frames) == 6 and sorted(frames.key_images) == [0, 3]
    propagator.start(frames)
    state = propagator.state
    assert state["offload_video_to_cpu"] and state["offload_state_to_cpu"]
    assert state["storage_device"].type == "cpu" and state["num_frames"] == 6
    assert (state["video_height"], state["video_width"]) == (H, W)
    red = colour_mask(decoded[3], "red")
    propagator.seed(3, boxes={7: mask_box(colour_mask(decoded[3], "red"))}, masks={4: red})
    out = list(propagator.propagate(3, 5))
    assert [f for f, _ in out] == [3, 4, 5]
    for _, logits in out:
        assert sorted(logits) == [4, 7]
        assert all(lg.shape == (H, W) and lg.dtype == np.float32 for lg in logits.values())
    # SAM 2 takes a mask prompt as its output on the prompted frame: it must come back
    # where we put it (coordinates, size and orientation wired right)
    seeded = out[0][1][4] > 0
    assert (seeded & red).sum() / (seeded | red).sum() > 0.9


@pytest.mark.slow
def test_sam2_state_is_bounded_by_the_key_frame_stride(sam2_segmenter, clip, decoded):
    """What lets a long clip fit a T4 (with the CPU offload checked above): SAM 2's stored
    memory never spans more than one stretch between key frames."""
    propagator = Sam2VideoPropagator(sam2_segmenter)
    frames = read_video(clip, image_size=propagator.image_size, every=2)
    propagator.start(frames)
    stored: list[int] = []
    propagate = propagator.propagate

    def watched(start, last):
        yield from propagate(start, last)
        for per_obj in propagator.state["output_dict_per_obj"].values():
            outs = {**per_obj["cond_frame_outputs"], **per_obj["non_cond_frame_outputs"]}
            stored.append(len(outs))

    propagator.propagate = watched
    find = _finder(decoded)
    objects, frames_out, keys = track_objects(
        num_frames=FRAMES, find=find, propagator=propagator, every=2, match_iou=0.5
    )
    assert keys == (0, 2, 4, 6) and len(stored) >= len(keys)
    assert max(stored) <= 3  # frames key..key+2 only, however long the clip
    assert all(len(f) >= 1 for f in frames_out[:ENTERS])  # one result per frame and object


@pytest.mark.slow
def test_segment_video_end_to_end_writes_files_that_load_back(sam2_segmenter, clip, tmp_path):
    ts = TextSegmenter(ColourDetector(), sam2_segmenter)
    vseg = ts.segment_video(clip, "Red, blue.", every=4, progress=False)
    assert vseg.num_frames == FRAMES and vseg.image_size == (H, W)
    assert vseg.detection_frames == (0, 4) and vseg.prompt == "red. blue."
    assert vseg.source == str(clip) and vseg.fps == pytest.approx(8.0)
    assert [o.id for o in vseg.objects] == list(range(len(vseg.objects)))
    assert vseg.objects[0].label == "red" and vseg.objects[0].first_frame == 0
    assert all(o.first_frame in vseg.detection_frames for o in vseg.objects)
    # the box is in view from frame 4 on, so it is found at detection frame 4, not before
    assert [o.first_frame for o in vseg.objects if o.label == "blue"] == [4]
    assert all(0 in vseg.frames[f] for f in range(ENTERS))  # tracked until frame 4 at least
    files = save_video(vseg, tmp_path / "out")
    assert {p.name for p in (tmp_path / "out").iterdir()} == {
        "overlay.mp4",
        "preview.gif",
        "segmentation.json",
    }
    overlay_frames = list(iter_frames(files.overlay))
    assert len(overlay_frames) == FRAMES and overlay_frames[0].size == (W, H)
    gif = Image.open(files.preview)
    assert gif.n_frames == FRAMES and gif.size == (W, H)
    back = textseg.load(tmp_path / "out")
    assert isinstance(back, VideoSegmentation) and _same_objects(back, vseg)
    for f in range(FRAMES):
        assert back.ids(f) == vseg.ids(f)
        for i in vseg.ids(f):
            mask = back.mask(f, i)
            assert mask.shape == (H, W) and np.array_equal(mask, vseg.mask(f, i))


@pytest.mark.slow
def test_frames_folder_max_frames_and_large_frames_on_a_working_copy(
    sam2_segmenter, clip, tmp_path
):
    folder = make_sample_video(tmp_path / "frames", height=H, width=W)
    detector = ColourDetector()
    ts = TextSegmenter(detector, sam2_segmenter, max_side=80)  # frames are worked on small
    vseg = ts.segment_video(folder, "red", every=2, max_frames=5, fps=10, progress=False)
    assert vseg.num_frames == 5 and vseg.fps == 10 and vseg.detection_frames == (0, 2, 4)
    assert detector.sizes == [(60, 80)] * 3  # the finder saw the downscaled copies
    assert all(m.shape == (H, W) for f in range(5) for m in vseg.frame(f).masks)
    with pytest.raises(ValueError, match="every must be"):
        ts.segment_video(folder, "red", every=0)
    with pytest.raises(ValueError, match="max_frames must be"):
        ts.segment_video(folder, "red", max_frames=0)
    with pytest.raises(VideoLoadError, match="no such file"):
        ts.segment_video(tmp_path / "nope.mp4", "red")


def test_swapped_names_may_overlap_and_end_in_any_order():
    """sam2's tqdm is swapped while a propagate generator is alive; two clips' generators
    (or threads) may overlap and end in any order, and the original must come back."""
    from types import SimpleNamespace

    from textseg.sam2_video import _swapped

    module = SimpleNamespace(__name__="fake_sam2", tqdm="original")

    def propagate():
        with _swapped(module, "tqdm", "quiet"):
            yield module.tqdm
            yield module.tqdm

    first, second = propagate(), propagate()
    assert next(first) == next(second) == "quiet"
    first.close()  # the first one to start ends first
    assert module.tqdm == "quiet"  # the second is still running
    second.close()
    assert module.tqdm == "original"
    with _swapped(module, "tqdm", "a"):
        with pytest.raises(RuntimeError, match="already replaced"):
            with _swapped(module, "tqdm", "b"):
                pass
        assert module.tqdm == "a"
    assert module.tqdm == "original"
