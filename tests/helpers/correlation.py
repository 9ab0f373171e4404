"""Test helper: ``correlation_id`` is one per order action (docs/tables.md, issue 15).

``one_per_action`` takes a dataset's tables as rows (``golden.regen.dump_tables``:
times as integer ns) and checks the contract: every order has an id of its own in its
capture; its latency rows (one per leg), its replies (``acks`` rows that answer an
order: ``kind`` set) and its ``unmatched`` row carry that id and no other order's; a
cause names an order's latency row; a JSON request id appears as
``<request_id>#<flow_id>@<ts>`` (``.<k>`` on a tie). Ids in the scoped and generated
forms (``...#<flow_id>...@<ts>``) are unique in the whole dataset; a bare client order
id is unique within its capture (a client may reuse one in another capture).
Returns a count per table of the rows checked.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence

Row = Mapping[str, object]

SCOPED = re.compile(r"#\d+(\.\d+)?@\d+(\.\d+)?$")
"""The end of a scoped (``<id>#<flow>@<ts>``) or generated (``#<flow>.<n>@<ts>``) id."""


def _dups(keys: Sequence[object]) -> list[tuple[object, int]]:
    return [(k, n) for k, n in Counter(keys).items() if n > 1][:5]


def one_per_action(tables: Mapping[str, Sequence[Row]]) -> dict[str, int]:
    orders = list(tables.get("orders", ()))
    ids = [(o["capture_id"], o["correlation_id"]) for o in orders]
    assert all(cid is not None for _, cid in ids), "an order without a correlation_id"
    assert not _dups(ids), f"orders share a correlation_id: {_dups(ids)}"
    scoped = [cid for _, cid in ids if SCOPED.search(str(cid))]
    assert not _dups(scoped), f"a scoped id in two captures: {_dups(scoped)}"
    by_id = {(o["capture_id"], o["correlation_id"]): o for o in orders}
    for o in orders:
        rid = o["request_id"]
        if rid is not None:
            want = f"{rid}#{o['flow_id']}@{o['ts']}"
            assert o["correlation_id"] == want or str(o["correlation_id"]).startswith(
                want + "."), (o["correlation_id"], want)

    def belongs(rows: Sequence[Row], ts: str, what: str) -> None:
        keys = [(r["capture_id"], r["correlation_id"], r.get("leg")) for r in rows]
        assert not _dups(keys), f"{what}: two rows for one action and leg: {_dups(keys)}"
        for r in rows:
            o = by_id.get((r["capture_id"], r["correlation_id"]))
            assert o is not None, f"{what}: {r['correlation_id']!r} is no order's"
            assert (o["flow_id"], o["kind"]) == (r["flow_id"], r["kind"]), (what, r, o)
            if ts:
                assert o["ts"] == r[ts], (what, r, o)

    latency = list(tables.get("latency", ()))
    belongs(latency, "order_ts", "latency")
    answers = [a for a in tables.get("acks", ()) if a["kind"] is not None]
    belongs(answers, "", "acks")
    lost = [u for u in tables.get("unmatched", ()) if u["what"] == "order"]
    belongs(lost, "ts", "unmatched")
    legs = {(r["capture_id"], r["correlation_id"], r["leg"], r["order_ts"]) for r in latency}
    causes = list(tables.get("causes", ()))
    for c in causes:
        assert (c["capture_id"], c["correlation_id"], c["leg"], c["order_ts"]) in legs, c
    return {"orders": len(orders), "latency": len(latency), "acks": len(answers),
            "unmatched": len(lost), "causes": len(causes)}


ORDER_TABLES = ("orders", "latency", "acks", "unmatched", "causes")


def order_tables(ds: object) -> dict[str, list[dict[str, object]]]:
    """The tables ``one_per_action`` reads, from a ``pcapflow.Dataset`` (times as ns)."""
    out: dict[str, list[dict[str, object]]] = {}
    for table in ORDER_TABLES:
        if table not in ds.tables:  # type: ignore[attr-defined]
            continue
        schema = ds.sql(f"SELECT * FROM {table} LIMIT 0").arrow().schema  # type: ignore[attr-defined]
        cols = [f'epoch_ns("{f.name}") AS "{f.name}"' if str(f.type).startswith("timestamp")
                else f'"{f.name}"' for f in schema]
        rel = ds.sql(f"SELECT {', '.join(cols)} FROM {table}")  # type: ignore[attr-defined]
        out[table] = [dict(zip(rel.columns, r, strict=True)) for r in rel.fetchall()]
    return out
