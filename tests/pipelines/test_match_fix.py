"""FIX matching (fix.sql) on message fixtures from venues.md (B5) and the FIX 4.4 spec."""

from __future__ import annotations

from pathlib import Path

from helpers.match_util import Wire, rows

from pcapflow.venues import MapEntry, VenueRegistry

US, EX = "49=qNXO12fH|56=SPOT", "49=SPOT|56=qNXO12fH"


def session(w: Wire) -> object:
    return w.flow(app_protocol="fix", server_port=9000, tls_version=None)


def test_binance_b5_and_the_spec(tmp_path: Path) -> None:
    w = Wire()
    f = session(w)
    w.fix(f, 0, "out", f"35=A|34=1|{US}|98=0|108=30")
    w.fix(f, 1, "in", f"35=A|34=1|{EX}|98=0|108=30")
    # B5: D -> 8 150=0
    w.fix(f, 10, "out", f"35=D|34=2|{US}|11=1718096506197867067|38=5|40=2|44=10|54=1|55=LTCBNB")
    w.fix(f, 13, "in", f"35=8|34=2|{EX}|11=1718096506197867067|37=76|39=0|150=0")
    # a fill for the same ClOrdID later is not a reply (and not an orphan)
    w.fix(f, 14, "in", f"35=8|34=3|{EX}|11=1718096506197867067|37=76|39=2|150=F")
    # D rejected by the engine: 150=8, OrdRejReason 103
    w.fix(f, 20, "out", f"35=D|34=3|{US}|11=N2|38=9|54=2")
    w.fix(f, 22, "in", f"35=8|34=4|{EX}|11=N2|37=NONE|39=8|150=8|58=Insufficient|103=3")
    # F answered by 150=6 (PendingCancel) first: the first 8 is the ack
    w.fix(f, 30, "out", f"35=F|34=4|{US}|11=C1|41=1718096506197867067|54=1")
    w.fix(f, 31, "in", f"35=8|34=5|{EX}|11=C1|41=1718096506197867067|37=76|39=6|150=6")
    w.fix(f, 33, "in", f"35=8|34=6|{EX}|11=C1|41=1718096506197867067|37=76|39=4|150=4")
    # B5: F of an unknown order -> 9 OrderCancelReject, CxlRejReason 102
    w.fix(f, 40, "out", f"35=F|34=5|{US}|11=1718241073695674483|37=2|55=LTCBNB")
    w.fix(f, 44, "in", f"35=9|34=7|{EX}|11=1718241073695674483|37=2|39=8|434=1|102=1"
                       "|58=Unknown order sent.")
    # G -> 8 150=5 Replaced
    w.fix(f, 50, "out", f"35=G|34=6|{US}|11=R1|41=N0|54=1|40=2")
    w.fix(f, 55, "in", f"35=8|34=8|{EX}|11=R1|41=N0|37=9|39=0|150=5")
    out = w.match(tmp_path)
    lat = rows(out, "latency")
    for r in lat:  # the ClOrdID sent, with its connection and time (unique per action)
        assert r["correlation_id"] == f"{r['client_order_id']}#{f.flow_id}@{_ns(r['order_ts'])}"
    assert [(r["endpoint"], r["kind"], r["client_order_id"], r["orig_client_order_id"],
             r["status"], r["error_code"], r["exchange_order_id"], r["latency_ns"])
            for r in lat] == [
        ("D", "new", "1718096506197867067", None, "accepted", None, "76", 3_000),
        ("D", "new", "N2", None, "rejected", "3", None, 2_000),
        ("F", "cancel", "C1", "1718096506197867067", "accepted", None, "76", 1_000),
        ("F", "cancel", "1718241073695674483", None, "rejected", "1", "2", 4_000),
        ("G", "amend", "R1", "N0", "accepted", None, "9", 5_000),
    ]
    assert all(r["protocol"] == "fix" and r["venue"] is None for r in lat)
    assert rows(out, "unmatched") == []


def _ns(ts: object) -> int:
    """A row's time as ns since the epoch (Arrow gives a datetime-like or an int)."""
    import pandas as pd

    return int(ts) if isinstance(ts, int) else pd.Timestamp(ts).value


def test_possdup_resends_session_rejects_and_out_of_order(tmp_path: Path) -> None:
    w = Wire()
    f = session(w)
    w.fix(f, 0, "out", f"35=D|34=2|{US}|11=A")
    w.fix(f, 1, "out", f"35=D|34=3|{US}|11=B")
    # replies in the other order
    w.fix(f, 5, "in", f"35=8|34=2|{EX}|11=B|37=2|150=0")
    w.fix(f, 6, "in", f"35=8|34=3|{EX}|11=A|37=1|150=0")
    # our resend of D A (43=Y) is not a new order action
    w.fix(f, 7, "out", f"35=D|34=2|{US}|43=Y|122=x|11=A")
    # a malformed D: session Reject pairs by RefSeqNum (45) = its MsgSeqNum (34)
    w.fix(f, 10, "out", f"35=D|34=4|{US}|11=C")
    w.fix(f, 10.5, "in", f"35=0|34=4|{EX}")
    w.fix(f, 12, "in", f"35=3|34=5|{EX}|45=4|371=54|372=D|373=5|58=bad side")
    # the venue resends an old execution report with PossDup: ignored, the
    # D of E is answered by its own report
    w.fix(f, 20, "out", f"35=D|34=5|{US}|11=E")
    w.fix(f, 21, "in", f"35=8|34=2|{EX}|43=Y|11=E|37=5|150=0")
    w.fix(f, 25, "in", f"35=8|34=6|{EX}|11=E|37=5|150=0")
    # a cancel whose report echoes only OrigClOrdID (41): fallback pairing
    w.fix(f, 30, "out", f"35=F|34=6|{US}|11=X1|41=A")
    w.fix(f, 32, "in", f"35=8|34=7|{EX}|11=A|41=A|37=1|150=4")
    # an execution report for an order this capture never saw; a D never answered
    w.fix(f, 40, "in", f"35=8|34=8|{EX}|11=ELSEWHERE|37=77|150=0")
    w.fix(f, 41, "in", f"35=8|34=9|{EX}|11=ELSEWHERE|37=77|150=F")
    w.fix(f, 50, "out", f"35=D|34=7|{US}|11=LOST")
    out = w.match(tmp_path)
    lat = rows(out, "latency")
    assert [(r["client_order_id"], r["kind"], r["status"], r["error_code"], r["latency_ns"])
            for r in lat] == [
        ("A", "new", "accepted", None, 6_000),
        ("B", "new", "accepted", None, 4_000),
        ("C", "new", "rejected", "5", 2_000),
        ("E", "new", "accepted", None, 5_000),
        ("X1", "cancel", "accepted", None, 2_000),
    ]
    assert len(rows(out, "orders")) == 6
    un = rows(out, "unmatched")
    assert [(u["what"], u["correlation_id"].split("#")[0], u["endpoint"]) for u in un] == [
        ("reply", "ELSEWHERE", "8"), ("order", "LOST", "D")]


def test_venue_from_comp_ids(tmp_path: Path) -> None:
    w = Wire()
    f = session(w)
    w.fix(f, 0, "out", "35=D|34=2|49=PCFTRADER1|56=MOCKEX|11=Z")
    w.fix(f, 3, "in", "35=8|34=2|49=MOCKEX|56=PCFTRADER1|11=Z|37=1|150=0")
    reg = VenueRegistry(entries=[MapEntry(name="mockfix", sender_comp_id="PCFTRADER1",
                                          target_comp_id="MOCKEX")])
    out = w.match(tmp_path, reg)
    assert out.flow_venue == {0: "mockfix"}
    assert [r["venue"] for r in rows(out, "latency")] == ["mockfix"]
