"""Golden end-to-end test over the third-party capture corpus (slow, ~1 min).

Every capture of ``$PCAPFLOW_PUBLIC_CAPTURES`` is ingested in one call with
every key log the corpus lists and the ``packets`` table (``golden/regen.py``,
``public_dataset``: once per test run, shared with ``test_public_ingest.py``,
two captures at a time); every table, dumped sorted without the run-dependent
columns, must equal ``tests/golden/public/<table>.jsonl.gz``. Skipped when the
corpus is absent. Regenerate only on purpose and review the diff:
``python tests/golden/regen.py --public`` or
``PCAPFLOW_REGEN_GOLDEN=1 pytest tests/public/test_golden_public.py``.
"""

from __future__ import annotations

import os

import pytest
from golden import regen
from helpers.correlation import one_per_action

ROOT = regen.public_root()
REGEN = os.environ.get("PCAPFLOW_REGEN_GOLDEN") == "1"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (ROOT / regen.CORPUS_INDEX).is_file(),
                       reason="public capture corpus not present"),
]


@pytest.fixture(scope="module")
def public_tables() -> dict[str, list[regen.Row]]:
    tables = regen.dump_tables(regen.public_dataset(ROOT), path_root=ROOT)
    if REGEN:
        regen.write_baseline(regen.PUBLIC, tables)
    return {t: regen.roundtrip(rows) for t, rows in tables.items()}


def test_public_tables_equal_baseline(public_tables: dict[str, list[regen.Row]]) -> None:
    stored = regen.baseline_tables(regen.PUBLIC)
    assert sorted(public_tables) == stored, f"tables now {sorted(public_tables)}, baseline {stored}"
    failures = []
    for table, rows in public_tables.items():
        expected = regen.read_baseline(regen.PUBLIC, table)
        assert expected is not None
        if rows != expected:
            failures.append(regen.describe_diff(table, expected, rows))
    if failures:
        pytest.fail("public corpus: tables differ from the golden baseline\n"
                    + "\n".join(failures), pytrace=False)
    captures, _ = regen.public_inputs(ROOT)
    assert len(public_tables["captures"]) == len(captures)


def test_public_correlation_ids_one_per_action(public_tables: dict[str, list[regen.Row]]
                                               ) -> None:
    """The corpus's order rows (one dataset of many captures) each have a correlation
    id of their own (helpers/correlation.py)."""
    checked = one_per_action(public_tables)
    assert checked["orders"] > 0
