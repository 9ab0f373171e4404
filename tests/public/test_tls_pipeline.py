"""TLS decryption through the whole product: capture reader, TCP reassembly,
connection driver and ``tls_records`` table, against tshark on the public corpus.

``test_tls_public.py`` checks ``TlsSession`` on streams from a test-only
reassembler; this checks the same counts after our own reassembly, so a
reassembly or dispatch bug shows here. Counting as tshark's "Decrypted TLS"
tabs (see test_tls_public.py): decrypted, non-empty, not ChangeCipherSpec.
"""

from __future__ import annotations

import pytest
from helpers.paths import PUBLIC
from helpers.public_corpus import TLS_KEYED_ENTRIES  # the keyed captures tshark decrypts

import pcapflow

XFAIL = {"tls/lekensteyn/tls12-all-ciphersuites-dump.pcapng": "export-grade suites"}




@pytest.fixture(scope="module")
def ds(tmp_path_factory: pytest.TempPathFactory) -> pcapflow.Dataset:
    data = tmp_path_factory.mktemp("tls")
    keys = sorted({str(PUBLIC / e["key"]) for e in TLS_KEYED_ENTRIES})
    pcapflow.ingest([PUBLIC / e["path"] for e in TLS_KEYED_ENTRIES], keylog=keys, data=data)
    return pcapflow.open(data)


@pytest.mark.skipif(not TLS_KEYED_ENTRIES, reason="public capture corpus not present")
@pytest.mark.parametrize("entry", TLS_KEYED_ENTRIES, ids=[e["path"] for e in TLS_KEYED_ENTRIES])
def test_pipeline_decrypts_what_tshark_decrypts(ds: pcapflow.Dataset, entry: dict) -> None:
    if entry["path"] in XFAIL:
        pytest.xfail(XFAIL[entry["path"]])
    cid = ds.scalar("SELECT capture_id FROM captures WHERE path = ?", [str(PUBLIC / entry["path"])])
    got = ds.fetchone(
        "SELECT count(*), coalesce(sum(plaintext_length), 0) FROM tls_records "
        "WHERE capture_id = ? AND decrypted AND plaintext_length > 0 "
        "AND coalesce(inner_content_type, content_type) <> 20", [cid])
    assert list(got) == entry["dec_key"]
    bad = ds.scalar("SELECT count(*) FROM anomalies WHERE capture_id = ? AND code = "
                    "'decrypt_failed'", [cid])
    assert bad == 0
