"""Fixtures shared by test modules.

``samples_dataset``: every sample capture (``sample_pcaps/``) ingested once per test
session with its key logs and the demo's venue map (the FIX samples' comp ids), the
way ``pcapflow demo`` does; read-only for the tests that take it.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from helpers.paths import SAMPLES

import pcapflow
from pcapflow import api

SAMPLE_CAPTURES = sorted([*SAMPLES.glob("*.pcap"), *SAMPLES.glob("*.pcapng")])
VENUE_MAP = """
[[venue]]
name = "mockfix"
sender_comp_id = "PCFTRADER1"
target_comp_id = "MOCKEX"
ports = [9878]
"""


@pytest.fixture(scope="session")
def samples_dataset(tmp_path_factory: pytest.TempPathFactory) -> Iterator[pcapflow.Dataset]:
    root = tmp_path_factory.mktemp("samples_dataset")
    venues = root / "venues.toml"
    venues.write_text(VENUE_MAP)
    api.ingest([str(c) for c in SAMPLE_CAPTURES], keylog=sorted(SAMPLES.glob("*.keylog")),
               data=root / "data", venues=venues)
    ds = pcapflow.open(root / "data")
    yield ds
    ds.close()
