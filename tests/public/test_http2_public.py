"""HTTP/2 on third-party captures (nghttp2, curl h2c, Suricata's CONTINUATION and deflate
cases, a Chrome TLS capture with its secrets): every request and response tshark's
``http2`` dissector finds, we find, on the same stream with the same path and status.

The captures stay in ``$PCAPFLOW_PUBLIC_CAPTURES`` (never copied here); the test skips
without them or without tshark.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

import pytest

import pcapflow
from pcapflow import api

CAPTURES = Path(os.environ.get("PCAPFLOW_PUBLIC_CAPTURES", "/work/shared/public-captures"))
TSHARK = shutil.which("tshark")


def _h2_captures() -> list[dict]:
    index = CAPTURES / "analysis.json"
    if not index.exists():
        return []
    return [a for a in json.loads(index.read_text())
            if "http2" in str(a.get("phs")) and "quic" not in a["path"]]


H2 = _h2_captures()

# Where we find more than tshark 4.0, and why.
EXPECTED_EXTRA = {
    # the first HEADERS (stream 13, a large header block over several TCP segments) is
    # "[BoundErrorUnreassembled Packet]" in tshark 4.0; we decode it: GET /
    "http/arkime/http2-nghttp2.pcap": Counter({("request", "/"): 1}),
}


def _tshark(entry: dict) -> Counter:
    """(kind, path or status) of every HEADERS block with :method / :status, frame by
    frame from tshark's PDML. PUSH_PROMISE blocks (a server-pushed request) are left
    out: we decode them, to keep the HPACK table, but make no row of them."""
    cmd = [TSHARK or "tshark", "-n", "-r", str(CAPTURES / entry["path"]), "-Y", "http2",
           "-T", "pdml"]
    if entry["key"]:
        cmd += ["-o", f"tls.keylog_file:{CAPTURES / entry['key']}"]
    out = subprocess.run(cmd, capture_output=True, check=True, timeout=300).stdout
    got: Counter = Counter()
    for frame in ET.fromstring(out).iter("field"):
        if frame.get("name") != "http2.stream":
            continue
        f = {x.get("name"): x.get("show") for x in frame.iter("field")}
        if f.get("http2.type") != "1":
            continue
        if "http2.headers.path" in f:
            got[("request", f["http2.headers.path"])] += 1
        if "http2.headers.status" in f:
            got[("response", f["http2.headers.status"])] += 1
    return got


@pytest.mark.skipif(TSHARK is None or not H2, reason="tshark or public captures absent")
@pytest.mark.parametrize("entry", H2, ids=lambda e: e["path"])
def test_http2_messages_equal_tshark(entry: dict, tmp_path: Path) -> None:
    keylog = [CAPTURES / entry["key"]] if entry["key"] else []
    api.ingest([str(CAPTURES / entry["path"])], keylog=keylog, data=tmp_path)
    with pcapflow.open(tmp_path) as ds:
        rows = ds.fetchall("SELECT kind, path, status FROM http_messages "
                           "WHERE version = 'HTTP/2' AND kind <> 'reset'")
        codes = {c for (c,) in ds.fetchall(
            "SELECT code FROM anomalies WHERE layer = 'http2'")}
    ours = Counter((k, p if k == "request" else str(s)) for k, p, s in rows)
    assert ours == _tshark(entry) + EXPECTED_EXTRA.get(entry["path"], Counter())
    assert sum(ours.values()) > 0
    # nothing here is malformed or begins mid-connection
    assert not codes & {"mid_stream", "hpack_unknown_entry", "frame_too_large",
                        "continuation_expected", "unexpected_continuation"}, codes


NGHTTP2 = CAPTURES / "http/arkime/http2-nghttp2.pcap"


@pytest.mark.skipif(not NGHTTP2.is_file(), reason="public captures absent")
def test_capture_begun_after_the_preface(tmp_path: Path) -> None:
    """nghttp2 (cleartext, prior knowledge) from its 9th packet on: the client's preface,
    SETTINGS and first header block are gone. Detection finds frames, the client side
    resynchronises (its first header block cannot be decoded: flagged), and the server,
    whose side begins at its SETTINGS, is decoded in full: statuses and bodies."""
    import dpkt

    cut = tmp_path / "cut.pcap"
    with NGHTTP2.open("rb") as src, cut.open("wb") as dst:
        reader = dpkt.pcap.Reader(src)
        writer = dpkt.pcap.Writer(dst, linktype=reader.datalink(), nano=False)
        for i, (ts, buf) in enumerate(reader):
            if i >= 8:
                writer.writepkt(buf, ts)
    api.ingest([str(cut)], data=tmp_path / "data")
    with pcapflow.open(tmp_path / "data") as ds:
        assert ds.fetchall("SELECT app_protocol FROM flows") == [("http2",)]
        codes = {c for (c,) in ds.fetchall("SELECT code FROM anomalies WHERE layer = 'http2'")}
        assert "mid_stream" in codes
        rows = ds.fetchall("SELECT kind, status, body_length FROM http_messages "
                           "WHERE kind = 'response' ORDER BY stream_id")
    full = _tshark({"path": "http/arkime/http2-nghttp2.pcap", "key": None})
    assert [("response", str(s)) for _, s, _ in rows] == [
        k for k in sorted(full.elements()) if k[0] == "response"]
    assert all(n > 0 for _, _, n in rows)
