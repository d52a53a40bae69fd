"""textseg: segment what you describe in words — GroundingDINO finds, SAM 2 paints.

    from textseg import TextSegmenter, overlay, save
    ts = TextSegmenter.from_pretrained()          # grounding-dino-tiny + SAM 2.1 (hub)
    seg = ts.segment("photo.jpg", "skateboard, cap")
    overlay("photo.jpg", seg).show(); save(seg, "out/")
    vseg = ts.segment_video("clip.mp4", "skateboard, cap", every=10)   # tracked, stable ids
    save_video(vseg, "out/clip")                  # overlay.mp4, preview.gif, segmentation.json
    label_dataset(ts, "photos/", "car, person", out="dataset/")  # COCO annotations.json, resumable
    ts.segment("photo.jpg", boxes=[(10, 20, 200, 180)], points=[(300, 90)])  # straight to SAM 2
    TextSegmenter.from_pretrained(backend="sam3")  # SAM 3 finds and masks (gated on the hub)

Importing textseg loads neither torch models nor sam2 and picks no device.
"""

from textseg.draw import overlay
from textseg.errors import (
    ImageLoadError,
    LabelError,
    ModelLoadError,
    PromptError,
    TextsegError,
    VideoLoadError,
)
from textseg.export import load, save, save_video
from textseg.images import load_image
from textseg.label import LabelSummary, label_dataset
from textseg.parts import SegmentOptions
from textseg.pipeline import TextSegmenter
from textseg.prompt import parse_prompt
from textseg.result import BatchItem, Segmentation, VideoObject, VideoSegmentation
from textseg.review_log import ReviewError, export_reviewed, merge_reviews
from textseg.rle import decode_rle, encode_rle

__all__ = [
    "BatchItem",
    "ImageLoadError",
    "LabelError",
    "LabelSummary",
    "ModelLoadError",
    "PromptError",
    "ReviewError",
    "SegmentOptions",
    "Segmentation",
    "TextSegmenter",
    "TextsegError",
    "VideoLoadError",
    "VideoObject",
    "VideoSegmentation",
    "decode_rle",
    "encode_rle",
    "export_reviewed",
    "label_dataset",
    "load",
    "load_image",
    "merge_reviews",
    "overlay",
    "parse_prompt",
    "save",
    "save_video",
]

__version__ = "0.1.0"
