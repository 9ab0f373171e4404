"""Exit codes and error lines of the real ``pcapflow`` command (issue 6, scope 6).

0 = success (a capture with recoverable damage included: its anomalies are
counted and one ``warning:`` line names file, packet and byte offset; with
``--strict`` that damage is exit 1), 1 = bad input, one line on stderr naming
the file (and packet / byte offset where there is one) and no traceback,
2 = bad usage. Each case runs the
installed console script in a subprocess, as a user or a script would.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fuzz"))

from robust_util import SAMPLES, child_env, cli

FIX = SAMPLES / "fix44_plain.pcap"


def run(*args: str, cwd: Path, narrow: bool = False) -> tuple[int, str, str]:
    env = child_env()
    if narrow:  # output piped to a log: rich falls back to 80 columns
        env.pop("COLUMNS", None)
    p = subprocess.run(cli(*args), capture_output=True, text=True, timeout=300, cwd=cwd,
                       env=env)
    return p.returncode, p.stdout, p.stderr


def one_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert "Traceback" not in err, err
    assert len(lines) == 1, err
    return lines[0]


@pytest.fixture
def files(tmp_path: Path) -> Path:
    whole = FIX.read_bytes()
    (tmp_path / "text.pcap").write_bytes(b"hello, this is not a capture\n")
    (tmp_path / "header.pcap").write_bytes(whole[:10])
    (tmp_path / "cut.pcap").write_bytes(whole[:-20])
    (tmp_path / "a_dir.pcap").mkdir()
    (tmp_path / "not_a_dir").write_text("")
    return tmp_path


@pytest.mark.parametrize(("name", "needles"), [
    ("text.pcap", ["text.pcap", "byte offset 0", "not a pcap or pcapng"]),
    ("header.pcap", ["header.pcap", "byte offset 0", "10 of 24"]),
    ("missing.pcap", ["missing.pcap", "no such file"]),
    ("a_dir.pcap", ["a_dir.pcap", "no capture files in this directory"]),  # a rotation dir
])
def test_bad_capture_exits_1_with_one_line(files: Path, name: str, needles: list[str]) -> None:
    code, _out, err = run("ingest", name, "--data", "d", cwd=files)
    assert code == 1
    line = one_line(err)
    assert line.startswith("error:") and all(n in line for n in needles), line
    assert not list((files / "d").glob("*/capture_id=*"))


@pytest.mark.parametrize(("keylog", "needle"), [
    ("missing.keylog", "key log file not found"),
    ("a_dir.pcap", "cannot read key log"),
])
def test_bad_keylog_exits_1_naming_it(files: Path, keylog: str, needle: str) -> None:
    code, _out, err = run("ingest", str(FIX), "--keylog", keylog, "--data", "d", cwd=files)
    assert code == 1
    line = one_line(err)
    assert keylog in line and needle in line, line


def test_an_error_shows_its_brackets(files: Path) -> None:
    """An error is printed as itself, not as console markup: ``[live]`` in a path (or
    in an install hint, ``pcapflow[live]``) is not a style tag to swallow."""
    code, _out, err = run("ingest", str(FIX), "--keylog", "keys[live].log", "--data", "d",
                          cwd=files)
    assert code == 1
    assert one_line(err) == "error: keys[live].log: key log file not found"


def test_an_unknown_exchange_where_no_venue_is_named_says_how_to_name_one(files: Path
                                                                         ) -> None:
    """A dataset whose connections are all of the unknown venue (no SNI, Host or venue
    map, as FIX on a private line) does not tell the user to ingest captures first."""
    assert run("ingest", str(FIX), "--data", "d", cwd=files)[0] == 0
    code, _out, err = run("report", "--data", "d", "--exchange", "binance", cwd=files)
    words = " ".join(err.split())
    assert code == 2 and "every connection is 'unknown'" in words and "--venues" in words
    assert "ingest captures first" not in words


def test_an_out_of_range_metrics_port_is_a_usage_error(files: Path) -> None:
    code, _out, err = run("watch", ".", "--data", "d", "--metrics-port", "99999", cwd=files)
    assert code == 2 and "--metrics-port" in err and "internal error" not in err, err


def test_truncated_mid_record_exits_0_and_counts_it(files: Path) -> None:
    code, out, err = run("ingest", "cut.pcap", "--data", "d", cwd=files)
    assert code == 0, err
    assert out.splitlines()[1].split()[:5] == ["cut.pcap", "141", "1", "58", "1"]  # piped
    assert "truncated_record 1" in err  # the notes under the table: on stderr when piped
    assert "fix_messages 127" in err  # everything before the cut (a bare ACK) was ingested


def test_bad_sql_exits_1(files: Path) -> None:
    code, _out, err = run("query", "select 1", "--data", "d", cwd=files)
    assert code == 1 and "d: no such dataset directory" in one_line(err)  # none yet
    (files / "d" / "captures").mkdir(parents=True)  # a dataset with nothing in it
    code, _out, err = run("query", "selec 1", "--data", "d", cwd=files)
    assert code == 1 and "query failed" in one_line(err)


def test_bad_usage_exits_2(files: Path) -> None:
    for args in (["ingest", "--bogus"], ["ingest"], ["query", "select 1", "--format", "xml"]):
        code, _out, err = run(*args, "--data", "d", cwd=files)
        assert code == 2, (args, err[-500:])
        assert "Traceback" not in err


def test_data_that_is_a_file_exits_1(files: Path) -> None:
    code, _out, err = run("ingest", str(FIX), "--data", "not_a_dir", cwd=files)
    assert code == 1
    assert "not_a_dir" in one_line(err)


def test_error_stays_one_line_when_piped(files: Path) -> None:
    long_name = "a-rather-long-capture-file-name-from-a-trading-host-2024-06-06.pcap"
    (files / long_name).write_bytes(b"not a capture at all")
    code, _out, err = run("ingest", long_name, "--data", "d", cwd=files, narrow=True)
    assert code == 1
    assert long_name in one_line(err)


def test_truncated_capture_warns_where(files: Path) -> None:
    code, _out, err = run("ingest", "cut.pcap", "--data", "d", cwd=files)
    assert code == 0 and "Traceback" not in err
    (line,) = [ln for ln in err.splitlines() if ln.startswith("warning:")]
    assert "cut.pcap" in line and "packet 141" in line and "byte offset" in line


def test_strict_makes_a_damaged_capture_exit_1(files: Path) -> None:
    code, _out, err = run("ingest", "cut.pcap", "--strict", "--data", "d", cwd=files)
    assert code == 1 and "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("error:") and "cut.pcap" in last and "packet 141" in last


def test_caplen_over_snaplen_is_kept_not_damage(files: Path) -> None:
    """A record longer than the header's snaplen (dpkt's writer puts 1500 in the header
    of 1514-byte Ethernet frames) is read and kept: an anomaly, not a damaged file, so
    no "the packets before it were ingested" warning and --strict does not fail."""
    data = bytearray(FIX.read_bytes())
    data[16:20] = (100).to_bytes(4, "little" if data[:4] in (b"\xd4\xc3\xb2\xa1",
                                                             b"\x4d\x3c\xb2\xa1") else "big")
    (files / "small_snaplen.pcap").write_bytes(bytes(data))
    code, _out, err = run("ingest", "small_snaplen.pcap", "--strict", "--data", "d", cwd=files)
    assert code == 0, err
    assert "warning:" not in err and "caplen_exceeds_snaplen" in " ".join(err.split())  # a note
    code, _out, _err = run("ingest", str(FIX), "--data", "d2", cwd=files)
    assert code == 0
    import pcapflow

    counts = "SELECT (SELECT count(*) FROM flows), (SELECT count(*) FROM latency)"
    with pcapflow.open(files / "d") as cut, pcapflow.open(files / "d2") as whole:
        assert cut.fetchall(counts) == whole.fetchall(counts) != [(0, 0)]


def test_bad_limit_is_a_usage_error(tmp_path: Path) -> None:
    rc, out, err = run("ingest", str(FIX), "--data", str(tmp_path / "d"), "--limit", "bogus=1",
                       cwd=tmp_path)
    assert rc == 2
    assert "unknown limit 'bogus'" in out + err
    assert not (tmp_path / "d" / "captures").exists()
