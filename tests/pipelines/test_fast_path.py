"""The batch path (``parsers.tcp.segments``, ``feed_many`` of TLS/HTTP/WebSocket,
batch rows) against the general per-packet path: every table, row for row.

The general path is the reference the rest of the suite checks against tshark
and dpkt; the batch path is an optimisation of it and must not change one value.
Every sample capture (with its key log) and every third-party capture in the
public corpus (with every key log there) is ingested both ways and each table is
compared after sorting (row order within a table carries no meaning). On the public
corpus without the matcher: the layers' tables and ``flows`` (the orders and the derived
tables are functions of those, and the matcher and derive were ~70% of the CPU of
ingesting its 269 small captures twice); the samples, which have the orders, run whole.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers.path_compare import (
    assert_same_tables,
    ingest_both_paths,
    ingest_counting_runs,
    read_tables,
)
from helpers.paths import PUBLIC, SAMPLES
from helpers.public_corpus import TLS_KEYED_ENTRIES  # the keyed captures and their key logs
from pcapflow.parsers import native
from pcapflow.pipelines.ingest import app_layer as connections

import pcapflow


def _captures() -> list[tuple[list[Path], list[Path]]]:
    sets = [(sorted(SAMPLES.glob("*.pcap*")), sorted(SAMPLES.glob("*.keylog")))]
    if PUBLIC.exists():
        caps = sorted(p for p in PUBLIC.rglob("*") if p.suffix in (".pcap", ".pcapng"))
        sets.append((caps, sorted({PUBLIC / e["key"] for e in TLS_KEYED_ENTRIES})))
    return sets


@pytest.fixture(scope="module")
def samples_both_paths(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int, int]:
    """(root, general-path runs, batch-path runs): the samples ingested both ways
    (``ingest_both_paths``) once for this module. The batch path's tables (``root/fast``,
    native kernels) are also ``test_native_kernels_equal_the_python_fallback``'s
    reference: the same ingest, made once."""
    caps, keys = _captures()[0]
    assert caps
    root = tmp_path_factory.mktemp("samples_both_paths")
    slow_runs, fast_runs = ingest_both_paths(caps, keys, root)  # two processes at once
    return root, slow_runs, fast_runs


@pytest.mark.parametrize("which", ["samples", "public"])
def test_batch_path_equals_general_path(which: str, tmp_path: Path,
                                        request: pytest.FixtureRequest) -> None:
    sets = _captures()
    if which == "public" and len(sets) < 2:
        pytest.skip("public capture corpus not present")
    if which == "samples":
        root, slow_runs, fast_runs = request.getfixturevalue("samples_both_paths")
    else:
        caps, keys = sets[1]
        assert caps
        root = tmp_path
        # the layers' tables and flows: the orders and derived tables are functions of
        # them, checked here on the samples (which have orders) and by the golden tests
        slow_runs, fast_runs = ingest_both_paths(caps, keys, root, matcher=False)
    assert slow_runs == 0
    assert fast_runs > 0  # the batch path really ran
    assert_same_tables(read_tables(root / "slow"), read_tables(root / "fast"))


def test_batch_path_equals_general_path_on_http2(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """The HTTP/2 sample alone (also in the samples set above): many streams in flight,
    so the batch path's runs carry interleaved frames of several messages."""
    caps, keys = [SAMPLES / "binance_rest_h2.pcap"], [SAMPLES / "binance_rest_h2.keylog"]
    assert ingest_counting_runs(caps, keys, tmp_path / "slow", False, monkeypatch) == 0
    assert ingest_counting_runs(caps, keys, tmp_path / "fast", True, monkeypatch) > 0
    want, got = read_tables(tmp_path / "slow"), read_tables(tmp_path / "fast")
    versions = want["http_messages"].column("version").to_pylist()
    assert versions.count("HTTP/2") == len(versions) > 200
    assert_same_tables(want, got)


@pytest.mark.skipif(not native.AVAILABLE, reason="libcrypto/libz not found")
def test_native_kernels_equal_the_python_fallback(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        samples_both_paths: tuple[Path, int, int]) -> None:
    """Without libcrypto/libz the batch path decrypts with ``cryptography`` and
    inflates with ``zlib``, one call per record / message: the same tables as with
    them (the batch path's ingest of ``samples_both_paths``, in a child process of
    the same interpreter and libraries, so with the native kernels too)."""
    caps, keys = _captures()[0]
    root, _, fast_runs = samples_both_paths
    with monkeypatch.context() as m:
        m.setattr(native, "AVAILABLE", False)
        python_runs = ingest_counting_runs(caps, keys, tmp_path / "python", True, monkeypatch)
    assert python_runs == fast_runs > 0  # the same batch runs, decrypted another way
    assert_same_tables(read_tables(tmp_path / "python"), read_tables(root / "fast"))


@pytest.mark.parametrize(("name", "most"), [("binance_wsapi_tls13", 0.2), ("fix44_plain", 0.2),
                                            ("okx_ws_tls12", 1.0)])
def test_request_response_is_batched_once_directions_are_independent(
        name: str, most: float, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Order entry alternates one segment each way. Once each direction parses on its
    own (TLS 1.3 past the handshake with WebSocket inside, FIX), a run is fed one
    ``Run`` per direction and only the handshake goes packet by packet; TLS 1.2
    (renegotiation ties the directions) stays per packet. The tables are those of
    the general path (``test_batch_path_equals_general_path``)."""
    packets = 0
    original = connections.AppLayer._packet

    def counting(self: connections.AppLayer, *args: object) -> bool:
        nonlocal packets
        packets += 1
        return original(self, *args)  # type: ignore[arg-type]

    keys = sorted(SAMPLES.glob(f"{name}.keylog"))
    with monkeypatch.context() as m:
        m.setattr(connections.AppLayer, "_packet", counting)
        result = pcapflow.ingest([SAMPLES / f"{name}.pcap"], keylog=keys, data=tmp_path)[0]
    assert result.rows.get("ws_messages", 0) + result.rows.get("fix_messages", 0) > 50
    assert packets <= most * result.packets, (packets, result.packets)
    if most == 1.0:
        assert packets > 0.5 * result.packets
