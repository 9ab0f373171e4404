"""HTTP/1.1 from the middle of a connection: resync on the next start line, pair from
the first request read, never pair a response whose request came before the capture.

A keep-alive exchange (Content-Length, chunked and empty bodies, bodies that hold
text looking like HTTP) is cut at every offset of each direction, the two cut
directions fed in the order they were on the wire.
"""

from __future__ import annotations

import pytest
from pcapflow.parsers.events import Anomaly
from pcapflow.parsers.http import HttpMessage, HttpSession


def _exchange(n: int) -> list[tuple[bytes, bytes]]:
    """``n`` request/response pairs: ids in paths and bodies say which is which."""
    pairs = []
    for i in range(n):
        body = b'{"newClientOrderId":"c%d","note":"GET /x HTTP/1.1"}' % i
        if i % 3 == 0:
            req = b"GET /api/v3/order?id=%d HTTP/1.1\r\nHost: x\r\n\r\n" % i
        else:
            req = (b"POST /api/v3/order?id=%d HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
                   % (i, len(body)) + body)
        rbody = b'{"orderId":%d,"text":"HTTP/1.1 200 OK"}' % i
        if i % 2:
            resp = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n" % len(rbody)
                    + rbody + b"\r\n0\r\n\r\n")
        else:
            resp = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(rbody) + rbody
        pairs.append((req, resp))
    return pairs


def _run(pairs: list[tuple[bytes, bytes]], cut_req: int, cut_out: int, cut_in: int
         ) -> list[object]:
    """Feed the exchange from ``cut_req``: request ``cut_req`` from byte ``cut_out``,
    response ``cut_req`` from byte ``cut_in`` (``-1``: that response is not cut, it
    comes after a request that is)."""
    s = HttpSession(1, midstream=True)
    events: list[object] = []
    t = 0
    for i, (req, resp) in enumerate(pairs[cut_req:], start=cut_req):
        r = req[cut_out:] if i == cut_req else req
        p = resp[cut_in:] if i == cut_req else resp
        if r:
            events += s.feed("out", r, t, t + 1)
        if p:
            events += s.feed("in", p, t + 2, t + 3)
        t += 10
    return events + s.finish(t)


@pytest.mark.parametrize("cut_req", [0, 1, 2, 3])
def test_cut_anywhere_pairs_from_the_first_whole_request(cut_req: int) -> None:
    """One cut in time: inside request ``cut_req`` (its response whole), or inside its
    response (the request gone: ``cut_out = len(req)``)."""
    pairs = _exchange(8)
    req, resp = pairs[cut_req]
    cuts = [(o, 0) for o in range(len(req) + 1)] + [(len(req), i) for i in range(len(resp))]
    for cut_out, cut_in in cuts:
        events = _run(pairs, cut_req, cut_out, cut_in)
        msgs = [e for e in events if isinstance(e, HttpMessage)]
        requests = [m for m in msgs if m.kind == "request"]
        responses = [m for m in msgs if m.kind == "response"]
        first = cut_req + (cut_out > 0)  # the first request read whole
        assert [int(m.path.split("=")[1]) for m in requests] == list(range(first, 8))
        assert [m.request_index for m in requests] == list(range(8 - first))
        # the response to a request cut or gone, when whole, is not paired
        early = [m for m in responses if m.request_index == -1]
        assert len(early) == (1 if cut_out > 0 and cut_in == 0 else 0), (cut_out, cut_in)
        paired = [m for m in responses if m.request_index >= 0]
        for m in paired:  # each answers the request with its index: same order id
            want = requests[m.request_index].path.split("=")[1]
            assert b'"orderId":%s' % want.encode() in m.body
        assert len(paired) == 8 - first
        codes = [e.code for e in events if isinstance(e, Anomaly)]
        assert codes.count("response_without_request") == len(early)
        assert "bad_start_line" not in codes and "stream_gap" not in codes
        # (blank lines before a start line are skipped quietly, RFC 9112 §2.2)
        skipped = (req[cut_out:] if cut_out else b"") + (resp[cut_in:] if cut_in else b"")
        assert ("midstream_resync" in codes) == bool(skipped.strip(b"\r\n"))


def test_no_start_line_is_an_anomaly() -> None:
    s = HttpSession(1, midstream=True)
    events = s.feed("in", b"x" * 100, 1, 2) + s.finish(3)
    assert [e.code for e in events if isinstance(e, Anomaly)] == ["no_start_line"]
