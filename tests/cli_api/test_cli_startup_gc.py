"""The console script imports a command's libraries with Python's cyclic garbage
collector off, then freezes what the imports made and turns the collector back on
(``pcapflow._entry``, ``cli._startup_done``; issue 20, start-up). The collector must be
on again while the command works (an ingest or ``watch`` runs for long), and a process
that imports the CLI without being the console script (tests, notebooks) is left as it
was. Each console-script run is a fresh interpreter, as ``pcapflow`` is."""

from __future__ import annotations

import gc
import json
import subprocess
import sys
from pathlib import Path

from helpers.paths import SAMPLES

SCRIPT = """
import gc, json, os, sys
args = json.loads(sys.argv[1])
sys.argv = ["pcapflow", *args]
seen = {}
if args[0] == "ingest":  # the collector's state while the packets are read
    import pcapflow.cli as cli
    cli._skip_unused_imports()
    from pcapflow import api
    ingest = api.ingest
    def watched(*a, **k):
        seen["during"] = gc.isenabled()
        return ingest(*a, **k)
    api.ingest = watched
exit_now = os._exit
def done(code=0):
    sys.stdout.flush()
    print("\\n" + json.dumps({"code": code, "enabled": gc.isenabled(),
                              "frozen": gc.get_freeze_count(), **seen}))
    sys.stdout.flush()
    exit_now(0)
os._exit = done
from pcapflow._entry import main
main()
"""


def _console(args: list[str]) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, json.dumps(args)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_the_collector_is_back_on_for_the_command(tmp_path: Path) -> None:
    data = str(tmp_path / "data")
    got = _console(
        [
            "ingest",
            str(SAMPLES / "binance_wsapi_tls13.pcap"),
            "--keylog",
            str(SAMPLES / "binance_wsapi_tls13.keylog"),
            "--data",
            data,
        ]
    )
    assert got["code"] == 0
    assert got["during"] is True and got["enabled"] is True
    assert got["frozen"] > 10_000  # the start-up's objects, out of the collector's sight
    for args in (
        ["query", "SELECT count(*) FROM latency", "--data", data],
        ["report", "--data", data],
        ["flows", "--data", data],
    ):
        got = _console(args)
        assert got["code"] == 0 and got["enabled"] is True and got["frozen"] > 0, args


def test_the_cli_imported_as_a_library_leaves_the_collector_alone(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from pcapflow.cli import app

    frozen = gc.get_freeze_count()
    assert gc.isenabled()
    res = CliRunner().invoke(
        app, ["ingest", str(SAMPLES / "fix44_plain.pcap"), "--data", str(tmp_path / "data")]
    )
    assert res.exit_code == 0, res.output
    assert gc.isenabled() and gc.get_freeze_count() == frozen
