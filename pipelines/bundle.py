"""Several Arrow tables in one file: the small tables of a resumed command's state.

A command of a rotation writes what the next one carries (``why_carry.save``,
``match_carry.save``) as a dozen small tables. As a file each they cost a command
~1 ms apiece to write, fsync (``store.Staging.commit``), move into place (twice: the
old one to the trash) and read back in the next command, and lz4 cost more than
that: the derive's 12 files took ~13 ms to write, fsync and read, one uncompressed
file ~4 ms (at 1M-packet files of ``make_capture.py --answered``, ~3 MB).

The file: each table as an Arrow IPC stream (uncompressed, one chunk in record
batches of at most ``BATCH_ROWS``), one after the other, then the index (JSON: each
name's offset and length), its length (8 bytes, little-endian) and ``MAGIC``. A file
cut short or not of this kind raises ``ValueError`` (its readers then read the set
whole, once, as for any state they cannot use).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import pyarrow as pa

MAGIC = b"PCFBNDL1"
SUFFIX = ".arrows"
BATCH_ROWS = 65536
"""Rows per record batch (``feather.write_feather``'s: a table of the state is one
chunk of such batches, never a batch per command that added rows)."""


def write(path: Path, tables: Mapping[str, pa.Table]) -> None:
    """Write ``tables`` into the file ``path`` (module docstring)."""
    index: dict[str, list[int]] = {}
    with pa.OSFile(str(path), "wb") as sink:
        for name, table in tables.items():
            start = sink.tell()
            with pa.ipc.new_stream(sink, table.schema) as w:
                w.write_table(table.combine_chunks(), max_chunksize=BATCH_ROWS)
            index[name] = [start, sink.tell() - start]
        tail = json.dumps(index).encode()
        sink.write(tail)
        sink.write(len(tail).to_bytes(8, "little"))
        sink.write(MAGIC)


def read(path: Path, *, memory_map: bool = False) -> dict[str, pa.Table]:
    """The tables of the file ``path``; ``memory_map``: their buffers are the file's
    pages (no copy), else the file is read once."""
    if memory_map:
        with pa.memory_map(str(path)) as f:
            data = f.read_buffer()
    else:
        data = pa.py_buffer(path.read_bytes())
    end = data.size - len(MAGIC)
    if end < 8 or data.slice(end).to_pybytes() != MAGIC:
        raise ValueError(f"{path}: not a bundle of tables")
    n = int.from_bytes(data.slice(end - 8, 8).to_pybytes(), "little")
    if n > end - 8:
        raise ValueError(f"{path}: not a bundle of tables")
    index = json.loads(data.slice(end - 8 - n, n).to_pybytes())
    return {str(name): pa.ipc.open_stream(data.slice(int(o), int(size))).read_all()
            for name, (o, size) in index.items()}
