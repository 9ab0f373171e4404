"""TLS decryption through the whole product: capture reader, TCP reassembly,
connection driver and ``tls_records`` table, against tshark on the public corpus.

``test_tls_public.py`` checks ``TlsSession`` on streams from a test-only
reassembler; this checks the same counts after our own reassembly, so a
reassembly or dispatch bug shows here. Counting as tshark's "Decrypted TLS"
tabs (see test_tls_public.py): decrypted, non-empty, not ChangeCipherSpec.
"""

from __future__ import annotations

import pytest
from golden import regen
from helpers.paths import PUBLIC
from helpers.public_corpus import TLS_KEYED_ENTRIES  # the keyed captures tshark decrypts

import pcapflow

XFAIL = {"tls/lekensteyn/tls12-all-ciphersuites-dump.pcapng": "export-grade suites"}




@pytest.fixture(scope="module")
def decrypted() -> dict[str, tuple[int, int, int]]:
    """Capture path -> (decrypted non-empty records but ChangeCipherSpec, their plaintext
    bytes, decrypt_failed anomalies), in one query over the corpus ingested once per test
    run with every key log it lists (``golden.regen.public_dataset``, shared with
    ``test_golden_public.py``: each capture is read on its own, whatever else is in it)."""
    with pcapflow.open(regen.public_dataset(PUBLIC)) as ds:
        rows = ds.fetchall(
            "WITH r AS (SELECT capture_id, count(*) AS n, sum(plaintext_length) AS bytes "
            "           FROM tls_records WHERE decrypted AND plaintext_length > 0 "
            "           AND coalesce(inner_content_type, content_type) <> 20 GROUP BY ALL), "
            "a AS (SELECT capture_id, count(*) AS bad FROM anomalies "
            "      WHERE code = 'decrypt_failed' GROUP BY ALL) "
            "SELECT c.path, coalesce(r.n, 0), coalesce(r.bytes, 0), coalesce(a.bad, 0) "
            "FROM captures c LEFT JOIN r USING (capture_id) LEFT JOIN a USING (capture_id)")
    return {path: (int(n), int(b), int(bad)) for path, n, b, bad in rows}


@pytest.mark.skipif(not TLS_KEYED_ENTRIES, reason="public capture corpus not present")
@pytest.mark.parametrize("entry", TLS_KEYED_ENTRIES, ids=[e["path"] for e in TLS_KEYED_ENTRIES])
def test_pipeline_decrypts_what_tshark_decrypts(decrypted: dict[str, tuple[int, int, int]],
                                               entry: dict) -> None:
    if entry["path"] in XFAIL:
        pytest.xfail(XFAIL[entry["path"]])
    n, plaintext, bad = decrypted[str(PUBLIC / entry["path"])]
    assert [n, plaintext] == entry["dec_key"]
    assert bad == 0
