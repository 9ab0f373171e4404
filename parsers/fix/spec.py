"""FIX's registration: detection and resync by BeginString/BodyLength, its
session and its table."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..protocols.base import (
    EventSpec,
    MatchSpec,
    ProtocolSpec,
    SessionContext,
    TableSpec,
    both_ways,
)
from .events import (
    BEGIN_PREFIX,
    HEADER_START,
    MAX_BEGIN_STRING_FIELD,
    MAX_BODY_LENGTH_DIGITS,
    SOH,
    FixMessage,
    FixMessageRun,
)
from .rows import FIX_MESSAGES, message_batch, message_row

if TYPE_CHECKING:
    from .session import FixSession

_SOH = bytes([SOH])
_BODY_LENGTH_FIELD = b"9="
MAX_BODY_LENGTH_FIELD = len(_BODY_LENGTH_FIELD) + MAX_BODY_LENGTH_DIGITS


def probe(data: bytes) -> bool:
    """``8=FIX...<SOH>9=digits<SOH>``, or as much of it as the prefix holds."""
    if not data.startswith(BEGIN_PREFIX):
        return False
    if HEADER_START.match(data) is not None:
        return True
    soh = data.find(_SOH, 0, MAX_BEGIN_STRING_FIELD)
    if soh < 0:
        return len(data) < MAX_BEGIN_STRING_FIELD  # BeginString not finished yet
    rest = data[soh + 1 :]  # must be an unfinished "9=digits"
    return len(rest) <= MAX_BODY_LENGTH_FIELD and _SOH not in rest and (
        _BODY_LENGTH_FIELD.startswith(rest[:2]) and (len(rest) <= 2 or rest[2:].isdigit())
    )


def refuses(data: bytes) -> bool:
    """``probe`` says no for good: the bytes there already differ from ``8=FIX``."""
    k = min(len(data), len(BEGIN_PREFIX))
    return data[:k] != BEGIN_PREFIX[:k]


def resync(data: bytes) -> int | None:
    m = HEADER_START.search(data)
    return m.start() if m else None


def _session(ctx: SessionContext) -> FixSession:
    from .session import FixSession  # (and its compiled scan: with the first FIX connection)

    return FixSession(ctx.flow_id, max_message=ctx.limits.fix_max_message)


FIX = ProtocolSpec(
    name="fix",
    probe_out=probe,
    probe_in=probe,
    refuses=(refuses, refuses),
    resync=resync,
    midstream=both_ways(resync),
    session=_session,
    events={
        FixMessage: EventSpec(table="fix_messages", row=message_row),
        FixMessageRun: EventSpec(table="fix_messages", batch=message_batch),
    },
    tables=(TableSpec(name="fix_messages", schema=FIX_MESSAGES,
                      doc="one row per FIX message"),),
    match=MatchSpec(sql="fix", gate="fix_in", outputs=("fix_orders", "fix_acks")),
    limits=("fix_max_message",),
)
