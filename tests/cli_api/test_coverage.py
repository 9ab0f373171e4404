"""Honest coverage: the ingest summary and ``pcapflow report`` say how many connections
the orders come from and why the others were not decoded (``pcapflow.coverage``).

The counts are checked against the tables themselves (flows with payload, flows
with orders) and, for the samples, against the trading clients' own logs (the
connections they sent orders on). ``--keylog`` is advised only to a user who did
not pass one.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import pcapflow
from pcapflow.coverage import REASONS, coverage

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from helpers.capture_split import split

SAMPLES = Path(__file__).resolve().parents[2] / "sample_pcaps"
CAPTURES = sorted([*SAMPLES.glob("*.pcap"), *SAMPLES.glob("*.pcapng")])
KEYLOGS = sorted(SAMPLES.glob("*.keylog"))


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pcapflow.cli", *args], capture_output=True,
                          text=True, timeout=600)


def _order_connections() -> int:
    """Connections the sample clients sent orders on, from their own logs."""
    n = 0
    for cap in CAPTURES:
        ports = set()
        for line in (SAMPLES / f"{cap.stem}.truth.jsonl").read_text().splitlines():
            rec = json.loads(line)
            port = rec.get("local_port") or rec.get("port")
            if port is not None:
                ports.add(port)
        n += len(ports)
    return n


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("keyed")
    out = _cli("ingest", *map(str, CAPTURES), *[a for k in KEYLOGS for a in ("--keylog", str(k))],
               "--data", str(root))
    assert out.returncode == 0, out.stderr
    (root / "summary.txt").write_text(out.stdout + out.stderr)  # piped: notes on stderr
    return root


def test_with_key_logs_every_order_connection_is_covered(keyed: Path) -> None:
    ds = pcapflow.open(keyed)
    cov = coverage(ds)
    payload = ds.fetchall("SELECT count(*) FROM flows WHERE transport = 'tcp' "
                          "AND payload_bytes_out + payload_bytes_in > 0")[0][0]
    with_orders = ds.fetchall("SELECT count(*) FROM (SELECT DISTINCT capture_id, flow_id "
                              "FROM orders)")[0][0]
    assert (cov.connections, cov.with_orders, cov.timing_only) == (payload, with_orders, 0)
    truth = _order_connections()
    if truth:
        assert cov.with_orders == truth
    assert cov.undecoded == []
    assert cov.connections == cov.with_orders + cov.decoded
    line = cov.line()
    assert line == (f"coverage: orders from {with_orders} of {payload} connections with "
                    f"payload; {cov.decoded} decoded without orders")
    summary = (keyed / "summary.txt").read_text()
    assert line in " ".join(summary.split())
    report = _cli("report", "--data", str(keyed))
    assert report.returncode == 0, report.stderr
    assert line in " ".join((report.stdout + report.stderr).split())  # notes: on stderr
    assert "--keylog" not in report.stdout + report.stderr + summary


def test_without_key_logs_the_summary_says_to_pass_one(tmp_path: Path) -> None:
    caps = [c for c in CAPTURES if c.suffix == ".pcap"]  # the pcapng embeds its secrets
    out = _cli("ingest", *map(str, caps), "--data", str(tmp_path))
    assert out.returncode == 0, out.stderr
    cov = coverage(pcapflow.open(tmp_path))
    tls = pcapflow.open(tmp_path).fetchall(
        "SELECT count(*) FROM flows WHERE app_protocol LIKE 'tls%'")[0][0]
    assert dict(cov.undecoded) == {REASONS["tls_no_keylog"]: tls}
    text = " ".join((out.stdout + out.stderr).split())
    assert f"not decoded: {tls} TLS in a capture ingested without a key log (ingest again " \
           "with --keylog FILE)" in text
    assert cov.timing_only > 0 and "only from TLS record timing" in text


def test_wrong_key_log_is_not_told_to_pass_a_key_log(tmp_path: Path) -> None:
    cap = SAMPLES / "binance_rest_tls13.pcap"
    out = _cli("ingest", str(cap), "--keylog", str(SAMPLES / "okx_ws_tls12.keylog"),
               "--data", str(tmp_path))
    assert out.returncode == 0, out.stderr
    rep = _cli("report", "--data", str(tmp_path))
    for text in (out.stdout + out.stderr, rep.stdout + rep.stderr):
        flat = " ".join(text.split())
        assert "--keylog" not in flat
        assert "not decoded: 2 TLS whose secrets are not in the key log" in flat


@pytest.mark.parametrize(("name", "cut"), [("okx_ws_tls12", 40), ("binance_rest_tls13", 40),
                                         ("deribit_jsonrpc_tls13", 30)])
def test_sessions_that_began_before_the_capture(tmp_path: Path, name: str, cut: int) -> None:
    """The capture starts after the TLS handshakes: TLS 1.3 is decrypted all the same
    (the key search), TLS 1.2 cannot be and is named as such; every connection is
    accounted for, and a user who passed the key log is not told to pass one."""
    _, tail = split(SAMPLES / f"{name}.pcap", [cut], tmp_path)
    out = _cli("ingest", str(tail), "--keylog", str(SAMPLES / f"{name}.keylog"),
               "--data", str(tmp_path / "d"))
    assert out.returncode == 0, out.stderr
    ds = pcapflow.open(tmp_path / "d")
    cov = coverage(ds)
    n = ds.fetchall("SELECT count(*) FROM flows WHERE payload_bytes_out + payload_bytes_in > 0 "
                    "AND app_protocol LIKE 'tls%'")[0][0]
    assert n > 0 and cov.connections == n
    assert cov.with_orders + cov.decoded + cov.partial + cov.not_decoded - cov.timing_only == n
    if name.endswith("tls12"):
        assert dict(cov.undecoded) == {REASONS["tls_no_handshake"]: n}
    else:
        assert cov.undecoded == [] and cov.with_orders + cov.decoded + cov.partial == n
    flat = " ".join((out.stdout + out.stderr).split())
    assert cov.line() in flat and "--keylog" not in flat


def test_tcp_only_and_empty_datasets(tmp_path: Path) -> None:
    cap = SAMPLES / "fix44_plain.pcap"
    pcapflow.ingest([cap], data=tmp_path / "t", app=False)
    assert coverage(pcapflow.open(tmp_path / "t")).line() == (
        "coverage: orders from 0 of 1 connections with payload; not decoded: 1 not parsed "
        "(ingested with --tcp-only)")
    rep = _cli("report", "--data", str(tmp_path / "empty"))
    assert rep.returncode == 1 and "pcapflow ingest" in rep.stderr  # no dataset: one line


def test_short_connections_no_protocol_claims_are_not_called_tcp_only(tmp_path: Path) -> None:
    """Connections that ended before detection named a protocol (one byte each, claimed
    by no probe) are 'not recognised' on a default ingest; only an ingest with
    --tcp-only says --tcp-only."""
    from helpers.tiny_flows import write

    cap = tmp_path / "tiny.pcap"
    write(cap, 20)
    pcapflow.ingest([cap], data=tmp_path / "d")
    with pcapflow.open(tmp_path / "d") as ds:
        assert ds.fetchall("SELECT DISTINCT app_protocol FROM flows") == [("unknown",)]
        assert coverage(ds).line() == (
            "coverage: orders from 0 of 20 connections with payload; not decoded: 20 "
            f"{REASONS['unknown_protocol']}")
    pcapflow.ingest([cap], data=tmp_path / "t", app=False)
    with pcapflow.open(tmp_path / "t") as ds:
        assert f"20 {REASONS['tcp_only']}" in coverage(ds).line()


def test_report_coverage_follows_the_exchange_filter(keyed: Path) -> None:
    ds = pcapflow.open(keyed)
    okx = coverage(ds, venues=["okx"])
    assert okx.connections == ds.fetchall(
        "SELECT count(*) FROM flows WHERE venue = 'okx' AND payload_bytes_out "
        "+ payload_bytes_in > 0")[0][0] > 0
    rep = _cli("report", "--data", str(keyed), "--exchange", "okx")
    assert okx.line() in " ".join((rep.stdout + rep.stderr).split())


def test_coverage_of_the_unknown_venue_counts_the_unnamed_connections(keyed: Path) -> None:
    # `--exchange unknown` resolves to None: "venue IN (NULL)" once counted nothing
    ds = pcapflow.open(keyed)
    sql = ("SELECT count(*) FROM flows WHERE {} AND payload_bytes_out + payload_bytes_in > 0")
    unnamed = ds.scalar(sql.format("venue IS NULL"))
    okx = ds.scalar(sql.format("venue = 'okx'"))
    assert unnamed > 0 and okx > 0
    assert coverage(ds, venues=[None]).connections == unnamed
    assert coverage(ds, venues=["okx", None]).connections == unnamed + okx


def test_a_connection_read_only_in_part_is_not_called_decoded(tmp_path: Path) -> None:
    """curl's last HTTP/2 connection (cancels only), picked up in its middle: nghttp2 sent
    ``:method: DELETE`` as an HPACK entry before the cut, so no request can be told apart
    as an order. Coverage says "decoded only in part" and why, not "decoded without
    orders"; with a TLS connection whose key is missing beside it, the report's reason
    counts that one connection (a LEFT JOIN's NULL row once counted as a second)."""
    import dpkt

    truth = [json.loads(x) for x in
             (SAMPLES / "binance_rest_h2_curl.truth.jsonl").read_text().splitlines()]
    cancels = {t["local_port"] for t in truth if t["kind"] == "cancel"}
    port = next(p for p in cancels
                if all(t["kind"] == "cancel" for t in truth if t["local_port"] == p))
    with (SAMPLES / "binance_rest_h2_curl.pcap").open("rb") as fh:
        mine = [(ts, buf) for ts, buf in dpkt.pcap.Reader(fh)
                if port in (lambda t: (t.sport, t.dport))(dpkt.ethernet.Ethernet(buf).data.data)]
    cut = tmp_path / "cancels.pcap"
    with cut.open("wb") as fh:
        w = dpkt.pcap.Writer(fh, snaplen=65535, linktype=dpkt.pcap.DLT_EN10MB, nano=True)
        for ts, buf in mine[len(mine) * 2 // 5:]:
            w.writepkt(buf, ts)
    data = tmp_path / "d"
    pcapflow.ingest([cut, SAMPLES / "okx_ws_tls12.pcap"],
                    keylog=[SAMPLES / "binance_rest_h2_curl.keylog"], data=data)
    ds = pcapflow.open(data)
    cov = coverage(ds)
    assert (cov.connections, cov.with_orders, cov.decoded, cov.partial) == (2, 0, 0, 1)
    assert dict(cov.undecoded) == {REASONS["missing_keys"]: 1}
    assert f"1 decoded only in part ({REASONS['partial']})" in cov.line()
    rep = _cli("report", "--data", str(data))
    flat = " ".join((rep.stdout + rep.stderr).split())
    assert "1 of 2 TLS connections could not be decrypted" in flat, flat


def test_narrow_dataset_gives_the_same_coverage(keyed: Path) -> None:
    """The ingest summary reads coverage through the views ``coverage.TABLES`` of its
    captures' partitions only: per capture, the same answers as the whole dataset."""
    from pcapflow.coverage import TABLES, keylog_coverage
    from pcapflow.dataset import Dataset

    with Dataset(keyed) as whole:
        ids = [r[0] for r in whole.fetchall("SELECT DISTINCT capture_id FROM captures")]
        assert len(ids) > 3
        for cid in ids:
            with Dataset(keyed, captures=[cid], views=TABLES) as narrow:
                assert coverage(narrow, capture_ids=[cid]) == coverage(whole, capture_ids=[cid])
                assert (keylog_coverage(narrow, capture_ids=[cid])
                        == keylog_coverage(whole, capture_ids=[cid]))


def test_plain_coverage_is_the_sql_coverage(tmp_path: Path) -> None:
    """``plain_coverage`` (Arrow alone: what the ingest summary of a capture without
    message rows or a key log prints) says what ``coverage`` says, or None (then the
    SQL answers): every sample ingested without key logs, connections no probe claims,
    and a --tcp-only dataset, each capture alone and all together."""
    from helpers.tiny_flows import write

    from pcapflow.coverage import plain_coverage

    tiny = tmp_path / "tiny.pcap"
    write(tiny, 20)
    pcapflow.ingest([*CAPTURES, tiny], data=tmp_path / "d", sets=False, workers=1)
    pcapflow.ingest([SAMPLES / "fix44_plain.pcap", tiny], data=tmp_path / "t", app=False,
                    sets=False)
    write(tmp_path / "five.pcap", 5)  # (and one capture of the default ingest beside them)
    pcapflow.ingest([tmp_path / "five.pcap"], data=tmp_path / "t")
    answered = []
    for root in (tmp_path / "d", tmp_path / "t"):
        with pcapflow.open(root) as ds:
            ids = [r[0] for r in ds.fetchall("SELECT capture_id FROM captures ORDER BY 1")]
            for some in [*([c] for c in ids), ids]:
                got = plain_coverage(root, some)
                if got is not None:
                    assert got == coverage(ds, capture_ids=some), (root.name, some)
                    answered.append((root.name, len(some), got.line()))
    assert ("d", 1, f"coverage: orders from 0 of 20 connections with payload; not decoded: "
            f"20 {REASONS['unknown_protocol']}") in answered
    assert ("t", 3, f"coverage: orders from 0 of 26 connections with payload; not decoded: "
            f"21 {REASONS['tcp_only']}, 5 {REASONS['unknown_protocol']}") in answered
    assert not [a for a in answered if a[0] == "d" and a[1] > 1]  # (the samples' messages)
