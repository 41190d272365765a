"""Dead-letter records: what goes to `<prefix>/dlq` for a message (or a point) that cannot be written.

One JSON object per record (docs/cloud-ingest.md, "Dead letters"):

    {"v": 1, "time_ns": ..., "receiver": "<client id>", "stage": "parse" | "write", "reason": "<one line>",
     "topic": "<original topic>", "payload_encoding": "utf-8" | "base64", "payload": "...",
     "payload_size": <bytes>, "truncated": false}

`stage` "parse": the message failed parsing or validation; `payload` is the message as received.
`stage` "write": the database refused one point of an otherwise good message (a 400 partial write);
`payload` is that point's line-protocol line and `topic` the topic of the message that carried it.
The payload is copied as text when it is valid UTF-8, else base64, and cut at `max_payload` bytes (`truncated`).
"""

from __future__ import annotations

import base64

import orjson

VERSION = 1


def record(
    *,
    topic: str,
    payload: bytes,
    reason: str,
    stage: str,
    time_ns: int,
    receiver: str,
    max_payload: int = 65536,
) -> bytes:
    size = len(payload)
    truncated = size > max_payload
    body = payload[:max_payload] if truncated else payload
    try:
        text, encoding = _decode_utf8(body, truncated), "utf-8"
    except UnicodeDecodeError:
        text, encoding = base64.b64encode(body).decode("ascii"), "base64"
    return orjson.dumps({
        "v": VERSION,
        "time_ns": time_ns,
        "receiver": receiver,
        "stage": stage,
        "reason": " ".join(reason.split()),  # one line, whatever the parser put in it
        "topic": topic,
        "payload_encoding": encoding,
        "payload": text,
        "payload_size": size,
        "truncated": truncated,
    })


def _decode_utf8(body: bytes, truncated: bool) -> str:
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        if not truncated:
            raise
    # The cut may have split a character (at most 4 bytes): dropping up to 3 trailing bytes undoes that.
    for cut in range(1, 4):
        try:
            return body[:-cut].decode("utf-8")
        except UnicodeDecodeError:
            continue
    raise UnicodeDecodeError("utf-8", body, 0, len(body), "not UTF-8")


def payload_bytes(rec: dict[str, object]) -> bytes:
    """The (possibly truncated) original payload of a decoded record."""
    text = str(rec["payload"])
    return base64.b64decode(text) if rec["payload_encoding"] == "base64" else text.encode("utf-8")
