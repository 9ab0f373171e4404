"""NSS key log parsing: labels, merging, garbage, bytes (pcapng DSB) input."""

from __future__ import annotations

from pathlib import Path

import pytest
from pcapflow.parsers.errors import ConfigError
from pcapflow.parsers.tls import KeyLog
from pcapflow.parsers.tls.keylog import CLIENT_RANDOM, CLIENT_TRAFFIC_SECRET_0, LABELS

R1, R2 = "11" * 32, "22" * 32
MASTER = "ab" * 48
TEXT = f"""# a comment
CLIENT_RANDOM {R1} {MASTER}

CLIENT_HANDSHAKE_TRAFFIC_SECRET {R2} {"01" * 32}
CLIENT_TRAFFIC_SECRET_0 {R2} {"02" * 48}
garbage line
CLIENT_RANDOM {R1[:-2]} {MASTER}
UNKNOWN_LABEL {R1} {MASTER}
CLIENT_RANDOM {R1} nothex
"""


def test_parse_and_lookup() -> None:
    log = KeyLog.from_text(TEXT)
    assert len(log) == 2 and log.lines == 3
    assert log.bad_lines == 4 and log.comment_lines == 1
    assert log.get(bytes.fromhex(R1), CLIENT_RANDOM) == bytes.fromhex(MASTER)
    assert log.get(bytes.fromhex(R2), CLIENT_TRAFFIC_SECRET_0) == bytes.fromhex("02" * 48)
    assert log.get(bytes.fromhex(R2), CLIENT_RANDOM) is None
    assert log.get(b"\0" * 32, CLIENT_RANDOM) is None and not log.has(b"\0" * 32)


def test_bytes_input_as_from_a_pcapng_dsb() -> None:
    log = KeyLog.from_text(TEXT.replace("\n", "\r\n").encode() + b"\xff\xfe junk\n")
    assert len(log) == 2 and log.bad_lines == 5


def test_merge_and_files(tmp_path: Path) -> None:
    a, b = tmp_path / "a.keys", tmp_path / "b.keys"
    a.write_text(f"CLIENT_RANDOM {R1} {MASTER}\n")
    b.write_text(f"SERVER_TRAFFIC_SECRET_0 {R2} {'03' * 32}\n")
    log = KeyLog.from_files([a, b])
    assert log.has(bytes.fromhex(R1)) and log.has(bytes.fromhex(R2))
    log.add_text(f"CLIENT_RANDOM {R1} {'cd' * 48}")  # later line wins
    assert log.get(bytes.fromhex(R1), CLIENT_RANDOM) == bytes.fromhex("cd" * 48)
    with pytest.raises(ConfigError) as err:
        KeyLog.from_files([tmp_path / "missing.keys"])
    assert err.value.code == "keylog_unreadable"


def test_repr_hides_secrets() -> None:
    log = KeyLog.from_text(TEXT)
    assert MASTER not in repr(log) and "ab" * 4 not in repr(log)


def test_all_labels_accepted() -> None:
    log = KeyLog.from_text("\n".join(f"{label} {R1} {'0f' * 32}" for label in sorted(LABELS)))
    assert log.lines == len(LABELS) == 8 and log.bad_lines == 0
