"""pcapflow.parsers: bytes in, records and events out.

Nothing in this package opens files it was not handed, reads the clock, logs,
or knows about Parquet, DuckDB or the CLI (see STYLE.md, "sans-IO"), and nothing
here imports from ``pipelines``.

Layers, bottom up: ``capture`` (files -> ``PacketChunk``), ``decode`` (headers ->
``DecodedChunk``), ``tcp`` (flows, analysis, reassembly, batch walks), then one
package per application protocol (``tls``, ``http``, ``http2``, ``websocket``, ``fix``),
each registered in ``protocols.registry``. See ``docs/architecture.md``.
"""
