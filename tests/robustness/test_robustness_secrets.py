"""No secret reaches a dataset file (issue 6, scope 5).

A dataset is built from every sample capture with every key log and the
``packets`` table on. Then every file under it is searched, two ways: its raw
bytes (Parquet footers keep column statistics uncompressed; journals and other
files are text) and, for Parquet files, every decoded value of every column,
nested ones included. The secrets are those ``sample_pcaps/secrets.json`` lists
(API keys, passphrases, tokens, FIX passwords, and each run's signatures) in
plain, URL-encoded and JSON-escaped form, plus every key-log secret (the third
field of each key-log line, and of the key log inside the pcapng Decryption
Secrets Block) in hex and as raw bytes.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote, quote_plus

import pyarrow.parquet as pq
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fuzz"))

from robust_util import SAMPLES, child_env, cli

MIN_SECRET = 6  # shorter values (none in the samples) would match by chance


def _keylog_secrets(text: bytes) -> set[bytes]:
    out = set()
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 3 and not line.startswith(b"#"):
            hexed = parts[2]
            out |= {hexed.lower(), hexed.upper(), bytes.fromhex(hexed.decode())}
    return out


def _dsb_secrets() -> set[bytes]:
    from pcapflow.parsers.capture import open_capture

    out: set[bytes] = set()
    for cap in SAMPLES.glob("*.pcapng"):
        with open_capture(cap) as reader:
            for _ in reader:
                pass
            for _stype, data in reader.secrets:
                out |= _keylog_secrets(data)
    return out


def all_secrets() -> set[bytes]:
    spec = json.loads((SAMPLES / "secrets.json").read_text())
    texts = list(spec["fixed"].values())
    for values in spec["derived"].values():
        texts += values
    out: set[bytes] = set()
    for t in texts:
        for form in {t, quote(t, safe=""), quote_plus(t), json.dumps(t)[1:-1]}:
            out.add(form.encode())
    for k in SAMPLES.glob("*.keylog"):
        out |= _keylog_secrets(k.read_bytes())
    out |= _dsb_secrets()
    assert all(len(s) >= MIN_SECRET for s in out)
    return out


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A dataset of every sample (CLI, ``--packets --verbose``), and the CLI's output."""
    data = tmp_path_factory.mktemp("secrets") / "data"
    caps = sorted(str(p) for p in SAMPLES.glob("*.pcap*"))
    keys = [a for k in sorted(SAMPLES.glob("*.keylog")) for a in ("--keylog", str(k))]
    args = ["ingest", *caps, *keys, "--packets", "--verbose", "--data", str(data)]
    proc = subprocess.run(cli(*args), capture_output=True, text=True, timeout=600, env=child_env())
    assert proc.returncode == 0, proc.stderr[-3000:]
    return data, proc.stdout + proc.stderr


def _values(v: object) -> list[bytes]:
    """Every leaf of a decoded Parquet value as bytes."""
    if v is None:
        return []
    if isinstance(v, bytes):
        return [v]
    if isinstance(v, dict):
        return [b for x in v.values() for b in _values(x)]
    if isinstance(v, list | tuple):
        return [b for x in v for b in _values(x)]
    return [str(v).encode()]


def test_the_dataset_decrypted_something(dataset: tuple[Path, str]) -> None:
    """Guard: the scan below means something only if plaintext tables were written."""
    data, _ = dataset
    for table in ("http_messages", "ws_messages", "fix_messages", "packets"):
        assert pq.read_table(data / table).num_rows > 50, table


def test_no_secret_in_any_file(dataset: tuple[Path, str]) -> None:
    data, _ = dataset
    secrets = all_secrets()
    files = [p for p in data.rglob("*") if p.is_file()]
    assert len(files) > 20
    leaks = []
    for f in files:
        raw = f.read_bytes()
        leaks += [(str(f), "raw", s[:24]) for s in secrets if s in raw]
        if f.suffix != ".parquet":
            continue
        table = pq.read_table(f)
        for name in table.column_names:
            blob = b"\x00".join(b for v in table.column(name).to_pylist() for b in _values(v))
            leaks += [(str(f), name, s[:24]) for s in secrets if s in blob]
    assert leaks == [], f"{len(leaks)} secrets found, first: {leaks[:5]}"


def test_no_secret_in_cli_output(dataset: tuple[Path, str]) -> None:
    _, output = dataset
    leaks = [s[:24] for s in all_secrets() if s in output.encode()]
    assert leaks == []


def test_keylog_errors_do_not_echo_key_material(tmp_path: Path) -> None:
    """A key log that is unreadable or full of near-miss lines: no secret in the message."""
    key = (SAMPLES / "binance_rest_tls13.keylog").read_bytes()
    bad = tmp_path / "bad.keylog"
    bad.write_bytes(key.replace(b" ", b"  x ", 3))  # damaged lines carrying real secrets
    proc = subprocess.run(cli("ingest", str(SAMPLES / "binance_rest_tls13.pcap"), "--keylog",
                              str(bad), "--data", str(tmp_path / "d")),
                          capture_output=True, text=True, timeout=300, env=child_env())
    text = (proc.stdout + proc.stderr).encode()
    assert not [s for s in _keylog_secrets(key) if s in text]


def test_the_secrets_were_on_the_wire() -> None:
    """Guard: the decrypted traffic carries the secrets, so their absence is redaction."""
    from seeds import all_seeds

    plaintext = b"".join(all_seeds()["http"]) + b"".join(all_seeds()["fix"])
    fixed = json.loads((SAMPLES / "secrets.json").read_text())["fixed"]
    on_wire = [k for k, v in fixed.items() if v.encode() in plaintext]
    assert {"binance_api_key", "fix_password", "deribit_access_token"} <= set(on_wire), on_wire
