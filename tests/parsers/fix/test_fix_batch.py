"""FIX batch path (``FixSession.feed_many`` + ``FixMessageRun`` rows) against ``feed``.

Generated streams mix well-formed messages with everything the general path
treats specially: bad CheckSums, BodyLength too short / too long / far too long,
garbage (with partial ``8=FI``, stray SOHs and ``10=``) between messages, bad
headers, non-ASCII values, ``=`` inside values, odd MsgSeqNums, data fields
(RawData holding SOH), oversized messages, capture gaps, a truncated last
message, and secret tags (554 Password, 96 RawData, 553 Username, 925) both in
messages the batch path takes and in ones it leaves to the general path. Each
stream is cut at random offsets and fed piece by piece to ``feed`` and, grouped
into random ``Run``s (some with empty pieces), to ``feed_many``; the
``fix_messages`` rows (through ``RowBuffers``, redaction included) and the
anomalies must be identical.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pcapflow.parsers.events import Anomaly, Run
from pcapflow.parsers.fix import FixMessage, FixMessageRun, FixSession
from pcapflow.parsers.fix import session as fix
from pcapflow.parsers.protocols import columns
from pcapflow.parsers.redact import REDACTED, SENSITIVE_FIX_TAGS
from pcapflow.pipelines.tables.rows import RowBuffers

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "fuzz"))
from targets import FIX_SEEDS, check_batch_path  # the fuzz harness's own check

SOH = "\x01"
SECRETS = ("pass-phrase-1", "new-pass-2", "api-key-3", "sig\x01na=ture")


def encode(fields: list[tuple[int | str | None, str]], begin: str = "FIX.4.4", *,
           body_delta: int = 0, checksum_delta: int = 0, enc: str = "utf-8") -> bytes:
    """A FIX message; ``body_delta``/``checksum_delta`` make BodyLength/CheckSum lie;
    a field with tag None is its value alone (no "=")."""
    body = "".join(f"{v}{SOH}" if t is None else f"{t}={v}{SOH}" for t, v in fields).encode(enc)
    head = f"8={begin}{SOH}9={len(body) + body_delta}{SOH}".encode()
    total = (sum(head) + sum(body) + checksum_delta) & 0xFF
    return head + body + f"10={total:03d}{SOH}".encode()


def header(rnd: random.Random, seq: int | str, msg_type: str,
           ) -> list[tuple[int | str | None, str]]:
    stamp = f"20240611-09:01:{len(str(seq)) % 60:02d}.123"
    h: list[tuple[int | str | None, str]] = [(35, msg_type), (49, "CLIENT1"), (56, "EXCH"),
                                             (34, str(seq)), (52, stamp)]
    if rnd.random() < 0.1:
        h.append((43, rnd.choice(["Y", "N", "YY", ""])))
    if rnd.random() < 0.05:
        rnd.shuffle(h)  # named tags anywhere, 8 stays first
    return h


def good(rnd: random.Random, seq: int) -> bytes:
    kind = rnd.random()
    oid = f"o{seq}"
    if kind < 0.4:
        body = [(11, oid), (55, "BTC-USD"), (54, "1"), (38, str(rnd.randint(1, 99))),
                (40, "2"), (44, "65000.5")]
        mt = "D"
    elif kind < 0.75:
        body = [(37, str(9000 + seq)), (11, oid), (150, "0"), (39, "0"), (453, "2"),
                (448, "P1"), (447, "D"), (448, "P2"), (447, "D"), (58, "ok")]
        mt = "8"
    elif kind < 0.85:
        body = [(41, f"o{seq - 1}"), (11, oid), (37, ""), (58, "")]
        mt = "F"
    elif kind < 0.92:
        body = [(554, SECRETS[0]), (925, SECRETS[1]), (553, SECRETS[2]), (98, "0")]
        mt = "A"  # secrets in a message the batch path takes (no data field)
    else:
        body = [(112, "x" * rnd.randint(0, 3000))]
        mt = "1"
    msg = header(rnd, seq, mt) + body
    if rnd.random() < 0.05:
        msg.append(("0035", "Z"))  # leading zeros: tag 35 again, not the first
    if rnd.random() < 0.03:
        msg.append((2147483647, "max-int32-tag"))
    return encode(msg, rnd.choice(["FIX.4.4", "FIX.4.2", "FIXT.1.1"]))


def odd(rnd: random.Random, seq: int) -> bytes:
    """A unit the general path must see (or that at least looks like one)."""
    base = [*header(rnd, seq, "D"), (11, f"x{seq}"), (58, "text")]
    k = rnd.randrange(17)
    if k == 0:
        return encode(base, checksum_delta=rnd.randint(1, 255))
    if k == 1:
        return encode(base, body_delta=-rnd.randint(1, 20))
    if k == 2:
        return encode(base, body_delta=rnd.randint(1, 20))
    if k == 3:
        return encode(base, body_delta=rnd.randint(5000, 100000))
    if k == 4:
        return bytes(rnd.randrange(256) for _ in range(rnd.randint(1, 60)))
    if k == 5:
        return rnd.choice([b"8=FI", b"8=FIX", b"\x0110=", b"\x0110=123\x01", b"8=FIX.4.4\x01",
                           b"8=FIX.4.4\x019=", b"8=FIX.4.4\x019=12x\x01", b"garbage\x01\x01"])
    if k == 6:
        return encode([*base, (58, "accepté")])
    if k == 7:
        return encode([*base, (58, "caf\xe9")], enc="latin-1")
    if k == 8:
        return encode([*base, (58, "a=b")])
    if k == 9:
        seq_text = rnd.choice(["abc", "", "0" * 25 + "7", "9" * 18, "-5", "１"])
        return encode(header(rnd, seq_text, "D"))
    if k == 10:  # data fields: RawData (a secret) holding SOH and "="
        sig = SECRETS[3]
        return encode([*header(rnd, seq, "A"), (553, SECRETS[2]), (554, SECRETS[0]),
                       (95, str(len(sig))), (96, sig)])
    if k == 11:  # a field without "=", with an empty tag, with a non-numeric tag
        return encode([*base, (rnd.choice([None, "", "x", "1x", " 1"]), "v")])
    if k == 12:
        return encode([*base, (58, "y" * rnd.randint(5000, 9000))])  # over max_message
    if k == 13:  # BeginString field of 31, 32, 33 or 40 bytes: SOH within 32 bytes or not
        return encode(base, begin="FIX.4.4" + "4" * rnd.choice([22, 23, 24, 31]))
    if k == 14:  # BodyLength of 10 digits (fine) or 11 (a bad header)
        m = encode(base)
        at = m.index(b"\x019=") + 3
        digits = m[at : m.index(b"\x01", at)]
        m = m[:at] + digits.rjust(rnd.choice([10, 11]), b"0") + m[at + len(digits) : -7]
        return m + f"10={sum(m) & 0xFF:03d}{SOH}".encode()  # CheckSum right again
    if k == 15:  # a data field whose bytes look like more fields (length governs)
        raw = "ab\x0158=x\x0111=y"
        return encode([*base, (95, str(len(raw))), (96, raw), (58, "after")])
    return encode([*base, (58, "ctl\x02\x7f")])


def stream(rnd: random.Random, n: int, odd_rate: float) -> bytes:
    parts = []
    if rnd.random() < 0.5:
        parts.append(b"midstream tail of a message\x0110=000\x01")
    for seq in range(1, n + 1):
        parts.append(odd(rnd, seq) if rnd.random() < odd_rate else good(rnd, seq))
    if rnd.random() < 0.5:
        parts.append(good(rnd, n + 1)[: rnd.randint(1, 40)])  # truncated at the end
    return b"".join(parts)


def cut(rnd: random.Random, data: bytes, max_piece: int) -> list[bytes]:
    out, i = [], 0
    while i < len(data):
        n = rnd.choice([1, 2, 7, rnd.randint(1, max_piece), rnd.randint(1, max_piece)])
        out.append(data[i : i + n])
        i += n
    return out


Op = tuple[str, str, object]  # ("run", direction, pieces) | ("gap", direction, length)


def plan(rnd: random.Random, n: int, odd_rate: float, max_piece: int) -> list[Op]:
    """Runs of pieces of two directions, interleaved, with a few capture gaps."""
    per_dir = {d: cut(rnd, stream(rnd, n, odd_rate), max_piece) for d in ("out", "in")}
    ops: list[Op] = []
    while any(per_dir.values()):
        d = rnd.choice([d for d, p in per_dir.items() if p])
        k = rnd.choice([1, 2, 5, rnd.randint(1, 80)])
        pieces, per_dir[d] = per_dir[d][:k], per_dir[d][k:]
        if rnd.random() < 0.1:
            pieces.insert(rnd.randrange(len(pieces) + 1), b"")
        ops.append(("run", d, pieces))
        if rnd.random() < 0.02:
            ops.append(("gap", d, rnd.randint(1, 500)))
    return ops


def replay(ops: list[Op], batch: bool, max_message: int) -> list[object]:
    s = FixSession(3, max_message=max_message)
    events: list[object] = []
    ts = 1_000_000
    for kind, d, arg in ops:
        if kind == "gap":
            ts += 10
            events += s.gap(d, arg, ts)  # type: ignore[arg-type]
            continue
        pieces: list[bytes] = arg  # type: ignore[assignment]
        times = [(ts + 10 * i, ts + 10 * i + 3 + i % 4) for i in range(len(pieces))]
        ts += 10 * len(pieces) + 10
        if batch:
            run = Run(b"".join(pieces), np.cumsum([len(p) for p in pieces], dtype=np.int64),
                      np.array([a for a, _ in times], dtype=np.int64),
                      np.array([b for _, b in times], dtype=np.int64))
            events += s.feed_many(d, run)  # type: ignore[arg-type]
        else:
            for p, (a, b) in zip(pieces, times, strict=True):
                events += s.feed(d, p, a, b)  # type: ignore[arg-type]
    return events + s.finish(ts + 100)


def fix_table(events: list[object]) -> pa.Table:
    parts: list[pa.Table] = []
    rows = RowBuffers(lambda name, t: parts.append(t))
    for e in events:
        if isinstance(e, FixMessage | FixMessageRun):
            assert rows.add(e)
    rows.flush()
    if not parts:
        return pa.table({"direction": pa.array([], pa.string()),
                         "stream_offset": pa.array([], pa.int64())})
    table = pa.concat_tables(parts)
    return table.sort_by([("direction", "ascending"), ("stream_offset", "ascending")])


def anomaly_rows(events: list[object]) -> list[tuple[object, ...]]:
    return sorted((a.direction or "", a.stream_offset or 0, a.code, a.ts, a.detail, a.layer)
                  for a in events if isinstance(a, Anomaly))


def assert_same(ops: list[Op], max_message: int) -> tuple[list[object], pa.Table]:
    one = replay(ops, False, max_message)
    many = replay(ops, True, max_message)
    assert not any(isinstance(e, FixMessageRun) for e in one)
    assert anomaly_rows(many) == anomaly_rows(one)
    a, b = fix_table(one), fix_table(many)
    assert a.schema == b.schema
    assert a.num_rows == b.num_rows
    for col in a.column_names:
        if not a[col].equals(b[col]):  # show the first differing row
            x, y = a[col].to_pylist(), b[col].to_pylist()
            i = next(i for i, (u, v) in enumerate(zip(x, y, strict=True)) if u != v)
            pytest.fail(f"{col} differs at row {i} (offset {a['stream_offset'][i]}): "
                        f"{x[i]!r} != {y[i]!r}")
    return many, b


def assert_redacted(table: pa.Table) -> None:
    for fields in table["fields"].to_pylist():
        for f in fields:
            if f["tag"] in SENSITIVE_FIX_TAGS:
                assert f["value"] == REDACTED
            assert not any(s in f["value"] for s in SECRETS), f
    for col in table.column_names:
        if pa.types.is_string(table.schema.field(col).type):
            assert not any(s in (v or "") for v in table[col].to_pylist() for s in SECRETS)


@pytest.mark.parametrize(("seed", "odd_rate", "max_piece", "max_message"), [
    (1, 0.05, 1500, 1 << 20),
    (2, 0.2, 300, 1 << 20),
    (3, 0.05, 9000, 4096),  # size limit: message_too_large, salvage near the cap
    (4, 0.5, 60, 2048),
    (5, 0.01, 64000, 1 << 20),  # big pieces: many messages per piece
    (6, 0.1, 3, 1 << 20),  # tiny pieces: messages across many pieces
])
def test_feed_many_equals_feed(seed: int, odd_rate: float, max_piece: int,
                               max_message: int) -> None:
    rnd = random.Random(seed)
    ops = plan(rnd, 1500, odd_rate, max_piece)
    many, table = assert_same(ops, max_message)
    batched = sum(e.ts_first.size for e in many if isinstance(e, FixMessageRun))
    general = sum(isinstance(e, FixMessage) for e in many)
    assert batched > 0.5 * (batched + general), (batched, general)  # the batch path ran
    assert general > 0  # and so did the general one, for the odd units
    codes = {a.code for a in many if isinstance(a, Anomaly)}
    assert {"bad_checksum", "bad_body_length", "garbage_skipped"} <= codes, codes
    assert table.filter(table["poss_dup"]).num_rows > 0
    assert_redacted(table)


def test_string_columns_split_into_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Batch events whose values pass the 2 GiB string limit become several chunks
    (the limit is lowered here): the rows stay the same."""
    monkeypatch.setattr(columns, "MAX_STRING_BYTES", 3000)
    ops = plan(random.Random(11), 300, 0.05, 2000)
    many, table = assert_same(ops, 1 << 20)
    assert table.num_rows > 500
    assert sum(e.values.size for e in many if isinstance(e, FixMessageRun)) > 10 * 3000


def test_secret_in_batched_message_is_redacted() -> None:
    """554/925/553 in a plain Logon (no data field) go through the batch path."""
    rnd = random.Random(0)
    msg = encode([*header(rnd, 1, "A"), (553, SECRETS[2]), (554, SECRETS[0]),
                  (925, SECRETS[1]), (98, "0")])
    run = Run(msg * 3, np.array([len(msg) * 3], dtype=np.int64), np.array([5]), np.array([6]))
    events = FixSession(1).feed_many("out", run)
    assert [type(e) for e in events] == [FixMessageRun]
    table = fix_table(events)
    assert table.num_rows == 3
    assert_redacted(table)
    assert [f["value"] for f in table["fields"][0].as_py() if f["tag"] in (553, 554, 925)] == [
        REDACTED] * 3


def test_run_event_columns() -> None:
    """A ``FixMessageRun``'s columns, message by message, against ``FixMessage``."""
    rnd = random.Random(9)
    msgs = [good(rnd, i) for i in range(1, 40)]
    data = b"".join(msgs)
    ends = np.cumsum([len(m) for m in msgs], dtype=np.int64)
    ts = np.arange(len(msgs), dtype=np.int64) * 100
    (run,) = FixSession(1).feed_many("in", Run(data, ends, ts, ts + 7))
    assert isinstance(run, FixMessageRun)
    ref = [e for e in FixSession(1).feed("in", data, 0, 7) if isinstance(e, FixMessage)]
    m = run.messages
    assert run.ts_first.tolist() == ts.tolist() and run.ts_last.tolist() == (ts + 7).tolist()
    assert run.stream_offset.tolist() == [r.stream_offset for r in ref]
    assert m[:, fix.RUN_RAW_LENGTH].tolist() == [r.raw_length for r in ref] == list(map(len, msgs))
    assert m[:, fix.RUN_BODY_LENGTH].tolist() == [r.body_length for r in ref]
    assert m[:, fix.RUN_POSS_DUP].tolist() == [int(r.poss_dup) for r in ref]
    values = bytes(run.values).decode()
    f = v = 0
    for i, r in enumerate(ref):
        fields = []
        for tag, length in run.fields[f : f + m[i, fix.RUN_FIELD_COUNT]].tolist():
            fields.append((tag, values[v : v + length]))
            v += length
        f += m[i, fix.RUN_FIELD_COUNT]
        assert fields == r.fields
        seq = m[i, fix.RUN_SEQ_NUM] if m[i, fix.RUN_SEQ_OK] else None
        assert seq == r.msg_seq_num
        for c, (name, _) in enumerate(fix.RUN_NAMED):
            at = m[i, fix.RUN_NAMED_FIRST + c]
            assert (fields[at][1] if at >= 0 else None) == getattr(r, name), name


def test_incomplete_message_waits_across_runs() -> None:
    """A message split across runs (and one byte at a time) comes out once, whole."""
    rnd = random.Random(4)
    msgs = [good(rnd, i) for i in range(1, 30)]
    data = b"".join(msgs)
    ops: list[Op] = [("run", "out", [data[i : i + 1]]) for i in range(300)]
    ops.append(("run", "out", [data[300:]]))
    _, table = assert_same(ops, 1 << 20)
    assert table.num_rows == len(msgs)


@pytest.mark.parametrize(("fields", "seq", "tags"), [
    ([(34, "1" * 25)], None, [8, 9, 35, 34, 10]),  # MsgSeqNum beyond int64: NULL
    ([(34, "1"), (2147483648, "x")], 1, [8, 9, 35, 34, 10]),  # tag beyond int32: dropped
])
def test_values_the_table_cannot_hold(fields: list[tuple[int, str]], seq: int | None,
                                      tags: list[int]) -> None:
    """A hostile MsgSeqNum or tag that does not fit its column never fails the ingest:
    the message is kept (NULL sequence number; the field dropped with ``bad_field``),
    on both paths alike (such messages stay on the general path)."""
    msg = encode([(35, "0"), *fields])
    data = msg * 2 + encode([(35, "0"), (34, "2")])
    many, table = assert_same([("run", "out", [data])], 1 << 20)
    assert sum(e.ts_first.size for e in many if isinstance(e, FixMessageRun)) == 1
    assert table["seq_num"].to_pylist()[:2] == [seq, seq]
    assert [f["tag"] for f in table["fields"].to_pylist()[0]] == tags
    codes = [a[2] for a in anomaly_rows(many)]
    assert codes.count("bad_field") == (2 if 2147483648 in dict(fields) else 0)


def test_first_call_compiles_without_pinning_the_buffer(tmp_path: Path) -> None:
    """With an empty Numba cache, the first ``feed_many`` compiles the scan; the
    buffer must still be resizable afterwards (a partial message is kept, then
    more arrives through both paths)."""
    code = """if True:
        import numpy as np
        from pcapflow.parsers.events import Run
        from pcapflow.parsers.fix import FixMessageRun, FixSession
        m = b"8=FIX.4.4\\x019=5\\x0135=0\\x0110=163\\x01"
        data = m * 3 + m[:9]
        s = FixSession(1)
        ev = s.feed_many("out", Run(data, np.array([len(data)]), np.array([1]), np.array([2])))
        ev += s.feed("out", m[9:] + m[:4], 3, 4)
        ev += s.feed_many("out", Run(m[4:], np.array([len(m) - 4]), np.array([5]), np.array([6])))
        rows = sum(e.ts_first.size if isinstance(e, FixMessageRun) else 1 for e in ev)
        assert rows == 5, ev
        print("ok")
    """
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "numba")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-3000:]


def test_fuzz_seeds_through_the_fuzz_harness() -> None:
    """The fuzz harness's ``check_batch_path`` on its FIX seeds."""
    for seed in FIX_SEEDS:
        check_batch_path(lambda: FixSession(9, max_message=1 << 14), seed)


_chunks = st.one_of(
    st.integers(0, 10**6).map(lambda s: good(random.Random(s), s % 1000 + 1)),
    st.integers(0, 10**6).map(lambda s: odd(random.Random(s), s % 1000 + 1)),
    st.binary(max_size=12),
    st.sampled_from([b"8=FIX", b"8=FIX.4.4\x019=", b"\x0110=000\x01", b"\x01"]),
)


@settings(max_examples=150, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(chunks=st.lists(_chunks, min_size=1, max_size=30), seed=st.integers(0, 2**32),
       max_message=st.sampled_from([64, 300, 2048, 1 << 20]))
def test_feed_many_equals_feed_random(chunks: list[bytes], seed: int, max_message: int) -> None:
    rnd = random.Random(seed)
    pieces = cut(rnd, b"".join(chunks), rnd.choice([3, 50, 400, 5000]))
    ops: list[Op] = []
    while pieces:
        k = rnd.randint(1, 12)
        ops.append(("run", rnd.choice(["out", "out", "in"]), pieces[:k]))
        pieces = pieces[k:]
        if rnd.random() < 0.1:
            ops.append(("gap", "out", rnd.randint(1, 50)))
    assert_same(ops, max_message)
