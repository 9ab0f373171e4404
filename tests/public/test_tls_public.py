"""TLS decryption cross-checked against tshark 4.0 on the public capture corpus.

For every capture with a key log that tshark decrypts (``analysis.json``
entries with ``key`` and ``dec_key``), TCP streams are extracted with the
test-only ``tcp_stream_util`` and fed to ``TlsSession`` in capture order.
``dec_key`` = [records, bytes] counts tshark's "Decrypted TLS" tabs: one per
record tshark decrypted, of every content type except ChangeCipherSpec (an
encrypted CCS during renegotiation gets no tab), sized as the application sees
it (TLS 1.3: without the inner type byte). We count the same: decrypted records
whose (inner) type is not ChangeCipherSpec and whose plaintext is non-empty.
Handshake version and cipher names are compared with ``tls_versions`` /
``tls_suites`` (ServerHello counts).
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1]))
from helpers.paths import PUBLIC as ROOT
from helpers.public_corpus import TLS_KEYED_ENTRIES
from helpers.tcp_stream_util import read_tcp_streams
from pcapflow.parsers.events import Anomaly
from pcapflow.parsers.tls import KeyLog, TlsHandshakeInfo, TlsRecord, TlsSession

CHANGE_CIPHER_SPEC = 20

# Out of scope on purpose (see parsers/tls/suites.py): export-grade suites.
XFAIL = {
    "tls/lekensteyn/tls12-all-ciphersuites-dump.pcapng": (
        "3 of its 39 connections use RFC 2246 export suites (RSA_EXPORT RC4_40 / RC2_CBC_40 /"
        " DES40_CBC), not implemented; tshark decrypts 6 records in each"
    ),
}




def run_capture(path: Path, keylog: KeyLog) -> tuple[list[int], list[TlsHandshakeInfo], Counter]:
    """Decrypted [records, bytes] (tshark's definition), final infos, anomaly codes."""
    records = nbytes = 0
    infos: list[TlsHandshakeInfo] = []
    anomalies: Counter = Counter()
    for flow_id, stream in enumerate(read_tcp_streams(str(path))):
        session = TlsSession(flow_id, keylog)
        events: list[object] = []
        for direction, data, ts in stream.pieces:
            events += session.feed(direction, data, ts, ts)  # type: ignore[arg-type]
        events += session.finish(stream.pieces[-1][2] if stream.pieces else 0)
        last_info = None
        for ev in events:
            if isinstance(ev, TlsRecord) and ev.decrypted and ev.plaintext_length:
                if (ev.inner_content_type or ev.content_type) != CHANGE_CIPHER_SPEC:
                    records += 1
                    nbytes += ev.plaintext_length
            elif isinstance(ev, TlsHandshakeInfo):
                last_info = ev
            elif isinstance(ev, Anomaly):
                anomalies[ev.code] += 1
        if last_info is not None:
            infos.append(last_info)
    return [records, nbytes], infos, anomalies


@pytest.mark.skipif(not TLS_KEYED_ENTRIES, reason="public capture corpus not present")
@pytest.mark.parametrize("entry", TLS_KEYED_ENTRIES, ids=[e["path"] for e in TLS_KEYED_ENTRIES])
def test_decryption_matches_tshark(entry: dict) -> None:
    if entry["path"] in XFAIL:
        pytest.xfail(XFAIL[entry["path"]])
    keylog = KeyLog.from_files([ROOT / entry["key"]])
    counts, infos, anomalies = run_capture(ROOT / entry["path"], keylog)
    assert counts == entry["dec_key"], dict(anomalies)
    assert anomalies["decrypt_failed"] == 0
    # Every handshake tshark saw (ServerHello counts, HRR excluded) is reported.
    got_versions = Counter(i.version for i in infos)
    got_suites = Counter(i.cipher for i in infos)
    for version, n in entry["tls_versions"].items():
        assert got_versions[version] >= min(n, 1)
    assert set(got_suites) == set(entry["tls_suites"])
    assert not infos or any(info.keys_found for info in infos)
    for info in infos:
        assert info.client_random is not None and len(info.client_random) == 64


@pytest.mark.skipif(not TLS_KEYED_ENTRIES, reason="public capture corpus not present")
def test_key_update_and_hrr_and_resumption_flags() -> None:
    """Spot checks of handshake metadata the counts above cannot see."""
    cases = {
        "tls/wolfssl/sniffer-tls13-hrr.pcap": lambda i: any(x.hello_retry for x in i),
        "tls/ssldump/tls1.3_session_resumption.pcap": lambda i: any(x.resumed for x in i),
        "tls/wolfssl/sniffer-tls13-ecc-resume.pcap": lambda i: sum(x.resumed for x in i) == 3,
        "tls/hotplace/http/http2.pcapng": lambda i: {x.alpn for x in i} == {"h2"},
    }
    for path, check in cases.items():
        entry = next(e for e in TLS_KEYED_ENTRIES if e["path"] == path)
        _counts, infos, _anomalies = run_capture(
            ROOT / path, KeyLog.from_files([ROOT / entry["key"]])
        )
        assert infos and check(infos), (path, infos)
        complete = [i for i in infos if i.complete]
        assert complete and all(i.handshake_ns is not None and i.handshake_ns > 0 for i in complete)
        if "http2" not in path:  # there two clients abort after the server's flight
            assert len(complete) == len(infos)
