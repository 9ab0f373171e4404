"""Write a realistic trading-host TCP capture, fast, for the benchmarks.

How this works: the capture is planned as whole-array NumPy operations, never a
Python loop over packets.

1. Connections: long-lived market-data feeds and order-entry sessions (opened in
   the first 50 ms, closed at the end) plus short REST sessions that come and go,
   about ``--connections`` open at any time. Each has an RTT, ISNs and ports.
2. Messages: market data (mostly 60-400 bytes, ~3% MTU-sized bursts of 2-8
   segments), orders (out) and their acks / execution reports (in, one RTT plus
   the exchange's processing later), REST requests and multi-segment responses.
   Messages of one direction never overlap in time; they become segments.
3. Streams: per direction, segments in time order *are* the sequence order, so
   sequence numbers are a grouped cumulative sum (SYN and FIN take one each).
4. Faults: ~0.5% of data segments are lost *after* the capture point (the copy
   is captured, the receiver never gets it) and retransmitted in the first quiet
   gap of that stream longer than Wireshark's out-of-order threshold, so tshark
   and pcapflow call it a retransmission; ~0.2% of inbound segments swap places
   with their successor (network reordering, a few µs apart). Receivers ACK what
   they have *in order*, so holes produce genuine duplicate ACKs.
5. ACK numbers: a receiver's cumulative ACK at time T is the end of the longest
   prefix of the other stream delivered by T: a running maximum of delivery
   times plus one ``searchsorted`` for every packet at once.
6. Writing: one NumPy structured dtype per record (pcap record or pcapng EPB
   header + Ethernet + IPv4 + TCP, in wire order) and a small Numba scatter
   that appends options and payload; written in chunks of bounded size.

``plan(...)`` returns the packet table and what the generator intended (streams,
retransmissions, out-of-order segments, duplicate ACKs); ``--verify`` runs tshark
on the result and prints both side by side.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from dataclasses import dataclass, field

import numba
import numpy as np

# --- time constants (ns) --------------------------------------------------------
US = 1_000
MS = 1_000_000
# Wireshark's out-of-order threshold without a handshake RTT (packet-tcp.c); a
# retransmission is placed at least this plus two RTTs after the last new data.
OOO_THRESHOLD_NS = 3 * MS
RETX_MARGIN_NS = 200 * US
BURST_SPACING_NS = 1_200  # 1514-byte frames back to back at 10 Gb/s
MSG_GAP_NS = 300  # minimum gap between two messages of one direction
MSS = 1448  # payload of a full segment (1500 MTU, timestamps option budget)

# --- flags (RFC 9293 §3.1) --------------------------------------------------------
FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10

# packet kinds (tie-break order at equal timestamps: data before pure ACKs)
K_SYN, K_DATA, K_RETX, K_FIN, K_ACK = 0, 1, 2, 3, 4

CLIENT_IP = 0x0A01_0005  # 10.1.0.5, the trading host
# Exchange gateways (documentation-style addresses of a few venues' front ends).
SERVER_IPS = np.array([
    0x3636_0A01, 0x3636_0A02, 0x0D70_4C11, 0x0D70_4C12, 0x2312_9A05, 0x2312_9A06,
    0x6816_1E01, 0x9765_2C10, 0xA2A0_1F02, 0x8C52_0311,
], dtype=np.uint32)
CLASS_MD, CLASS_ORD, CLASS_REST = 0, 1, 2


@dataclass(slots=True, kw_only=True)
class Config:
    """What to generate; ``packets`` is met exactly when feasible."""

    packets: int = 1_000_000
    seed: int = 1
    connections: int = 200
    rate_pps: float = 50_000.0
    retx_rate: float = 0.005
    ooo_rate: float = 0.002
    start_ns: int = 1_717_421_400_000_000_000  # 2024-06-03 13:30:00 UTC
    answered: bool = False
    """FIX order connections carry real FIX: each order a NewOrderSingle, its ack an
    ExecutionReport for the same ClOrdID (``--answered``; ``_fix_payload``)."""


@dataclass(slots=True, kw_only=True)
class Plan:
    """The packet table in capture order, and what the generator intended."""

    cols: dict[str, np.ndarray]
    intended: dict[str, int] = field(default_factory=dict)
    fix: tuple[np.ndarray, np.ndarray] | None = None
    """``--answered``: (bytes of the FIX streams, each stream's base in them or -1)."""


# ----------------------------------------------------------------------------------
# grouped helpers (groups are contiguous runs of equal, ascending keys)

def _group_starts(keys: np.ndarray) -> np.ndarray:
    """Index of the first element of each element's group."""
    n = keys.size
    new = np.ones(n, dtype=bool)
    new[1:] = keys[1:] != keys[:-1]
    return np.maximum.accumulate(np.where(new, np.arange(n), 0))


def _group_cummax(values: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Running maximum of ``values`` restarting at each group."""
    lo = int(values.min()) if values.size else 0
    span = (int(values.max()) - lo + 1) if values.size else 1
    rank = np.cumsum(np.r_[0, keys[1:] != keys[:-1]]) if keys.size else keys
    shifted = (values - lo) + rank.astype(np.int64) * span
    return np.maximum.accumulate(shifted) - rank * span + lo


def _group_cumsum_excl(values: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Sum of earlier ``values`` within each group."""
    c = np.cumsum(values) - values
    return c - c[_group_starts(keys)]


# ----------------------------------------------------------------------------------
# 1. connections

def _connections(rng: np.random.Generator, cfg: Config, dur: int) -> dict[str, np.ndarray]:
    c = cfg.connections
    n_md, n_ord = max(1, int(c * 0.3)), max(1, int(c * 0.5))
    n_slots = max(1, c - n_md - n_ord)
    sessions = max(2, int(rng.integers(6, 10)))
    # REST slots: back-to-back sessions separated by idle gaps.
    rest_open, rest_close = [], []
    for _ in range(n_slots):
        cuts = np.sort(rng.uniform(0, dur, 2 * sessions))
        rest_open.append(cuts[0::2])
        rest_close.append(cuts[1::2])
    ro, rc = np.concatenate(rest_open), np.concatenate(rest_close)
    keep = rc - ro > 20 * MS
    ro, rc = ro[keep], rc[keep]
    n_long = n_md + n_ord
    t_open = np.r_[rng.uniform(0, 50 * MS, n_long), ro].astype(np.int64)
    t_close = np.r_[rng.uniform(dur - 30 * MS, dur, n_long), rc].astype(np.int64)
    cls = np.r_[np.full(n_md, CLASS_MD), np.full(n_ord, CLASS_ORD),
                np.full(ro.size, CLASS_REST)].astype(np.int8)
    n = cls.size
    # colocated venues ~40-150 µs, cross-region ones 1-12 ms
    far = rng.random(n) < 0.3
    rtt = np.where(far, rng.uniform(1 * MS, 12 * MS, n), rng.uniform(40 * US, 150 * US, n))
    port = np.select([cls == CLASS_MD, cls == CLASS_ORD], [443, 9443], 443)
    port = np.where((cls == CLASS_ORD) & (rng.random(n) < 0.4), 4198, port)  # FIX
    return {
        "cls": cls, "t_open": t_open, "t_close": t_close, "rtt": rtt.astype(np.int64),
        # the trading host ACKs this long after an arrival; constant per connection
        # so its ACKs leave in arrival order and each reflects the state at arrival
        "ack_delay": rng.integers(5 * US, 10 * US, n),
        "server_ip": SERVER_IPS[rng.integers(0, SERVER_IPS.size, n)],
        "server_port": port.astype(np.uint16),
        "client_port": (32768 + rng.permutation(28000)[:n]).astype(np.uint16),
        "isn": rng.integers(0, 1 << 32, (n, 2), dtype=np.uint64).astype(np.int64),
    }


# ----------------------------------------------------------------------------------
# 2. messages

def _sizes(rng: np.random.Generator, n: int, lo: int, hi: int, median: float) -> np.ndarray:
    return np.clip(rng.lognormal(np.log(median), 0.5, n), lo, hi).astype(np.int64)


def _pick(rng: np.random.Generator, conns: dict, which: np.ndarray, n: int,
          weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``n`` messages on connections ``which`` (weighted), uniform in their lifetime."""
    ci = which[rng.choice(which.size, n, p=weights / weights.sum())]
    lo = conns["t_open"][ci] + conns["rtt"][ci] + 50 * US
    hi = conns["t_close"][ci]
    return ci, (lo + rng.random(n) * np.maximum(hi - lo, 1)).astype(np.int64)


def _messages(rng: np.random.Generator, conns: dict, budget: int) -> dict[str, np.ndarray]:
    """Messages (conn, dir, t, length, segments) worth about ``budget`` packets."""
    cls = conns["cls"]
    md, od, rs = (np.flatnonzero(cls == k) for k in (CLASS_MD, CLASS_ORD, CLASS_REST))
    parts: list[tuple[np.ndarray, ...]] = []

    def add(ci: np.ndarray, d: int, t: np.ndarray, length: np.ndarray,
            key: np.ndarray | None = None, mtype: int = 0) -> None:
        """``key``: an order's index (its ack and execution report share it); ``mtype``:
        1 order, 2 ack, 3 execution report, 0 other (``_fix_payload``)."""
        parts.append((ci, np.full(ci.size, d, np.int8), t, length,
                      key if key is not None else np.full(ci.size, -1, np.int64),
                      np.full(ci.size, mtype, np.int8)))

    # market data: ~65% of packets; Zipf-weighted feeds; ~3% MTU bursts
    n_md = int(budget * 0.65 / 1.95)
    ci, t = _pick(rng, conns, md, n_md, 1.0 / np.arange(1, md.size + 1) ** 0.8)
    length = _sizes(rng, n_md, 60, 400, 170)
    burst = rng.random(n_md) < 0.03
    length[burst] = rng.integers(1, 8, burst.sum()) * MSS + rng.integers(200, MSS, burst.sum())
    add(ci, 1, t, length)
    # client pings / subscriptions on the feeds
    ci, t = _pick(rng, conns, md, n_md // 100, np.ones(md.size))
    add(ci, 0, t, _sizes(rng, ci.size, 60, 200, 90))
    # orders: ~28%; each an order out, an ack in, 30% an extra execution report
    n_ord = int(budget * 0.28 / (2 * 1.9 + 0.3 * 1.9))
    ci, t = _pick(rng, conns, od, n_ord, rng.lognormal(0, 1, od.size))
    key = np.arange(n_ord, dtype=np.int64)
    add(ci, 0, t, _sizes(rng, n_ord, 100, 400, 220), key, 1)
    proc = rng.lognormal(np.log(60 * US), 0.8, n_ord).astype(np.int64)
    t_ack = t + conns["rtt"][ci] + proc
    ok = t_ack < conns["t_close"][ci]
    add(ci[ok], 1, t_ack[ok], _sizes(rng, ok.sum(), 120, 400, 260), key[ok], 2)
    ex = ok & (rng.random(n_ord) < 0.3)
    t_ex = t_ack + rng.lognormal(np.log(500 * US), 1.0, n_ord).astype(np.int64)
    ex &= t_ex < conns["t_close"][ci]
    add(ci[ex], 1, t_ex[ex], _sizes(rng, ex.sum(), 150, 400, 300), key[ex], 3)
    # REST: ~7%; request out, response of 1-4 segments in
    n_rest = max(1, int(budget * 0.07 / 5.5))
    ci, t = _pick(rng, conns, rs, n_rest, np.ones(rs.size))
    add(ci, 0, t, _sizes(rng, n_rest, 200, 900, 400))
    t_resp = t + conns["rtt"][ci] + rng.lognormal(np.log(2 * MS), 0.6, n_rest).astype(np.int64)
    ok = t_resp < conns["t_close"][ci]
    add(ci[ok], 1, t_resp[ok], _sizes(rng, ok.sum(), 300, 4 * MSS, 1800))
    conn, dirn, t, length, key, mtype = (np.concatenate(x) for x in zip(*parts, strict=True))
    return {"conn": conn.astype(np.int64), "dir": dirn, "t": t, "len": length,
            "nseg": (length + MSS - 1) // MSS, "key": key, "mtype": mtype, "t0": t.copy()}


def _replies_after(m: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``--answered``: each ack and execution report as long after its order as planned,
    from the order's time once serialized (``_serialize`` pushes a message later while
    its stream is busy: an order pushed past its ack would have its reply first)."""
    mt, key, t = m["mtype"], m["key"], m["t"].copy()
    orders = np.flatnonzero(mt == 1)
    at = np.full(int(key.max()) + 1 if key.size else 0, -1, np.int64)
    at[key[orders]] = orders
    r = np.flatnonzero(mt >= 2)
    o = at[key[r]]
    t[r] = np.maximum(t[r], t[o] + (m["t0"][r] - m["t0"][o]))
    return {**m, "t": t}


def _serialize(msgs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Sort by stream and time; push messages later so one direction never overlaps."""
    sid = msgs["conn"] * 2 + msgs["dir"]
    order = np.lexsort((msgs["t"], sid))
    m = {k: v[order] for k, v in msgs.items()}
    sid = sid[order]
    dur = (m["nseg"] - 1) * BURST_SPACING_NS + MSG_GAP_NS
    # s'_i = C_i + max_{j<=i}(s_j - C_j), C = time the earlier messages occupy
    c = _group_cumsum_excl(dur, sid)
    m["t"] = c + _group_cummax(m["t"] - c, sid)
    m["sid"] = sid
    return m


# ----------------------------------------------------------------------------------
# 3. segments and streams

def _segments(m: dict[str, np.ndarray], conns: dict) -> dict[str, np.ndarray]:
    """Data segments plus SYN/FIN pseudo-segments, grouped by stream in seq order."""
    n = m["nseg"]
    mi = np.repeat(np.arange(n.size), n)
    k = np.arange(mi.size) - np.repeat(np.cumsum(n) - n, n)
    last = k == n[mi] - 1
    seglen = np.where(last, m["len"][mi] - (n[mi] - 1) * MSS, MSS)
    seg = {"sid": m["sid"][mi], "t": m["t"][mi] + k * BURST_SPACING_NS, "len": seglen,
           "kind": np.full(mi.size, K_DATA, np.int8), "msg_end": last}
    # FIN after the last activity of the connection, clear of the retransmission window
    nc = conns["cls"].size
    t_last = np.full(nc, 0, np.int64)
    np.maximum.at(t_last, seg["sid"] // 2, seg["t"])
    t_last = np.maximum(t_last, conns["t_open"] + 2 * conns["rtt"])
    quiet = OOO_THRESHOLD_NS + 2 * conns["rtt"] + 2 * RETX_MARGIN_NS
    t_fin = t_last + 2 * quiet + MS
    conns["t_fin"] = t_fin
    cid = np.arange(nc)
    rtt = conns["rtt"]
    pseudo = {  # client SYN, server SYN/ACK, client FIN, server FIN/ACK
        "sid": np.r_[cid * 2, cid * 2 + 1, cid * 2, cid * 2 + 1],
        "t": np.r_[conns["t_open"], conns["t_open"] + rtt, t_fin, t_fin + rtt],
        "len": np.ones(4 * nc, np.int64),
        "kind": np.r_[np.full(2 * nc, K_SYN), np.full(2 * nc, K_FIN)].astype(np.int8),
        "msg_end": np.r_[np.zeros(nc, bool), np.ones(nc, bool), np.zeros(2 * nc, bool)],
    }
    seg = {k: np.r_[seg[k], pseudo[k]] for k in seg}
    order = np.lexsort((seg["kind"] != K_SYN, seg["t"], seg["sid"]))
    seg = {k: v[order] for k, v in seg.items()}
    seg["rel"] = _group_cumsum_excl(seg["len"], seg["sid"])  # offset from the ISN
    return seg


# ----------------------------------------------------------------------------------
# 4. faults: reordering (inbound) and loss after the capture point

def _reorder(rng: np.random.Generator, seg: dict, n_target: int) -> np.ndarray:
    """Swap ~n_target inbound segment pairs (k, k+1); returns k of each pair."""
    sid, t, kind = seg["sid"], seg["t"], seg["kind"]
    nxt_ok = np.r_[(sid[1:] == sid[:-1]) & (kind[1:] == K_DATA), False]
    gap = np.r_[t[1:] - t[:-1], 0]
    cand = np.flatnonzero((sid % 2 == 1) & (kind == K_DATA) & nxt_ok & (gap >= 12 * US))
    k = np.sort(rng.choice(cand, min(n_target, cand.size), replace=False))
    k = k[np.r_[True, np.diff(k) > 3]]  # pairs well apart
    delta = np.minimum(gap[k], 25 * US)
    t0 = t[k].copy()
    t[k + 1] = t0
    t[k] = t0 + delta
    return k


def _place_retransmissions(rng: np.random.Generator, seg: dict, conns: dict,
                           n_target: int, avoid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lost segments and their retransmission times (first long-enough quiet gap)."""
    sid, t, kind = seg["sid"], seg["t"], seg["kind"]
    bad = np.zeros(sid.size, bool)
    for d in (-1, 0, 1, 2):
        bad[np.clip(avoid + d, 0, sid.size - 1)] = True
    cand = np.flatnonzero((kind == K_DATA) & ~bad)
    # oversample: some candidates share a quiet gap and are dropped below
    lost = np.sort(rng.choice(cand, min(2 * n_target, cand.size), replace=False))
    thres = OOO_THRESHOLD_NS + 2 * conns["rtt"][sid // 2] + RETX_MARGIN_NS
    # capture-time order within each stream (reordering swapped a few pairs)
    gap = np.r_[t[1:] - t[:-1], 0]
    roomy = np.flatnonzero((np.r_[sid[1:] == sid[:-1], False]) & (gap > thres + RETX_MARGIN_NS))
    j = roomy[np.searchsorted(roomy, lost)]  # the FIN always leaves room, so j exists
    lost = lost[sid[j] == sid[lost]]
    j = roomy[np.searchsorted(roomy, lost)]
    _, first = np.unique(j, return_index=True)  # one retransmission per quiet gap
    keep = np.sort(rng.permutation(first)[:n_target])
    lost, j = lost[keep], j[keep]
    return lost, t[j] + thres[j]


# ----------------------------------------------------------------------------------
# 5. packets, ACK numbers

def _prefix_lookup(sid: np.ndarray, key_t: np.ndarray, val: np.ndarray,
                   q_sid: np.ndarray, q_t: np.ndarray, span: int) -> np.ndarray:
    """For each query, ``val`` at the last entry of stream q_sid with key_t <= q_t (-1 if none).

    Entries must be grouped by sid with key_t non-decreasing within each group.
    """
    key = sid * span + key_t
    idx = np.searchsorted(key, q_sid * span + q_t, side="right") - 1
    ok = (idx >= 0) & (sid[np.maximum(idx, 0)] == q_sid)
    return np.where(ok, val[np.maximum(idx, 0)], -1)


def _packets(rng: np.random.Generator, seg: dict, conns: dict, lost: np.ndarray,
             t_retx: np.ndarray, ooo: np.ndarray, budget: int) -> tuple[dict, int]:
    sid, t, kind, length = seg["sid"], seg["t"], seg["kind"], seg["len"]
    rtt = conns["rtt"]
    deliver = t.copy()
    deliver[lost] = t_retx  # the receiver gets a lost segment with its retransmission
    # data copies: every segment once, plus one retransmission per lost segment
    src = np.r_[np.arange(sid.size), lost]
    ptime = np.r_[t, t_retx]
    pkind = np.r_[kind, np.full(lost.size, K_RETX, np.int8)]
    # ACK triggers: arrivals at the receiver (capture time of the delivered copy)
    lost_mask = np.zeros(sid.size, bool)
    lost_mask[lost] = True
    forced = np.zeros(sid.size, bool)
    forced[ooo] = forced[ooo + 1] = True
    optional = np.flatnonzero(seg["msg_end"] & ~lost_mask & ~forced & (kind == K_DATA))
    fixed = np.r_[np.flatnonzero(forced), np.flatnonzero((kind == K_SYN) & (sid % 2 == 1))]
    fixed = np.r_[fixed, np.flatnonzero((kind == K_FIN) & (sid % 2 == 1))]
    base = src.size + fixed.size + lost.size
    need = int(np.clip(budget - base, 0, optional.size))
    chosen = np.sort(rng.choice(optional, need, replace=False))
    trig_seg = np.r_[fixed, chosen]
    trig_t = np.r_[deliver[fixed], deliver[chosen], t_retx]
    trig_sid = np.r_[sid[trig_seg], sid[lost]]
    recv_client = trig_sid % 2 == 1  # in-stream arrivals are ACKed by the client
    conn_t = trig_sid // 2
    ack_t = trig_t + np.where(recv_client, conns["ack_delay"][conn_t], rtt[conn_t])
    ack_sid = conn_t * 2 + np.where(recv_client, 0, 1)  # the ACK travels in the other stream
    cols = {
        "sid": np.r_[sid[src], ack_sid], "t": np.r_[ptime, ack_t],
        "kind": np.r_[pkind, np.full(ack_t.size, K_ACK, np.int8)],
        "rel": np.r_[seg["rel"][src], np.zeros(ack_t.size, np.int64)],
        # SYN and FIN take one sequence number but carry no payload
        "len": np.r_[np.where(kind[src] == K_DATA, length[src], 0),
                     np.zeros(ack_t.size, np.int64)],
        "psh": np.r_[seg["msg_end"][src] & (kind[src] == K_DATA), np.zeros(ack_t.size, bool)],
    }
    order = np.lexsort((cols["rel"], cols["kind"], cols["t"]))
    cols = {k: v[order] for k, v in cols.items()}
    _ack_and_seq(cols, seg, deliver, conns)
    return cols, base, optional.size


def _ack_and_seq(cols: dict, seg: dict, deliver: np.ndarray, conns: dict) -> None:
    """Fill ``seq``/``ack`` (absolute, mod 2^32) of every packet in capture order."""
    sid, t, kind, rel = cols["sid"], cols["t"], cols["kind"], cols["rel"]
    span = int(max(t.max(), deliver.max())) + 1
    conn = sid // 2
    side = sid % 2
    # other stream's prefix delivered by T - ack delay (client), T - RTT (server)
    s_sid = seg["sid"]
    dmax = _group_cummax(deliver, s_sid)
    end = seg["rel"] + seg["len"]
    q_t = t - np.where(side == 1, conns["rtt"][conn], conns["ack_delay"][conn])
    acked = _prefix_lookup(s_sid, dmax, end, sid ^ 1, q_t, span)
    # own highest sequence sent by T (pure ACKs carry it)
    o = np.lexsort((seg["t"], s_sid))
    own = _prefix_lookup(s_sid[o], seg["t"][o], _group_cummax(end[o], s_sid[o]), sid, t, span)
    isn = conns["isn"]
    rel = np.where(kind == K_ACK, own, rel)
    cols["seq"] = (isn[conn, side] + rel) & 0xFFFFFFFF
    cols["ack"] = np.where(acked >= 0, (isn[conn, 1 - side] + acked) & 0xFFFFFFFF, 0)
    flags = np.full(sid.size, ACK, np.int64)
    flags[kind == K_SYN] = np.where(side[kind == K_SYN] == 0, SYN, SYN | ACK)
    flags[kind == K_FIN] = FIN | ACK
    flags[cols["psh"]] |= PSH
    cols["flags"] = flags
    cols["ack"][flags == SYN] = 0


# ----------------------------------------------------------------------------------
# what tshark should say

def _intended(cols: dict, n_lost: int, n_ooo: int, n_conns: int) -> dict[str, int]:
    """Duplicate ACKs by Wireshark's rule: a pure ACK repeating its side's last ACK."""
    sid, kind, ack = cols["sid"], cols["kind"], cols["ack"]
    o = np.argsort(sid, kind="stable")  # per stream, capture order
    s, k, a = sid[o], kind[o], ack[o]
    prev_same = np.r_[False, s[1:] == s[:-1]]
    prev_ack = np.r_[0, a[:-1]]
    prev_kind = np.r_[K_SYN, k[:-1]]
    dup = prev_same & (k == K_ACK) & (a == prev_ack) & (prev_kind != K_SYN)
    return {"streams": n_conns, "retransmission": n_lost, "out_of_order": n_ooo,
            "lost_segment": n_ooo, "duplicate_ack": int(dup.sum())}


def plan(cfg: Config) -> Plan:
    """Plan a capture of ``cfg.packets`` packets; see the module docstring."""
    rng = np.random.default_rng(cfg.seed)
    dur = max(int(cfg.packets / cfg.rate_pps * 1e9), 500 * MS)
    conns = _connections(rng, cfg, dur)
    n_lost = round(cfg.packets * cfg.retx_rate)
    budget = cfg.packets
    scale = 1.0
    for _ in range(6):  # size the message count so the optional ACKs can fill the budget
        msgs = _serialize(_messages(rng, conns, int(budget * scale)))
        if cfg.answered:
            msgs = _serialize(_replies_after(msgs))
        seg = _segments(msgs, conns)
        # (``--answered``: no reordering; a swap moves the later segment to the earlier
        # one's time, which can put a reply before its order)
        ooo = (np.empty(0, np.int64) if cfg.answered else
               _reorder(rng, seg, round(cfg.packets * cfg.ooo_rate)))
        lost, t_retx = _place_retransmissions(rng, seg, conns, n_lost, ooo)
        cols, mandatory, n_opt = _packets(rng, seg, conns, lost, t_retx, ooo, budget)
        if 0.6 * n_opt <= budget - mandatory <= n_opt:
            break
        scale *= budget / max(mandatory + 0.85 * n_opt, 1)
    cols["conn"] = cols["sid"] // 2
    cols["dir"] = (cols["sid"] % 2).astype(np.int8)
    cols["t"] = cols["t"] + cfg.start_ns
    for k in ("cls", "rtt", "server_ip", "server_port", "client_port"):
        cols[k] = conns[k][cols["conn"]]
    return Plan(cols=cols, intended=_intended(cols, lost.size, ooo.size, conns["cls"].size),
                fix=_fix_payload(msgs, conns, cfg.seed) if cfg.answered else None)


def _fix_message(fields: str, length: int) -> bytes:
    """A FIX 4.4 message of exactly ``length`` bytes (``fields``: from 35= on, each
    ending in SOH; padded with a Text field), with its BodyLength and CheckSum. (At
    122 bytes no BodyLength fits, 99 or 100 bytes: BeginString FIXT.1.1 there.)"""
    for begin in ("FIX.4.4", "FIXT.1.1"):
        for digits in (2, 3, 4):
            pad = length - (len(begin) + 3 + 3 + digits + 7) - len(fields) - 4
            if pad < 0:
                continue
            body = f"{fields}58={'x' * pad}\x01"
            if len(str(len(body))) == digits:
                head = f"8={begin}\x019={len(body)}\x01{body}".encode()
                return head + f"10={sum(head) % 256:03d}\x01".encode()
    raise ValueError(f"{length} bytes: too short for {fields!r}")


def _fix_payload(m: dict[str, np.ndarray], conns: dict, seed: int
                 ) -> tuple[np.ndarray, np.ndarray]:
    """``--answered``: the bytes of the FIX order connections' streams, message by
    message at its stream offset (messages of a stream are serial: a message starts where
    the one before ended, after the SYN's one sequence number): each order a
    NewOrderSingle (35=D), its ack an ExecutionReport (35=8, 150=0) and its execution
    report a fill (35=8, 150=F), all with the order's ClOrdID. Returns (bytes, base per
    stream id: where its relative offset 0 is, -1 for the other streams)."""
    nsid = 2 * conns["cls"].size
    fix_conn = (conns["cls"] == CLASS_ORD) & (conns["server_port"] == 4198)
    sid, length = m["sid"], m["len"]
    start = 1 + _group_cumsum_excl(length, sid)  # (``m``: by stream, then time)
    total = np.zeros(nsid, np.int64)
    np.add.at(total, sid, length)
    on = fix_conn[np.arange(nsid) // 2]
    size = np.where(on, total + 2, 0)
    base = np.where(on, np.cumsum(size) - size, -1)
    buf = np.zeros(int(size.sum()) + 1, np.uint8)
    seq = np.arange(sid.size) - _group_starts(sid)
    for i in np.flatnonzero(on[sid]).tolist():
        k, mt, n = int(m["key"][i]), int(m["mtype"][i]), int(seq[i]) + 1
        cl = f"11=o{seed}-{k}\x01"
        if mt == 1:
            f = f"35=D\x0134={n}\x01{cl}54=1\x0138=1\x0144=1\x0140=2\x01"
        elif mt in (2, 3):  # (orders >= 100 bytes, acks >= 120, reports >= 150)
            ex = "0\x0139=0" if mt == 2 else "F\x0139=2"
            f = f"35=8\x0134={n}\x01{cl}37=x{seed}-{k}\x01150={ex}\x0154=1\x0138=1\x01"
        else:
            f = f"35=0\x0134={n}\x01"
        b = np.frombuffer(_fix_message(f, int(length[i])), np.uint8)
        p = int(base[sid[i]] + start[i])
        buf[p:p + b.size] = b
    return buf, base


# ----------------------------------------------------------------------------------
# 6. writing

# pcap record header (little-endian, nanosecond magic) and pcapng EPB header
PCAP_REC = np.dtype([("ts_sec", "<u4"), ("ts_nsec", "<u4"), ("caplen", "<u4"),
                     ("len", "<u4")])
PCAPNG_EPB = np.dtype([("block_type", "<u4"), ("block_total_length", "<u4"),
                       ("interface_id", "<u4"), ("timestamp_high", "<u4"),
                       ("timestamp_low", "<u4"), ("captured_len", "<u4"),
                       ("original_len", "<u4")])
# Ethernet II + IPv4 (RFC 791) + TCP (RFC 9293 §3.1), fields in wire order
FRAME = np.dtype([
    ("eth_dst", "u1", 6), ("eth_src", "u1", 6), ("ethertype", ">u2"),
    ("ver_ihl", "u1"), ("tos", "u1"), ("total_length", ">u2"), ("identification", ">u2"),
    ("flags_fragment_offset", ">u2"), ("ttl", "u1"), ("protocol", "u1"),
    ("header_checksum", ">u2"), ("src", ">u4"), ("dst", ">u4"),
    ("source_port", ">u2"), ("destination_port", ">u2"), ("sequence_number", ">u4"),
    ("acknowledgment_number", ">u4"), ("data_offset", "u1"), ("control_bits", "u1"),
    ("window", ">u2"), ("checksum", ">u2"), ("urgent_pointer", ">u2"),
])
# SYN options: MSS 1460, NOP, window scale (client shift 7, server shift 9)
SYN_OPTIONS = (np.frombuffer(bytes([2, 4, 5, 180, 1, 3, 3, 7]), np.uint8),
               np.frombuffer(bytes([2, 4, 5, 180, 1, 3, 3, 9]), np.uint8))
WINDOW = (16_384, 4_096)  # scaled: 2 MiB both ways
SYN_WINDOW = (64_240, 65_160)
CLIENT_MAC = np.frombuffer(bytes.fromhex("3cfdfe1a2b3c"), np.uint8)
GATEWAY_MAC = np.frombuffer(bytes.fromhex("00005e000101"), np.uint8)
WRITE_CHUNK = 262_144  # packets per write: bounds the writer's buffers (~120 MB worst case)


def _payload_template(seed: int, orders: bool = True) -> np.ndarray:
    """64 KiB of exchange-like text; payload bytes are a function of stream offset.
    ``orders=False`` (``--answered``): its FIX lines heartbeats (35=0), not orders that
    no reply would ever answer."""
    rng = np.random.default_rng(seed)
    lines = []
    for i in range(700):
        px = 67_000 + rng.integers(-500, 500) + rng.random()
        lines.append(
            f'{{"e":"depthUpdate","E":{1717421400000 + i},"s":"BTCUSDT","U":{i * 7},'
            f'"b":[["{px:.2f}","{rng.random():.5f}"]],"a":[["{px + 0.1:.2f}","0.0{i}"]]}}\n'
            if i % 3 else
            f"8=FIX.4.4\x019=182\x0135={'D' if orders else '0'}\x0149=MM01\x0156=EXCH"
            f"\x0134={i}\x0111=ord{i}\x01"
            f"55=BTC-USD\x0154=1\x0138={rng.random():.4f}\x0144={px:.2f}\x0140=2\x0110=000\x01"
        )
    text = "".join(lines).encode()
    return np.frombuffer((text * (1 + (2 * 65536) // len(text)))[: 2 * 65536], np.uint8)


TEMPLATE_PERIOD = 65_536


@numba.njit(cache=True)
def _scatter(buf: np.ndarray, rec_off: np.ndarray, prefix: np.ndarray, hdr: np.ndarray,
             opt_idx: np.ndarray, opts: np.ndarray, caplen: np.ndarray, pay_off: np.ndarray,
             template: np.ndarray, trailer: bool) -> None:
    """Copy each record: prefix, frame header, SYN options, payload; pcapng trailer."""
    for i in range(rec_off.size):
        p = rec_off[i]
        np_ = prefix.shape[1]
        buf[p:p + np_] = prefix[i]
        p += np_
        c = caplen[i]
        h = min(hdr.shape[1], c)
        buf[p:p + h] = hdr[i, :h]
        p += h
        c -= h
        if opt_idx[i] >= 0:
            o = min(opts.shape[1], c)
            buf[p:p + o] = opts[opt_idx[i], :o]
            p += o
            c -= o
        if c > 0:
            buf[p:p + c] = template[pay_off[i]:pay_off[i] + c]
        if trailer:
            end = rec_off[i + 1] - 4 if i + 1 < rec_off.size else buf.size - 4
            total = (rec_off[i + 1] if i + 1 < rec_off.size else buf.size) - rec_off[i]
            for b in range(4):
                buf[end + b] = (total >> (8 * b)) & 0xFF


def _frames(cols: dict, sl: slice) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Header records of packets ``sl``; returns (headers, option index, wire length)."""
    n = sl.stop - sl.start
    d = cols["dir"][sl]
    syn = cols["kind"][sl] == K_SYN
    thl = np.where(syn, 28, 20)
    f = np.zeros(n, FRAME)
    out = d == 0
    f["eth_dst"] = np.where(out[:, None], GATEWAY_MAC, CLIENT_MAC)
    f["eth_src"] = np.where(out[:, None], CLIENT_MAC, GATEWAY_MAC)
    f["ethertype"] = 0x0800
    f["ver_ihl"] = 0x45
    f["total_length"] = 20 + thl + cols["len"][sl]
    f["identification"] = (np.arange(sl.start, sl.stop) * 2654435761 >> 8) & 0xFFFF
    f["flags_fragment_offset"] = 0x4000  # DF
    f["ttl"] = np.where(out, 64, 52)
    f["protocol"] = 6
    f["src"] = np.where(out, CLIENT_IP, cols["server_ip"][sl])
    f["dst"] = np.where(out, cols["server_ip"][sl], CLIENT_IP)
    words = f.view(np.uint8).reshape(n, FRAME.itemsize)[:, 14:34].astype(np.uint32)
    s = (words[:, 0::2] << 8 | words[:, 1::2]).sum(axis=1)
    s = (s & 0xFFFF) + (s >> 16)
    s = (s & 0xFFFF) + (s >> 16)
    f["header_checksum"] = ~s & 0xFFFF  # RFC 791 header checksum; TCP checksum left 0
    f["source_port"] = np.where(out, cols["client_port"][sl], cols["server_port"][sl])
    f["destination_port"] = np.where(out, cols["server_port"][sl], cols["client_port"][sl])
    f["sequence_number"] = cols["seq"][sl]
    f["acknowledgment_number"] = cols["ack"][sl]
    f["data_offset"] = (thl // 4) << 4
    f["control_bits"] = cols["flags"][sl]
    win = np.where(syn, np.array(SYN_WINDOW)[d], np.array(WINDOW)[d])
    f["window"] = win
    opt = np.where(syn, d, -1)
    return f, opt, 14 + 20 + thl + cols["len"][sl]


def write(p: Plan, path: str, fmt: str = "pcap", snaplen: int = 262_144) -> int:
    """Write the plan as pcap (ns) or pcapng (if_tsresol 9); returns bytes written."""
    cols = p.cols
    template = _payload_template(7, orders=p.fix is None)
    if p.fix is not None:  # (``_fix_payload``: after the template's two periods)
        template = np.concatenate([template, p.fix[0]])
    opts = np.stack(SYN_OPTIONS)
    n = cols["t"].size
    written = 0
    with open(path, "wb") as fh:
        written += fh.write(_file_header(fmt, snaplen))
        for a in range(0, n, WRITE_CHUNK):
            sl = slice(a, min(n, a + WRITE_CHUNK))
            hdr, opt, wire = _frames(cols, sl)
            caplen = np.minimum(wire, snaplen).astype(np.int64)
            t = cols["t"][sl]
            if fmt == "pcap":
                pre = np.zeros(wire.size, PCAP_REC)
                pre["ts_sec"], pre["ts_nsec"] = t // 1_000_000_000, t % 1_000_000_000
                pre["caplen"], pre["len"] = caplen, wire
                size = PCAP_REC.itemsize + caplen
            else:
                size = PCAPNG_EPB.itemsize + (caplen + 3) // 4 * 4 + 4
                pre = np.zeros(wire.size, PCAPNG_EPB)
                pre["block_type"], pre["block_total_length"] = 6, size
                pre["timestamp_high"], pre["timestamp_low"] = t >> 32, t & 0xFFFFFFFF
                pre["captured_len"], pre["original_len"] = caplen, wire
            rec_off = np.r_[0, np.cumsum(size)[:-1]].astype(np.int64)
            buf = np.zeros(int(size.sum()), np.uint8)
            # bytes depend on (stream, offset) only, so a retransmission repeats them
            pay = (cols["sid"][sl] * 7919 + cols["rel"][sl]) % TEMPLATE_PERIOD
            if p.fix is not None:
                fb = p.fix[1][cols["sid"][sl]]
                pay = np.where(fb >= 0, 2 * TEMPLATE_PERIOD + fb + cols["rel"][sl], pay)
            _scatter(buf, rec_off, pre.view(np.uint8).reshape(wire.size, -1),
                     hdr.view(np.uint8).reshape(wire.size, -1), opt, opts, caplen,
                     pay.astype(np.int64), template, fmt == "pcapng")
            written += fh.write(buf.tobytes())
    return written


def _file_header(fmt: str, snaplen: int) -> bytes:
    if fmt == "pcap":
        hdr = np.zeros(1, np.dtype([("magic", "<u4"), ("major", "<u2"), ("minor", "<u2"),
                                    ("thiszone", "<i4"), ("sigfigs", "<u4"),
                                    ("snaplen", "<u4"), ("linktype", "<u4")]))
        hdr[0] = (0xA1B23C4D, 2, 4, 0, 0, snaplen, 1)
        return hdr.tobytes()
    # SHB: byte-order magic, version 1.0, section length unknown (-1)
    shb = np.array([0x0A0D0D0A, 28, 0x1A2B3C4D, 1, 0xFFFFFFFF, 0xFFFFFFFF, 28],
                   dtype="<u4").tobytes()
    # IDB: LinkType 1 (Ethernet), reserved, SnapLen; if_tsresol (9) = 9 (ns); opt_endofopt
    idb_body = np.array([1], "<u4").tobytes() + np.array([snaplen], "<u4").tobytes()
    opt = np.array([9, 1], "<u2").tobytes() + bytes([9, 0, 0, 0]) + bytes(4)
    total = 8 + len(idb_body) + len(opt) + 4
    tail = np.array([total], "<u4").tobytes()
    idb = np.array([1, total], "<u4").tobytes() + idb_body + opt + tail
    return shb + idb


# ----------------------------------------------------------------------------------
# verification against tshark

TSHARK_FIELDS = ("tcp.stream", "tcp.analysis.retransmission", "tcp.analysis.out_of_order",
                 "tcp.analysis.duplicate_ack", "tcp.analysis.lost_segment",
                 "tcp.analysis.fast_retransmission", "tcp.analysis.spurious_retransmission")


def tshark_counts(path: str) -> dict[str, int]:
    """What tshark's TCP analysis makes of ``path`` (stream count, flagged packets)."""
    cmd = ["tshark", "-n", "-r", path, "-T", "fields", "-E", "separator=|"]
    for f in TSHARK_FIELDS:
        cmd += ["-e", f]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    streams: set[str] = set()
    counts = dict.fromkeys(TSHARK_FIELDS[1:], 0)
    for line in out.splitlines():
        parts = line.split("|")
        streams.add(parts[0])
        for name, v in zip(TSHARK_FIELDS[1:], parts[1:], strict=True):
            counts[name] += v != ""
    res = {"streams": len(streams - {""})}
    res.update({k.rsplit(".", 1)[1]: v for k, v in counts.items()})
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--packets", type=int, default=1_000_000)
    ap.add_argument("--size-gb", type=float, default=None,
                    help="instead of --packets: about this many GB (10^9 bytes) of capture")
    ap.add_argument("--out", default="bench.pcap")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--format", choices=("pcap", "pcapng"), default="pcap")
    ap.add_argument("--snaplen", type=int, default=262_144)
    ap.add_argument("--connections", type=int, default=200)
    ap.add_argument("--answered", action="store_true",
                    help="FIX order connections carry each order as a NewOrderSingle and "
                    "its ack as an ExecutionReport for its ClOrdID (the default: the "
                    "payload template's lines, in which no order is ever answered)")
    ap.add_argument("--verify", action="store_true",
                    help="run tshark on the result and compare with what was intended")
    a = ap.parse_args(argv)
    t0 = time.perf_counter()
    n = a.packets
    if a.size_gb:
        probe = plan(Config(packets=200_000, seed=a.seed, connections=a.connections))
        per_pkt = _bytes_per_packet(probe, a.format, a.snaplen)
        n = int(a.size_gb * 1e9 / per_pkt)
    p = plan(Config(packets=n, seed=a.seed, connections=a.connections, answered=a.answered))
    t1 = time.perf_counter()
    size = write(p, a.out, a.format, a.snaplen)
    t2 = time.perf_counter()
    print(f"{a.out}: {p.cols['t'].size:,} packets, {size / 1e6:,.1f} MB "
          f"(plan {t1 - t0:.1f} s, write {t2 - t1:.1f} s)")
    print("intended: " + ", ".join(f"{k} {v:,}" for k, v in p.intended.items()))
    if a.verify:
        got = tshark_counts(a.out)
        print("tshark:   " + ", ".join(f"{k} {v:,}" for k, v in got.items()))
        keys = ("streams", "retransmission", "out_of_order")
        bad = [k for k in keys if got[k] != p.intended[k]]
        if bad:
            print("MISMATCH: " + ", ".join(bad), file=sys.stderr)
            return 1
    return 0


def _bytes_per_packet(p: Plan, fmt: str, snaplen: int) -> float:
    wire = 54 + p.cols["len"] + 8 * (p.cols["kind"] == K_SYN)
    cap = np.minimum(wire, snaplen)
    rec = 16 + cap if fmt == "pcap" else 32 + (cap + 3) // 4 * 4
    return float(rec.mean())


if __name__ == "__main__":
    sys.exit(main())
