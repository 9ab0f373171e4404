"""TLS's registration: how it is detected and resynchronised, its session, and
what its events become (``protocols.base.ProtocolSpec``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..protocols.base import (
    EventSpec,
    KeyMaterialSpec,
    MatchSpec,
    ProtocolSpec,
    SessionContext,
    TableSpec,
    both_ways,
)
from .events import Plaintext, PlaintextRun, TlsHandshakeInfo, TlsRecord, TlsRecordRun
from .keylog import PCAPNG_DSB_TLS_KEY_LOG, KeyLog
from .record import (
    HEADER_CANDIDATE,
    HEADER_LENGTH,
    MAJOR_VERSION,
    MAX_CIPHERTEXT,
    plausible_length,
)
from .rows import TLS_RECORDS, record_batch, record_row

if TYPE_CHECKING:
    from .session import TlsSession

SSLV2_CLIENT_HELLO = 1  # RFC 5246 Appendix E.2: msg_type of an SSLv2-compatible hello


def _record_end(data: bytes, i: int) -> int | None:
    """End of the TLS record whose plausible header is at ``data[i]``, else None."""
    if len(data) - i < HEADER_LENGTH:
        return None
    length = plausible_length(data, i, MAX_CIPHERTEXT)
    return None if length is None else i + HEADER_LENGTH + length


def _is_sslv2_client_hello(data: bytes) -> bool:
    """SSLv2-compatible ClientHello (RFC 5246 Appendix E.2): msg_type 1, version 3.x."""
    return (len(data) >= 5 and data[0] & 0x80 != 0 and data[2] == SSLV2_CLIENT_HELLO
            and data[3] == MAJOR_VERSION)


def probe(data: bytes) -> bool:
    """A plausible record header (and a second one where the prefix reaches it)."""
    end = _record_end(data, 0)
    if end is None:
        return _is_sslv2_client_hello(data)
    if len(data) >= end + HEADER_LENGTH:
        return _record_end(data, end) is not None
    return True


def refuses(data: bytes) -> bool:
    """``probe`` says no for good: the first header is there and is neither a record
    header nor an SSLv2 hello, or the second one is there and is not a record header
    (both are read at fixed places)."""
    if len(data) < HEADER_LENGTH:
        return False
    end = _record_end(data, 0)
    if end is None:
        return not _is_sslv2_client_hello(data)
    return len(data) >= end + HEADER_LENGTH and _record_end(data, end) is None


_MAJOR = bytes([MAJOR_VERSION])


def resync(data: bytes) -> int | None:
    """A record header followed, at its stated length, by a second one."""
    if _MAJOR not in data:  # every header holds it (a memchr: most plaintext has none)
        return None
    for m in HEADER_CANDIDATE.finditer(data):
        end = _record_end(data, m.start())
        if end is not None and _record_end(data, end) is not None:
            return m.start()
    return None


def starts_later(data: bytes) -> bool:
    """STARTTLS (SMTP, IMAP, MySQL...): plaintext, then a TLS ClientHello; or a
    capture that began inside a TLS record: a pair of record headers later on.
    ``TlsSession`` skips to the header (and finds TLS 1.3 keys by search)."""
    return resync(data) is not None


def _session(ctx: SessionContext) -> TlsSession:
    # (the session, its key search and their kernels: imported with the first TLS
    # connection, not by the registry)
    from .keysearch import SearchLimits
    from .session import TlsSession

    limits = ctx.limits
    return TlsSession(ctx.flow_id, ctx.keylog, search=SearchLimits(
        records=limits.tls13_search_records, chacha_records=limits.tls13_search_chacha_records,
        generations=limits.tls13_search_generations))


def _handshake_info(info: dict[str, object], e: TlsHandshakeInfo) -> None:
    info.update(sni=e.sni, alpn=e.alpn, tls_version=e.version, tls_cipher=e.cipher,
                alpn_offered=",".join(e.alpn_offered), tls_keylog=e.keylog)


def _add_block(keys: KeyLog, data: bytes, source: str) -> None:
    keys.add_text(data, source)


TLS = ProtocolSpec(
    name="tls",
    probe_out=probe,
    probe_in=probe,
    refuses=(refuses, refuses),
    resync=resync,
    midstream=both_ways(resync),
    probe_late=starts_later,
    session=_session,
    nests=False,
    events={
        TlsRecord: EventSpec(table="tls_records", row=record_row),
        TlsRecordRun: EventSpec(table="tls_records", batch=record_batch),
        TlsHandshakeInfo: EventSpec(flow_info=_handshake_info),
        Plaintext: EventSpec(carrier="piece"),
        PlaintextRun: EventSpec(carrier="run"),
    },
    tables=(TableSpec(name="tls_records", schema=TLS_RECORDS, doc="one row per TLS record"),),
    flow_columns=("sni", "alpn", "alpn_offered", "tls_version", "tls_cipher", "tls_keylog"),
    match=MatchSpec(sql="encrypted", gate="enc_flows", outputs=("enc_orders", "enc_acks")),
    limits=("tls13_search_records", "tls13_search_chacha_records", "tls13_search_generations"),
    key_material=KeyMaterialSpec(load=KeyLog.from_files, empty=KeyLog,
                                 secrets_type=PCAPNG_DSB_TLS_KEY_LOG, add_block=_add_block),
)
