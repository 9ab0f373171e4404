"""The ``fix_messages`` table: its schema and the row converters of FIX messages
(secret tags redacted on the way)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..protocols.columns import (
    MESSAGE_KEY,
    field,
    in_groups,
    offsets,
    per_row,
    repeat,
    schema,
    ts_array,
)
from .events import (
    RUN_BODY_LENGTH,
    RUN_FIELD_COUNT,
    RUN_NAMED,
    RUN_NAMED_FIRST,
    RUN_POSS_DUP,
    RUN_RAW_LENGTH,
    RUN_SEQ_NUM,
    RUN_SEQ_OK,
    RUN_STREAM_OFFSET,
    RUN_TS_FIRST,
    RUN_TS_LAST,
    FixMessage,
    FixMessageRun,
)

FIX_FIELD = pa.struct([("tag", pa.int32()), ("value", pa.string())])

FIX_MESSAGES = schema(
    *MESSAGE_KEY,
    field("begin_string", pa.string(), "8 BeginString (FIX.4.4, FIXT.1.1 ...)"),
    field("msg_type", pa.string(),
          "35 MsgType (D new order, F cancel, G amend, 8 exec report ...)"),
    field("seq_num", pa.int64(), "34 MsgSeqNum"),
    field("sender_comp_id", pa.string(), "49 SenderCompID"),
    field("target_comp_id", pa.string(), "56 TargetCompID"),
    field("sending_time", pa.string(), "52 SendingTime as sent"),
    field("cl_ord_id", pa.string(), "11 ClOrdID"),
    field("orig_cl_ord_id", pa.string(), "41 OrigClOrdID"),
    field("order_id", pa.string(), "37 OrderID"),
    field("exec_type", pa.string(), "150 ExecType"),
    field("ord_status", pa.string(), "39 OrdStatus"),
    field("text", pa.string(), "58 Text"),
    field("poss_dup", pa.bool_(), "43 PossDupFlag = Y"),
    field("checksum_ok", pa.bool_(), "10 CheckSum verified"),
    field("body_length", pa.int64(), "9 BodyLength"),
    field("raw_length", pa.int64(), "Bytes of the whole message"),
    field("fields", pa.list_(FIX_FIELD), "All fields in order (secret tags redacted)"),
)


def message_row(e: FixMessage) -> tuple[Any, ...]:
    from ..redact import redact_fix_fields  # (``redact``: imported with the first row)

    return (
        e.ts_first, e.ts_last, e.flow_id, e.direction, e.stream_offset, e.begin_string,
        e.msg_type, e.msg_seq_num, e.sender_comp_id, e.target_comp_id, e.sending_time,
        e.cl_ord_id, e.orig_cl_ord_id, e.order_id, e.exec_type, e.ord_status, e.text,
        e.poss_dup, e.checksum_ok, e.body_length, e.raw_length,
        [{"tag": t, "value": v} for t, v in redact_fix_fields(e.fields)],
    )


_FIX_FIELDS_TYPE = FIX_MESSAGES.field("fields").type


def message_batch(events: list[FixMessageRun]) -> list[pa.Array | pa.ChunkedArray]:
    """``message_row`` for batch events: the same columns, built from the flat fields.

    ``fields`` values are redacted exactly as ``redact_fix_fields`` does (by tag,
    value -> ``REDACTED``); the named columns are never secret tags and are taken
    unredacted, as ``message_row`` takes them from the message."""
    return in_groups(events, lambda e: e.values.size, message_group)


def message_group(events: list[FixMessageRun]) -> list[pa.Array]:
    m = np.concatenate([e.messages for e in events])
    flat = np.concatenate([e.fields for e in events])
    tags = flat[:, 0]
    values = pa.StringArray.from_buffers(  # ASCII only (the batch path takes no other)
        tags.size, pa.py_buffer(offsets(flat[:, 1])),
        pa.py_buffer(np.concatenate([e.values for e in events])))
    from ..redact import REDACTED, SENSITIVE_FIX_TAGS

    secret = np.isin(tags, np.array(sorted(SENSITIVE_FIX_TAGS), dtype=np.int64))
    shown = pc.if_else(pa.array(secret), pa.scalar(REDACTED), values) if secret.any() else values
    field_offsets = offsets(m[:, RUN_FIELD_COUNT])
    fields = pa.ListArray.from_arrays(
        pa.array(field_offsets),
        pa.StructArray.from_arrays([pa.array(tags, pa.int32()), shown],
                                   fields=list(_FIX_FIELDS_TYPE.value_type)),
        type=_FIX_FIELDS_TYPE)
    named = m[:, RUN_NAMED_FIRST:]
    missing = named < 0
    named = named + field_offsets[:-1, None]
    text = {name: pc.take(values, pa.array(named[:, c], mask=missing[:, c]))
            for c, (name, _) in enumerate(RUN_NAMED)}
    n = m.shape[0]
    return [
        ts_array(m[:, RUN_TS_FIRST]), ts_array(m[:, RUN_TS_LAST]),
        per_row(events, "flow_id", pa.int64()), per_row(events, "direction", pa.string()),
        pa.array(m[:, RUN_STREAM_OFFSET]), text["begin_string"], text["msg_type"],
        pa.array(m[:, RUN_SEQ_NUM], pa.int64(), mask=m[:, RUN_SEQ_OK] == 0),
        text["sender_comp_id"], text["target_comp_id"], text["sending_time"],
        text["cl_ord_id"], text["orig_cl_ord_id"], text["order_id"], text["exec_type"],
        text["ord_status"], text["text"], pa.array(m[:, RUN_POSS_DUP] != 0),
        repeat(True, n, pa.bool_()), pa.array(m[:, RUN_BODY_LENGTH]),
        pa.array(m[:, RUN_RAW_LENGTH]), fields,
    ]


