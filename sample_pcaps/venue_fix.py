"""FIX 4.4 over plain TCP: a small asyncio acceptor (mock venue) and initiator (trader).

How this works: both ends frame and parse with simplefix (it computes BodyLength
(9) and CheckSum (10) on encode and checks framing on parse). `FixSession` keeps
the session layer: MsgSeqNum (34) per direction, SendingTime (52), Heartbeat (0)
after HeartBtInt (108) seconds without sending, TestRequest (1) / Heartbeat with
TestReqID (112), ResendRequest (2) answered by resending the stored message with
PossDupFlag (43=Y) and OrigSendingTime (122), and Logout (5).

The acceptor answers NewOrderSingle (D) with ExecutionReport (8) ExecType 0 New or
8 Rejected (notional over the limit), OrderCancelRequest (F) with 8 ExecType 4
Canceled or OrderCancelReject (9, 434=1) for an unknown order, and
OrderCancelReplaceRequest (G) with 8 ExecType 5 Replaced or 9 with 434=2. The
initiator logs on with Username/Password (553/554) and RawData (95/96), sends
~60 order actions, writes three orders in one send (one TCP segment) and one
order in two sends 5 ms apart (split across segments), idles long enough for
heartbeats and the venue's TestRequest, asks for one ExecutionReport again with a
ResendRequest, and logs out.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Iterable
from typing import Any

import simplefix
from common import (
    FIX_PASSWORD,
    FIX_RAW_DATA,
    FIX_USERNAME,
    RunCtx,
    ServerDelay,
    TruthLog,
    TruthRecord,
    announce_ready,
    listen_socket,
    pause,
    wait_for_stop,
)

PORT = 9878
CLIENT_COMP, VENUE_COMP = "PCFTRADER1", "MOCKEX"
VENUE = "mockfix"
HEART_BT_INT = 1  # seconds
MAX_STORED = 10_000  # sent messages kept for ResendRequest
READ_CHUNK = 65_536
NOTIONAL_LIMIT = 50_000.0
ADMIN = {b"0", b"1", b"2", b"4", b"5", b"A"}


def _s(msg: simplefix.FixMessage, tag: int) -> str:
    raw = msg.get(tag)
    return raw.decode() if raw is not None else ""


class FixSession:
    """Session layer over one asyncio stream pair."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 sender: str, target: str) -> None:
        self.reader, self.writer = reader, writer
        self.sender, self.target = sender, target
        self.out_seq = 0
        self.sent: dict[int, simplefix.FixMessage] = {}
        self.last_send = time.monotonic()
        self.parser = simplefix.FixParser()
        self.closed = False

    def build(self, msg_type: str, fields: Iterable[tuple[int, Any]]) -> simplefix.FixMessage:
        self.out_seq += 1
        msg = simplefix.FixMessage()
        msg.append_pair(8, "FIX.4.4", header=True)
        msg.append_pair(35, msg_type, header=True)
        msg.append_pair(49, self.sender, header=True)
        msg.append_pair(56, self.target, header=True)
        msg.append_pair(34, self.out_seq, header=True)
        msg.append_utc_timestamp(52, precision=3, header=True)
        for tag, value in fields:
            msg.append_pair(tag, value)
        if len(self.sent) < MAX_STORED:
            self.sent[self.out_seq] = msg
        return msg

    async def write(self, data: bytes) -> None:
        self.writer.write(data)
        self.last_send = time.monotonic()
        await self.writer.drain()

    async def send(self, msg_type: str, fields: Iterable[tuple[int, Any]] = ()) -> int:
        msg = self.build(msg_type, fields)
        await self.write(msg.encode())
        return self.out_seq

    async def resend(self, seq: int) -> None:
        """Answer a ResendRequest for `seq`: the stored message with 43=Y and 122."""
        old = self.sent[seq]
        msg = simplefix.FixMessage()
        for tag, value in old.pairs:
            if int(tag) in (9, 10):
                continue
            if int(tag) == 52:
                msg.append_pair(43, "Y", header=True)
                msg.append_utc_timestamp(52, precision=3, header=True)
                msg.append_pair(122, value, header=True)
            else:
                msg.append_pair(int(tag), value, header=int(tag) in (8, 35, 49, 56, 34))
        await self.write(msg.encode())

    async def read(self) -> simplefix.FixMessage | None:
        while True:
            msg = self.parser.get_message()
            if msg is not None:
                return msg
            data = await self.reader.read(READ_CHUNK)
            if not data:
                return None
            self.parser.append_buffer(data)

    async def heartbeats(self) -> None:
        while not self.closed:
            await asyncio.sleep(0.1)
            if time.monotonic() - self.last_send >= HEART_BT_INT and not self.closed:
                await self.send("0")


# ====================================================================== acceptor
class MockVenue:
    def __init__(self, session: FixSession, seed: int) -> None:
        self.s = session
        self.delay = ServerDelay(seed + 31)
        self.rng = random.Random(seed + 32)
        self.orders: dict[str, dict[str, str]] = {}  # live orders by ClOrdID
        self.next_order = 880_000
        self.exec_id = 0
        self.test_sent = False

    def _exec(self, o: dict[str, str], exec_type: str, status: str, cl: str,
              orig: str | None = None, text: str | None = None) -> list[tuple[int, Any]]:
        self.exec_id += 1
        fields: list[tuple[int, Any]] = [(37, o.get("order_id", "NONE")),
                                         (17, f"E{self.exec_id:07d}"), (11, cl)]
        if orig:
            fields.append((41, orig))
        fields += [(150, exec_type), (39, status), (55, o["symbol"]), (54, o["side"]),
                   (38, o["qty"]), (44, o["px"]), (40, "2"), (59, "1"),
                   (151, "0" if status in "48" else o["qty"]), (14, "0"), (6, "0")]
        fields.append((60, time.strftime("%Y%m%d-%H:%M:%S", time.gmtime()) + ".000"))
        if text:
            fields.append((58, text))
        return fields

    async def on_new(self, m: simplefix.FixMessage) -> None:
        o = {"symbol": _s(m, 55), "side": _s(m, 54), "qty": _s(m, 38), "px": _s(m, 44)}
        cl = _s(m, 11)
        if float(o["qty"]) * float(o["px"]) > NOTIONAL_LIMIT:
            fields = self._exec(o, "8", "8", cl, text="Insufficient balance")
            await self.s.send("8", [*fields, (103, "3")])
            return
        self.next_order += self.rng.randint(1, 9)
        o["order_id"] = str(self.next_order)
        self.orders[cl] = o
        await self.s.send("8", self._exec(o, "0", "0", cl))

    async def on_cancel(self, m: simplefix.FixMessage, replace: bool) -> None:
        cl, orig = _s(m, 11), _s(m, 41)
        o = self.orders.pop(orig, None)
        if o is None:
            await self.s.send("9", [(37, "NONE"), (11, cl), (41, orig), (39, "8"),
                                    (434, "2" if replace else "1"), (102, "1"),
                                    (58, "Unknown order")])
            return
        if replace:
            o.update(qty=_s(m, 38) or o["qty"], px=_s(m, 44) or o["px"])
            self.orders[cl] = o
            await self.s.send("8", self._exec(o, "5", "0", cl, orig))
        else:
            await self.s.send("8", self._exec(o, "4", "4", cl, orig))

    async def dispatch(self, m: simplefix.FixMessage) -> bool:
        kind = m.get(35)
        if kind == b"A":
            ok = _s(m, 554) == FIX_PASSWORD and _s(m, 553) == FIX_USERNAME
            await (self.s.send("A", [(98, 0), (108, HEART_BT_INT), (141, "Y")]) if ok else
                   self.s.send("5", [(58, "Invalid password")]))
            return ok
        if kind == b"0" and not self.test_sent:
            self.test_sent = True
            await self.s.send("1", [(112, f"TEST{self.rng.randint(1000, 9999)}")])
        elif kind == b"1":
            await self.s.send("0", [(112, _s(m, 112))])
        elif kind == b"2":
            for seq in range(int(_s(m, 7)), int(_s(m, 16)) + 1):
                await self.s.resend(seq)
        elif kind == b"5":
            await self.s.send("5")
            return False
        elif kind in (b"D", b"F", b"G"):
            await self.delay.sleep()
            await (self.on_new(m) if kind == b"D" else self.on_cancel(m, kind == b"G"))
        return True


async def serve(ctx: RunCtx) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        session = FixSession(reader, writer, VENUE_COMP, CLIENT_COMP)
        venue = MockVenue(session, ctx.seed)
        hb = asyncio.create_task(session.heartbeats())
        tasks: set[asyncio.Task[bool]] = set()
        while (m := await session.read()) is not None:
            if m.get(35) in ADMIN:
                if not await venue.dispatch(m):
                    break
                continue
            task = asyncio.create_task(venue.dispatch(m))  # orders may overtake each other
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        session.closed = True
        hb.cancel()
        writer.close()

    server = await asyncio.start_server(handle, sock=listen_socket(ctx.bind_ip, PORT))
    async with server:
        announce_ready()
        await wait_for_stop()


# ====================================================================== initiator
class Trader:
    def __init__(self, ctx: RunCtx, log: TruthLog, session: FixSession, port: int) -> None:
        self.ctx, self.log, self.s, self.port = ctx, log, session, port
        self.rng = random.Random(ctx.seed * 43)
        self.pending: dict[str, tuple[TruthRecord, asyncio.Future[None]]] = {}
        self.live: list[str] = []
        self.seen_exec_seq: list[int] = []
        self.tasks: set[asyncio.Task[int]] = set()
        self.n = 0
        self.logon = asyncio.get_running_loop().create_future()
        self.logout = asyncio.get_running_loop().create_future()

    def _cl(self, prefix: str) -> str:
        self.n += 1
        return f"{prefix}{self.n:05d}{self.rng.randint(100, 999)}"

    def on_message(self, m: simplefix.FixMessage, mono: int, wall: int) -> None:
        kind = m.get(35)
        if kind == b"A" and not self.logon.done():
            self.logon.set_result(None)
        elif kind == b"5" and not self.logout.done():
            self.logout.set_result(None)
        elif kind == b"1":
            task = asyncio.create_task(self.s.send("0", [(112, _s(m, 112))]))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        elif kind in (b"8", b"9") and m.get(43) != b"Y":
            self.seen_exec_seq.append(int(_s(m, 34)))
            entry = self.pending.pop(_s(m, 11), None)
            if entry is None:
                return
            rec, fut = entry
            rec.recv_mono_ns, rec.recv_wall_ns = mono, wall
            rec.status = f"35={kind.decode()}" + (f" 150={_s(m, 150)}" if kind == b"8" else "")
            rec.outcome = "accepted" if kind == b"8" and _s(m, 150) in "045" else "rejected"
            rec.exchange_order_id = _s(m, 37) if _s(m, 37) != "NONE" else None
            rec.error_code = _s(m, 102) or _s(m, 103) or None
            if rec.outcome == "accepted" and rec.kind != "cancel":
                self.live.append(rec.client_order_id or "")
            fut.set_result(None)

    async def reader(self) -> None:
        while (m := await self.s.read()) is not None:
            self.on_message(m, time.monotonic_ns(), time.time_ns())

    def _order(self, kind: str, orig: str | None = None, big: bool = False
               ) -> tuple[simplefix.FixMessage, TruthRecord, asyncio.Future[None]]:
        msg_type = {"new": "D", "cancel": "F", "amend": "G"}[kind]
        cl = self._cl({"new": "N", "cancel": "C", "amend": "R"}[kind])
        fields: list[tuple[int, Any]] = [(11, cl)]
        if orig:
            fields.append((41, orig))
        qty = "9" if big else self.rng.choice(["0.01", "0.02", "0.05"])
        fields += [(55, "BTC-USD"), (54, self.rng.choice("12")),
                   (60, time.strftime("%Y%m%d-%H:%M:%S", time.gmtime()) + ".000")]
        if kind != "cancel":
            fields += [(38, qty), (40, "2"), (44, f"{self.rng.uniform(60000, 70000):.2f}"),
                       (59, "1")]
        msg = self.s.build(msg_type, fields)
        rec = self.log.add(TruthRecord(
            scenario=self.ctx.scenario, venue=VENUE, endpoint=msg_type, kind=kind, conn_id=1,
            local_port=self.port, request_id=self.s.out_seq, client_order_id=cl,
            orig_client_order_id=orig))
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.pending[cl] = (rec, fut)
        return msg, rec, fut

    async def one(self, kind: str, *, split: bool = False, big: bool = False,
                  orig: str | None = None) -> None:
        if kind != "new" and orig is None:
            orig = self.live.pop(self.rng.randrange(len(self.live))) if self.live else "GONE1"
        msg, rec, fut = self._order(kind, orig, big)
        data = msg.encode()
        rec.mark_sent()
        if split:
            rec.extra["split"] = True
            await self.s.write(data[: len(data) // 2])
            await asyncio.sleep(0.005)
        await self.s.write(data[len(data) // 2:] if split else data)
        await fut

    async def batch(self, n: int) -> None:
        built = [self._order("new") for _ in range(n)]
        for _, rec, _ in built:
            rec.mark_sent()
            rec.extra["batched"] = n
        await self.s.write(b"".join(m.encode() for m, _, _ in built))
        await asyncio.gather(*(f for _, _, f in built))

    async def run(self, steps: int, idle_s: float) -> None:
        await self.s.send("A", [(98, 0), (108, HEART_BT_INT), (141, "Y"), (553, FIX_USERNAME),
                                (554, FIX_PASSWORD), (95, len(FIX_RAW_DATA)),
                                (96, FIX_RAW_DATA)])
        await asyncio.wait_for(self.logon, 5)
        hb = asyncio.create_task(self.s.heartbeats())
        for step in range(steps):
            if step == 4:
                await self.batch(3)
            elif step == steps // 2:
                await asyncio.sleep(idle_s)  # heartbeats + TestRequest
                await self.s.send("2", [(7, self.seen_exec_seq[2]), (16, self.seen_exec_seq[2])])
            elif step == 9:
                await self.one("new", split=True)
            elif step % 4 == 3:
                await self.one("cancel")
            elif step % 6 == 5:
                await self.one("amend")
            elif step in (13, 40):  # unknown order -> OrderCancelReject (35=9)
                await self.one("cancel" if step == 13 else "amend", orig=f"GONE{step}")
            else:
                await self.one("new", big=step % 10 == 8)
            await pause(self.rng, 1.0, 6.0)
        while self.live:
            await self.one("cancel")
        self.s.closed = True
        hb.cancel()
        await self.s.send("5")
        await asyncio.wait_for(self.logout, 5)


async def client(ctx: RunCtx) -> None:
    log = TruthLog(ctx)
    reader, writer = await asyncio.open_connection(ctx.connect_ip, PORT)
    session = FixSession(reader, writer, CLIENT_COMP, VENUE_COMP)
    trader = Trader(ctx, log, session, writer.get_extra_info("sockname")[1])
    read_task = asyncio.create_task(trader.reader())
    if ctx.small:
        await trader.run(steps=12, idle_s=1.3)
    else:
        await trader.run(steps=44, idle_s=2.5)
    writer.close()
    await writer.wait_closed()
    read_task.cancel()
    log.write()
