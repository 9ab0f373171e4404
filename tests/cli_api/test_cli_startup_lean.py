"""What each ``pcapflow`` command imports (issue 20, start-up): a query reads the
dataset without pandas, pyarrow, NumPy, Numba or the parsers; ``--version`` without
any of them; ``report`` without matplotlib; an ingest without cffi/pycparser (Numba's
optional cffi typing). Each runs in a fresh interpreter, as the console script does."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.paths import SAMPLES

HEAVY = ("pandas", "pyarrow", "numpy", "numba", "matplotlib", "scipy", "cffi", "pycparser",
         "pcapflow.parsers.tls", "pcapflow.parsers.protocols.registry")
SCRIPT = """
import json, sys
heavy = json.loads(sys.argv[2])
args = json.loads(sys.argv[1])
if "--cli-imports" in args:  # (this test's own option: which modules to look for)
    i = args.index("--cli-imports")
    heavy, args = args[i + 1].split(","), args[:i] + args[i + 2:]
sys.argv = ["pcapflow", *args]
from pcapflow.cli import main
code = 0
try:
    main()
except SystemExit as e:
    code = e.code or 0
sys.stdout.flush()
print("\\n" + json.dumps({"code": code, "imported": sorted(
    m for m in heavy if sys.modules.get(m) is not None)}))
"""


def _run(args: list[str]) -> tuple[dict, str]:
    out = subprocess.run([sys.executable, "-c", SCRIPT, json.dumps(args), json.dumps(HEAVY)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1]), out.stdout


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("lean") / "data"
    got, _ = _run(["ingest", str(SAMPLES / "binance_wsapi_tls13.pcap"), "--keylog",
                   str(SAMPLES / "binance_wsapi_tls13.keylog"), "--data", str(d)])
    assert got["code"] == 0
    assert not {"cffi", "pycparser", "pandas", "scipy"} & set(got["imported"])
    return d


def test_query_imports_no_parser_nor_pandas(data: Path) -> None:
    got, out = _run(["query", "SELECT count(*) AS n, min(order_ts) AS first FROM latency",
                     "--data", str(data)])
    assert got == {"code": 0, "imported": []}
    assert "111" in out  # the sample's 111 latency rows


@pytest.mark.parametrize("sql", ["SELECT count(*) AS n, min(order_ts) AS first FROM latency",
                                 "SHOW TABLES"])
def test_query_runs_on_the_engine_alone(data: Path, sql: str) -> None:
    """A one-statement query goes through DuckDB's engine (``_duckdb``) without its
    Python relation layer (``duckdb``, ~50 ms), typer's pydantic or rich (piped: plain text)."""
    got, out = _run(["query", sql, "--data", str(data), "--cli-imports", "duckdb,pydantic,rich"])
    assert got == {"code": 0, "imported": []}
    assert ("111" if "latency" in sql else "ws_messages") in out


def test_query_script_takes_the_relation_path(data: Path) -> None:
    """Two statements: the relation layer runs them (and is imported for it)."""
    got, out = _run(["query", "SET threads = 1; SELECT count(*) AS n FROM orders",
                     "--data", str(data), "--cli-imports", "duckdb"])
    assert got == {"code": 0, "imported": ["duckdb"]}
    assert "58" in out


def test_version_imports_nothing_heavy() -> None:
    got, out = _run(["--version"])
    assert got == {"code": 0, "imported": []}
    assert out.startswith("pcapflow ")


def test_report_leaves_matplotlib_alone(data: Path) -> None:
    got, out = _run(["report", "--data", str(data), "--format", "csv"])
    assert got["code"] == 0
    assert "matplotlib" not in got["imported"]
    assert "venue" in out


@pytest.mark.parametrize("args", [[], ["--format", "json"], ["--by", "minute,endpoint"]])
def test_report_prints_without_pandas(data: Path, args: list[str]) -> None:
    """The report as a table or JSON reads DuckDB's rows as Python values
    (``report.build(frame=False)``): no pandas, pyarrow or NumPy (~0.4 s), nor DuckDB's
    relation layer; piped, a table needs no rich for stdout either."""
    got, out = _run(["report", "--data", str(data), *args, "--cli-imports",
                     "pandas,pyarrow,numpy,duckdb,matplotlib,numba"])
    assert got == {"code": 0, "imported": []}
    assert "binance" in out
    if not args:
        assert " 58 " in out  # the sample's 58 orders
