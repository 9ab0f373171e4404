"""Golden end-to-end test: every table of every sample capture equals its baseline.

Each capture in ``sample_pcaps/`` is ingested once per session (with its key
log, the demo's venue map and the ``packets`` table; see ``golden/regen.py``)
and every table, dumped sorted with the run-dependent columns left out, must
equal the committed ``tests/golden/baselines/<sample>/<table>.jsonl.gz`` row
for row. A failure prints the row counts, the columns that appeared or
vanished, the first rows found on only one side and, for the first differing
pair, the columns that differ.

Regenerate only on purpose (a deliberate change of the tables), then review
what changed: ``python tests/golden/regen.py`` or
``PCAPFLOW_REGEN_GOLDEN=1 pytest tests/e2e/test_golden.py``.
``PCAPFLOW_SLOW_PATH=1`` runs the same comparison on the general per-packet
path (tests/pipelines/test_fast_path.py already compares the two paths directly).
"""

from __future__ import annotations

import os

import pytest
from golden import regen
from helpers.correlation import one_per_action

REGEN = os.environ.get("PCAPFLOW_REGEN_GOLDEN") == "1"
SAMPLES = regen.samples() + regen.sets()
"""Single captures, and the folder recordings (a rotation ingested as one capture, a
capture begun mid-session): ``test_nothing_dropped`` cuts the single ones only."""


@pytest.fixture(scope="session")
def golden_dumps() -> dict[str, dict[str, list[regen.Row]]]:
    """Sample name -> table -> canonical rows; each sample ingested at most once."""
    return {}


def _dump(cache: dict[str, dict[str, list[regen.Row]]], sample: regen.Sample
          ) -> dict[str, list[regen.Row]]:
    if sample.name not in cache:
        tables = regen.dump_sample(sample)
        if REGEN:
            regen.write_baseline(sample.name, tables)
        cache[sample.name] = {t: regen.roundtrip(rows) for t, rows in tables.items()}
    return cache[sample.name]


def test_every_sample_has_a_baseline() -> None:
    names = {s.name for s in SAMPLES}
    have = {p.name for p in regen.BASELINES.iterdir() if p.is_dir()} if \
        regen.BASELINES.exists() else set()
    assert names, "no sample captures found"
    assert names <= have or REGEN, f"no baseline for {sorted(names - have)}: run regen.py"
    assert have <= names, f"baselines of samples that no longer exist: {sorted(have - names)}"


@pytest.mark.parametrize("sample", SAMPLES, ids=[s.name for s in SAMPLES])
def test_tables_equal_baseline(sample: regen.Sample,
                               golden_dumps: dict[str, dict[str, list[regen.Row]]]) -> None:
    tables = _dump(golden_dumps, sample)
    stored = regen.baseline_tables(sample.name)
    assert sorted(tables) == stored, (
        f"tables now {sorted(tables)}, baseline has {stored}")
    failures = []
    for table, rows in tables.items():
        expected = regen.read_baseline(sample.name, table)
        assert expected is not None
        if rows != expected:
            failures.append(regen.describe_diff(table, expected, rows))
    if failures:
        pytest.fail(f"{sample.name}: tables differ from the golden baseline\n"
                    + "\n".join(failures), pytrace=False)
    # the baseline is not vacuous: every sample decodes and matches orders
    assert tables["flows"] and tables["packets"] and tables["latency"]


@pytest.mark.parametrize("sample", SAMPLES, ids=[s.name for s in SAMPLES])
def test_one_correlation_id_per_action(sample: regen.Sample,
                                       golden_dumps: dict[str, dict[str, list[regen.Row]]]
                                       ) -> None:
    """Every sample's orders each have a correlation_id of their own, which their
    latency, acks, unmatched and causes rows carry (helpers/correlation.py); WebSocket
    request ids (ccxt numbers them per connection; the samples reuse ids) included."""
    checked = one_per_action(_dump(golden_dumps, sample))
    assert checked["orders"] > 0 and checked["latency"] >= checked["orders"] - checked[
        "unmatched"]


def test_describe_diff_names_rows_and_columns() -> None:
    """The failure message itself: counts, one-sided rows and the differing cells."""
    base = [{"a": 1, "b": "x"}, {"a": 2, "b": "y"}]
    now = [{"a": 1, "b": "x"}, {"a": 2, "b": "z"}, {"a": 3, "b": "w"}]
    text = regen.describe_diff("t", base, now)
    assert "baseline 2 rows, now 3 rows" in text
    assert "1 rows only in the baseline, 2 only now" in text
    assert 'baseline only: {"a": 2, "b": "y"}' in text
    assert "first differing sorted row #1: b: 'y' -> 'z'" in text
    renamed = regen.describe_diff("t", base, [{"a": 1, "c": "x"}])
    assert "columns gone: ['b']; new: ['c']" in renamed
