"""Flows and TCP analysis over decoded chunks, in one compiled pass per chunk.

How this works: ``FlowTracker.process(decoded, ts)`` runs a Numba kernel over the
chunk's packets *in capture order* (never re-sorted: tcpdump's own output can
step back in time). The kernel keeps a hash table from the canonical 5-tuple to a
flow slot (open addressing with linear probing in a NumPy array at most half full,
rebuilt when the slots grow; a Numba typed dict would cost every process a
~0.2 s compilation, as typed containers are not cached), and per flow and
direction the state Wireshark's TCP analysis keeps (next expected sequence
number, last ACK, window, duplicate-ACK count...). It
writes, per packet: the flow id, the direction (0 = ``out``, client to server; 1 =
``in``), the unwrapped 64-bit stream offset of the segment, and a bit mask of
analysis flags (``FLAG_*``). All state lives in NumPy arrays owned by the
tracker, so it carries across chunks.

Flow ids and slots. A flow id is given in order of first appearance (as
tshark's ``tcp.stream``) and never reused; a slot (a row of the state arrays)
is. Memory follows the flows held, not the capture's total: a flow is
*retired* (its summary columns copied out for the ``flows`` table, its slot
freed and its hash entry removed by backward-shift deletion) when

- it has *ended* (RST, or FIN in both directions) and nothing was seen on it
  for ``GRACE_NS`` of capture time: late retransmissions and ACKs of a closed
  connection still belong to it in tshark's numbering, so it is kept that long;
- it was replaced by a new connection on the same ports (port reuse): no
  packet can reach it any more;
- the table is full: ended flows and UDP flows (UDP has no end) go first, the
  least recently active first (only once the table has ``ROOM_FLOWS`` slots:
  below that it grows); past ``MAX_FLOWS`` slots the least recently active
  open flows are *evicted* (``evicted`` is set, the ingest writes a
  ``flow_evicted`` anomaly). A packet of a retired flow that
  comes later starts a new flow id, so a retired flow is the one place where
  the numbering can differ from tshark's (which never forgets a connection).

When the kernel finds no free slot it stops, Python makes room as above, and
the kernel resumes where it stopped. ``take_retired`` hands the retired flows'
columns to the ingest; ``finish`` retires every flow still held.

The classification follows Wireshark 4.0's ``tcp_analyze_sequence_number``
(packet-tcp.c) so that ``tcp_events`` can be cross-checked against tshark's
``tcp.analysis.*`` fields: the order of tests, the 3 ms / first-RTT out-of-order
threshold, the 20 ms fast-retransmission window and 32-bit modular comparisons
are the same. Deliberate differences are named in the tests.

TCP timestamps (RFC 7323): where a segment carries the option, ``_timestamps``
times one TSval per side at a time, from the first segment carrying it to the
first segment of the other side echoing it in TSecr, and writes the sample on the
echoing packet (``PacketFlows.ts_sent``/``ts_end``/``ts_bits``); the ingest stores
them as ``tcp_rtt`` rows of method ``tsecr``.

Client and server: the sender of the SYN (without ACK) is the client; the
receiver of a SYN/ACK is the client; without a handshake, the side with the
higher port (the ephemeral one) is, and on a tie the sender of the first packet.
A new SYN with a different ISN on a known 5-tuple starts a new flow (port reuse),
as in Wireshark; on the ports of a retired flow a SYN starts a new flow without
the ``ports_reused`` flag (the old ISN is forgotten).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import numpy as np

from ..capture.clock import ForwardWatch
from ..decode import ACK, FIN, IPPROTO_TCP, IPPROTO_UDP, OK, RST, SYN, DecodedChunk
from ..events import Anomaly
from ..jitload import kernel

# --- per-packet analysis flags (bit mask) -------------------------------------
FLAG_RETRANSMISSION = 1 << 0
FLAG_FAST_RETRANSMISSION = 1 << 1
FLAG_SPURIOUS_RETRANSMISSION = 1 << 2
FLAG_OUT_OF_ORDER = 1 << 3
FLAG_LOST_SEGMENT = 1 << 4  # tshark: "previous segment not captured"
FLAG_DUPLICATE_ACK = 1 << 5
FLAG_ZERO_WINDOW = 1 << 6
FLAG_ZERO_WINDOW_PROBE = 1 << 7
FLAG_WINDOW_FULL = 1 << 8
FLAG_WINDOW_UPDATE = 1 << 9
FLAG_KEEP_ALIVE = 1 << 10
FLAG_KEEP_ALIVE_ACK = 1 << 11
FLAG_ACKED_UNSEEN = 1 << 12
FLAG_RST = 1 << 13
FLAG_ZERO_WINDOW_PROBE_ACK = 1 << 14
FLAG_PORTS_REUSED = 1 << 15

# ``_ts_clock``: a side's TSval clock counts as 1 kHz (Linux, BSD, macOS, Windows) once
# it kept to the capture clock within TSC_SLACK_NS + TSC_DRIFT per elapsed tick over at
# least TSC_VERIFY_TICKS ticks and TSC_VERIFY_PAIRS consecutive packets, each pair
# keeping to it too (RFC 7323 allows 1 ms to 1 s per tick, and some stacks stamp a
# value that does not move for a while: a coarser or unsteady clock is never compared)
TSC_TICK_NS = 1_000_000
TSC_VERIFY_TICKS = 100
TSC_VERIFY_PAIRS = 8
TSC_SLACK_NS = 2_000_000  # one tick of rounding at either end
TSC_DRIFT_NS_PER_TICK = 1_000  # 0.1%: clock rates differ by < 100 ppm
NO_EXCESS = -(1 << 63)

_RETRANSMISSIONS = FLAG_RETRANSMISSION | FLAG_FAST_RETRANSMISSION | FLAG_SPURIOUS_RETRANSMISSION

# tcp_events.kind for each flag (the table keeps one row per packet and kind)
EVENT_KINDS: dict[int, str] = {
    FLAG_RETRANSMISSION: "retransmission",
    FLAG_FAST_RETRANSMISSION: "fast_retransmission",
    FLAG_SPURIOUS_RETRANSMISSION: "spurious_retransmission",
    FLAG_OUT_OF_ORDER: "out_of_order",
    FLAG_LOST_SEGMENT: "gap",
    FLAG_DUPLICATE_ACK: "duplicate_ack",
    FLAG_ZERO_WINDOW: "zero_window",
    FLAG_ZERO_WINDOW_PROBE: "zero_window_probe",
    FLAG_WINDOW_FULL: "window_full",
    FLAG_WINDOW_UPDATE: "window_update",
    FLAG_KEEP_ALIVE: "keepalive",
    FLAG_KEEP_ALIVE_ACK: "keepalive_ack",
    FLAG_ACKED_UNSEEN: "acked_unseen",
    FLAG_RST: "rst",
    FLAG_ZERO_WINDOW_PROBE_ACK: "zero_window_probe_ack",
    FLAG_PORTS_REUSED: "ports_reused",
}

# Default out-of-order threshold when no handshake RTT is known (packet-tcp.c).
OOO_THRESHOLD_NS = 3_000_000
FAST_RETRANSMISSION_WINDOW_NS = 20_000_000

# flow end reasons
END_NONE, END_FIN, END_RST = 0, 1, 2
END_REASONS = {END_NONE: "capture_end", END_FIN: "fin", END_RST: "rst"}

_U32 = 1 << 32

# Per-direction state columns (index into ``dstate``, an int64 [2*cap, N] array).
(
    D_BASE_SET, D_BASE_SEQ, D_NEXTSEQ_SET, D_NEXTSEQ, D_NEXTSEQ_TS, D_LASTACK_SET, D_LASTACK,
    D_LASTACK_TS, D_WINDOW, D_WIN_SCALE, D_DUPACKS, D_LASTSEGFLAGS, D_MAXSEQ_TBA_SET,
    D_MAXSEQ_TBA, D_HI_OFF, D_PKTS, D_BYTES, D_PAYLOAD, D_FIN, D_SYN_TS, D_RETRANS,
    D_OOO, D_LOST, D_DUPACK_TOTAL, D_IS_FIRST_ACK, D_WIN_VALID,
    # TCP timestamps RTT (RFC 7323; ``_timestamps``): highest TSval this side sent,
    # and the one value being timed (its first segment's time, end offset, TS_* bits)
    D_TS_MAX_SET, D_TS_MAX, D_TS_PEND_SET, D_TS_PEND_VAL, D_TS_PEND_TS, D_TS_PEND_END,
    D_TS_PEND_BITS,
    # the capture clock against this side's TSval clock (``_ts_clock``): its last
    # TS packet (time, TSval, capture index) and the anchor its tick is checked from
    D_TSC_SET, D_TSC_T, D_TSC_V, D_TSC_I, D_TSC_AT, D_TSC_AV, D_TSC_N,
) = range(40)
N_DSTATE = 40

# ``PacketFlows.ts_bits`` of a timestamps RTT sample
TS_RETRANSMITTED = 1  # the side retransmitted while the value was timed (Karn)
TS_SOURCE_DATA = 2  # the timed segment carried payload
TS_ECHO_DATA = 4  # the echoing segment carried payload

# Per-flow columns (int64 [cap, N]).
(
    F_A_HI, F_A_LO, F_B_HI, F_B_LO, F_A_PORT, F_B_PORT, F_PROTO, F_FIRST_TS, F_LAST_TS,
    F_FIRST_INDEX, F_END, F_SYN_TS, F_SYNACK_TS, F_VLAN, F_IPV, F_MRU_SYN, F_FIRST_RTT,
    F_ID, F_SLOT, F_HOME,
) = range(20)
N_FSTATE = 20

# F_SLOT: what a slot holds. A detached flow was replaced in the hash table by a
# new connection on the same ports; it is retired at the next opportunity.
SLOT_FREE, SLOT_LIVE, SLOT_DETACHED = 0, 1, 2
# Indices into the tracker's ``counters`` array.
C_NEXT_ID, C_HIGH_WATER, C_FREE = 0, 1, 2

# Capture time an ended flow is kept after its last packet (late retransmissions
# and ACKs of a closed connection: TIME_WAIT is 2 MSL = 60 s on Linux).
GRACE_NS = 60_000_000_000
# Below this many slots the table grows rather than retire ended flows early.
ROOM_FLOWS = 1 << 16
# Slots at most (~600 bytes each); past it the least recently active open flows
# are evicted.
MAX_FLOWS = 1 << 18
_INT64_MIN = -(1 << 63)


@kernel(cache=True, inline="always")
def _gt_seq(a: int, b: int) -> bool:
    d = (a - b) & 0xFFFFFFFF
    return d != 0 and d < 0x80000000


@kernel(cache=True, inline="always")
def _lt_seq(a: int, b: int) -> bool:
    return _gt_seq(b, a)


def _table_size(capacity: int) -> int:
    """Hash table positions for ``capacity`` slots: a power of two, at least twice."""
    return 1 << max(3, (2 * capacity - 1).bit_length())


@kernel(cache=True, inline="always")
def _end_key(hi, lo, port):
    """One end of a flow (address words and port) mixed into 64 bits."""
    return (np.uint64(lo) * np.uint64(0x9E3779B97F4A7C15)) ^ (
        (np.uint64(hi) + np.uint64(port)) * np.uint64(0xC2B2AE3D27D4EB4F))


@kernel(cache=True, inline="always")
def _hash(a_hi, a_lo, a_port, b_hi, b_lo, b_port, proto):
    """A flow's hash, the same whichever end comes first (the two ends' keys are
    added), so a packet needs no ordering of its ends; the sum is then mixed so that
    its low bits, the table position, depend on all of it. Four independent
    multiplications and a finaliser (a chain of seven mixing rounds before: ~10 ns of
    the ~70 ns a packet the kernel took)."""
    h = (_end_key(a_hi, a_lo, a_port) + _end_key(b_hi, b_lo, b_port)
         + np.uint64(proto) * np.uint64(0x165667B19E3779F9))
    h ^= h >> np.uint64(29)
    h *= np.uint64(0xBF58476D1CE4E5B9)
    h ^= h >> np.uint64(32)
    return np.int64(h & np.uint64(0x7FFFFFFFFFFFFFFF))


# The kernels ``_kernel`` calls for each packet (``_analyze``, ``_timestamps``,
# ``_ts_clock``) are compiled without Numba's reference counting (``_nrt=False``): a
# kernel that is not inlined increfs and decrefs each array it is passed at every call
# (an atomic operation each), 11 arrays a TCP packet with timestamps; over ws1m_c's
# ~1M packets that was about half of ``_kernel``'s CPU (0.12 s -> 0.06 s, the same
# outputs; session 22). They only index the arrays they are given: none makes one.
@kernel(cache=True)
def _kernel(
    start, status, proto, src_hi, src_lo, dst_hi, dst_lo, sport, dport, vlan, ipv,
    flags, seq, ack, window, wscale, plen, wirelen, ts, index, tsval, tsecr,
    table, fkey_hash, fstate, fcnt, dstate, free, counters,
    out_flow, out_dir, out_off, out_flags, out_ackoff, out_tss, out_tsend, out_tsbits,
    out_tsx, out_tsxv, out_tsxp,
):
    """Process packets [start, n). Returns the index to resume at (n when done, else
    the packet that needs a new flow when no slot is free)."""
    n = status.shape[0]
    cap = fstate.shape[0]
    for i in range(start, n):
        p = proto[i]
        out_flow[i] = -1
        out_dir[i] = 0
        out_off[i] = 0
        out_flags[i] = 0
        out_ackoff[i] = -1
        out_tss[i] = -1
        out_tsx[i] = NO_EXCESS
        if (status[i] != OK and status[i] != 9) or (p != IPPROTO_TCP and p != IPPROTO_UDP):
            continue
        h = _hash(src_hi[i], src_lo[i], sport[i], dst_hi[i], dst_lo[i], dport[i], p)
        fl = flags[i]
        slot = -1
        mask = table.shape[0] - 1
        probe = h & mask
        while table[probe] >= 0:
            s = table[probe]
            ok = fstate[s, F_PROTO] == p and (
                (np.uint64(fstate[s, F_A_HI]) == src_hi[i] and np.uint64(fstate[s, F_A_LO])
                 == src_lo[i] and fstate[s, F_A_PORT] == sport[i]
                 and np.uint64(fstate[s, F_B_HI]) == dst_hi[i]
                 and np.uint64(fstate[s, F_B_LO]) == dst_lo[i] and fstate[s, F_B_PORT] == dport[i])
                or (np.uint64(fstate[s, F_A_HI]) == dst_hi[i] and np.uint64(fstate[s, F_A_LO])
                    == dst_lo[i] and fstate[s, F_A_PORT] == dport[i]
                    and np.uint64(fstate[s, F_B_HI]) == src_hi[i]
                    and np.uint64(fstate[s, F_B_LO]) == src_lo[i]
                    and fstate[s, F_B_PORT] == sport[i])
            )
            if ok:
                slot = s
                break
            probe = (probe + 1) & mask
        reused = False
        if slot >= 0 and p == IPPROTO_TCP and (fl & (SYN | ACK)) == SYN:
            # Port reuse: a fresh SYN whose ISN differs from the known base.
            d0 = 0 if (np.uint64(fstate[slot, F_A_HI]) == src_hi[i] and np.uint64(
                fstate[slot, F_A_LO]) == src_lo[i] and fstate[slot, F_A_PORT] == sport[i]) else 1
            k0 = 2 * slot + d0
            if dstate[k0, D_BASE_SET] == 1 and dstate[k0, D_BASE_SEQ] != seq[i]:
                reused = True
        if slot < 0 or reused:
            if counters[C_FREE] > 0:
                counters[C_FREE] -= 1
                new = free[counters[C_FREE]]
            elif counters[C_HIGH_WATER] < cap:
                new = counters[C_HIGH_WATER]
                counters[C_HIGH_WATER] += 1
            else:
                return i  # make room and resume here
            if reused:  # the old connection keeps its id and state, out of the table
                fstate[slot, F_SLOT] = SLOT_DETACHED
                fkey_hash[slot] = -1
            slot = new
            table[probe] = slot
            fkey_hash[slot] = probe
            fstate[slot, F_HOME] = h
            fstate[slot, F_SLOT] = SLOT_LIVE
            fstate[slot, F_ID] = counters[C_NEXT_ID]
            counters[C_NEXT_ID] += 1
            # who is the client?
            if p == IPPROTO_TCP and (fl & SYN) != 0:
                src_is_client = (fl & ACK) == 0
            elif sport[i] != dport[i]:
                src_is_client = sport[i] > dport[i]
            else:
                src_is_client = True
            if src_is_client:
                fstate[slot, F_A_HI] = np.int64(src_hi[i])
                fstate[slot, F_A_LO] = np.int64(src_lo[i])
                fstate[slot, F_A_PORT] = sport[i]
                fstate[slot, F_B_HI] = np.int64(dst_hi[i])
                fstate[slot, F_B_LO] = np.int64(dst_lo[i])
                fstate[slot, F_B_PORT] = dport[i]
            else:
                fstate[slot, F_A_HI] = np.int64(dst_hi[i])
                fstate[slot, F_A_LO] = np.int64(dst_lo[i])
                fstate[slot, F_A_PORT] = dport[i]
                fstate[slot, F_B_HI] = np.int64(src_hi[i])
                fstate[slot, F_B_LO] = np.int64(src_lo[i])
                fstate[slot, F_B_PORT] = sport[i]
            fstate[slot, F_PROTO] = p
            fstate[slot, F_FIRST_TS] = ts[i]
            fstate[slot, F_LAST_TS] = ts[i]
            fstate[slot, F_FIRST_INDEX] = index[i]
            fstate[slot, F_END] = END_NONE
            fstate[slot, F_SYN_TS] = -1
            fstate[slot, F_SYNACK_TS] = -1
            fstate[slot, F_MRU_SYN] = -1
            fstate[slot, F_FIRST_RTT] = 0
            fstate[slot, F_VLAN] = vlan[i]
            fstate[slot, F_IPV] = ipv[i]
            for dd in range(2):
                k = 2 * slot + dd
                for c in range(N_DSTATE):
                    dstate[k, c] = 0
                dstate[k, D_WIN_SCALE] = -1
                dstate[k, D_SYN_TS] = -1
                dstate[k, D_IS_FIRST_ACK] = 1
            for c in range(fcnt.shape[1]):
                fcnt[slot, c] = 0
        # direction
        if (np.uint64(fstate[slot, F_A_HI]) == src_hi[i] and np.uint64(fstate[slot, F_A_LO])
                == src_lo[i] and fstate[slot, F_A_PORT] == sport[i]):
            d = 0
        else:
            d = 1
        out_flow[i] = fstate[slot, F_ID]
        out_dir[i] = d
        if reused:
            out_flags[i] |= FLAG_PORTS_REUSED
        t = ts[i]
        if t > fstate[slot, F_LAST_TS]:
            fstate[slot, F_LAST_TS] = t
        fk = 2 * slot + d
        rk = 2 * slot + (1 - d)
        dstate[fk, D_PKTS] += 1
        dstate[fk, D_BYTES] += wirelen[i]
        dstate[fk, D_PAYLOAD] += plen[i]
        if p != IPPROTO_TCP:
            continue
        # Wireshark's ts_first_rtt: most recent SYN to the first pure ACK.
        if (fl & (SYN | ACK)) == SYN:
            fstate[slot, F_MRU_SYN] = t
        elif ((fl & (SYN | ACK)) == ACK and fstate[slot, F_MRU_SYN] >= 0
              and fstate[slot, F_FIRST_RTT] == 0):
            fstate[slot, F_FIRST_RTT] = t - fstate[slot, F_MRU_SYN]
        out_flags[i] |= _analyze(
            fk, rk, slot, d, seq[i], ack[i], plen[i], fl, window[i], wscale[i], t, dstate,
            fstate, out_off, i,
        )
        if tsval[i] >= 0:
            _timestamps(fk, rk, fl, tsval[i], tsecr[i], plen[i], t, out_off[i] + plen[i],
                        out_flags[i], dstate, out_tss, out_tsend, out_tsbits, i)
            _ts_clock(fk, t, tsval[i], index[i], dstate, out_tsx, out_tsxv, out_tsxp, i)
        if (fl & ACK) != 0 and dstate[rk, D_BASE_SET] == 1:
            # the ACK as an unwrapped offset in the *other* direction's stream
            rel = (ack[i] - dstate[rk, D_BASE_SEQ] - 1) & 0xFFFFFFFF
            rhi = dstate[rk, D_HI_OFF]
            dl = (rel - (rhi & 0xFFFFFFFF)) & 0xFFFFFFFF
            if dl >= 0x80000000:
                dl -= _U32
            out_ackoff[i] = rhi + dl
    return n


@kernel(cache=True, _nrt=False)
def _analyze(fk, rk, slot, d, sq, ak, seglen, fl, win, ws, t, dstate, fstate, out_off, i):
    """Wireshark-compatible sequence analysis of one TCP segment."""
    res = 0
    if ((fl & (SYN | ACK)) == (SYN | ACK) and dstate[fk, D_BASE_SET] == 1
            and dstate[fk, D_BASE_SEQ] != sq):
        # A SYN/ACK with a new ISN: the server side of a new session on the same
        # ports. Wireshark flags it and starts this direction's analysis afresh.
        res |= FLAG_PORTS_REUSED
        for c in (D_BASE_SET, D_NEXTSEQ_SET, D_NEXTSEQ, D_NEXTSEQ_TS, D_LASTACK_SET,
                  D_LASTACK, D_LASTACK_TS, D_WINDOW, D_DUPACKS, D_LASTSEGFLAGS,
                  D_MAXSEQ_TBA_SET, D_MAXSEQ_TBA, D_HI_OFF, D_WIN_VALID, D_TS_MAX_SET,
                  D_TS_PEND_SET, D_TSC_SET):
            dstate[fk, c] = 0
        dstate[fk, D_IS_FIRST_ACK] = 1
    # SYN bookkeeping: handshake times and window scale (RFC 7323 §2.2)
    if (fl & SYN) != 0:
        if (fl & ACK) == 0:
            if fstate[slot, F_SYN_TS] < 0:
                fstate[slot, F_SYN_TS] = t
        elif fstate[slot, F_SYNACK_TS] < 0:
            fstate[slot, F_SYNACK_TS] = t
        dstate[fk, D_WIN_SCALE] = ws if ws >= 0 else -2
        if (fl & ACK) != 0 and ws < 0:
            dstate[rk, D_WIN_SCALE] = -2  # peer offered it, we did not: neither uses it
    if (fl & RST) != 0:
        res |= FLAG_RST
        fstate[slot, F_END] = END_RST
    elif (fl & FIN) != 0 and fstate[slot, F_END] == END_NONE:
        fstate[slot, F_END] = END_FIN
    if (fl & FIN) != 0:
        dstate[fk, D_FIN] = 1
    # base sequence numbers
    if dstate[fk, D_BASE_SET] == 0:
        dstate[fk, D_BASE_SEQ] = sq if (fl & SYN) != 0 else (sq - 1) & 0xFFFFFFFF
        dstate[fk, D_BASE_SET] = 1
    if dstate[rk, D_BASE_SET] == 0 and (fl & ACK) != 0:
        dstate[rk, D_BASE_SEQ] = (ak - 1) & 0xFFFFFFFF
        dstate[rk, D_BASE_SET] = 1
    # unwrapped 64-bit stream offset of the first payload byte (0 = ISN + 1)
    rel32 = (sq - dstate[fk, D_BASE_SEQ] - 1) & 0xFFFFFFFF
    hi = dstate[fk, D_HI_OFF]
    delta = (rel32 - (hi & 0xFFFFFFFF)) & 0xFFFFFFFF
    if delta >= 0x80000000:
        delta -= _U32
    off = hi + delta
    if (fl & SYN) != 0:
        off += 1  # payload on a SYN (TCP Fast Open) starts after the SYN's sequence number
    out_off[i] = off
    if off + seglen > hi:
        dstate[fk, D_HI_OFF] = off + seglen
    nextseq = dstate[fk, D_NEXTSEQ]
    nset = dstate[fk, D_NEXTSEQ_SET] == 1 and nextseq != 0
    lastack = dstate[fk, D_LASTACK]
    rwin = dstate[rk, D_WINDOW]
    finished_fwd = False
    # ZERO WINDOW PROBE
    if seglen == 1 and nset and sq == nextseq and rwin == 0 and dstate[rk, D_WIN_VALID] == 1:
        res |= FLAG_ZERO_WINDOW_PROBE
        finished_fwd = True
    if not finished_fwd:
        if win == 0 and (fl & (RST | FIN | SYN)) == 0:
            res |= FLAG_ZERO_WINDOW
        if nset and _gt_seq(sq, nextseq) and (fl & RST) == 0:
            res |= FLAG_LOST_SEGMENT
            dstate[fk, D_LOST] += 1
        if (seglen == 0 or seglen == 1) and nset and sq == ((nextseq - 1) & 0xFFFFFFFF) and (
                fl & (SYN | FIN | RST)) == 0:
            res |= FLAG_KEEP_ALIVE
        same = (seglen == 0 and win != 0 and nset and sq == nextseq
                and dstate[fk, D_LASTACK_SET] == 1 and ak == lastack
                and (fl & (SYN | FIN | RST)) == 0)
        if same and win != dstate[fk, D_WINDOW]:
            res |= FLAG_WINDOW_UPDATE
        rws = dstate[rk, D_WIN_SCALE]
        if seglen > 0 and rws != -1 and dstate[rk, D_LASTACK_SET] == 1 and (
                fl & (SYN | FIN | RST)) == 0:
            shift = 0 if (dstate[rk, D_IS_FIRST_ACK] == 1 or rws == -2) else rws
            edge = (dstate[rk, D_LASTACK] + (rwin << shift)) & 0xFFFFFFFF
            if ((sq + seglen) & 0xFFFFFFFF) == edge:
                res |= FLAG_WINDOW_FULL
        if same and win == dstate[fk, D_WINDOW] and (dstate[rk, D_LASTSEGFLAGS] & FLAG_KEEP_ALIVE):
            res |= FLAG_KEEP_ALIVE_ACK
            finished_fwd = True
        elif (seglen == 0 and win == 0 and dstate[fk, D_WINDOW] == 0 and nset and sq == nextseq
              and ak == lastack and (dstate[rk, D_LASTSEGFLAGS] & FLAG_ZERO_WINDOW_PROBE)
              and (fl & (SYN | FIN | RST)) == 0):
            res |= FLAG_ZERO_WINDOW_PROBE_ACK
            finished_fwd = True
        elif same and win == dstate[fk, D_WINDOW]:
            dstate[fk, D_DUPACKS] = 1 if dstate[fk, D_DUPACKS] == -1 else dstate[fk, D_DUPACKS] + 1
            dstate[fk, D_DUPACK_TOTAL] += 1
            res |= FLAG_DUPLICATE_ACK
    # finished_fwd:
    if dstate[fk, D_LASTACK_SET] == 0 or ak != lastack:
        dstate[fk, D_DUPACKS] = 0
    # ACKED UNSEEN SEGMENT. Wireshark marks the peer's duplicate-ACK counter -1
    # here (an unsigned -1, so it then counts as ">= 2 duplicate ACKs").
    if (dstate[rk, D_MAXSEQ_TBA_SET] == 1 and (fl & ACK) != 0
            and _gt_seq(ak, dstate[rk, D_MAXSEQ_TBA])):
        res |= FLAG_ACKED_UNSEEN
        dstate[rk, D_MAXSEQ_TBA] = dstate[rk, D_NEXTSEQ]
        dstate[rk, D_DUPACKS] = -1
    # RETRANSMISSION / FAST RETRANSMISSION / OUT-OF-ORDER / SPURIOUS
    if (seglen > 0 or (fl & (SYN | FIN)) != 0) and (res & FLAG_KEEP_ALIVE) == 0:
        not_advanced = nset and _lt_seq(sq, nextseq)
        if seglen > 1 and ((nextseq - 1) & 0xFFFFFFFF) == sq:
            not_advanced = False  # new data after a possible zero-window probe
        ooo_thres = OOO_THRESHOLD_NS
        if fstate[slot, F_FIRST_RTT] != 0:
            ooo_thres = fstate[slot, F_FIRST_RTT]
        t_ack = t - dstate[rk, D_LASTACK_TS]
        t_seq = t - dstate[fk, D_NEXTSEQ_TS]
        seg_end = (sq + seglen) & 0xFFFFFFFF
        syn_fin = 1 if (fl & (SYN | FIN)) != 0 else 0
        if (seglen > 0 and dstate[rk, D_LASTACK_SET] == 1 and dstate[rk, D_LASTACK] != 0
                and not _gt_seq(seg_end, dstate[rk, D_LASTACK])):
            res |= FLAG_SPURIOUS_RETRANSMISSION
            dstate[fk, D_RETRANS] += 1
        elif (not_advanced and (dstate[rk, D_DUPACKS] >= 2 or dstate[rk, D_DUPACKS] == -1)
              and dstate[rk, D_LASTACK] == sq
              and t_ack < FAST_RETRANSMISSION_WINDOW_NS):
            res |= FLAG_FAST_RETRANSMISSION
            dstate[fk, D_RETRANS] += 1
        elif not_advanced and t_seq < ooo_thres and nextseq != ((seg_end + syn_fin) & 0xFFFFFFFF):
            res |= FLAG_OUT_OF_ORDER
            dstate[fk, D_OOO] += 1
        elif not_advanced:
            res |= FLAG_RETRANSMISSION
            dstate[fk, D_RETRANS] += 1
    # update next expected sequence number
    nxt = (sq + seglen) & 0xFFFFFFFF
    if (fl & (SYN | FIN)) != 0:
        nxt = (nxt + 1) & 0xFFFFFFFF
    if (_gt_seq(nxt, nextseq) or not nset) and (res & FLAG_ZERO_WINDOW_PROBE) == 0:
        dstate[fk, D_NEXTSEQ] = nxt
        dstate[fk, D_NEXTSEQ_SET] = 1
        dstate[fk, D_NEXTSEQ_TS] = t
    if (dstate[fk, D_MAXSEQ_TBA_SET] == 0 or sq == dstate[fk, D_MAXSEQ_TBA]) and (
            res & FLAG_ZERO_WINDOW_PROBE) == 0:
        dstate[fk, D_MAXSEQ_TBA] = dstate[fk, D_NEXTSEQ]
        dstate[fk, D_MAXSEQ_TBA_SET] = 1
    dstate[fk, D_WINDOW] = win
    dstate[fk, D_WIN_VALID] = 1
    if (fl & ACK) != 0:
        if dstate[fk, D_LASTACK_SET] == 1 and (fl & SYN) == 0:
            dstate[fk, D_IS_FIRST_ACK] = 0
        dstate[fk, D_LASTACK] = ak
        dstate[fk, D_LASTACK_SET] = 1
        dstate[fk, D_LASTACK_TS] = t
    dstate[fk, D_LASTSEGFLAGS] = res
    return res


@kernel(cache=True, _nrt=False)
def _timestamps(fk, rk, fl, tsval, tsecr, plen, t, end, res, dstate, out_tss, out_tsend,
                out_tsbits, i):
    """TCP timestamps RTT (RFC 7323 §4): one segment's TSval and TSecr.

    A side's value is timed from the first segment that carries it (a TSval above
    every one the side sent before, on a segment that is neither a retransmission
    nor a SYN: the handshake is ``handshake_rtt_ns``'s own sample) to
    the first later segment of the other side with TSecr equal to it; one value at a
    time per side (while one is timed, new values are not: as TCP timed one segment
    per round trip before timestamps). The other side echoes the TSval of the
    segment that last advanced its receive window (§4.3), so an echo of a later
    value means the timed one will never be echoed first: it is dropped. A
    retransmission by the timing side while its value is timed marks the sample
    (Karn: it may be the copy that was answered). The sample is written on the
    echoing packet: ``out_tss`` its first segment's time, ``out_tsend`` that
    segment's end offset, ``out_tsbits`` ``TS_*``.
    """
    if (fl & ACK) != 0 and dstate[rk, D_TS_PEND_SET] == 1:
        v = dstate[rk, D_TS_PEND_VAL]
        if tsecr == v:
            out_tss[i] = dstate[rk, D_TS_PEND_TS]
            out_tsend[i] = dstate[rk, D_TS_PEND_END]
            out_tsbits[i] = dstate[rk, D_TS_PEND_BITS] | (TS_ECHO_DATA if plen > 0 else 0)
            dstate[rk, D_TS_PEND_SET] = 0
        elif _gt_seq(tsecr, v):
            dstate[rk, D_TS_PEND_SET] = 0
    new = dstate[fk, D_TS_MAX_SET] == 0 or _gt_seq(tsval, dstate[fk, D_TS_MAX])
    if (res & _RETRANSMISSIONS) != 0:
        if dstate[fk, D_TS_PEND_SET] == 1:
            dstate[fk, D_TS_PEND_BITS] |= TS_RETRANSMITTED
    elif new and dstate[fk, D_TS_PEND_SET] == 0 and (fl & SYN) == 0:
        dstate[fk, D_TS_PEND_SET] = 1
        dstate[fk, D_TS_PEND_VAL] = tsval
        dstate[fk, D_TS_PEND_TS] = t
        dstate[fk, D_TS_PEND_END] = end
        dstate[fk, D_TS_PEND_BITS] = TS_SOURCE_DATA if plen > 0 else 0
    if new:
        dstate[fk, D_TS_MAX] = tsval
        dstate[fk, D_TS_MAX_SET] = 1


@kernel(cache=True, _nrt=False)
def _ts_clock(fk, t, tsval, idx, dstate, out_tsx, out_tsxv, out_tsxp, i):
    """The capture clock against one side's TSval clock, between two of its packets.

    A host's TSval clock runs on its own (Linux: the monotonic clock, in ms), so it
    is an independent witness of how much time passed: where the capture stamps a
    side's consecutive TS packets ``dt`` apart while its TSval advanced ``dv``
    ticks, ``dt - dv`` ms is time the capture clock gained on the host's. Written
    (``out_tsx``, with ``out_tsxv`` = dv and ``out_tsxp`` = the capture index of
    the earlier packet) only when the side's clock is shown to tick at 1 kHz on
    this capture's clock: it kept to it (TSC_SLACK_NS + TSC_DRIFT_NS_PER_TICK per
    tick) from its anchor to the earlier packet, over TSC_VERIFY_TICKS or more and
    TSC_VERIFY_PAIRS consecutive pairs that each kept to it.
    A pair that does not keep to it (a step, reordering) re-anchors the side.
    """
    if dstate[fk, D_TSC_SET] == 1:
        dv = (tsval - dstate[fk, D_TSC_V]) & 0xFFFFFFFF
        if dv >= 0x80000000:
            dv -= _U32
        e = (t - dstate[fk, D_TSC_T]) - dv * TSC_TICK_NS
        span_v = (dstate[fk, D_TSC_V] - dstate[fk, D_TSC_AV]) & 0xFFFFFFFF
        span_t = dstate[fk, D_TSC_T] - dstate[fk, D_TSC_AT]
        if (TSC_VERIFY_TICKS <= span_v < 0x80000000 and dstate[fk, D_TSC_N] >= TSC_VERIFY_PAIRS
                and abs(span_t - span_v * TSC_TICK_NS)
                <= TSC_SLACK_NS + span_v * TSC_DRIFT_NS_PER_TICK):
            out_tsx[i] = e
            out_tsxv[i] = dv
            out_tsxp[i] = dstate[fk, D_TSC_I]
        if abs(e) > TSC_SLACK_NS + max(dv, 0) * TSC_DRIFT_NS_PER_TICK:
            dstate[fk, D_TSC_AT] = t
            dstate[fk, D_TSC_AV] = tsval
            dstate[fk, D_TSC_N] = 0
        else:
            dstate[fk, D_TSC_N] += 1
    else:
        dstate[fk, D_TSC_SET] = 1
        dstate[fk, D_TSC_AT] = t
        dstate[fk, D_TSC_AV] = tsval
        dstate[fk, D_TSC_N] = 0
    dstate[fk, D_TSC_T] = t
    dstate[fk, D_TSC_V] = tsval
    dstate[fk, D_TSC_I] = idx


@dataclass(slots=True, kw_only=True)
class PacketFlows:
    """Per-packet output of ``FlowTracker.process`` (parallel to the chunk)."""

    flow_id: np.ndarray  # int64, -1 when the packet belongs to no TCP/UDP flow
    direction: np.ndarray  # int8: 0 = out (client -> server), 1 = in
    stream_offset: np.ndarray  # int64 unwrapped offset of the first payload byte
    flags: np.ndarray  # int32 FLAG_* mask
    ack_offset: np.ndarray  # int64 ACK as an offset in the other direction's stream, -1 if none
    # TCP timestamps RTT sample this packet's TSecr ends (``_timestamps``):
    ts_sent: np.ndarray  # int64 time of the timed segment, -1 when none
    ts_end: np.ndarray  # int64 its end offset (valid where ts_sent >= 0)
    ts_bits: np.ndarray  # int8 TS_* (valid where ts_sent >= 0)
    # the capture clock's gain on the sender's TSval clock since its previous TS packet
    # (``_ts_clock``): ns, NO_EXCESS when not measured; ticks elapsed; that packet's index
    clock_excess: np.ndarray  # int64
    clock_ticks: np.ndarray  # int64 (valid where clock_excess != NO_EXCESS)
    clock_prev: np.ndarray  # int64 capture index (valid where clock_excess != NO_EXCESS)


@kernel(cache=True)
def _release(slots, table, fkey_hash, fstate, free, counters):
    """Free ``slots``: unlink live ones from the hash table, push all on the free stack.

    The table is open addressing with linear probing (``table[pos]`` is a slot, -1
    empty), so a deletion shifts back the entries after the hole that may move into
    it (an entry may move when its home position is not in the cyclic range
    (hole, j]); the walk ends at the first empty position, and the table is at
    most half full.
    """
    mask = table.shape[0] - 1
    for k in range(slots.shape[0]):
        s = slots[k]
        if fstate[s, F_SLOT] == SLOT_LIVE:
            hole = fkey_hash[s]
            table[hole] = -1
            j = (hole + 1) & mask
            while table[j] >= 0:
                t = table[j]
                if ((j - fstate[t, F_HOME]) & mask) >= ((j - hole) & mask):
                    table[hole] = t
                    fkey_hash[t] = hole
                    table[j] = -1
                    hole = j
                j = (j + 1) & mask
        fstate[s, F_SLOT] = SLOT_FREE
        fkey_hash[s] = -1
        free[counters[C_FREE]] = s
        counters[C_FREE] += 1


@kernel(cache=True)
def _rehome(fstate, high_water):
    """Recompute the hash (``F_HOME``) of every live slot below ``high_water`` from its
    flow's ends (a resume state saved by a version that hashed differently)."""
    for s in range(high_water):
        if fstate[s, F_SLOT] == SLOT_LIVE:
            fstate[s, F_HOME] = _hash(fstate[s, F_A_HI], fstate[s, F_A_LO], fstate[s, F_A_PORT],
                                      fstate[s, F_B_HI], fstate[s, F_B_LO], fstate[s, F_B_PORT],
                                      fstate[s, F_PROTO])


@kernel(cache=True)
def _rehash(table, fkey_hash, fstate, high_water):
    """Insert every live slot below ``high_water`` into the empty ``table``."""
    mask = table.shape[0] - 1
    for s in range(high_water):
        if fstate[s, F_SLOT] == SLOT_LIVE:
            pos = fstate[s, F_HOME] & mask
            while table[pos] >= 0:
                pos = (pos + 1) & mask
            table[pos] = s
            fkey_hash[s] = pos


class FlowTracker:
    """Owns the flow table and per-direction TCP state across chunks.

    ``max_flows``, ``room_flows`` and ``grace_ns`` default to the module's
    ``MAX_FLOWS``, ``ROOM_FLOWS`` and ``GRACE_NS`` (read when the tracker is made).
    """

    N_COUNTS = 1

    def __init__(self, capacity: int = 1024, *, max_flows: int | None = None,
                 room_flows: int | None = None, grace_ns: int | None = None) -> None:
        self.max_flows = max(1, MAX_FLOWS if max_flows is None else max_flows)
        self.room_flows = ROOM_FLOWS if room_flows is None else room_flows
        self.grace_ns = GRACE_NS if grace_ns is None else grace_ns
        capacity = max(1, min(capacity, self.max_flows))
        self.table = np.full(_table_size(capacity), -1, np.int64)  # position -> slot
        self.fkey_hash = np.full(capacity, -1, np.int64)
        self.fstate = np.zeros((capacity, N_FSTATE), np.int64)
        self.fcnt = np.zeros((capacity, self.N_COUNTS), np.int64)
        self.dstate = np.zeros((2 * capacity, N_DSTATE), np.int64)
        self.free = np.zeros(capacity, np.int64)
        self.counters = np.zeros(3, np.int64)
        self.now = _INT64_MIN  # latest capture time seen
        self._retired: list[dict[str, np.ndarray]] = []
        self.forward = ForwardWatch()  # forward steps of the capture clock (TSval)
        self._clock_steps: list[Anomaly] = []

    def __getstate__(self) -> dict[str, object]:
        """For a resume state: the slots up to the high-water mark (those above it were
        never used: zeros, no hash entry) and the capacity, without the hash table
        (``__setstate__`` rebuilds both). At one-second files of many short connections
        the tracker holds ~10^4 flows (a minute of ended ones, ``GRACE_NS``): ~800 bytes
        a slot, written and read by every command of the set."""
        hw = int(self.counters[C_HIGH_WATER])
        state = dict(self.__dict__)
        del state["table"]
        state["_slots"] = (self.capacity, int(self.table.shape[0]))
        for name in ("fkey_hash", "fstate", "fcnt", "free"):
            state[name] = getattr(self, name)[:hw]
        state["dstate"] = self.dstate[: 2 * hw]
        return state

    def __setstate__(self, state: dict[str, object]) -> None:
        """A resume state (``__getstate__``; one written before it kept every slot and
        the hash table, and one written before ``dstate`` grew columns: pad them with
        zeros, nothing set, as for a new flow). The hash table is rebuilt with this
        version's ``_hash`` (a state may come from a version that hashed otherwise)."""
        state = dict(state)
        slots = state.pop("_slots", None)
        self.__dict__.update(state)
        self.__dict__.setdefault("forward", ForwardWatch())
        self.__dict__.setdefault("_clock_steps", [])
        if slots is not None:  # (trimmed to the high-water mark)
            cap, positions = cast(tuple[int, int], slots)
            for name in ("fkey_hash", "fstate", "fcnt", "dstate", "free"):
                old_rows = getattr(self, name)
                rows = cap * (2 if name == "dstate" else 1)
                new_rows = np.full((rows, *old_rows.shape[1:]), -1 if name == "fkey_hash" else 0,
                                   old_rows.dtype)
                new_rows[: old_rows.shape[0]] = old_rows
                setattr(self, name, new_rows)
            self.table = np.full(positions, -1, np.int64)
        old = self.dstate
        if old.shape[1] < N_DSTATE:
            self.dstate = np.zeros((old.shape[0], N_DSTATE), old.dtype)
            self.dstate[:, : old.shape[1]] = old
        hw = int(self.counters[C_HIGH_WATER])
        _rehome(self.fstate, hw)
        self.table = np.full(self.table.shape[0], -1, np.int64)
        _rehash(self.table, self.fkey_hash, self.fstate, hw)

    @property
    def n_flows(self) -> int:
        """Flows seen so far (the next flow id)."""
        return int(self.counters[C_NEXT_ID])

    @property
    def capacity(self) -> int:
        return int(self.fstate.shape[0])

    @property
    def n_held(self) -> int:
        """Flows whose state is held (open, or ended within the grace period)."""
        return int(self.counters[C_HIGH_WATER] - self.counters[C_FREE])

    def _grow(self) -> None:
        cap = min(self.capacity * 2, self.max_flows)
        for name in ("fkey_hash", "fstate", "fcnt", "dstate", "free"):
            old = getattr(self, name)
            shape = (cap * (2 if name == "dstate" else 1), *old.shape[1:])
            new = np.full(shape, -1 if name == "fkey_hash" else 0, old.dtype)
            new[: old.shape[0]] = old
            setattr(self, name, new)
        self.table = np.full(_table_size(cap), -1, np.int64)
        _rehash(self.table, self.fkey_hash, self.fstate, int(self.counters[C_HIGH_WATER]))

    def process(self, dec: DecodedChunk, ts: np.ndarray, wirelen: np.ndarray,
                index: np.ndarray) -> PacketFlows:
        """Assign flows and analyse every TCP segment of one decoded chunk.

        Flows retired meanwhile (see the module docstring) wait in
        ``take_retired``; the caller hands them on after it is done with the chunk.
        """
        n = len(dec)
        out = PacketFlows(
            flow_id=np.empty(n, np.int64), direction=np.empty(n, np.int8),
            stream_offset=np.empty(n, np.int64), flags=np.empty(n, np.int32),
            ack_offset=np.empty(n, np.int64), ts_sent=np.empty(n, np.int64),
            ts_end=np.empty(n, np.int64), ts_bits=np.empty(n, np.int8),
            clock_excess=np.empty(n, np.int64), clock_ticks=np.empty(n, np.int64),
            clock_prev=np.empty(n, np.int64),
        )
        i = 0
        for _attempt in range(n + 1):  # each pass either ends or makes room for packet i
            i = _kernel(
                i, dec.status, dec.proto, dec.src_hi, dec.src_lo, dec.dst_hi, dec.dst_lo,
                dec.sport, dec.dport, dec.vlan, dec.ip_version, dec.tcp_flags, dec.seq, dec.ack,
                dec.window, dec.wscale, dec.payload_len, wirelen, ts, index, dec.tsval,
                dec.tsecr, self.table, self.fkey_hash, self.fstate, self.fcnt, self.dstate,
                self.free, self.counters, out.flow_id, out.direction, out.stream_offset,
                out.flags, out.ack_offset, out.ts_sent, out.ts_end, out.ts_bits,
                out.clock_excess, out.clock_ticks, out.clock_prev,
            )
            if i >= n:
                break
            self._make_room(max(self.now, int(ts[: i + 1].max())))
        else:
            raise AssertionError("making room for a new flow freed no slot")
        if n:
            self.now = max(self.now, int(ts.max()))
        self._clock_steps += self.forward.check(ts, index, out.direction, out.clock_excess,
                                                out.clock_ticks, out.clock_prev)
        self._retire(self._quiet())
        return out

    def take_clock_steps(self) -> list[Anomaly]:
        """``clock_step_forward`` anomalies found since the last call
        (``parsers.capture.clock.ForwardWatch``)."""
        steps, self._clock_steps = self._clock_steps, []
        return steps

    # --- retiring flows -----------------------------------------------------------
    def _ended(self) -> np.ndarray:
        """Per slot (up to the high-water mark): live and closed by RST or FIN both ways."""
        hw = int(self.counters[C_HIGH_WATER])
        f = self.fstate[:hw]
        fins = (self.dstate[0 : 2 * hw : 2, D_FIN] == 1) & (self.dstate[1 : 2 * hw : 2, D_FIN] == 1)
        return (f[:, F_SLOT] == SLOT_LIVE) & ((f[:, F_END] == END_RST) | fins)

    def _quiet(self) -> np.ndarray:
        """Slots that may go now: detached ones, and ended ones past the grace period."""
        hw = int(self.counters[C_HIGH_WATER])
        f = self.fstate[:hw]
        since = max(self.now - self.grace_ns, _INT64_MIN)
        quiet = self._ended() & (f[:, F_LAST_TS] <= since)
        return np.flatnonzero(quiet | (f[:, F_SLOT] == SLOT_DETACHED))

    def _oldest(self, mask: np.ndarray, k: int) -> np.ndarray:
        """The ``k`` slots of ``mask`` whose last packet is the oldest."""
        slots = np.flatnonzero(mask)
        if slots.size > k:
            last = self.fstate[slots, F_LAST_TS]
            slots = slots[np.argpartition(last, k - 1)[:k]]
        return slots

    def _make_room(self, now: int) -> None:
        """No slot is free: retire what may go, else grow, else retire early/evict."""
        self.now = now
        self._retire(self._quiet())
        cap = self.capacity
        want = max(1, cap // 4)
        if int(self.counters[C_FREE]) >= want:
            return
        if cap < self.room_flows and cap < self.max_flows:
            self._grow()
            return
        need = want - int(self.counters[C_FREE])
        hw = int(self.counters[C_HIGH_WATER])
        f = self.fstate[:hw]
        udp = (f[:, F_SLOT] == SLOT_LIVE) & (f[:, F_PROTO] == IPPROTO_UDP)
        self._retire(self._oldest(self._ended() | udp, need))  # within the grace period
        if int(self.counters[C_FREE]) >= want:
            return
        if cap < self.max_flows:
            self._grow()
            return
        need = max(1, cap // 8 - int(self.counters[C_FREE]))
        hw = int(self.counters[C_HIGH_WATER])
        self._retire(self._oldest(self.fstate[:hw, F_SLOT] == SLOT_LIVE, need), evicted=True)

    def _retire(self, slots: np.ndarray, *, evicted: bool = False) -> None:
        if slots.size == 0:
            return
        slots = slots.astype(np.int64)
        cols = self._columns(slots)
        cols["evicted"] = np.full(slots.size, evicted)
        self._retired.append(cols)
        _release(slots, self.table, self.fkey_hash, self.fstate, self.free, self.counters)

    def take_retired(self) -> dict[str, np.ndarray] | None:
        """Columns of the flows retired since the last call, by flow id (None if none)."""
        if not self._retired:
            return None
        parts, self._retired = self._retired, []
        cols = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        order = np.argsort(cols["flow_id"], kind="stable")
        return {k: v[order] for k, v in cols.items()}

    def finish(self) -> dict[str, np.ndarray] | None:
        """End of capture: retire every flow still held; all columns not yet taken."""
        hw = int(self.counters[C_HIGH_WATER])
        self._retire(np.flatnonzero(self.fstate[:hw, F_SLOT] != SLOT_FREE))
        return self.take_retired()

    def held_flows(self) -> tuple[np.ndarray, np.ndarray]:
        """The ids of the flows held (open, ended within the grace period, detached),
        and which of them have ended (RST, or FIN in both directions)."""
        hw = int(self.counters[C_HIGH_WATER])
        f = self.fstate[:hw]
        held = f[:, F_SLOT] != SLOT_FREE
        return f[held, F_ID].copy(), self._ended()[held]

    def handshake_seen(self, flow_id: int) -> bool:
        """Was a SYN or SYN/ACK of this flow captured? (False: the connection was
        open before the capture began, or the flow is no longer known.)"""
        hw = int(self.counters[C_HIGH_WATER])
        f = self.fstate[:hw]
        # (a slot keeps its flow's id until reused: a flow retired within this chunk
        # is still there, else among the retired columns not yet taken)
        slot = np.flatnonzero(f[:, F_ID] == flow_id)
        if slot.size:
            return bool(f[slot[0], F_SYN_TS] >= 0 or f[slot[0], F_SYNACK_TS] >= 0)
        for cols in self._retired:
            hit = np.flatnonzero(cols["flow_id"] == flow_id)
            if hit.size:
                return bool(cols["syn_seen"][hit[0]])
        return False

    # --- summaries for the flows table ------------------------------------------
    def _columns(self, slots: np.ndarray) -> dict[str, np.ndarray]:
        """Per-flow columns of ``slots`` for the ``flows`` table (copies)."""
        f = self.fstate[slots]
        d_out = self.dstate[2 * slots]
        d_in = self.dstate[2 * slots + 1]
        syn, synack = f[:, F_SYN_TS], f[:, F_SYNACK_TS]
        rtt = np.where((syn >= 0) & (synack >= syn), synack - syn, -1)
        return {
            "flow_id": f[:, F_ID],
            "a_hi": f[:, F_A_HI].view(np.uint64), "a_lo": f[:, F_A_LO].view(np.uint64),
            "b_hi": f[:, F_B_HI].view(np.uint64), "b_lo": f[:, F_B_LO].view(np.uint64),
            "client_port": f[:, F_A_PORT], "server_port": f[:, F_B_PORT],
            "proto": f[:, F_PROTO], "first_ts": f[:, F_FIRST_TS], "last_ts": f[:, F_LAST_TS],
            "first_index": f[:, F_FIRST_INDEX], "end": f[:, F_END], "vlan": f[:, F_VLAN],
            "ip_version": f[:, F_IPV], "handshake_rtt_ns": rtt, "syn_seen": syn >= 0,
            "packets_out": d_out[:, D_PKTS], "packets_in": d_in[:, D_PKTS],
            "bytes_out": d_out[:, D_BYTES], "bytes_in": d_in[:, D_BYTES],
            "payload_bytes_out": d_out[:, D_PAYLOAD], "payload_bytes_in": d_in[:, D_PAYLOAD],
            "retransmissions": d_out[:, D_RETRANS] + d_in[:, D_RETRANS],
            "out_of_order": d_out[:, D_OOO] + d_in[:, D_OOO],
            "gaps": d_out[:, D_LOST] + d_in[:, D_LOST],
            "duplicate_acks": d_out[:, D_DUPACK_TOTAL] + d_in[:, D_DUPACK_TOTAL],
        }
