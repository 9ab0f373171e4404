"""Shared test helpers: code more than one test module uses lives here, so that no
test module imports another (issue 14, item 6).

- ``fix_messages``: reference FIX messages encoded by simplefix;
- ``tcp_pieces``: a tiny dpkt-based in-order TCP extractor;
- ``public_corpus``: what the tests know about the third-party capture corpus;
- ``secrets_check``: an implementation-independent view of secrets left in text;
- ``path_compare``: ingest with the batch or the general path, compare tables.

The golden baselines and their dump/compare code live in ``tests/golden/``.
"""
