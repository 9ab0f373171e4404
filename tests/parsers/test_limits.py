"""Resource limits: parsing, the CLI option, and each cap reaching the parser it bounds."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from helpers.paths import REPO, SAMPLES
from pcapflow.parsers.errors import ConfigError
from pcapflow.parsers.limits import Limits, parse_size

import pcapflow


def test_sizes_parse_with_binary_suffixes() -> None:
    assert parse_size("4096", "x") == 4096
    assert parse_size("64K", "x") == 64 << 10
    assert parse_size("16m", "x") == 16 << 20
    assert parse_size("2GiB", "x") == 2 << 30
    assert parse_size(7, "x") == 7
    for bad in ("", "abc", "-1", "0", "1.5M", True):
        with pytest.raises(ConfigError):
            parse_size(bad, "x")  # type: ignore[arg-type]


def test_overrides_by_name() -> None:
    lim = Limits.parse(["ws_max_message=32M", "max-open-connections=5"])
    assert lim.ws_max_message == 32 << 20
    assert lim.max_open_connections == 5
    assert lim.http_max_body == Limits().http_max_body
    with pytest.raises(ConfigError, match="unknown limit"):
        Limits.parse(["nope=1"])
    with pytest.raises(ConfigError, match="NAME=VALUE"):
        Limits.parse(["ws_max_message"])


def test_readme_documents_every_limit_with_its_default() -> None:
    readme = (REPO / "README.md").read_text()
    rows = dict(re.findall(r"^\| `(\w+)` \| (\w+) \|", readme, re.MULTILINE))
    for name in Limits.names():
        assert name in rows, name
        assert parse_size(rows[name], name) == getattr(Limits(), name), name


def _codes(data: Path) -> dict[str, int]:
    ds = pcapflow.open(data)
    return dict(ds.fetchall("SELECT code, count(*) FROM anomalies GROUP BY code"))


def test_ws_max_message_reaches_the_websocket_parser(tmp_path: Path) -> None:
    cap, key = SAMPLES / "binance_wsapi_tls13.pcap", SAMPLES / "binance_wsapi_tls13.keylog"
    pcapflow.ingest([cap], keylog=[key], data=tmp_path / "a")
    pcapflow.ingest([cap], keylog=[key], data=tmp_path / "b", limits={"ws_max_message": 64})
    full = pcapflow.open(tmp_path / "a").scalar("SELECT count(*) FROM ws_messages")
    cut = pcapflow.open(tmp_path / "b")
    n_long = _codes(tmp_path / "b").get("message_too_long", 0)
    assert "message_too_long" not in _codes(tmp_path / "a")
    assert n_long > 0
    assert cut.scalar("SELECT count(*) FROM ws_messages") == full - n_long
    assert cut.scalar("SELECT max(wire_length) FROM ws_messages WHERE opcode = 'text'") <= 64 + 14


def test_http_max_body_reaches_the_http_parser(tmp_path: Path) -> None:
    cap, key = SAMPLES / "binance_rest_tls13.pcap", SAMPLES / "binance_rest_tls13.keylog"
    pcapflow.ingest([cap], keylog=[key], data=tmp_path, limits={"http_max_body": 16})
    ds = pcapflow.open(tmp_path)
    longest, truncated = ds.fetchone(
        "SELECT max(length(body)), count(*) FILTER (WHERE body_truncated) FROM http_messages")
    assert longest <= 16
    assert truncated > 0


def test_fix_max_message_reaches_the_fix_parser(tmp_path: Path) -> None:
    pcapflow.ingest([SAMPLES / "fix44_plain.pcap"], data=tmp_path, limits={"fix_max_message": 64})
    assert _codes(tmp_path).get("message_too_large", 0) > 0


def test_detect_bytes_and_reassembly_limits_are_applied(tmp_path: Path) -> None:
    from pcapflow.pipelines.ingest.app_layer import Connection

    lim = Limits(reassembly_held_bytes=1000, reassembly_held_segments=3)
    conn = Connection(0, None, lim)
    assert {r.max_held for r in conn.reasm} == {1000}
    assert {r.max_held_segments for r in conn.reasm} == {3}
    # a FIX capture read with too few detection bytes for nothing: still FIX (it starts
    # with 8=FIX); with the default it parses; a 1-byte window cannot see "8=FIX"
    pcapflow.ingest([SAMPLES / "fix44_plain.pcap"], data=tmp_path, limits={"detect_bytes": 1})
    ds = pcapflow.open(tmp_path)
    assert ds.scalar("SELECT count(*) FROM fix_messages") == 0
    assert ds.scalar("SELECT count(*) FROM flows WHERE app_protocol IS NULL "
                     "OR app_protocol = 'unknown'") >= 1
