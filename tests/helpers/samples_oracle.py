"""Shared checks for the folder samples (``sample_pcaps/rotated_binance/``,
``sample_pcaps/midsession_binance/``): the ccxt client's truth and tshark's frame times.

How this works. ``truth_rows`` reads the client's log; ``check_against_truth`` pairs
each truth action with pcapflow's ``latency`` row (leg ``ack``) on the connection it
was sent on (by local port), in send order, and compares what both sides know: kind,
endpoint, client ids, the target of a cancel or amend (ccxt cancels by ``orderId``
with no client id of its own: issue 15, item 5), outcome, error code, exchange order
id, WebSocket request id, and that the wire times lie inside the client's own send
and receive times. ``tshark_pairs`` is the independent oracle for times: tshark
decrypts the capture with the key log, dissects HTTP and (inflated) WebSocket, and
gives, per order request, the time of the frame that ends it and of the frame that
ends its reply: REST requests are paired with the n-th response of their TCP
stream (HTTP/1.1, one request in flight), WebSocket ones by their JSON ``id``.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections import defaultdict
from pathlib import Path
from typing import Any

import pandas as pd

import pcapflow

TSHARK = shutil.which("tshark")
MERGECAP = shutil.which("mergecap")
ORDER_PATH = re.compile(r"^/api/v3/order(/cancelReplace)?(\?|$)")
WS_ORDER = {"order.place", "order.cancel", "order.cancelReplace"}


def truth_rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _norm(v: object) -> str | None:
    if v is None or (isinstance(v, float) and v != v) or v is pd.NA:
        return None
    return str(v)


def latency_rows(ds: pcapflow.Dataset) -> pd.DataFrame:
    return ds.df(
        "SELECT l.*, f.client_port, epoch_ns(l.order_ts) AS o_ns, epoch_ns(l.ack_ts) AS a_ns "
        "FROM latency l JOIN flows f ON f.capture_id = l.capture_id AND f.flow_id = l.flow_id "
        "WHERE l.leg = 'ack' ORDER BY l.flow_id, l.order_ts")


def check_against_truth(lat: pd.DataFrame, truth: list[dict[str, Any]]) -> int:
    """Every truth action is the latency row at its place on its connection; returns
    how many were compared. ``lat`` must hold exactly the truth's actions."""
    by_port: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for t in sorted(truth, key=lambda t: t["send_mono_ns"]):
        by_port[t["local_port"]].append(t)
    got = {int(p): list(g.itertuples()) for p, g in lat.groupby("client_port")}
    assert set(got) == set(by_port), (sorted(got), sorted(by_port))
    n = 0
    for port, expected in by_port.items():
        assert len(got[port]) == len(expected), port
        for t, r in zip(expected, got[port], strict=True):
            where = (port, t["endpoint"], t["client_order_id"], t["send_wall_ns"])
            assert r.endpoint == t["endpoint"], where
            assert r.kind == t["kind"], where
            assert r.venue == t["venue"], where
            assert _norm(r.client_order_id) == _norm(t["client_order_id"]) or (
                t["client_order_id"] is None and r.kind == "cancel"), where
            if t["kind"] == "new":
                assert _norm(r.client_order_id) == t["client_order_id"], where
            target = t["extra"].get("target_order_id")
            target_coid = t["extra"].get("target_client_order_id")
            if t["kind"] == "cancel" and t["orig_client_order_id"] is None:
                # ccxt's cancel by orderId: no client id of the action's own, the target
                # named by its exchange id (and its client id learned from the order)
                assert _norm(r.target_order_id) == target, where
                assert r.client_order_id is None or _norm(r.client_order_id) != target_coid
            if t["kind"] == "cancel" and t["orig_client_order_id"] is not None:
                assert _norm(r.orig_client_order_id) == t["orig_client_order_id"], where
            if t["kind"] == "amend":  # cancelReplace by the cancelled order's exchange id
                assert _norm(r.target_order_id) == target, where
            assert r.status == t["outcome"], where
            if t["outcome"] != "accepted":
                assert _norm(r.error_code) == _norm(t["error_code"]), where
            else:
                assert _norm(r.exchange_order_id) == _norm(t["exchange_order_id"]), where
            if r.protocol == "websocket":
                assert _norm(r.request_id) == _norm(t["request_id"]), where
            # the wire times lie inside the client's own: it took the send time just
            # before writing and the receive time after reading the reply
            assert t["send_wall_ns"] <= r.o_ns < r.a_ns <= t["recv_wall_ns"], where
            assert r.latency_ns == r.a_ns - r.o_ns and r.decoded
            n += 1
    # item 5: every action has a correlation id of its own (an action without an id of
    # its own: a generated one; a JSON request id, which ccxt numbers per connection:
    # scoped by its connection and time)
    assert not lat.duplicated(["capture_id", "correlation_id"]).any()
    ws = lat[lat.protocol == "websocket"]
    assert (ws.correlation_id == ws.request_id + "#" + ws.flow_id.astype(str) + "@"
            + ws.o_ns.astype(str)).all()
    return n


def _epoch_ns(text: str) -> int:
    sec, _, frac = text.partition(".")
    return int(sec) * 1_000_000_000 + int((frac + "000000000")[:9])


def tshark_pairs(capture: Path, keylog: Path) -> dict[tuple[int, int], tuple[int, int]]:
    """(client port, order frame end ns) -> (order end ns, reply end ns), per order
    request tshark dissects (REST by stream ordinal, WebSocket by JSON id)."""
    cmd = [TSHARK or "tshark", "-n", "-r", str(capture), "-o", f"tls.keylog_file:{keylog}",
           "-Y", "http || websocket", "-T", "fields", "-E", "occurrence=a", "-E",
           "aggregator=|", "-e", "frame.time_epoch", "-e", "tcp.stream", "-e", "tcp.srcport",
           "-e", "tcp.dstport", "-e", "http.request.method", "-e", "http.request.uri",
           "-e", "http.response.code", "-e", "websocket.payload.text"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=300).stdout
    requests: dict[int, list[tuple[int, bool, int]]] = defaultdict(list)
    responses: dict[int, list[int]] = defaultdict(list)
    ws_req: dict[tuple[int, str], tuple[int, int]] = {}
    ws_rep: dict[tuple[int, str], int] = {}
    for line in out.splitlines():
        ts, stream, sport, _dport, methods, uris, codes, texts = (line.split("\t") + [""] * 8)[:8]
        t, s = _epoch_ns(ts), int(stream)
        for m, u in zip(methods.split("|"), uris.split("|"), strict=False):
            if m:
                requests[s].append((t, bool(ORDER_PATH.match(u)) and m in ("POST", "DELETE"),
                                    int(sport)))
        responses[s] += [t] * len([c for c in codes.split("|") if c])
        for text in texts.split("|") if texts else []:  # the mock's JSON has no "|"
            try:
                msg = json.loads(text)
            except ValueError:
                continue
            if not isinstance(msg, dict) or "id" not in msg:
                continue
            if msg.get("method") in WS_ORDER:
                ws_req[(s, str(msg["id"]))] = (t, int(sport))
            elif "status" in msg:
                ws_rep.setdefault((s, str(msg["id"])), t)
    pairs = {}
    for s, reqs in requests.items():
        for (t, is_order, port), reply in zip(reqs, responses[s], strict=False):
            if is_order:
                pairs[(port, t)] = (t, reply)
    for (s, rid), (t, port) in ws_req.items():
        pairs[(port, t)] = (t, ws_rep[(s, rid)])
    return pairs


def mergecap(files: list[Path], out: Path) -> Path:
    subprocess.run([MERGECAP or "mergecap", "-F", "nsecpcap", "-w", str(out),
                    *map(str, files)], check=True, capture_output=True)
    return out
