"""How big is the message that carries an N-byte file from a FileUpload widget to the kernel?

The guard in textseg.ui refuses files over ``upload_limit()`` before the browser sends them.
This script measures what that limit protects: for files of N bytes it builds the comm message
the browser sends for the installed ipywidgets (8: ``value`` with each file's ``content`` as a
binary buffer; 7, Colab's 7.7.1: ``data`` as binary buffers plus ``metadata`` and ``_counter``),
checks that the widget really takes it (the bytes arrive unchanged through ``_handle_msg``, the
kernel's own path), and prints its size on the two transports:

* binary: Jupyter's binary websocket frame (jupyter_server's ``serialize_binary_message``),
  what Jupyter servers and Voila carry; Tornado drops frames over 10 MiB there;
* base64: the same message as JSON text with each buffer base64-encoded in place, what a
  transport without binary frames has to send (Colab's widget channel did not carry binary
  frames: colabtools#587, colab-cdn-widget-manager#33).

    python benchmarks/bench_upload_message.py
"""

from __future__ import annotations

import base64
import datetime
import json
import sys
import uuid

import ipywidgets

from textseg.ui import COLAB_UPLOAD_LIMIT, JUPYTER_UPLOAD_LIMIT

SIZES = (100_000, 500_000, 700_000, 750_000, 786_000, 1_000_000, 6_000_000, 7_800_000)
TORNADO_LIMIT = 10 * 1024 * 1024  # tornado.websocket._default_max_message_size
COLAB_REPORTED = 1_000_000  # ipywidgets#3452: "can not upload files >= 1MB" on Colab


def browser_state(data: bytes) -> tuple[dict, list[list], list[bytes]]:
    """(state, buffer_paths, buffers) of the update the browser sends for one uploaded file."""
    name, kind, stamp = "photo.jpg", "image/jpeg", 1_700_000_000_000
    if int(ipywidgets.__version__.split(".")[0]) >= 8:
        entry = {"name": name, "type": kind, "size": len(data), "last_modified": stamp}
        return {"value": [{**entry, "content": None}]}, [["value", 0, "content"]], [data]
    meta = {"name": name, "type": kind, "size": len(data), "lastModified": stamp}
    return {"_counter": 1, "metadata": [meta], "data": [None]}, [["data", 0]], [data]


def comm_message(comm_id: str, state: dict, paths: list[list], buffers: list[bytes]) -> dict:
    header = {
        "msg_id": uuid.uuid4().hex, "msg_type": "comm_msg", "username": "user",
        "session": uuid.uuid4().hex, "date": datetime.datetime.now(datetime.UTC).isoformat(),
        "version": "5.3",
    }  # fmt: skip
    content = {
        "comm_id": comm_id,
        "data": {"method": "update", "state": state, "buffer_paths": paths},
    }
    return {
        "header": header, "msg_id": header["msg_id"], "msg_type": "comm_msg",
        "parent_header": {}, "metadata": {}, "content": content, "buffers": buffers,
        "channel": "shell",
    }  # fmt: skip


def binary_size(msg: dict) -> int:
    from jupyter_server.services.kernels.connection.base import serialize_binary_message

    return len(serialize_binary_message(msg))


def base64_size(msg: dict) -> int:
    """The message as one JSON text, each buffer base64-encoded at its path."""
    text = json.loads(json.dumps({k: v for k, v in msg.items() if k != "buffers"}))
    state = text["content"]["data"]["state"]
    for path, buf in zip(text["content"]["data"]["buffer_paths"], msg["buffers"]):
        node = state
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = base64.b64encode(buf).decode("ascii")
    return len(json.dumps(text).encode("utf8"))


def arrives(widget: ipywidgets.FileUpload, msg: dict, data: bytes) -> bool:
    """Deliver the message through the widget's own handler and compare the bytes."""
    # the kernel hands buffers over as memoryviews (ipywidgets 7 calls .tobytes() on them)
    widget._handle_msg(
        {"content": msg["content"], "buffers": [memoryview(b) for b in msg["buffers"]]}
    )
    value = widget.value
    if isinstance(value, dict):  # ipywidgets 7
        content = next(iter(value.values()))["content"]
    else:
        content = value[0]["content"]
    return bytes(content) == data


def largest_file(limit: int, per_byte: float, overhead: int) -> int:
    return int((limit - overhead) / per_byte)


def main() -> None:
    print(f"ipywidgets {ipywidgets.__version__}, Python {sys.version.split()[0]}")
    print(f"{'file bytes':>11} {'binary frame':>13} {'base64 JSON':>12} {'b64/file':>9}  arrives")
    rows = []
    for n in SIZES:
        data = bytes(range(256)) * (n // 256) + bytes(n % 256)
        widget = ipywidgets.FileUpload()
        msg = comm_message(widget.comm.comm_id, *browser_state(data))
        b, t = binary_size(msg), base64_size(msg)
        ok = arrives(widget, msg, data)
        rows.append((n, b, t))
        print(f"{n:>11,} {b:>13,} {t:>12,} {t / n:>9.4f}  {ok}")
        widget.close()
    (n0, b0, t0), (n1, b1, t1) = rows[0], rows[-1]
    b_slope, t_slope = (b1 - b0) / (n1 - n0), (t1 - t0) / (n1 - n0)
    b_over, t_over = round(b0 - b_slope * n0), round(t0 - t_slope * n0)
    print(f"binary: {b_slope:.4f} bytes per file byte + {b_over} bytes")
    print(f"base64: {t_slope:.4f} bytes per file byte + {t_over} bytes")
    print(
        f"largest file under Tornado's {TORNADO_LIMIT:,}-byte frames: binary "
        f"{largest_file(TORNADO_LIMIT, b_slope, b_over):,}, base64 "
        f"{largest_file(TORNADO_LIMIT, t_slope, t_over):,} (textseg's Jupyter limit: "
        f"{JUPYTER_UPLOAD_LIMIT:,})"
    )
    for limit in (COLAB_REPORTED, 1024 * 1024):
        print(
            f"largest file under a {limit:,}-byte message: binary "
            f"{largest_file(limit, b_slope, b_over):,}, base64 "
            f"{largest_file(limit, t_slope, t_over):,} (textseg's Colab limit: "
            f"{COLAB_UPLOAD_LIMIT:,})"
        )


if __name__ == "__main__":
    main()
