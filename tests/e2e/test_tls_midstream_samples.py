"""TLS 1.3 sample captures cut after their handshakes: the key search decrypts the rest.

Every TLS 1.3 capture of sample_pcaps/ (MANIFEST.md) is cut by dropping its first
K packets, as if tcpdump had started later, and ingested with the same key log
(or the same Decryption Secrets Block). The full capture's own tables are the
oracle:

- at every cut where no TLS record straddles the cut: every record the full
  capture has after the cut is in the cut capture's ``tls_records``, decrypted,
  with the same plaintext length, and every such connection has a
  ``handshake_not_captured`` anomaly that names its key log entry;
- at cuts where, in addition, no HTTP/WebSocket message and no order/reply pair
  straddles the cut and the inner protocol's start (a WebSocket upgrade) is kept:
  every order after the cut is found, with the same correlation id, times and
  ``latency_ns`` as in the full capture, exact to the nanosecond, and nothing else.

Cuts inside a message or after a WebSocket upgrade need the application layer's
own mid-stream resync (issue 15, item 3: HTTP and WebSocket bullets); at such
cuts only the TLS assertions are made here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers.capture_util import drop_first_packets, read_all
from helpers.paths import SAMPLES

import pcapflow

TLS13 = {
    "binance_rest_tls13": ("pcap", True),
    "binance_wsapi_tls13": ("pcap", True),
    "deribit_jsonrpc_tls13": ("pcap", True),
    "lossy_rest_tls13": ("pcap", True),
    "binance_rest_dsb": ("pcapng", False),  # key log in a Decryption Secrets Block
}
CUTS_TLS = 4  # cut points per capture for the TLS assertions
CUTS_ORDERS = 4  # ... and for the order assertions (where there are quiet points)
MIN_RECORDS = 8  # decrypted records the full capture has after a cut point


def _manifest_tls13() -> set[str]:
    # the Captures table only: the folder recordings ("Capture sets") have their own
    # tests (test_samples_rotated.py; midsession_binance is itself begun mid-session)
    text = (SAMPLES / "MANIFEST.md").read_text().split("## Capture sets")[0]
    return {line.split("|")[2].strip() for line in text.splitlines()
            if line.startswith("| ") and "| TLS 1.3 |" in line}


# HTTP/2 begun mid-connection names only the orders whose header blocks do not lean on
# the HPACK table built before the cut: tests/e2e/test_http2_sample.py checks those.
# binance_tick_tls13 is the same client stack and protocols as binance_wsapi_tls13
# (Python's OpenSSL, websockets with permessage-deflate), cut here already; its own test
# (tests/e2e/test_why_tick.py) checks its feed gaps and tick-to-trade times.
ELSEWHERE = {"binance_rest_h2", "binance_rest_h2_curl", "binance_tick_tls13"}


def test_every_tls13_sample_is_covered() -> None:
    assert _manifest_tls13() == set(TLS13) | ELSEWHERE


class Ingested:
    """One ingest's tables, as pandas frames."""

    def __init__(self, path: Path, keylog: list[Path], data: Path) -> None:
        pcapflow.ingest([path], keylog=keylog, data=data)
        ds = pcapflow.open(data)
        ports = "SELECT flow_id, client_port FROM flows"
        self.records = ds.df(
            f"SELECT p.client_port, r.direction, r.content_type, epoch_ns(r.ts_first) AS t1, "
            f"epoch_ns(r.ts_last) AS t2, r.length, r.decrypted, r.plaintext_length "
            f"FROM tls_records r JOIN ({ports}) p USING (flow_id)")
        self.messages = ds.df(
            "SELECT epoch_ns(ts_first) AS t1, epoch_ns(ts_last) AS t2 FROM http_messages "
            "UNION ALL SELECT epoch_ns(ts_first), epoch_ns(ts_last) FROM ws_messages")
        # HTTP/1.1 exchanges (the n-th request of a connection and its n-th response)
        self.exchanges = ds.df(
            "WITH m AS (SELECT flow_id, kind, ts_first, ts_last, row_number() OVER "
            "(PARTITION BY flow_id, kind ORDER BY ts_first) AS n FROM http_messages) "
            "SELECT epoch_ns(q.ts_first) AS t1, epoch_ns(r.ts_last) AS t2 FROM m q "
            "JOIN m r ON q.flow_id = r.flow_id AND q.n = r.n "
            "AND q.kind = 'request' AND r.kind = 'response'")
        self.upgrades = ds.df(  # the first HTTP message of each WebSocket connection
            "SELECT epoch_ns(min(ts_first)) AS t1 FROM http_messages "
            "WHERE flow_id IN (SELECT flow_id FROM ws_messages) GROUP BY flow_id")
        self.latency = ds.df(
            f"SELECT p.client_port, l.venue, l.kind, l.correlation_id, l.client_order_id, "
            f"epoch_ns(l.order_ts) AS o, epoch_ns(l.ack_ts) AS a, l.latency_ns "
            f"FROM latency l JOIN ({ports}) p USING (flow_id)")
        self.anomalies = ds.df(
            f"SELECT p.client_port, a.direction, a.code, a.detail "
            f"FROM anomalies a LEFT JOIN ({ports}) p USING (flow_id)")
        self.flows = ds.df("SELECT client_port, app_protocol FROM flows")
        self.hellos = ds.df(
            "SELECT epoch_ns(ts_last) AS t2 FROM tls_records WHERE content_type = 22 "
            "AND NOT decrypted")


def _straddles(t1: np.ndarray, t2: np.ndarray, cut: int) -> bool:
    return bool(((t1 < cut) & (t2 >= cut)).any())


def _inside_records(full: Ingested, ts: np.ndarray) -> list[int]:
    """Packet counts K whose cut falls inside a TLS record (after every hello)."""
    after = int(full.hellos.t2.max())
    r = full.records
    ks = [k for k in range(1, ts.size) if int(ts[k]) > after
          and _straddles(r.t1.to_numpy(), r.t2.to_numpy(), int(ts[k]))
          and int((r.decrypted & (r.t1 >= int(ts[k]))).sum()) >= MIN_RECORDS]
    return _spread(ks, CUTS_TLS)


def _cut_points(full: Ingested, ts: np.ndarray) -> tuple[list[int], list[int]]:
    """Packet counts K to drop: TLS-quiet ones, and quiet ones for the orders."""
    after = int(full.hellos.t2.max())  # every hello of the capture is before the cut
    tls_quiet, quiet = [], []
    r, m, lat = full.records, full.messages, full.latency
    for k in range(1, ts.size):
        cut = int(ts[k])
        if cut <= after or cut == int(ts[k - 1]):
            continue
        if (_straddles(r.t1.to_numpy(), r.t2.to_numpy(), cut)
                or int((r.decrypted & (r.t1 >= cut)).sum()) < MIN_RECORDS):
            continue
        tls_quiet.append(k)
        x = full.exchanges
        if (_straddles(m.t1.to_numpy(), m.t2.to_numpy(), cut)
                or _straddles(x.t1.to_numpy(), x.t2.to_numpy(), cut)
                or _straddles(lat.o.to_numpy(), lat.a.to_numpy(), cut)
                or (full.upgrades.size and bool((full.upgrades.t1 < cut).any()))
                or not (lat.o > cut).any()):
            continue
        quiet.append(k)
    return _spread(tls_quiet, CUTS_TLS), _spread(quiet, CUTS_ORDERS)


def _spread(ks: list[int], n: int) -> list[int]:
    if len(ks) <= n:
        return ks
    return [ks[i] for i in np.linspace(0, len(ks) - 1, n).round().astype(int)]


@pytest.fixture(scope="module")
def full(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Ingested, np.ndarray]]:
    out = {}
    for name, (ext, has_log) in TLS13.items():
        path = SAMPLES / f"{name}.{ext}"
        keylog = [SAMPLES / f"{name}.keylog"] if has_log else []
        out[name] = (Ingested(path, keylog, tmp_path_factory.mktemp(name)),
                     read_all(path).ts_ns)
    return out


def _secrets(name: str) -> list[str]:
    """The hex secrets of the sample's key log (none may reach a table)."""
    path = SAMPLES / f"{name}.keylog"
    if not path.exists():
        return []
    return [line.split()[2].lower() for line in path.read_text().splitlines()
            if len(line.split()) == 3 and not line.startswith("#")]


def _ingest_cut(name: str, k: int, tmp: Path) -> Ingested:
    ext, has_log = TLS13[name]
    tmp.mkdir(parents=True)
    cut = tmp / f"{name}_from_{k}.{ext}"
    drop_first_packets(SAMPLES / f"{name}.{ext}", cut, k)
    keylog = [SAMPLES / f"{name}.keylog"] if has_log else []
    return Ingested(cut, keylog, tmp / "data")


@pytest.mark.parametrize("name", sorted(TLS13))
def test_records_after_the_cut_are_decrypted(name: str, full: dict, tmp_path: Path) -> None:
    ref, ts = full[name]
    tls_cuts, _ = _cut_points(ref, ts)
    assert len(tls_cuts) >= 2, "too few cut points after the handshakes"
    for k in tls_cuts:
        got = _ingest_cut(name, k, tmp_path / str(k))
        # what the full capture decrypts after the cut (not the compatibility
        # ChangeCipherSpec, nor a direction after a capture gap in the lossy one)
        want = ref.records[(ref.records.t1 >= int(ts[k])) & ref.records.decrypted]
        assert want.size
        key = ["client_port", "direction", "t1", "length"]
        merged = want.merge(got.records, on=key, how="left", suffixes=("", "_cut"))
        assert merged.decrypted_cut.notna().all(), f"K={k}: records missing"
        assert merged.decrypted_cut.astype(bool).all(), f"K={k}: records not decrypted"
        assert (merged.plaintext_length_cut == merged.plaintext_length).all(), f"K={k}"
        found = got.anomalies[got.anomalies.code == "handshake_not_captured"]
        # one per direction of every connection whose handshake was cut away
        open_ports = set(want.client_port)
        assert set(found.client_port) == open_ports, f"K={k}"
        assert found.detail.str.contains("found by trial decryption").all()
        assert not (got.anomalies.code == "tls13_secret_not_found").any()
        assert not (got.anomalies.code == "decrypt_failed").any()
        text = " ".join(got.anomalies.detail.astype(str)).lower()
        assert not any(secret in text for secret in _secrets(name))


@pytest.mark.parametrize("name", sorted(TLS13))
def test_orders_after_the_cut_match_exactly(name: str, full: dict, tmp_path: Path) -> None:
    ref, ts = full[name]
    _, cuts = _cut_points(ref, ts)
    if not cuts and name == "binance_wsapi_tls13":
        # the upgrade follows the TLS handshake at once: no quiet cut between them;
        # later cuts need WebSocket without its upgrade (issue 15, item 3)
        pytest.xfail("no quiet cut between the TLS handshake and the WebSocket upgrade")
    assert cuts, "no quiet cut point"
    # the id as sent: correlation_id holds the flow id, numbered from the cut
    cols = ["client_port", "venue", "kind", "client_order_id", "o", "a", "latency_ns"]
    for k in cuts:
        got = _ingest_cut(name, k, tmp_path / str(k))
        want = ref.latency[ref.latency.o >= int(ts[k])]
        assert len(want), f"K={k}: no order after the cut"
        w = sorted(map(tuple, want[cols].astype(str).to_numpy().tolist()))
        g = sorted(map(tuple, got.latency[cols].astype(str).to_numpy().tolist()))
        assert g == w, f"K={k}: orders after the cut differ"


def test_search_limits_reach_the_session(full: dict, tmp_path: Path) -> None:
    """``--limit tls13_search_records``: a window below where the capture began
    finds nothing, and the anomaly says what was tried."""
    name = "binance_rest_tls13"
    ref, ts = full[name]
    k = _cut_points(ref, ts)[0][-2]  # late in the capture: records numbered > 8
    cut = tmp_path / "cut.pcap"
    drop_first_packets(SAMPLES / f"{name}.pcap", cut, k)
    keylog = [SAMPLES / f"{name}.keylog"]
    pcapflow.ingest([cut], keylog=keylog, data=tmp_path / "a",
                    limits={"tls13_search_records": 8})
    ds = pcapflow.open(tmp_path / "a")
    assert ds.scalar("SELECT count(*) FROM tls_records WHERE decrypted") == 0
    details = [d for (d,) in ds.fetchall(
        "SELECT detail FROM anomalies WHERE code = 'tls13_secret_not_found'")]
    assert details and all("below 8 (AES-GCM)" in d and keylog[0].name in d for d in details)
    assert ds.scalar("SELECT count(*) FROM latency") == 0


@pytest.mark.parametrize("name", sorted(TLS13))
def test_cut_inside_a_record(name: str, full: dict, tmp_path: Path) -> None:
    """The capture begins inside a record: the reader resyncs on the next header
    pair, and the key search decrypts from the first whole record on. (A connection
    whose first header pair is beyond ``detect_bytes`` of both directions is not
    recognised as TLS: README, "Known limits"; at least one cut must be.)"""
    ref, ts = full[name]
    cuts = _inside_records(ref, ts)
    if not cuts and name == "binance_rest_dsb":
        pytest.skip("every record of this capture after its handshake fits one packet")
    assert cuts
    decrypted_somewhere = False
    for k in cuts:
        got = _ingest_cut(name, k, tmp_path / str(k))
        tls = set(got.flows.client_port[got.flows.app_protocol.str.startswith("tls")])
        want = ref.records[(ref.records.t1 >= int(ts[k])) & ref.records.decrypted
                           & ref.records.client_port.isin(tls)]
        merged = want.merge(got.records, on=["client_port", "direction", "t1", "length"],
                            how="left", suffixes=("", "_cut"))
        assert merged.decrypted_cut.notna().all(), f"K={k}: records missing"
        assert merged.decrypted_cut.astype(bool).all(), f"K={k}: records not decrypted"
        assert (merged.plaintext_length_cut == merged.plaintext_length).all(), f"K={k}"
        decrypted_somewhere |= bool(len(want))
        assert not (got.anomalies.code == "decrypt_failed").any()
    assert decrypted_somewhere


def test_sharded_ingest_finds_the_same(full: dict, tmp_path: Path) -> None:
    """``workers=2`` (connections spread over processes, each with the key log):
    the same decrypted records and orders as one process."""
    name = "lossy_rest_tls13"
    ref, ts = full[name]
    k = _cut_points(ref, ts)[1][1]
    cut = tmp_path / "cut.pcap"
    drop_first_packets(SAMPLES / f"{name}.pcap", cut, k)
    keylog = [SAMPLES / f"{name}.keylog"]
    one = Ingested(cut, keylog, tmp_path / "one")
    pcapflow.ingest([cut], keylog=keylog, data=tmp_path / "two", workers=2)
    two = pcapflow.open(tmp_path / "two")
    assert two.scalar("SELECT count(*) FROM tls_records WHERE decrypted") == int(
        one.records.decrypted.sum()) > 0
    got = sorted(two.fetchall("SELECT correlation_id, latency_ns FROM latency"))
    assert got == sorted(zip(one.latency.correlation_id, one.latency.latency_ns, strict=True))
    assert len(got) > 0
