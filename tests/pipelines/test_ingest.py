"""End-to-end ingest of the committed samples, checked against tshark and dpkt.

Every number compared here is computed in the test from an independent decoder
run on the same file, never typed in.
"""

from __future__ import annotations

import gzip
import shutil
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest
from helpers.tshark_util import AGGREGATOR, fields, need_tshark
from pcapflow.parsers.redact import redact_json_text

import pcapflow

SAMPLES = Path(__file__).resolve().parents[2] / "sample_pcaps"
CAPTURES = sorted(p for p in SAMPLES.glob("*.pcap*"))
KEYLOGS = sorted(SAMPLES.glob("*.keylog"))


def _ns(epoch: str) -> int:
    return int(Decimal(epoch) * 1_000_000_000)


@pytest.fixture(scope="module")
def ds(tmp_path_factory: pytest.TempPathFactory) -> pcapflow.Dataset:
    data = tmp_path_factory.mktemp("data")
    pcapflow.ingest(CAPTURES, keylog=KEYLOGS, data=data)
    return pcapflow.open(data)


def _cid(ds: pcapflow.Dataset, name: str) -> str:
    return ds.scalar("SELECT capture_id FROM captures WHERE path LIKE ?", [f"%/{name}"])


def _count(ds: pcapflow.Dataset, table: str, name: str, where: str = "true") -> int:
    return ds.scalar(
        f"SELECT count(*) FROM {table} WHERE capture_id = ? AND {where}", [_cid(ds, name)]
    )


@pytest.mark.parametrize("cap", CAPTURES, ids=lambda p: p.name)
def test_packets_and_connections_equal_tshark(ds: pcapflow.Dataset, cap: Path) -> None:
    rows = fields(str(cap), ["frame.number", "tcp.stream"])
    assert ds.scalar(
        "SELECT packets FROM captures WHERE capture_id = ?", [_cid(ds, cap.name)]
    ) == len(rows)
    streams = {r[1] for r in rows if len(r) > 1 and r[1]}
    assert _count(ds, "flows", cap.name, "transport = 'tcp'") == len(streams)


@pytest.mark.parametrize("name", ["binance_rest_tls13.pcap", "lossy_rest_tls13.pcap"])
def test_http_messages_equal_tshark(ds: pcapflow.Dataset, name: str) -> None:
    key = SAMPLES / name.replace(".pcap", ".keylog")
    rows = fields(
        str(SAMPLES / name),
        ["http.request", "http.response"],
        display_filter="http",
        options=[f"tls.keylog_file:{key}", "tcp.reassemble_out_of_order:TRUE"],
    )
    requests = sum(1 for r in rows if r[0])
    responses = sum(1 for r in rows if len(r) > 1 and r[1])
    assert _count(ds, "http_messages", name, "kind = 'request'") == requests
    assert _count(ds, "http_messages", name, "kind = 'response'") == responses


@pytest.mark.parametrize(
    "name", ["okx_ws_tls12.pcap", "deribit_jsonrpc_tls13.pcap", "binance_wsapi_tls13.pcap"]
)
def test_websocket_messages_equal_tshark(ds: pcapflow.Dataset, name: str) -> None:
    key = SAMPLES / name.replace(".pcap", ".keylog")
    rows = fields(
        str(SAMPLES / name), ["websocket.fin"], options=[f"tls.keylog_file:{key}"], every=True
    )
    # a message ends with the frame that has FIN set (control frames always do)
    fins = sum(v.split(AGGREGATOR).count("1") for r in rows for v in r if v)
    assert _count(ds, "ws_messages", name) == fins


def test_websocket_text_and_times_equal_tshark(ds: pcapflow.Dataset) -> None:
    """Uncompressed JSON-RPC: each message's text and ts_last to the nanosecond."""
    name = "deribit_jsonrpc_tls13.pcap"
    key = SAMPLES / name.replace(".pcap", ".keylog")
    rows = fields(
        str(SAMPLES / name),
        ["frame.time_epoch", "websocket.payload.text"],
        display_filter="websocket.payload.text",
        options=[f"tls.keylog_file:{key}"],
        every=True,
    )
    theirs = sorted((_ns(r[0]), redact_json_text(t)) for r in rows for t in r[1].split(AGGREGATOR))
    ours = ds.fetchall(
        "SELECT epoch_ns(ts_last), payload FROM ws_messages WHERE capture_id = ? "
        "AND opcode = 'text' ORDER BY 1, 2",
        [_cid(ds, name)],
    )
    assert len(ours) == len(theirs) > 100
    assert ours == theirs


@pytest.mark.parametrize("name", ["fix44_plain.pcap", "fix44_sll2.pcap"])
def test_fix_messages_equal_tshark(ds: pcapflow.Dataset, name: str) -> None:
    rows = fields(
        str(SAMPLES / name), ["frame.time_epoch", "fix.MsgType"], display_filter="fix", every=True
    )
    types = sorted(t for r in rows for t in r[1].split(AGGREGATOR))
    ours = sorted(
        r[0]
        for r in ds.fetchall(
            "SELECT msg_type FROM fix_messages WHERE capture_id = ?", [_cid(ds, name)]
        )
    )
    assert ours == types


def test_tls_metadata(ds: pcapflow.Dataset) -> None:
    got = ds.fetchall(
        "SELECT DISTINCT sni, tls_version, app_protocol FROM flows WHERE sni IS NOT NULL ORDER BY 1"
    )
    names = {g[0] for g in got}
    assert {"api.binance.com", "ws-api.binance.com", "ws.okx.com", "www.deribit.com"} <= names
    assert {g[1] for g in got} == {"1.2", "1.3"}
    assert (
        ds.scalar("SELECT count(*) FROM anomalies WHERE code IN ('missing_keys', 'decrypt_failed')")
        == 0
    )


def test_reingest_replaces_only_that_capture(tmp_path: Path) -> None:
    cap = SAMPLES / "fix44_plain.pcap"
    other = SAMPLES / "fix44_sll2.pcap"
    pcapflow.ingest([cap, other], data=tmp_path)
    before = pcapflow.open(tmp_path).df("SELECT * FROM fix_messages ORDER BY ALL")
    pcapflow.ingest([cap], data=tmp_path)
    after = pcapflow.open(tmp_path).df("SELECT * FROM fix_messages ORDER BY ALL")
    assert before.equals(after)
    assert pcapflow.open(tmp_path).scalar("SELECT count(*) FROM captures") == 2


def test_stdin_and_gzip_give_the_same_rows(tmp_path: Path) -> None:
    cap = SAMPLES / "fix44_plain.pcap"
    gz = tmp_path / "c.pcap.gz"
    gz.write_bytes(gzip.compress(cap.read_bytes()))
    exe = shutil.which("pcapflow") or sys.executable
    for src, data in (("-", tmp_path / "a"), (str(gz), tmp_path / "b"), (str(cap), tmp_path / "c")):
        args = [exe, "ingest", src, "--data", str(data)]
        if exe == sys.executable:
            args = [exe, "-m", "pcapflow.cli", *args[1:]]
        with open(cap, "rb") as fh:
            subprocess.run(args, stdin=fh, check=True, capture_output=True, timeout=120)
    q = ("SELECT flow_id, direction, msg_type, seq_num, epoch_ns(ts_last) FROM fix_messages "
         "ORDER BY ALL")
    a, b, c = (pcapflow.open(tmp_path / x).fetchall(q) for x in "abc")
    assert a == b == c and len(a) > 0


def test_one_path_and_one_key_log_may_be_given_as_strings(tmp_path: Path) -> None:
    # a str is a Sequence: iterated, "a.pcap" was five one-letter paths ("a: cannot open")
    cap, key = SAMPLES / "binance_wsapi_tls13.pcap", SAMPLES / "binance_wsapi_tls13.keylog"
    (one,) = pcapflow.ingest(str(cap), keylog=str(key), data=tmp_path / "str")
    (listed,) = pcapflow.ingest([cap], keylog=[key], data=tmp_path / "list")
    (path,) = pcapflow.ingest(cap, keylog=key, data=tmp_path / "path")
    assert one.rows == listed.rows == path.rows and one.rows["latency"] > 0


def test_opening_a_dataset_that_does_not_exist_is_an_error(tmp_path: Path) -> None:
    # not an empty dataset: a mistyped path would answer every question with no rows
    from pcapflow.parsers.errors import PcapflowError

    with pytest.raises(PcapflowError, match="no such dataset directory"):
        pcapflow.open(tmp_path / "typo")
    (tmp_path / "empty").mkdir()  # a directory with no tables yet opens empty
    assert pcapflow.open(tmp_path / "empty").scalar("SELECT count(*) FROM latency") == 0


def test_packets_table_is_opt_in(tmp_path: Path) -> None:
    cap = SAMPLES / "okx_ws_tls12.pcap"
    pcapflow.ingest([cap], data=tmp_path / "x")
    assert pcapflow.open(tmp_path / "x").scalar("SELECT count(*) FROM packets") == 0
    pcapflow.ingest([cap], data=tmp_path / "y", packets=True)
    ds = pcapflow.open(tmp_path / "y")
    n = ds.scalar("SELECT packets FROM captures")
    assert ds.fetchone("SELECT count(*), count(DISTINCT packet) FROM packets") == (n, n)


def test_tshark_is_installed_in_ci() -> None:
    need_tshark()


def test_pcapng_decryption_secrets_block_needs_no_key_log(tmp_path: Path) -> None:
    """The key log embedded with `editcap --inject-secrets` decrypts on its own."""
    cap = SAMPLES / "binance_rest_dsb.pcapng"
    pcapflow.ingest([cap], data=tmp_path)
    ds = pcapflow.open(tmp_path)
    rows = fields(str(cap), ["http.request", "http.response"], display_filter="http")
    assert ds.scalar("SELECT count(*) FROM http_messages") == len(rows) > 0
    assert ds.scalar("SELECT count(*) FROM anomalies WHERE code = 'missing_keys'") == 0


def test_jobs_ingest_in_parallel_processes_gives_the_same_rows(tmp_path: Path) -> None:
    caps = [SAMPLES / "fix44_plain.pcap", SAMPLES / "okx_ws_tls12.pcap"]
    keys = [SAMPLES / "okx_ws_tls12.keylog"]
    pcapflow.ingest(caps, keylog=keys, data=tmp_path / "seq")
    pcapflow.ingest(caps, keylog=keys, data=tmp_path / "par", jobs=2)
    q = ("SELECT capture_id, flow_id, direction, opcode, payload, epoch_ns(ts_last) "
         "FROM ws_messages ORDER BY ALL")
    a = pcapflow.open(tmp_path / "seq").fetchall(q)
    b = pcapflow.open(tmp_path / "par").fetchall(q)
    assert a == b and len(a) > 100
    q = "SELECT capture_id, venue, latency_ns FROM latency ORDER BY ALL"
    seq, par = (pcapflow.open(tmp_path / d).fetchall(q) for d in ("seq", "par"))
    assert seq == par


def test_open_connections_are_capped(tmp_path: Path) -> None:
    """Past the cap the least recently active connection is finished early, with an
    anomaly; the run goes on and what was parsed before is kept."""
    cap = SAMPLES / "binance_wsapi_tls13.pcap"
    pcapflow.ingest([cap], keylog=[SAMPLES / "binance_wsapi_tls13.keylog"], data=tmp_path,
                    limits={"max_open_connections": 1})
    ds = pcapflow.open(tmp_path)
    assert ds.scalar("SELECT count(*) FROM anomalies WHERE code = 'connection_evicted'") >= 1
    assert ds.scalar("SELECT count(*) FROM ws_messages") > 0


def test_a_dataset_from_an_older_version_still_reads(tmp_path: Path) -> None:
    """A column added to a table later reads as NULL in files written before it."""
    import pyarrow.parquet as pq
    from pcapflow.pipelines.match import rematch

    from pcapflow.venues import registry

    pcapflow.ingest([SAMPLES / "okx_ws_tls12.pcap"], keylog=[SAMPLES / "okx_ws_tls12.keylog"],
                    data=tmp_path)
    for f in (tmp_path / "tcp_rtt").rglob("*.parquet"):  # as written before `piggybacked`
        pq.write_table(pq.read_table(f).drop_columns(["piggybacked"]), f)
    ds = pcapflow.open(tmp_path)
    n, known = ds.fetchone("SELECT count(*), count(piggybacked) FROM tcp_rtt")
    assert n > 0 and known == 0
    before = ds.scalar("SELECT count(*) FROM latency")
    rematch(tmp_path, registry(None))
    assert pcapflow.open(tmp_path).scalar("SELECT count(*) FROM latency") == before > 0
