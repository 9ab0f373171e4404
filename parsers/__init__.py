"""pcapflow.parsers: bytes in, records and events out.

Nothing in this package opens files it was not handed, reads the clock, logs,
or knows about Parquet, DuckDB or the CLI (see STYLE.md, "sans-IO").

Layers, bottom up (the layout mirrors the stack):

- ``capture``: pcap / pcapng / compressed / stdin -> ``PacketChunk`` (columnar)
- ``decode``: link, IP, TCP/UDP headers of a chunk -> ``DecodedChunk`` (columnar)
- ``tcp``: flows, TCP analysis and reassembly -> in-order stream pieces with times
- ``tls``, ``http``, ``websocket``, ``fix``: per-connection sans-IO session parsers
"""
