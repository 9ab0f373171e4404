"""``pcapflow demo``: the README's first command, in-process and from a built wheel.

The in-process run checks the report the demo prints against the samples' own
ground truth (the client's log of every order action it sent and what came
back): one row per venue, as many matched orders as the generator sent, the
same outcomes. The wheel test does what a newcomer does on a fresh machine:
build the wheel, install it into a new virtual environment, run ``pcapflow demo``
from an empty directory. It takes ~2 minutes, most of it the demo's first run compiling
the kernels in the new environment, so it runs with ``PCAPFLOW_SLOW_TESTS=1``; CI runs
the README's quick start itself, verbatim, in a fresh virtual environment of its own
(``.ci/run``, before the suite), which this test approximates.
"""

from __future__ import annotations

import collections
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest
from helpers.paths import REPO, SAMPLES
from pcapflow.parsers.errors import ConfigError
from typer.testing import CliRunner

from pcapflow import cli_demo, samples
from pcapflow.cli import app


def truth_counts() -> tuple[collections.Counter[str], collections.Counter[tuple[str, str]]]:
    """Order actions per venue, and per (venue, outcome), from every sample's truth log."""
    venues: collections.Counter[str] = collections.Counter()
    outcomes: collections.Counter[tuple[str, str]] = collections.Counter()
    for s in samples.samples():
        assert s.truth is not None, s.name
        for line in s.truth.read_text().splitlines():
            rec = json.loads(line)
            venues[rec["venue"]] += 1
            outcomes[(rec["venue"], rec["outcome"])] += 1
    return venues, outcomes


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("demo")
    res = CliRunner().invoke(app, ["demo", "--out", str(out)])
    assert res.exit_code == 0, res.output
    return out, res.output


def _rows(output: str, title: str) -> list[list[str]]:
    """Data rows of the printed table whose title line starts with ``title``."""
    lines = output.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.strip() == title)
    sep = next(i for i in range(start, len(lines)) if lines[i].strip().startswith("───"))
    rows = []
    for ln in lines[sep + 1:]:
        if "quantiles by linear" in ln:
            return rows
        if ln.strip():
            rows.append(ln.split())
    raise AssertionError(f"table {title!r} has no caption")


def _header(output: str, title: str) -> list[tuple[str, float]]:
    """(column, µs per unit) of the table under ``title``: ``p50 ms`` -> ("p50", 1000)."""
    lines = output.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.strip() == title)
    words = lines[start + 1].split()
    cols: list[tuple[str, float]] = []
    for w in words:
        if w in ("µs", "ms"):
            cols[-1] = (cols[-1][0], 1.0 if w == "µs" else 1000.0)
        else:
            cols.append((w, 1.0))
    return cols


def test_samples_are_found_with_their_companions() -> None:
    found = samples.samples()
    assert samples.sample_dir().resolve() == SAMPLES.resolve()
    assert len(found) == 11
    tls = [s for s in found if s.keylog is not None]
    assert {s.name for s in tls} == {"binance_rest_tls13", "binance_wsapi_tls13",
                                     "okx_ws_tls12", "deribit_jsonrpc_tls13",
                                     "lossy_rest_tls13", "binance_rest_h2",
                                     "binance_rest_h2_curl", "binance_tick_tls13"}
    assert samples.sample("okx_ws_tls12.pcap").capture.name == "okx_ws_tls12.pcap"
    with pytest.raises(ConfigError):
        samples.sample("nope")


def test_demo_prints_one_row_per_venue_with_every_order(demo_run: tuple[Path, str]) -> None:
    _, output = demo_run
    venues, _ = truth_counts()
    rows = _rows(output, "Order-to-ack latency by venue")
    printed = {r[0]: (int(r[1].replace(",", "")), int(r[2])) for r in rows}
    assert printed == {v: (n, 0) for v, n in venues.items()}
    head = _header(output, "Order-to-ack latency by venue")
    for r in rows:  # mean, p50, p90, p99, p99.9, max: numbers in µs or ms as headed, in order
        p50, p90, p99, p999, mx = (float(x.replace(",", "")) * head[i][1]
                                   for i, x in enumerate(r[4:9], start=4))
        assert 0 < p50 <= p90 <= p99 <= p999 <= mx


def test_demo_outcomes_match_ground_truth(demo_run: tuple[Path, str]) -> None:
    out, _ = demo_run
    _, outcomes = truth_counts()
    res = CliRunner().invoke(app, ["report", "--data", str(out / "data"), "--by", "status",
                                   "--format", "json"])
    assert res.exit_code == 0, res.output
    got = {(r["venue"], r["status"]): r["count"] for r in json.loads(res.stdout)}
    assert got == dict(outcomes)


def test_demo_writes_plot_html_and_venue_map(demo_run: tuple[Path, str]) -> None:
    out, output = demo_run
    assert (out / "latency.png").read_bytes()[:4] == b"\x89PNG"
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 5  # 4 latency figures, the alert timeline
    for venue in truth_counts()[0]:
        assert f"<td>{venue}</td>" in html
    assert f"plots:       {out / 'latency.png'}" in output
    assert f"HTML report: {out / 'report.html'}" in output
    assert "mockfix" in (out / "venues.toml").read_text()


def test_demo_refuses_a_foreign_directory_and_reuses_its_own(tmp_path: Path) -> None:
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "precious.txt").write_text("keep me")
    with pytest.raises(ConfigError) as err:
        cli_demo.fresh_data_dir(foreign)
    assert err.value.code == "data_dir_not_empty"
    assert (foreign / "precious.txt").exists()
    ours = tmp_path / "demo"
    cli_demo.fresh_data_dir(ours)
    (ours / "captures").mkdir()
    cli_demo.fresh_data_dir(ours)  # an earlier demo's directory is wiped
    assert sorted(p.name for p in ours.iterdir()) == [cli_demo.MARKER]


# -- the README's quick start, from a wheel in a fresh virtual environment ------------------

SOURCES = ("pyproject.toml", "README.md", "pcapflow", "parsers", "pipelines", "sample_pcaps")


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("PCAPFLOW_SLOW_TESTS") != "1",
                    reason="PCAPFLOW_SLOW_TESTS=1 (CI runs the README's quick start verbatim)")
def test_quickstart_from_a_wheel_in_a_fresh_venv(tmp_path: Path) -> None:
    """pip install pcapflow-*.whl; pcapflow demo  -> a per-venue report.

    The venv reaches the heavy dependencies of the environment running the tests (no
    network needed to install them); pcapflow itself must come from the wheel.
    """
    src = tmp_path / "src"  # a clean copy: the build must not write into the repository
    src.mkdir()
    for name in SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, src / name,
                            ignore=shutil.ignore_patterns("__pycache__", "*.nbi", "*.nbc"))
        elif (REPO / name).exists():
            shutil.copy2(REPO / name, src / name)
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w",
                            str(tmp_path / "dist"), str(src)], capture_output=True, text=True,
                           timeout=300)
    offline = ("Could not find a version", "No matching distribution", "Network is unreachable")
    if build.returncode != 0 and any(m in build.stderr for m in offline):
        pytest.skip("cannot fetch the build backend (pip build isolation needs the index)")
    assert build.returncode == 0, build.stderr
    (whl,) = (tmp_path / "dist").glob("pcapflow-*.whl")
    names = zipfile.ZipFile(whl).namelist()
    assert "pcapflow/_samples/MANIFEST.md" in names, \
        "the wheel lacks the sample captures (pyproject: package pcapflow._samples)"
    env_dir = tmp_path / "venv"
    venv.EnvBuilder().create(env_dir)
    py = env_dir / "bin" / "python"
    # The heavy dependencies come from the environment running these tests (no network
    # needed), by plain path lines: no .pth file of that environment is run, so its
    # editable pcapflow stays out and pcapflow itself must come from the wheel.
    theirs = subprocess.run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                            capture_output=True, text=True, check=True).stdout.strip()
    ours = {sysconfig.get_paths()[k] for k in ("purelib", "platlib")}
    (Path(theirs) / "_test_env_deps.pth").write_text("\n".join(sorted(ours)) + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "-q",
                    "--no-deps", "--no-index", str(whl)], check=True, timeout=300)
    run = tmp_path / "fresh"
    run.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PCAPFLOW_DATA")}
    where = subprocess.run([py, "-c", "import pcapflow; print(pcapflow.__file__)"], cwd=run,
                           env=env, capture_output=True, text=True, check=True)
    assert Path(where.stdout.strip()).is_relative_to(env_dir)
    res = subprocess.run([env_dir / "bin" / "pcapflow", "demo"], cwd=run, env=env,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    rows = _rows(res.stdout, "Order-to-ack latency by venue")
    venues, _ = truth_counts()
    assert {r[0]: int(r[1].replace(",", "")) for r in rows} == dict(venues)
    assert re.search(r"HTML report: pcapflow_demo/report\.html", res.stdout)
    assert (run / "pcapflow_demo" / "latency.png").stat().st_size > 10_000
