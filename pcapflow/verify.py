"""``verify``: pcapflow's rows for a sample of messages, checked against Wireshark's own
dissection of the same frames (through ``pyshark``, which drives ``tshark``).

How this works. The capture is ingested into a temporary dataset with the ``packets``
table, so every message row can be tied to the frame that completed it: the packet of
its flow and direction captured at its ``ts_last`` (frame number = packet index + 1).
A seeded random sample of rows is drawn per message table (HTTP, WebSocket, FIX, TLS
records), and tshark dissects the capture once (decrypting with the same key logs),
printing only the sampled frames. A row *agrees* when the frame carries a message of
the same protocol with the same fields (HTTP method and target or status; WebSocket
opcode; FIX MsgType and ClOrdID; TLS content type and record length); it *differs*
when the frame has that protocol but other values; it is *not dissected* when
Wireshark shows no such message there (e.g. a WebSocket message Wireshark could not
inflate: tshark 4.0 stops inflating a direction after its first fragmented compressed
message). Times are checked too: the frame's capture time must be the row's
``ts_last`` to the nanosecond.

Needs ``tshark`` on the PATH and ``pyshark`` (``pip install 'pcapflow[verify]'``).
"""

from __future__ import annotations

import os
import random
import re
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from .parsers.errors import PcapflowError

TABLES = ("http_messages", "ws_messages", "fix_messages", "tls_records")
WS_OPCODES = {"continuation": 0, "text": 1, "binary": 2, "close": 8, "ping": 9, "pong": 10}
REDACTED = "REDACTED"
TLS_HEADER = 5
"""Bytes of a TLS record header (RFC 8446 §5.1): ``tls_records.length`` counts them (the
record on the wire), Wireshark's ``tls.record.length`` does not."""
DEFAULT_SAMPLE = 25
"""Rows checked per table."""


@dataclass(slots=True)
class Check:
    """One sampled row and what Wireshark showed in its frame."""

    table: str
    frame: int
    ours: dict[str, object]
    theirs: list[dict[str, object]] = field(default_factory=list)
    time_ok: bool = False

    @property
    def outcome(self) -> str:
        if not self.theirs:
            return "not dissected"
        same = any(_same(self.ours, t) for t in self.theirs)
        return "agrees" if self.time_ok and same else "differs"


def _same(ours: dict[str, object], theirs: dict[str, object]) -> bool:
    """Field by field; a value pcapflow redacted (``REDACTED``: secrets never reach a
    table) matches whatever Wireshark shows there."""
    if ours.keys() != theirs.keys():
        return False
    for k, v in ours.items():
        w = theirs[k]
        if k == "target" and isinstance(v, str) and isinstance(w, str) and REDACTED in v:
            if not re.fullmatch(re.escape(v).replace(re.escape(REDACTED), "[^&]*"), w):
                return False
        elif v != w:
            return False
    return True


def _require_tools() -> None:
    try:
        import pyshark  # noqa: F401
    except ImportError as err:
        raise PcapflowError("verify needs pyshark: pip install 'pcapflow[verify]'") from err
    if shutil.which("tshark") is None:
        raise PcapflowError("verify needs tshark (Wireshark's command line; Debian: "
                            "apt-get install tshark)")


def _sample(ds: Any, table: str, n: int, rng: random.Random) -> list[dict[str, Any]]:
    cols = {"http_messages": "method, path, status",
            "ws_messages": "opcode", "fix_messages": "msg_type, cl_ord_id",
            "tls_records": "content_type, length"}[table]
    rows = ds.fetchall(
        f"SELECT m.flow_id, m.direction, epoch_ns(m.ts_last) AS ts, {cols}, "
        "(SELECT min(p.packet) FROM packets p WHERE p.flow_id = m.flow_id AND "
        " p.direction = m.direction AND epoch_ns(p.ts) = epoch_ns(m.ts_last)) AS packet "
        f"FROM {table} m")
    rows = [r for r in rows if r[-1] is not None]
    pick = rng.sample(rows, min(n, len(rows)))
    out = []
    for r in pick:
        rec: dict[str, object] = {"flow_id": r[0], "direction": r[1], "ts": r[2],
                                  "frame": int(r[-1]) + 1}
        if table == "http_messages":
            rec["ours"] = ({"method": r[3], "target": r[4]} if r[3] is not None
                           else {"status": int(r[5])})
        elif table == "ws_messages":
            rec["ours"] = {"opcode": WS_OPCODES.get(str(r[3]), r[3])}
        elif table == "fix_messages":
            rec["ours"] = {"msg_type": r[3], "cl_ord_id": r[4]}
        else:
            rec["ours"] = {"content_type": int(r[3]), "length": int(r[4]) - TLS_HEADER}
        out.append(rec)
    return out


def _theirs(pkt: object, table: str) -> list[dict[str, object]]:
    """The messages of one protocol in a dissected frame, in our fields."""
    def layers(name: str) -> list[Any]:
        return list(pkt.get_multiple_layers(name))  # type: ignore[attr-defined]

    found: list[dict[str, object]] = []
    if table == "http_messages":
        for h in layers("http"):
            method = h.get_field_value("request_method")
            if method is not None:
                found.append({"method": str(method), "target": str(h.get_field_value(
                    "request_uri"))})
            code = h.get_field_value("response_code")
            if code is not None:
                found.append({"status": int(code)})
    elif table == "ws_messages":
        for w in layers("websocket"):
            op = w.get_field_value("opcode")
            if op is not None:
                found.append({"opcode": int(op)})
    elif table == "fix_messages":
        for f in layers("fix"):
            found.append({"msg_type": str(f.get_field_value("msgtype")),
                          "cl_ord_id": _opt(f.get_field_value("clordid"))})
    else:
        for t in layers("tls"):
            for ct, ln in zip(_all(t, "record_content_type"), _all(t, "record_length"),
                              strict=False):
                found.append({"content_type": int(ct), "length": int(ln)})
    return found


def _opt(v: object) -> object:
    return None if v is None else str(v)


def _all(layer: Any, name: str) -> list[Any]:
    """Every value of a field that repeats in a layer (several TLS records in a frame)."""
    fld = layer.get_field(name)
    if fld is None:
        return []
    return [a.get_default_value() for a in getattr(fld, "all_fields", None) or [fld]]


def verify(capture: str | os.PathLike[str], keylog: Sequence[str | os.PathLike[str]] = (), *,
           sample: int = DEFAULT_SAMPLE, seed: int = 0, tables: Sequence[str] = TABLES,
           venues: str | os.PathLike[str] | None = None) -> list[Check]:
    """Ingest ``capture`` (with ``packets``) into a temporary dataset, sample ``sample``
    rows per message table and check each against tshark's dissection of its frame."""
    _require_tools()
    import pyshark

    from . import api
    from .dataset import Dataset

    rng = random.Random(seed)
    with tempfile.TemporaryDirectory(prefix="pcapflow-verify-") as tmp:
        data = Path(tmp) / "data"
        api.ingest([str(capture)], keylog=[str(k) for k in keylog], data=data, venues=venues,
                   packets=True)
        with Dataset(data) as ds:
            picked = {t: _sample(ds, t, sample, rng) for t in tables}
    checks = [Check(table=t, frame=int(r["frame"]), ours=r["ours"])
              for t, rows in picked.items() for r in rows]
    want_ts = {(c.table, c.frame): r["ts"] for c, r in zip(
        checks, [r for rows in picked.values() for r in rows], strict=True)}
    if not checks:
        return []
    frames = sorted({c.frame for c in checks})
    prefs = {"tls.keylog_file": str(keylog[0])} if len(keylog) == 1 else {}
    if len(keylog) > 1:  # tshark takes one key log file: the union of them
        merged = Path(tempfile.mkstemp(prefix="pcapflow-keys-")[1])
        merged.write_bytes(b"\n".join(Path(k).read_bytes() for k in keylog))
        prefs = {"tls.keylog_file": str(merged)}
    cap = pyshark.FileCapture(
        str(capture), keep_packets=False, override_prefs=prefs,
        display_filter="frame.number in {" + ", ".join(map(str, frames)) + "}")
    by_frame: dict[int, object] = {}
    try:
        for pkt in cap:
            by_frame[int(pkt.number)] = pkt
    finally:
        cap.close()
        if len(keylog) > 1:
            Path(prefs["tls.keylog_file"]).unlink(missing_ok=True)
    for c in checks:
        pkt = by_frame.get(c.frame)
        if pkt is None:
            continue
        c.theirs = _theirs(pkt, c.table)
        t = Decimal(str(pkt.frame_info.time_epoch))  # type: ignore[attr-defined]
        c.time_ok = int(t * 1_000_000_000) == want_ts[(c.table, c.frame)]
    return checks


def summary(checks: Sequence[Check]) -> list[list[str]]:
    """Rows per table: checked, agree, differ, not dissected."""
    out = []
    for t in TABLES:
        mine = [c for c in checks if c.table == t]
        if not mine:
            continue
        n = {o: sum(c.outcome == o for c in mine) for o in ("agrees", "differs",
                                                            "not dissected")}
        out.append([t, str(len(mine)), str(n["agrees"]), str(n["differs"]),
                    str(n["not dissected"])])
    return out
