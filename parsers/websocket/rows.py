"""The ``ws_messages`` table: its schema and the row converters of WebSocket
messages (text payloads redacted on the way)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from ..protocols.columns import (
    MESSAGE_KEY,
    concat,
    field,
    in_groups,
    per_row,
    repeat,
    schema,
    to_text,
    ts_array,
)
from .session import OPCODE_NAMES, Opcode, WsMessage, WsMessageRun

WS_MESSAGES = schema(
    *MESSAGE_KEY,
    field("opcode", pa.string(), "text, binary, close, ping, pong"),
    field("fin", pa.bool_(), "False when the message was cut off by the end of the capture"),
    field("frames", pa.int32(), "Frames the message was assembled from"),
    field("compressed", pa.bool_(), "permessage-deflate (RSV1) message"),
    field("masked", pa.bool_(), "Frames were masked (client to server)"),
    field(
        "payload",
        pa.string(),
        "Text payload (inflated, secrets redacted); binary payloads "
        "as UTF-8 with invalid bytes replaced",
    ),
    field("message_length", pa.int64(), "Payload bytes of the message (its frames joined), "
          "after inflating"),
    field("wire_length", pa.int64(), "Bytes of all its frames on the wire"),
    field("payload_truncated", pa.bool_(), "Payload over the cap (message or inflate bomb)"),
    field("close_code", pa.int32(), "Close frame status code"),
    field(
        "payload_unknown",
        pa.int64(),
        "Capture began mid-connection: payload bytes that copy inflate history from "
        "before it (they read as NUL, so the message is never matched); null when all known",
    ),
)

_OPCODES = np.array([OPCODE_NAMES.get(i) for i in range(16)], dtype=object)


def message_row(e: WsMessage) -> tuple[Any, ...]:
    from ..redact import redact_json_text  # (imported with the first row)

    payload = to_text(e.payload)
    if e.opcode == "text":
        payload = redact_json_text(payload)
    return (
        e.ts_first, e.ts_last, e.flow_id, e.direction, e.stream_offset, e.opcode, e.fin,
        e.frames, e.compressed, e.masked, payload, e.message_length, e.wire_length,
        e.payload_truncated, e.close_code, e.payload_unknown,
    )


def message_batch(events: list[WsMessageRun]) -> list[pa.Array | pa.ChunkedArray]:
    return in_groups(events, lambda e: len(e.payload), message_group)


def message_group(events: list[WsMessageRun]) -> list[pa.Array]:
    from ..redact import redact_json_texts

    """``message_row`` for batch events whose payloads together fit a ``pa.string()`` array."""
    datas = [np.frombuffer(e.payload, dtype=np.uint8) for e in events]
    sizes = np.array([x.size for x in datas], dtype=np.int64)
    bases = np.cumsum(sizes) - sizes
    n = sum(e.payload_ends.size for e in events)
    offsets = np.zeros(n + 1, dtype=np.int32)
    offsets[1:] = np.concatenate([e.payload_ends + b for e, b in zip(events, bases, strict=True)])
    raw = pa.Array.from_buffers(pa.binary(), n, [None, pa.py_buffer(offsets),
                                                 pa.py_buffer(np.concatenate(datas))])
    try:
        text = raw.cast(pa.string())
    except pa.ArrowInvalid:  # not UTF-8: decoded with replacement, as _text does
        text = pa.array([to_text(b) for b in raw.to_pylist()], type=pa.string())
    opcode = concat(events, "opcode")
    is_text = opcode == Opcode.TEXT
    if is_text.any():
        text = redact_json_texts(text, is_text)
    return [
        ts_array(concat(events, "ts_first")), ts_array(concat(events, "ts_last")),
        per_row(events, "flow_id", pa.int64()), per_row(events, "direction", pa.string()),
        pa.array(concat(events, "stream_offset")), pa.array(_OPCODES[opcode], pa.string()),
        repeat(True, n, pa.bool_()), repeat(1, n, pa.int32()),
        pa.array(concat(events, "compressed")), per_row(events, "masked", pa.bool_()),
        text, pa.array(np.diff(offsets).astype(np.int64)), pa.array(concat(events, "wire_length")),
        pa.array(concat(events, "truncated")), repeat(None, n, pa.int32()),
        repeat(None, n, pa.int64()),  # a batch is never mid-stream inflate (see session)
    ]
