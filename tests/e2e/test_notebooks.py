"""The example notebooks run, and their numbers are the CLI's numbers.

Each notebook in ``notebooks/`` is executed with nbclient (a fresh kernel,
against the committed samples) and must finish without error. Its last cell,
tagged ``key-numbers``, prints ``{"key_numbers": ...}``: order counts and p50s
that this test recomputes independently with the command line (``pcapflow
ingest`` then ``pcapflow report --format json``) and compares exactly. The
committed copies must carry outputs, and the same key numbers, so they read
well unexecuted and are not stale.
"""

from __future__ import annotations

import json
from pathlib import Path

import nbclient
import nbformat
import pytest
from helpers.paths import REPO
from typer.testing import CliRunner

from pcapflow import samples
from pcapflow.cli import app
from pcapflow.cli_demo import VENUE_MAP

NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
runner = CliRunner()


@pytest.fixture(scope="module")
def cli_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every sample ingested through the CLI (key logs and the FIX venue map)."""
    root = tmp_path_factory.mktemp("cli")
    (root / "venues.toml").write_text(VENUE_MAP)
    args = ["ingest", *[str(s.capture) for s in samples.samples()], "--data", str(root / "d"),
            "--venues", str(root / "venues.toml")]
    for s in samples.samples():
        if s.keylog is not None:
            args += ["--keylog", str(s.keylog)]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    return root / "d"


def cli_report(data: Path, *extra: str) -> list[dict[str, object]]:
    res = runner.invoke(app, ["report", "--data", str(data), "--format", "json", *extra])
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)  # notes and hints go to stderr


def key_numbers(nb: nbformat.NotebookNode) -> dict[str, object]:
    (cell,) = [c for c in nb.cells if "key-numbers" in c.metadata.get("tags", [])]
    text = "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")
    return json.loads(text.strip().splitlines()[-1])["key_numbers"]


def run_notebook(path: Path, tmp_path: Path) -> nbformat.NotebookNode:
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    return nb


def test_there_are_three_notebooks() -> None:
    assert [p.name for p in NOTEBOOKS] == ["01_quickstart.ipynb",
                                           "02_where_the_time_goes.ipynb",
                                           "03_before_after.ipynb"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_with_outputs(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count for c in code), "re-execute and save (notebooks/README.md)"
    assert sum(1 for c in code if c.outputs) >= len(code) - 2
    assert not [o for c in code for o in c.outputs if o.output_type == "error"]
    images = [o for c in code for o in c.outputs if "image/png" in o.get("data", {})]
    assert images, "the committed notebook shows its plots"


def _by_venue(rows: list[dict[str, object]]) -> dict[str, dict[str, object]]:
    return {str(r["venue"]): r for r in rows}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_and_agrees_with_the_cli(path: Path, tmp_path: Path,
                                               cli_data: Path) -> None:
    nb = run_notebook(path, tmp_path)
    got = key_numbers(nb)
    assert got == key_numbers(nbformat.read(path, as_version=4)), "committed outputs are stale"
    if path.stem == "03_before_after":
        p50 = {}
        for name in ("binance_rest_tls13.pcap", "lossy_rest_tls13.pcap"):
            (row,) = cli_report(cli_data, "--capture", name)
            assert got[name] == {"count": row["count"], "p50_us": row["p50_us"]}
            p50[name] = row["p50_us"]
        diff = p50["lossy_rest_tls13.pcap"] - p50["binance_rest_tls13.pcap"]
        assert got["p50_diff_us"] == pytest.approx(diff, abs=0.0015)
        return
    latency = _by_venue(cli_report(cli_data))
    assert set(got) == set(latency)
    for venue, numbers in got.items():
        assert numbers["count"] == latency[venue]["count"]
        assert numbers["p50_us"] == latency[venue]["p50_us"]
    if path.stem == "02_where_the_time_goes":
        net = _by_venue(cli_report(cli_data, "--metric", "network_rtt"))
        for venue, numbers in got.items():
            assert numbers["network_rtt_p50_us"] == net[venue]["p50_us"]
