"""Capture reader against the 269 third-party captures and what tshark said of them.

``analysis.json`` holds capinfos/tshark 4.0 facts per file. Its ``first`` and
``last`` are capinfos' *earliest* and *latest* packet times (not first and last
in file order: ``linklayer/arkime/y2038-bgp.pcap`` has its latest packet third
of four), printed in UTC. So we compare them with the min and max of our times.
"""

from __future__ import annotations

import datetime as dt
import json
import struct
from pathlib import Path

import numpy as np
import pytest
from helpers.capture_util import dpkt_records, read_all
from helpers.paths import PUBLIC as ROOT

NS = 1_000_000_000


def _entries() -> list[dict]:
    if not (ROOT / "analysis.json").exists():
        return []
    return json.loads((ROOT / "analysis.json").read_text())


ENTRIES = _entries()

# tshark 4.0 keeps a pcap record's sub-second field as a *signed* 32-bit count,
# unnormalised: for these two upstream robustness files (tcpdump's tests) capinfos
# prints "17:16:10.1000000" (1e6 µs not carried into the seconds) and
# "17:16:10.-2147483648". We read the field as unsigned and add it, so the last
# record (sub-second 0x80000000) lands 2147.48 s later. Asserted exactly below.
INVALID_SUBSECOND = {
    "linklayer/tcpdump/timestamp_invalid_micro.pcap": 1000,
    "linklayer/tcpdump/timestamp_invalid_nano.pcap": 1,
}


def capinfos_time(text: str) -> int | None:
    """'2017-05-02 19:58:29.242949' (UTC) -> ns; None if not a normal time."""
    date, _, frac = text.partition(".")
    if not frac.isdigit() or len(frac) > 9:
        return None
    when = dt.datetime.strptime(date, "%Y-%m-%d %H:%M:%S").replace(tzinfo=dt.UTC)
    return int(when.timestamp()) * NS + int(frac.ljust(9, "0"))


def test_corpus_present_or_skipped():
    if not ENTRIES:
        pytest.skip(f"{ROOT} is absent")
    assert len(ENTRIES) == 269


@pytest.mark.parametrize("entry", ENTRIES, ids=[e["path"] for e in ENTRIES])
def test_public_capture(entry: dict):
    path = ROOT / entry["path"]
    cap = entry["cap"]
    got = read_all(path)
    r = got.reader
    assert r.packets == len(got.data) == int(cap["packets"])
    assert got.anomalies == []
    assert r.format == ("pcapng" if "pcapng" in cap["type"] else "pcap")  # by magic, not name
    assert len(r.interfaces) == int(cap["nif"])
    assert r.sha256 and r.bytes_read == entry["size"] == path.stat().st_size
    assert np.array_equal(got.index, np.arange(r.packets))
    if entry["path"] in INVALID_SUBSECOND:
        _check_invalid_subsecond(path, got.ts_ns, INVALID_SUBSECOND[entry["path"]])
        assert int(got.ts_ns.min()) == capinfos_time(cap["first"])
    else:
        assert int(got.ts_ns.min()) == capinfos_time(cap["first"])
        assert int(got.ts_ns.max()) == capinfos_time(cap["last"])
    assert got.as_expected() == dpkt_records(path)


def _check_invalid_subsecond(path: Path, ts_ns: np.ndarray, unit: int) -> None:
    buf = path.read_bytes()
    pos, want, fracs = 24, [], []
    while pos < len(buf):
        sec, frac, caplen, _ = struct.unpack_from("<IIII", buf, pos)
        want.append(sec * NS + frac * unit)
        fracs.append(frac)
        pos += 16 + caplen
    # a whole second written as sub-second ticks, then 2^31 ticks
    assert fracs[1:] == [NS // unit, 2**31]
    assert list(ts_ns) == want  # unsigned sub-second field, added as is

