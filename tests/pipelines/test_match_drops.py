"""The matcher drops each temp table after the last statement that reads it
(``pipelines.match._drops``): never one a later statement or ``match_tables``' outputs
read, and every table the SQL makes is dropped or kept for the outputs."""

from __future__ import annotations

from pcapflow.pipelines import match


def test_no_table_is_dropped_before_its_last_read() -> None:
    texts, made, _ = match._statements()
    drops = match._drops(match._OUTPUT_NAMES)
    assert len(drops) == len(texts)
    kept = match._reads(match._OUTPUT_NAMES)
    dropped: dict[str, int] = {}
    for i, names in enumerate(drops):
        for n in names:
            assert n not in dropped, n  # (once)
            assert made[n] == "TABLE" and n not in kept, n
            dropped[n] = i
    for i, t in enumerate(texts):
        read = match._reads(set(match._WORD.findall(t.lower())) & set(made))
        for n in read:
            assert dropped.get(n, len(texts)) >= i, (n, i)  # read at or before its drop
    # every temp table is dropped, or read after the SQL (the outputs and their views' tables)
    tables = {n for n, kind in made.items() if kind == "TABLE"}
    assert tables == set(dropped) | (kept & tables)
    assert {"ws_in", "rtt_nearest", "all_orders"} <= tables
    assert "all_orders" in kept and "ws_in" in dropped


def test_no_drop_when_nothing_is_named_to_keep() -> None:
    """``matched`` without ``keep`` (a rotation's matcher reads its temp tables after
    the SQL) drops nothing."""
    assert match._run_sql.__defaults__ == (None,)
