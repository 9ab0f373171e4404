"""Capture reader: every format variant, compression, stdin, chunking, bad input.

Files are crafted with scapy or struct (tests/helpers/capture_util.py); each read is
compared with what was written and, where dpkt can read the file, with dpkt.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import struct
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import zstandard
from helpers.capture_util import (
    NS,
    PcapngBuilder,
    dpkt_records,
    read_all,
    sample_packets,
    times_ns,
    write_pcap_scapy,
    write_pcapng_scapy,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pcapflow.parsers.capture import MAX_CAPLEN, open_capture
from pcapflow.parsers.errors import CaptureError

LINKTYPE_ETHERNET, LINKTYPE_RAW, LINKTYPE_LINUX_SLL2 = 1, 101, 276


def pcap_bytes(records: list[tuple[int, int, int, int, bytes]], *, big: bool = False,
               nano: bool = False, snaplen: int = 65535, linktype: int = 1) -> bytes:  # fmt: skip
    """A pcap file from (ts_sec, ts_frac, caplen, wirelen, data) tuples, by struct."""
    e = ">" if big else "<"
    magic = 0xA1B23C4D if nano else 0xA1B2C3D4
    out = [struct.pack(e + "IHHiIII", magic, 2, 4, 0, 0, snaplen, linktype)]
    for sec, frac, caplen, wirelen, data in records:
        out.append(struct.pack(e + "IIII", sec, frac, caplen, wirelen) + data)
    return b"".join(out)


@pytest.fixture(scope="module")
def pkts() -> list:
    return sample_packets(40)


@pytest.fixture(scope="module")
def ts() -> list[int]:
    return times_ns(40)


# --- classic pcap ------------------------------------------------------------------------
@pytest.mark.parametrize("nano", [False, True], ids=["usec", "nsec"])
@pytest.mark.parametrize("endianness", ["<", ">"], ids=["le", "be"])
def test_pcap_variants_match_written_and_dpkt(tmp_path: Path, pkts, ts, nano, endianness):
    path = tmp_path / "x.pcap"
    written = write_pcap_scapy(path, pkts, ts, nano=nano, endianness=endianness)
    got = read_all(path)
    assert got.as_expected() == written
    assert got.as_expected() == dpkt_records(path)
    r = got.reader
    assert (r.format, r.compression, r.link_types, r.snaplen) == ("pcap", None, [1], 65535)
    assert r.interfaces[0]["tsresol"] == (9 if nano else 6)
    assert r.packets == len(pkts) and list(got.index) == list(range(len(pkts)))
    assert got.anomalies == [] and got.secrets == []
    # capture order kept: the written step back in time is still there
    assert got.ts_ns[3] < got.ts_ns[2]
    raw = path.read_bytes()
    assert r.sha256 == hashlib.sha256(raw).hexdigest() and r.bytes_read == len(raw)
    # file_offset points at each record header; data follows it
    for off, d in zip(got.file_offset, got.data, strict=True):
        assert raw[off + 16 : off + 16 + len(d)] == d


def test_pcap_2038_2106_and_zero_length(tmp_path: Path):
    # ts_sec is unsigned: 2^31 (signed overflow, 2038) and 2^32 - 1 (2106)
    recs = [(2**31, 0, 4, 4, b"abcd"), (2**32 - 1, 999_999, 0, 60, b""), (5, 1, 1, 1, b"z")]
    path = tmp_path / "t.pcap"
    path.write_bytes(pcap_bytes(recs))
    got = read_all(path)
    assert list(got.ts_ns) == [2**31 * NS, (2**32 - 1) * NS + 999_999_000, 5 * NS + 1000]
    assert list(got.caplen) == [4, 0, 1] and list(got.wirelen) == [4, 60, 1]
    assert got.data == [b"abcd", b"", b"z"] and got.anomalies == []
    assert got.as_expected() == dpkt_records(path)


def test_many_tiny_packets_grow_columns(tmp_path: Path):
    # 16-byte records: far more packets than the first column sizing guess
    recs = [(1_000 + i, i % 1_000_000, 0, 0, b"") for i in range(20_000)]
    path = tmp_path / "tiny.pcap"
    path.write_bytes(pcap_bytes(recs, big=True))
    got = read_all(path)
    assert got.reader.packets == 20_000 and got.chunks == 1
    want = [(1000 + i) * NS + (i % 1_000_000) * 1000 for i in range(20_000)]
    assert np.array_equal(got.ts_ns, want)


# --- pcapng ----------------------------------------------------------------------------
def test_pcapng_scapy_two_interfaces_match_dpkt(tmp_path: Path, pkts, ts):
    path = tmp_path / "x.pcapng"
    written = write_pcapng_scapy(path, pkts, ts)
    got = read_all(path)
    assert got.as_expected() == written == dpkt_records(path)
    assert got.reader.format == "pcapng"
    # scapy writes an unnamed IDB first, then one per interface name
    assert [i["name"] for i in got.reader.interfaces] == [None, "eth0", "eth1"]
    assert set(got.interface) == {1, 2}


def build_rich_pcapng() -> PcapngBuilder:
    """Two sections (LE then BE), interfaces of several link types and tsresols,
    EPB, SPB, obsolete PB, DSB, NRB/ISB/custom blocks."""
    b = PcapngBuilder()
    b.shb()
    eth = b.idb(LINKTYPE_ETHERNET, snaplen=262144, name="eth0")  # default 10^-6
    sll2 = b.idb(LINKTYPE_LINUX_SLL2, tsresol=9, name="any")  # 10^-9
    raw = b.idb(LINKTYPE_RAW, tsresol=0x94, tsoffset=1_600_000_000)  # 2^-20 s, offset
    b.epb(eth, 1_700_000_000_123_456, b"\x01" * 60)
    b.epb(sll2, 1_700_000_000_123_456_789, b"\x02" * 80, wirelen=1500)
    b.block(4, struct.pack("<HH", 0, 0))  # Name Resolution Block, skipped
    b.epb(raw, (86_400 << 20) + 777_777, b"\x45" + b"\x00" * 19)
    b.dsb(0x544C534B, b"CLIENT_RANDOM aa bb\n")  # TLS key log
    b.spb(b"\x03" * 42)  # interface 0, time of the previous packet
    b.epb(eth, 1_700_000_000_123_400, b"")  # zero-length, a step back in time
    b.block(0x40000BAD, struct.pack("<I", 32473) + b"custom")  # custom block, skipped
    b.block(5, struct.pack("<III", 0, 0, 0))  # Interface Statistics Block, skipped
    b.epb(eth, 2**40, b"\x04" * 5, btype=2)  # obsolete Packet Block
    b.shb(big=True)  # new section: interfaces start again at 0
    ns_if = b.idb(LINKTYPE_ETHERNET, tsresol=9, snaplen=64)
    b.epb(ns_if, 1_800_000_000 * NS + 5, b"\x05" * 64, wirelen=900)
    b.spb(b"\x06" * 100)  # snaplen 64 cuts it
    b.dsb(0x544C534B, b"CLIENT_RANDOM cc dd\n")
    return b


def test_pcapng_interfaces_tsresol_blocks_sections(tmp_path: Path):
    b = build_rich_pcapng()
    path = tmp_path / "rich.pcapng"
    path.write_bytes(b.bytes())
    got = read_all(path)
    assert got.as_expected() == b.expected
    r = got.reader
    assert r.link_types == [1, 101, 276]
    assert [(i["id"], i["section"], i["linktype"], i["tsresol"], i["tsoffset"], i["name"])
            for i in r.interfaces] == [
        (0, 0, 1, 6, 0, "eth0"), (1, 0, 276, 9, 0, "any"),
        (2, 0, 101, 0x94, 1_600_000_000, None), (3, 1, 1, 9, 0, None),
    ]  # fmt: skip
    assert got.secrets == r.secrets == b.secrets
    # binary 2^-20 resolution: exact floor, plus if_tsoffset seconds
    assert got.ts_ns[2] == (1_600_000_000 + 86_400) * NS + (777_777 * NS >> 20)
    assert got.data[6] == b"\x05" * 64 and got.caplen[7] == 64 and got.wirelen[7] == 100
    codes = [a.code for a in got.anomalies]
    assert codes == ["spb_no_timestamp"]  # once per file, though two SPBs
    a = got.anomalies[0]
    assert (a.flow_id, a.direction, a.layer) == (-1, None, "capture")
    # it names the first SPB: packet 3, whose time it shares with packet 2
    spb_offset = int(got.file_offset[3])
    assert a.detail.startswith(f"packet 3, byte offset {spb_offset}:")
    assert a.ts == got.ts_ns[2] == got.ts_ns[3]


def test_pcapng_big_endian_single_section_matches_dpkt(tmp_path: Path):
    b = PcapngBuilder()
    b.shb(big=True)
    b.idb(LINKTYPE_ETHERNET, tsresol=9)
    for i in range(10):
        b.epb(0, 1_700_000_000 * NS + i * 1234, bytes([i]) * (i * 10))
    path = tmp_path / "be.pcapng"
    path.write_bytes(b.bytes())
    got = read_all(path)
    assert got.as_expected() == b.expected == dpkt_records(path)


# --- compression and streams ---------------------------------------------------------------
@pytest.fixture(scope="module")
def rich_bytes() -> bytes:
    return build_rich_pcapng().bytes()


@pytest.mark.parametrize("kind", ["gzip", "zstd", "gzip-multimember", "zstd-multiframe"])
def test_compressed(tmp_path: Path, rich_bytes: bytes, kind: str):
    if kind == "gzip":
        blob = gzip.compress(rich_bytes)
    elif kind == "gzip-multimember":
        blob = gzip.compress(rich_bytes[:100]) + gzip.compress(rich_bytes[100:])
    elif kind == "zstd":
        blob = zstandard.ZstdCompressor().compress(rich_bytes)
    else:
        c = zstandard.ZstdCompressor()
        blob = c.compress(rich_bytes[:333]) + c.compress(rich_bytes[333:])
    path = tmp_path / "x.bin"  # the extension says nothing; magic bytes decide
    path.write_bytes(blob)
    plain = tmp_path / "plain.pcapng"
    plain.write_bytes(rich_bytes)
    for chunk_bytes in (1 << 20, 37):
        got = read_all(path, chunk_bytes=chunk_bytes)
        assert got.reader.compression == kind.split("-")[0]
        assert got.as_expected() == read_all(plain).as_expected()
        assert got.reader.sha256 == hashlib.sha256(blob).hexdigest()
        assert got.reader.bytes_read == len(blob)


def test_stdin_subprocess(tmp_path: Path, pkts, ts):
    path = tmp_path / "x.pcap"
    written = write_pcap_scapy(path, pkts, ts, nano=True, endianness="<")
    code = (
        "from pcapflow.parsers.capture import open_capture\n"
        "with open_capture('-', chunk_bytes=500) as c:\n"
        "    n = sum(int(ch.caplen.sum()) for ch in c)\n"
        "    print(c.packets, n, c.sha256, c.format)\n"
    )
    with open(path, "rb") as f:
        cat = subprocess.Popen(["cat"], stdin=f, stdout=subprocess.PIPE)
        out = subprocess.run([sys.executable, "-c", code], stdin=cat.stdout, capture_output=True,
                             check=True, timeout=120).stdout.decode().split()  # fmt: skip
        cat.wait()
    want = [str(len(written)), str(sum(w.caplen for w in written)),
            hashlib.sha256(path.read_bytes()).hexdigest(), "pcap"]  # fmt: skip
    assert out == want


def test_os_pipe_file_object_short_reads(tmp_path: Path, rich_bytes: bytes):
    rfd, wfd = os.pipe()

    def writer() -> None:
        with os.fdopen(wfd, "wb", buffering=0) as w:
            for i in range(0, len(rich_bytes), 13):  # dribble: many short reads
                w.write(rich_bytes[i : i + 13])

    t = threading.Thread(target=writer)
    t.start()
    with os.fdopen(rfd, "rb", buffering=0) as r:
        got = read_all(r, chunk_bytes=64)
    t.join()
    assert got.as_expected() == build_rich_pcapng().expected


def test_bytesio_source(rich_bytes: bytes):
    got = read_all(io.BytesIO(rich_bytes))
    assert got.reader.path == "<stream>" and len(got.data) == len(build_rich_pcapng().expected)


# --- chunk boundaries ----------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["pcap", "pcapng"])
def test_chunk_sizes_give_same_result(tmp_path: Path, pkts, ts, rich_bytes: bytes, fmt: str):
    path = tmp_path / "x"
    if fmt == "pcap":
        write_pcap_scapy(path, pkts, ts, nano=False, endianness="<")
    else:
        path.write_bytes(rich_bytes)
    whole = read_all(path)
    assert whole.chunks == 1
    for chunk_bytes in (1, 2, 15, 16, 17, 100, 997, 4096):
        got = read_all(path, chunk_bytes=chunk_bytes)
        assert got.chunks > 1 or chunk_bytes > path.stat().st_size // 2
        assert got.as_expected() == whole.as_expected()
        assert np.array_equal(got.index, whole.index)
        assert np.array_equal(got.file_offset, whole.file_offset)
        assert got.secrets == whole.secrets
        assert [a.code for a in got.anomalies] == [a.code for a in whole.anomalies]


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(chunk_bytes=st.integers(1, 3000))
def test_any_chunk_size_pcapng(rich_bytes: bytes, chunk_bytes: int):
    got = read_all(io.BytesIO(rich_bytes), chunk_bytes=chunk_bytes)
    assert got.as_expected() == build_rich_pcapng().expected


# --- file-level errors -------------------------------------------------------------------
@pytest.mark.parametrize(
    ("content", "code"),
    [
        (b"", "truncated_header"),
        (b"\xd4\xc3", "truncated_header"),
        (pcap_bytes([])[:20], "truncated_header"),
        (build_rich_pcapng().bytes()[:20], "truncated_header"),
        (b"\x0a\x0d\x0d\x0a" + struct.pack("<I", 28) + b"\x00" * 20, "not_a_capture"),
        (b"\x0a\x0d\x0d\x0a" + struct.pack("<II", 30, 0x1A2B3C4D) + b"\x00" * 20, "bad_header"),
        (b"<html><body>hello</body></html>", "not_a_capture"),
        (gzip.compress(b"<html>not a capture</html>"), "not_a_capture"),
        (gzip.compress(b"")[:2], "bad_compression"),
        (b"\x1f\x8b\x08\x00garbage-garbage-garbage", "bad_compression"),
    ],
    ids=["empty", "4-bytes", "pcap-20", "pcapng-20", "bad-bom", "shb-len-30", "html",
         "gzip-html", "gzip-stub", "gzip-garbage"],
)  # fmt: skip
def test_header_errors(tmp_path: Path, content: bytes, code: str):
    path = tmp_path / "bad"
    path.write_bytes(content)
    with pytest.raises(CaptureError) as ei:
        open_capture(path)
    assert ei.value.code == code
    assert ei.value.path == str(path)
    assert "\n" not in str(ei.value)


def test_not_a_capture_message(tmp_path: Path):
    path = tmp_path / "page.pcap"
    path.write_bytes(b"<html>")
    with pytest.raises(CaptureError, match=r"starts with 3c 68 74 6d") as ei:
        open_capture(path)
    assert ei.value.offset == 0


@pytest.mark.parametrize("make", ["missing", "directory"])
def test_unreadable(tmp_path: Path, make: str):
    path = tmp_path / "nope"
    if make == "directory":
        path.mkdir()
    with pytest.raises(CaptureError) as ei:
        open_capture(path)
    assert ei.value.code == "unreadable" and isinstance(ei.value.__cause__, OSError)


# --- bad records: anomalies, then a normal end -----------------------------------------
def three_records() -> bytes:
    return pcap_bytes([(100, 1, 10, 10, b"a" * 10), (101, 2, 20, 20, b"b" * 20),
                       (102, 3, 30, 30, b"c" * 30)])  # fmt: skip


@pytest.mark.parametrize("cut", [1, 8, 16, 17, 45])
def test_truncated_last_record(tmp_path: Path, cut: int):
    full = three_records()
    path = tmp_path / "t.pcap"
    path.write_bytes(full[:-cut])
    for chunk_bytes in (1 << 20, 7):
        got = read_all(path, chunk_bytes=chunk_bytes)
        assert got.data == [b"a" * 10, b"b" * 20]  # the cut record is dropped, as tshark does
        (a,) = got.anomalies
        assert (a.code, a.layer, a.flow_id) == ("truncated_record", "capture", -1)
        assert a.direction is None
        assert a.ts == 101 * NS + 2000  # last good packet
        assert "packet 2" in a.detail and "byte offset 86" in a.detail
        assert got.reader.sha256 == hashlib.sha256(full[:-cut]).hexdigest()


def test_caplen_too_large_stops(tmp_path: Path):
    big = MAX_CAPLEN + 1
    data = three_records() + struct.pack("<IIII", 103, 0, big, big) + b"x" * 100
    data += pcap_bytes([(104, 0, 1, 1, b"y")])[24:]
    path = tmp_path / "c.pcap"
    path.write_bytes(data)
    got = read_all(path, chunk_bytes=50)
    assert len(got.data) == 3
    assert [a.code for a in got.anomalies] == ["caplen_too_large"]
    assert "packet 3" in got.anomalies[0].detail and "byte offset 132" in got.anomalies[0].detail
    # the rest of the file was still hashed
    assert got.reader.sha256 == hashlib.sha256(data).hexdigest()


def test_caplen_over_snaplen(tmp_path: Path):
    # plausible (<= wire length, <= 256 KiB): kept, noted once
    ok = pcap_bytes([(1, 0, 100, 100, b"p" * 100), (2, 0, 90, 95, b"q" * 90)], snaplen=64)
    got = read_all(io.BytesIO(ok))
    assert got.data == [b"p" * 100, b"q" * 90]
    assert [a.code for a in got.anomalies] == ["caplen_exceeds_snaplen"]
    assert got.anomalies[0].detail.startswith("packet 0, byte offset 24:")
    # implausible (more than the wire length too): corrupt, stop
    bad = pcap_bytes([(1, 0, 10, 10, b"p" * 10), (2, 0, 1000, 60, b"q" * 1000)], snaplen=64)
    got = read_all(io.BytesIO(bad))
    assert got.data == [b"p" * 10] and [a.code for a in got.anomalies] == ["caplen_too_large"]


def pcapng_with_bad_block(kind: str) -> bytes:
    b = PcapngBuilder()
    b.shb()
    b.idb(1)
    b.epb(0, 1_000_000, b"good")
    raw = bytearray(b.bytes())
    tail = PcapngBuilder()
    tail.shb()
    tail.idb(1)
    tail.epb(0, 2_000_000, b"next-block")
    epb = bytearray(tail.parts[-1])
    if kind == "not-multiple-of-4":
        epb[4:8] = struct.pack("<I", len(epb) + 2)
    elif kind == "under-12":
        epb[4:8] = struct.pack("<I", 8)
    elif kind == "trailer-mismatch":
        epb[-4:] = struct.pack("<I", len(epb) + 4)
    elif kind == "caplen-past-block":
        epb[20:24] = struct.pack("<I", 1000)
    elif kind == "unknown-interface":
        epb[8:12] = struct.pack("<I", 7)
    return bytes(raw + epb + raw[-len(b.parts[-1]):])


@pytest.mark.parametrize(
    ("kind", "code"),
    [("not-multiple-of-4", "bad_block_length"), ("under-12", "bad_block_length"),
     ("trailer-mismatch", "bad_block_length"), ("caplen-past-block", "caplen_too_large"),
     ("unknown-interface", "unknown_interface")],
)  # fmt: skip
def test_pcapng_bad_blocks(kind: str, code: str):
    data = pcapng_with_bad_block(kind)
    for chunk_bytes in (1 << 20, 5):
        got = read_all(io.BytesIO(data), chunk_bytes=chunk_bytes)
        assert got.data == [b"good"]
        assert [a.code for a in got.anomalies] == [code]
        assert got.anomalies[0].ts == 1_000_000_000 and "packet 1" in got.anomalies[0].detail


@pytest.mark.parametrize("cut", [1, 5, 30, 200])
def test_truncated_gzip_stream(rich_bytes: bytes, cut: int):
    blob = gzip.compress(rich_bytes)[:-cut]
    expected = build_rich_pcapng().expected
    got = read_all(io.BytesIO(blob), chunk_bytes=1 << 20)
    assert got.reader.compression == "gzip"
    assert got.anomalies[-1].code == "bad_compressed_data"
    # everything decodable before the cut is kept, even inside the one big read
    assert got.as_expected() == expected[: len(got.data)]
    if cut <= 8:  # only the CRC32/ISIZE trailer is missing: every packet is there
        assert len(got.data) == len(expected)
    assert got.reader.sha256 == hashlib.sha256(blob).hexdigest()


def test_gzip_member_then_garbage(rich_bytes: bytes):
    blob = gzip.compress(rich_bytes) + b"\0\0\0\0" + b"trailing junk"
    got = read_all(io.BytesIO(blob))
    assert len(got.data) == len(build_rich_pcapng().expected)
    assert [a.code for a in got.anomalies][-1] == "bad_compressed_data"


def test_truncated_zstd_stream(rich_bytes: bytes):
    # zstandard decodes whole blocks only and reports no error at a cut (a known
    # limit: a cut at a record boundary ends silently). Here blocks end every 500
    # bytes, mid-record, so the cut record shows up as truncated_record.
    data = rich_bytes * 20
    comp = zstandard.ZstdCompressor().compressobj()
    flush_block = zstandard.COMPRESSOBJ_FLUSH_BLOCK
    blob = b"".join(
        comp.compress(data[i : i + 500]) + comp.flush(flush_block)
        for i in range(0, len(data), 500)
    )
    blob = (blob + comp.flush())[:-40]
    got = read_all(io.BytesIO(blob))
    assert got.anomalies[-1].code == "truncated_record"
    assert 0 < len(got.data) < 20 * len(build_rich_pcapng().expected)
    assert got.as_expected() == read_all(io.BytesIO(data)).as_expected()[: len(got.data)]


def test_decompression_bomb_memory_is_bounded():
    # 1 GiB of zeros after a pcap header compresses to ~1 MB; reading it must not
    # allocate it: zero-length records of 16 zero bytes -> 2^26 packets of ts 0
    import resource

    comp = zstandard.ZstdCompressor(level=3).compressobj()
    zeros = bytes(1 << 24)
    blob = comp.compress(pcap_bytes([])) + b"".join(comp.compress(zeros) for _ in range(64))
    blob += comp.flush()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with open_capture(io.BytesIO(blob), chunk_bytes=8 << 20) as cap:
        biggest = max(c.data.shape[0] for c in cap)
    assert cap.packets == (1 << 30) // 16 and biggest == 8 << 20
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mib < 200


# --- hostile input never raises out of iteration -------------------------------------------
@settings(max_examples=150, deadline=None)
@given(body=st.binary(max_size=400), chunk_bytes=st.integers(1, 200), ng=st.booleans())
def test_garbage_after_header_is_anomaly_or_packets(body: bytes, chunk_bytes: int, ng: bool):
    if ng:
        b = PcapngBuilder()
        b.shb()
        b.idb(1)
        head = b.bytes()
    else:
        head = pcap_bytes([])
    got = read_all(io.BytesIO(head + body), chunk_bytes=chunk_bytes)
    assert len(got.anomalies) <= 2
    assert all(a.layer == "capture" for a in got.anomalies)
    assert all(0 <= c <= MAX_CAPLEN for c in got.caplen)
    assert all(len(d) == c for d, c in zip(got.data, got.caplen, strict=True))



def test_a_reader_without_hashing_reads_the_same_packets_and_starts_no_thread() -> None:
    """``hash=False`` (the workers of a sharded ingest): same packets, no SHA-256."""
    path = Path(__file__).resolve().parents[3] / "sample_pcaps" / "binance_wsapi_tls13.pcap"

    def packets(cap: object) -> list[tuple[int, int, int]]:
        return [p for c in cap for p in zip(c.index.tolist(), c.ts_ns.tolist(),  # type: ignore[attr-defined]
                                             c.caplen.tolist(), strict=True)]

    with open_capture(str(path)) as cap:
        want = packets(cap)
        assert cap.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    before = threading.active_count()
    with open_capture(str(path), chunk_bytes=1 << 12, hash=False) as cap:
        got = packets(cap)
        assert threading.active_count() == before
        with pytest.raises(ValueError, match="hash=False"):
            _ = cap.sha256
    assert got == want and len(want) > 100
