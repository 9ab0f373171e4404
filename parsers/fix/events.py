"""FIX's events and framing constants: what the registry's FIX spec, the row converters
and the session share (``FixMessage``, ``FixMessageRun``, BeginString/BodyLength
framing, the tags read), without the session and its compiled scan, which are imported
with the first FIX connection."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from ..events import Direction

LAYER = "fix"

# --- Framing constants (FIX spec, "Message Format" / "CheckSum calculation") ---
SOH = 0x01
BEGIN_PREFIX = b"8=FIX"
"""Every FIX 4.x BeginString and FIXT.1.1 starts like this; what hunting looks for."""
TRAILER_LEN = 7
"""``10=ddd<SOH>``: CheckSum is always three digits."""
MAX_BEGIN_STRING_FIELD = 32
"""Cap on ``8=...<SOH>``: the longest real BeginString is ``FIXT.1.1`` (8 chars)."""
MAX_BODY_LENGTH_DIGITS = 10
"""Cap on the digits of ``9=``: anything longer is not a length but garbage."""
HEADER_START = re.compile(rb"8=FIX[!-~]{1,%d}\x019=[0-9]{1,%d}\x01" % (
    MAX_BEGIN_STRING_FIELD - len(BEGIN_PREFIX) - 1, MAX_BODY_LENGTH_DIGITS))
"""BeginString then BodyLength, the two fields every FIX message starts with
(what detection and mid-stream resync look for)."""
DEFAULT_MAX_MESSAGE = 1 << 20
"""Default cap (bytes) on one message, and so on each direction's buffer."""
MAX_TAG = (1 << 31) - 1
"""fix_messages.fields tags are int32: a larger "tag" is a bad field (the batch
path leaves such a message to the general path)."""
MAX_SEQ_NUM = (1 << 63) - 1  # msg_seq_num is int64: a larger one reads as NULL

# Length-prefixed data fields: length tag -> data tag (FIX 4.4 / 5.0 data types
# "Length" + "data"). Their values may contain SOH, so their length governs.
DATA_FIELDS: dict[int, int] = {
    90: 91,  # SecureDataLen -> SecureData
    93: 89,  # SignatureLength -> Signature
    95: 96,  # RawDataLength -> RawData
    212: 213,  # XmlDataLen -> XmlData
    348: 349,  # EncodedIssuerLen
    350: 351,  # EncodedSecurityDescLen
    352: 353,  # EncodedListExecInstLen
    354: 355,  # EncodedTextLen
    356: 357,  # EncodedSubjectLen
    358: 359,  # EncodedHeadlineLen
    360: 361,  # EncodedAllocTextLen
    362: 363,  # EncodedUnderlyingIssuerLen
    364: 365,  # EncodedUnderlyingSecurityDescLen
    445: 446,  # EncodedListStatusTextLen
    618: 619,  # EncodedLegIssuerLen
    621: 622,  # EncodedLegSecurityDescLen
    1401: 1402,  # EncryptedPasswordLen -> EncryptedPassword
    1403: 1404,  # EncryptedNewPasswordLen -> EncryptedNewPassword
}
_DATA_LENGTH_TAGS = frozenset(DATA_FIELDS)

# --- Tags surfaced as event attributes (FIX 4.4 field dictionary) ---
TAG_BEGIN_STRING = 8
TAG_BODY_LENGTH = 9
TAG_CHECKSUM = 10
TAG_CL_ORD_ID = 11
TAG_MSG_SEQ_NUM = 34
TAG_MSG_TYPE = 35
TAG_ORDER_ID = 37
TAG_ORD_STATUS = 39
TAG_ORIG_CL_ORD_ID = 41
TAG_POSS_DUP_FLAG = 43
TAG_SENDER_COMP_ID = 49
TAG_SENDING_TIME = 52
TAG_TARGET_COMP_ID = 56
TAG_TEXT = 58
TAG_EXEC_TYPE = 150

RUN_NAMED: tuple[tuple[str, int], ...] = (
    ("begin_string", TAG_BEGIN_STRING),
    ("msg_type", TAG_MSG_TYPE),
    ("sender_comp_id", TAG_SENDER_COMP_ID),
    ("target_comp_id", TAG_TARGET_COMP_ID),
    ("sending_time", TAG_SENDING_TIME),
    ("cl_ord_id", TAG_CL_ORD_ID),
    ("orig_cl_ord_id", TAG_ORIG_CL_ORD_ID),
    ("order_id", TAG_ORDER_ID),
    ("exec_type", TAG_EXEC_TYPE),
    ("ord_status", TAG_ORD_STATUS),
    ("text", TAG_TEXT),
)
"""String attributes of ``FixMessage`` and their tags, in ``FixMessageRun.named`` column order."""


@dataclass(frozen=True, slots=True, kw_only=True)
class FixMessage:
    """One FIX message: one row of the ``fix_messages`` table.

    Named attributes take the *first* occurrence of their tag (the header's, not
    a repeating group's). ``fields`` keeps every field in wire order, including
    8, 9 and 10, with repeating groups as they came.
    """

    ts_first: int
    ts_last: int
    flow_id: int
    direction: Direction
    stream_offset: int
    begin_string: str
    body_length: int
    """BodyLength (9) as declared, even when it was wrong (see ``bad_body_length``)."""
    msg_type: str | None
    msg_seq_num: int | None
    sender_comp_id: str | None
    target_comp_id: str | None
    sending_time: str | None
    """SendingTime (52) as sent (``YYYYMMDD-HH:MM:SS[.sss...]``, UTC)."""
    cl_ord_id: str | None
    orig_cl_ord_id: str | None
    order_id: str | None
    exec_type: str | None
    ord_status: str | None
    text: str | None
    poss_dup: bool
    checksum_ok: bool
    fields: list[tuple[int, str]] = field(default_factory=list)
    raw_length: int = 0
    """Bytes on the wire, ``8=`` through the trailer's SOH."""


# Columns of ``FixMessageRun.messages`` (int64, one row per message).
RUN_TS_FIRST = 0
RUN_TS_LAST = 1
RUN_STREAM_OFFSET = 2
RUN_RAW_LENGTH = 3
RUN_BODY_LENGTH = 4
RUN_SEQ_NUM = 5  # meaningful where RUN_SEQ_OK is 1
RUN_SEQ_OK = 6
RUN_POSS_DUP = 7
RUN_FIELD_COUNT = 8
RUN_NAMED_FIRST = 9  # RUN_NAMED[c]: column RUN_NAMED_FIRST + c
RUN_COLUMNS = RUN_NAMED_FIRST + len(RUN_NAMED)


@dataclass(frozen=True, slots=True, kw_only=True)
class FixMessageRun:
    """Many well-formed messages of one direction as columns (the batch path).

    Each row is the ``FixMessage`` the general path gives for the same bytes,
    with ``checksum_ok=True``. ``messages`` holds one int64 row per message
    (columns ``RUN_*``); column ``RUN_NAMED_FIRST + c`` is the index, within
    the message's fields, of the first field with ``RUN_NAMED[c]``'s tag, -1
    if none. ``fields`` holds ``(tag, value length)`` for every field of every
    message in wire order (message ``i`` has ``messages[i, RUN_FIELD_COUNT]``
    of them) and ``values`` (uint8) their values back to back: ASCII,
    unredacted (the row converter redacts).
    """

    flow_id: int
    direction: Direction
    messages: np.ndarray
    fields: np.ndarray
    values: np.ndarray
    ts_first: np.ndarray
    """``messages[:, RUN_TS_FIRST]`` (its ``size`` is the row count)."""
    ts_last: np.ndarray
    """``messages[:, RUN_TS_LAST]``."""

    @classmethod
    def of(cls, flow_id: int, direction: Direction, messages: np.ndarray, fields: np.ndarray,
           values: np.ndarray) -> FixMessageRun:
        return cls(flow_id=flow_id, direction=direction, messages=messages, fields=fields,
                   values=values, ts_first=messages[:, RUN_TS_FIRST],
                   ts_last=messages[:, RUN_TS_LAST])

    @property
    def stream_offset(self) -> np.ndarray:
        return self.messages[:, RUN_STREAM_OFFSET]
