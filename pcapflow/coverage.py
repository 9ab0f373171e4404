"""How much of a dataset's traffic the latency numbers cover, and why the rest is missing.

DESIGN.md, "No silent loss": a report that silently omits orders is worse than
none. ``coverage`` sorts every TCP connection that carried payload into one of:

- with orders (decoded, or paired from TLS record timing only);
- decoded without orders (market data, a private stream);
- decoded only in part: no orders read, and its messages lean on state sent before the
  capture began (``hpack_unknown_entry``: HTTP/2 header fields from an HPACK table built
  earlier; ``inflate_history_unknown``: permessage-deflate output from an earlier window),
  so an order on it may be there but cannot be read whole;
- not decoded, with the reason: its anomalies (``missing_keys``,
  ``decrypt_failed``, ``unsupported_protocol``, or any other code, shown with the
  anomaly's own text), else what the flow says: TLS without its handshake (the
  connection began before the capture), TLS in a capture ingested without a key
  log, or payload that is not a protocol pcapflow reads.

``Coverage.line()`` says it in one line, e.g. "coverage: orders from 5 of 7
connections with payload; not decoded: 2 TLS began before the capture (no
handshake seen; not decrypted)". It advises ``--keylog`` only for captures that
were ingested without any key material (``captures.tls_keys``).

``keylog_coverage`` answers the same question for key logs, per file: which key log
supplied the secrets of how many of a capture's TLS sessions (``flows.tls_keylog``),
which file supplied none (most likely the key log of another capture), and how many
sessions no file held secrets for (``captures.keylogs`` lists the files given).

Pure SQL over the dataset's views (``Dataset``), aggregated in DuckDB: nothing
per connection comes to Python, and no pandas (``pcapflow ingest`` prints it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .dataset import Dataset

REASONS: dict[str, str] = {
    "tls_no_keylog": "TLS in a capture ingested without a key log (ingest again with "
                     "--keylog FILE)",
    "missing_keys": "TLS whose secrets are not in the key log (is it the one the client "
                    "wrote for this capture?)",
    "decrypt_failed": "TLS that failed to decrypt (wrong secrets, or a damaged capture)",
    "tls_no_handshake": "TLS began before the capture (no handshake seen; not decrypted)",
    "unsupported_protocol": "in a protocol pcapflow does not decode (HTTP/2, ...)",
    "unknown_protocol": "not recognised as TLS, HTTP, WebSocket or FIX",
    "no_messages": "with a protocol detected but no complete message",
    "tcp_only": "not parsed (ingested with --tcp-only)",
    "partial": "began before the capture: HPACK or inflate state sent earlier is "
               "unknown, so orders on it cannot be read whole (capture from the "
               "session's start; for a rotation, ingest the earlier file first)",
}
"""Text of each reason a connection was not decoded (others: the anomaly's code)."""

# Anomaly codes that say why a connection was not decoded, strongest first; any
# other application-layer code is shown as itself (with its first detail).
KNOWN_CODES = ("missing_keys", "decrypt_failed", "unsupported_protocol")
PARTIAL_CODES = ("hpack_unknown_entry", "inflate_history_unknown")
"""Codes of messages decoded without the state sent before the capture began."""

TABLES = ("flows", "orders", "http_messages", "ws_messages", "fix_messages", "tls_records",
          "anomalies", "captures")
"""The tables ``coverage`` and ``keylog_coverage`` read (a ``Dataset`` of these views
alone answers them: ``Dataset(..., views=TABLES)``)."""

_SQL = """
WITH f AS (
    SELECT capture_id, flow_id, app_protocol, tls_version FROM flows
    WHERE transport = 'tcp' AND payload_bytes_out + payload_bytes_in > 0 AND {where}),
o AS (SELECT capture_id, flow_id, bool_or(decoded) AS decoded FROM orders GROUP BY ALL),
m AS (SELECT DISTINCT capture_id, flow_id FROM (
        SELECT capture_id, flow_id FROM http_messages
        UNION ALL SELECT capture_id, flow_id FROM ws_messages
        UNION ALL SELECT capture_id, flow_id FROM fix_messages
        UNION ALL SELECT capture_id, flow_id FROM tls_records WHERE decrypted)),
a AS (SELECT capture_id, flow_id, list(DISTINCT code ORDER BY code) AS codes,
             min(layer || ': ' || detail) AS detail
      FROM anomalies
      WHERE flow_id >= 0 AND layer NOT IN ('capture', 'link', 'ip', 'tcp')
      GROUP BY ALL),
k AS (SELECT capture_id, bool_or(coalesce(tls_keys, true)) AS keys FROM captures GROUP BY 1),
r AS (
    SELECT CASE WHEN o.flow_id IS NULL THEN 'none' WHEN o.decoded THEN 'decoded'
                ELSE 'timing' END AS orders,
        CASE
        WHEN o.flow_id IS NULL AND m.flow_id IS NOT NULL
             AND list_has_any(a.codes, {partial}) THEN 'partial'
        WHEN o.decoded OR m.flow_id IS NOT NULL THEN 'decoded'
        WHEN list_contains(a.codes, 'missing_keys') THEN 'missing_keys'
        WHEN list_contains(a.codes, 'decrypt_failed') THEN 'decrypt_failed'
        WHEN list_contains(a.codes, 'unsupported_protocol') THEN 'unsupported_protocol'
        WHEN f.app_protocol LIKE 'tls%' AND f.tls_version IS NULL THEN 'tls_no_handshake'
        WHEN f.app_protocol LIKE 'tls%' AND NOT coalesce(k.keys, true) THEN 'tls_no_keylog'
        WHEN a.codes IS NOT NULL THEN 'code:' || a.codes[1]
        WHEN f.app_protocol IS NULL THEN 'tcp_only'
        WHEN f.app_protocol = 'unknown' THEN 'unknown_protocol'
        ELSE 'no_messages' END AS reason,
        a.detail
    FROM f
    LEFT JOIN o USING (capture_id, flow_id)
    LEFT JOIN m USING (capture_id, flow_id)
    LEFT JOIN a USING (capture_id, flow_id)
    LEFT JOIN k USING (capture_id))
SELECT orders, reason, count(*) AS n, min(detail) AS detail FROM r
GROUP BY ALL ORDER BY n DESC, orders, reason
"""


@dataclass(slots=True)
class Coverage:
    """Connections with payload, by what became of them."""

    connections: int = 0
    with_orders: int = 0
    timing_only: int = 0
    """Of ``with_orders``: paired from TLS record timing only (not decrypted)."""
    decoded: int = 0
    """Decoded, without orders."""
    partial: int = 0
    """Decoded only in part, without orders (``PARTIAL_CODES``)."""
    undecoded: list[tuple[str, int]] = field(default_factory=list)
    """(reason text, connections) of those not decoded (with orders from TLS timing
    or without orders), most first."""

    @property
    def not_decoded(self) -> int:
        return sum(n for _, n in self.undecoded)

    def line(self) -> str:
        """One compact line (empty when there is no connection with payload)."""
        if not self.connections:
            return ""
        parts = [f"orders from {self.with_orders:,} of {self.connections:,} connections "
                 "with payload"]
        if self.timing_only:
            parts[0] += f" ({self.timing_only:,} only from TLS record timing)"
        if self.decoded:
            parts.append(f"{self.decoded:,} decoded without orders")
        if self.partial:
            parts.append(f"{self.partial:,} decoded only in part ({REASONS['partial']})")
        if self.undecoded:
            parts.append("not decoded: " + ", ".join(f"{n:,} {text}"
                                                     for text, n in self.undecoded))
        return "coverage: " + "; ".join(parts)

    def as_dict(self) -> dict[str, object]:
        return {"connections": self.connections, "with_orders": self.with_orders,
                "timing_only": self.timing_only, "decoded_without_orders": self.decoded,
                "decoded_in_part": self.partial,
                "not_decoded": [{"reason": t, "connections": n} for t, n in self.undecoded]}


def coverage(ds: Dataset, *, capture_ids: Sequence[str] | None = None,
             venues: Sequence[str | None] | None = None) -> Coverage:
    """Coverage of the whole dataset, of some captures, or of some venues' connections
    (None among ``venues``: the connections no venue rule named, as in ``--exchange
    unknown``)."""
    cond: list[str] = ["TRUE"]
    params: list[object] = []
    if capture_ids is not None:
        cond.append(f"capture_id IN ({', '.join('?' for _ in capture_ids) or 'NULL'})")
        params += list(capture_ids)
    if venues is not None:
        named = [v for v in venues if v is not None]
        either = [f"venue IN ({', '.join('?' for _ in named) or 'NULL'})"]
        if len(named) < len(venues):
            either.append("venue IS NULL")
        cond.append("(" + " OR ".join(either) + ")")
        params += named
    partial = "[" + ", ".join(f"'{c}'" for c in PARTIAL_CODES) + "]"
    rows = ds.fetchall(_SQL.format(where=" AND ".join(cond), partial=partial), params)
    cov = Coverage()
    reasons: dict[str, int] = {}
    for orders, reason, n, detail in rows:
        n = int(n)
        cov.connections += n
        if orders != "none":
            cov.with_orders += n
            cov.timing_only += n if orders == "timing" else 0
        elif reason == "decoded":
            cov.decoded += n
        elif reason == "partial":
            cov.partial += n
        if reason in ("decoded", "partial"):
            continue
        if reason.startswith("code:"):
            text = f"{reason[5:]} ({detail})" if detail else reason[5:]
        else:
            text = REASONS[reason]
        reasons[text] = reasons.get(text, 0) + n
    cov.undecoded = sorted(reasons.items(), key=lambda kv: -kv[1])
    return cov


MESSAGE_SOURCES = ("orders", "http_messages", "ws_messages", "fix_messages", "tls_records")
"""The tables whose rows make a connection one "with orders" or "decoded" (``_SQL``'s
``o`` and ``m``)."""

_FLOW_COLUMNS = ("transport", "payload_bytes_out", "payload_bytes_in", "app_protocol",
                 "tls_version")


def plain_coverage(root: Path, capture_ids: Sequence[str]) -> Coverage | None:
    """``coverage`` of these captures, read from their Parquet parts with Arrow alone,
    when none of them has a row in ``MESSAGE_SOURCES`` nor an application-layer
    anomaly (a plain TCP capture, or one whose payload was not recognised): then
    ``_SQL``'s reason of a connection with payload depends on its ``flows`` row and
    its capture's ``tls_keys`` only. None otherwise (or for a part without one of the
    columns read): ``coverage`` over a ``Dataset`` answers. What ``pcapflow ingest``
    prints under a plain capture without opening a DuckDB database (~0.03 s of CPU,
    ~0.05 with DuckDB's import)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from .pipelines import store

    def parts(table: str, cid: str) -> list[Path]:
        return sorted(store.partition_dir(root, table, cid).glob("*.parquet"))

    def read(path: Path, columns: Sequence[str]) -> pa.Table | None:
        f = pq.ParquetFile(path)
        if not set(columns) <= set(f.schema_arrow.names):
            return None
        return f.read(columns=list(columns))

    if root.exists():  # (as ``Dataset`` does before reading: a commit left half done)
        with store.locked(root):
            store.recover(root)
    reasons: dict[str, int] = {}
    for cid in dict.fromkeys(capture_ids):
        if any(parts(t, cid) for t in MESSAGE_SOURCES):
            return None
        for p in parts("anomalies", cid):
            a = read(p, ["flow_id", "layer"])
            if a is None:
                return None
            app = pc.and_(pc.greater_equal(a.column("flow_id"), 0), pc.invert(pc.is_in(
                a.column("layer"), pa.array(["capture", "link", "ip", "tcp"]))))
            if pc.any(app).as_py():  # (null: SQL's WHERE drops the row, as ``any`` skips it)
                return None
        keys = None  # ``k.keys``: bool_or(coalesce(tls_keys, true)), NULL without rows
        for p in parts("captures", cid):
            c = read(p, ["tls_keys"])
            if c is None:
                return None
            if c.num_rows:
                any_key = pc.any(pc.fill_null(c.column("tls_keys"), True)).as_py()
                keys = bool(any_key) or bool(keys)
        for p in parts("flows", cid):
            f = read(p, _FLOW_COLUMNS)
            if f is None:
                return None
            payload = pc.add(f.column("payload_bytes_out"), f.column("payload_bytes_in"))
            f = f.filter(pc.and_(pc.equal(f.column("transport"), "tcp"),
                                 pc.greater(payload, 0)))
            for proto, version in zip(f.column("app_protocol").to_pylist(),
                                      f.column("tls_version").to_pylist(), strict=True):
                tls = proto is not None and proto.startswith("tls")
                if tls and version is None:
                    reason = "tls_no_handshake"
                elif tls and keys is False:
                    reason = "tls_no_keylog"
                elif proto is None:
                    reason = "tcp_only"
                elif proto == "unknown":
                    reason = "unknown_protocol"
                else:
                    reason = "no_messages"
                reasons[reason] = reasons.get(reason, 0) + 1
    cov = Coverage(connections=sum(reasons.values()))
    # (``_SQL``'s order: most first, then by reason; every one is "orders: none")
    ranked = sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0]))
    cov.undecoded = [(REASONS[r], n) for r, n in ranked]
    return cov


NO_SECRETS = "(no key log had its secrets)"
"""``KeylogRow.keylog`` of a capture's TLS sessions with a handshake that no key log covered."""
NO_HANDSHAKE = "(no handshake, not found)"
"""``KeylogRow.keylog`` of TLS sessions already open when the capture began that no key
log's secret decrypted (TLS 1.2 cannot be; TLS 1.3 is searched for)."""


@dataclass(frozen=True, slots=True)
class KeylogRow:
    """How many of a capture's TLS sessions one key log supplied the secrets of."""

    capture_id: str
    capture: str
    """The capture's file name (a capture set's first file)."""
    keylog: str
    """The key log file as given to ingest, the capture's Decryption Secrets Block,
    ``NO_SECRETS`` or ``NO_HANDSHAKE``."""
    sessions: int
    tls_sessions: int
    """The capture's TLS sessions (connections detected as TLS)."""

    @property
    def given(self) -> bool:
        """A key log (file or secrets block), not one of the rows of sessions none covered."""
        return self.keylog not in (NO_SECRETS, NO_HANDSHAKE)

    def as_dict(self) -> dict[str, object]:
        return {"capture_id": self.capture_id, "capture": self.capture, "keylog": self.keylog,
                "sessions": self.sessions, "tls_sessions": self.tls_sessions}


_KEYLOG_SQL = """
WITH c AS (
    SELECT capture_id, arg_min(regexp_extract(path, '[^/]*$'), file_index) AS capture,
           any_value(keylogs) AS keylogs
    FROM captures WHERE {where} GROUP BY ALL),
t AS (
    SELECT capture_id, count(*) AS tls_sessions,
           count(*) FILTER (WHERE tls_keylog IS NULL AND tls_version IS NOT NULL) AS no_secrets,
           count(*) FILTER (WHERE tls_keylog IS NULL AND tls_version IS NULL) AS no_handshake
    FROM flows WHERE app_protocol LIKE 'tls%' AND capture_id IN (SELECT capture_id FROM c)
    GROUP BY ALL),
k AS (
    SELECT capture_id, tls_keylog, count(*) AS n FROM flows
    WHERE tls_keylog IS NOT NULL AND capture_id IN (SELECT capture_id FROM c) GROUP BY ALL)
SELECT c.capture_id, c.capture, c.keylogs, coalesce(t.tls_sessions, 0),
       coalesce(t.no_secrets, 0), coalesce(t.no_handshake, 0),
       (SELECT list(struct_pack(f := k.tls_keylog, n := k.n)) FROM k
        WHERE k.capture_id = c.capture_id)
FROM c LEFT JOIN t USING (capture_id)
ORDER BY c.capture, c.capture_id
"""


def keylog_coverage(ds: Dataset, *, capture_ids: Sequence[str] | None = None
                    ) -> list[KeylogRow]:
    """Per capture ingested with key material and holding TLS: a row per key log given
    (sessions it supplied, 0 for a file that matched none of them), then the sessions no
    key log covered (``NO_SECRETS``, ``NO_HANDSHAKE``) when there are any."""
    where, params = "TRUE", []
    if capture_ids is not None:
        where = f"capture_id IN ({', '.join('?' for _ in capture_ids) or 'NULL'})"
        params = list(capture_ids)
    out = []
    for cid, name, keylogs, tls, no_secrets, no_handshake, used in ds.fetchall(
            _KEYLOG_SQL.format(where=where), params):
        supplied = {u["f"]: int(u["n"]) for u in used or []}
        given = list(keylogs or [])
        if not tls or not (given or supplied):
            continue
        for f in [*given, *(f for f in supplied if f not in given)]:
            out.append(KeylogRow(cid, name, f, supplied.get(f, 0), int(tls)))
        for label, n in ((NO_SECRETS, no_secrets), (NO_HANDSHAKE, no_handshake)):
            if n:
                out.append(KeylogRow(cid, name, label, int(n), int(tls)))
    return out


def keylog_warnings(rows: Sequence[KeylogRow]) -> list[str]:
    """What a person should act on: each capture whose TLS sessions some key log did not
    cover, and a key log that supplied none of the sessions of the captures it came with
    while some of them went without (most likely the key log of another capture). A key
    log that was not needed (the others covered every session) is no warning."""
    lines = []
    uncovered = {r.capture_id for r in rows if not r.given}
    files: dict[str, tuple[int, int, list[str], bool]] = {}
    for r in rows:
        if r.given:
            n, could, caps, short = files.get(r.keylog, (0, 0, [], False))
            files[r.keylog] = (n + r.sessions, could + r.tls_sessions, [*caps, r.capture],
                               short or r.capture_id in uncovered)
    for f, (n, could, caps, short) in files.items():
        if n == 0 and short:
            where = caps[0] if len(caps) == 1 else f"{len(caps)} captures"
            lines.append(f"{f}: matched none of the {could:,} TLS session"
                         f"{'s' if could != 1 else ''} of {where} (a key log from another "
                         "capture? pass the one written while this capture was taken)")
    for r in rows:
        if r.keylog == NO_SECRETS:
            lines.append(f"{r.capture}: {r.sessions:,} of {r.tls_sessions:,} TLS sessions "
                         "have no secrets in any key log given; their messages are not "
                         "decoded (pass the key log the client wrote while this capture was "
                         "taken; several may be given)")
    return lines


def keylog_summary(rows: Sequence[KeylogRow]) -> list[str]:
    """A line per key log file (summed over the captures listed): the TLS sessions it had
    the secrets of, of those of the captures it was given with."""
    files: dict[str, tuple[int, int]] = {}
    for r in rows:
        if r.given:
            n, could = files.get(r.keylog, (0, 0))
            files[r.keylog] = (n + r.sessions, could + r.tls_sessions)
    covered = sum(r.sessions for r in rows if r.given)
    total = sum({r.capture_id: r.tls_sessions for r in rows}.values())
    return [f"key log {f}: secrets of {n:,} of {could:,} TLS session{'s' if could != 1 else ''}"
            + (" (not needed: the others had every session's)" if n == 0 and covered == total
               else "")
            for f, (n, could) in files.items()]
