"""``pcapflow ingest`` does not import what it never uses (pandas, SciPy, PyYAML: ~0.55 s of
start-up)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from helpers.paths import SAMPLES

SCRIPT = """
import json, sys
sys.argv = ["pcapflow", "ingest", sys.argv[1], "--keylog", sys.argv[2], "--data", sys.argv[3]]
from pcapflow.cli import main
code = 0
try:
    main()
except SystemExit as e:
    code = e.code or 0
import pyarrow.compute as pc
from pyarrow.vendored import docscrape
print(json.dumps({"code": code, "imported": sorted(
    m for m in ("pandas", "scipy", "matplotlib", "yaml") if sys.modules.get(m) is not None),
    "docs": [docscrape.NumpyDocString.__name__, "ndigits" in pc.round.__doc__]}))
"""


def test_cli_ingest_leaves_pandas_scipy_and_yaml_unimported(tmp_path: Path) -> None:
    cap = SAMPLES / "binance_wsapi_tls13.pcap"
    keylog = SAMPLES / "binance_wsapi_tls13.keylog"
    data = tmp_path / "data"
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(cap), str(keylog), str(data)],
                         capture_output=True, text=True, timeout=300, check=True)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    # pyarrow.compute imported without reading its options' docs (``cli._import_compute_
    # without_docs``), its numpydoc reader put back after
    # (``round``'s docstring lacks its options' parameters, ``ndigits`` among them)
    assert got == {"code": 0, "imported": [], "docs": ["NumpyDocString", False]}, out.stderr
    # the ingest itself is whole: orders matched, messages written
    import duckdb

    def count(table: str) -> int:
        return duckdb.sql(f"SELECT count(*) FROM read_parquet('{data}/{table}/**/*.parquet')"
                          ).fetchall()[0][0]

    assert count("orders") == 58
    assert count("ws_messages") == 868


def test_the_python_api_imports_normally() -> None:
    """Only the CLI's own process skips them: a notebook's pandas (and SciPy, Numba's
    BLAS, where installed) import as usual, with no import hook in the way."""
    code = ("import pcapflow.api, pcapflow.pipelines.ingest.app_layer, pandas;"
            "import pyarrow.compute as pc;"
            "import sys; print(' '.join(type(f).__name__ for f in sys.meta_path),"
            " 'ndigits' in pc.round.__doc__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300, check=True)
    assert "_SkipImports" not in out.stdout.split()
    assert out.stdout.split()[-1] == "True"  # (pyarrow.compute's docs whole)
