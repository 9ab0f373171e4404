"""Reference FIX messages, encoded by ``simplefix`` (an independent implementation:
it computes BodyLength and CheckSum itself): spec examples for FIX 4.2, 4.4 and
FIXT.1.1, shared by the FIX, detection and redaction tests."""

from __future__ import annotations

import simplefix

SOH = b"\x01"


def _encode(begin: str, msg_type: str, seq: int, body: list[tuple[int, str]]) -> bytes:
    m = simplefix.FixMessage()
    m.append_pair(8, begin, header=True)
    m.append_pair(35, msg_type, header=True)
    m.append_pair(49, "CLIENT1", header=True)
    m.append_pair(56, "EXCH", header=True)
    m.append_pair(34, seq, header=True)
    m.append_pair(52, "20240611-09:01:46.228", header=True)
    for tag, value in body:
        m.append_pair(tag, value)
    return m.encode()


def logon() -> bytes:
    """Logon (A) with Username/Password and a RawData signature holding an SOH."""
    m = simplefix.FixMessage()
    m.append_pair(8, "FIXT.1.1", header=True)
    m.append_pair(35, "A", header=True)
    m.append_pair(49, "CLIENT1", header=True)
    m.append_pair(56, "Coinbase", header=True)
    m.append_pair(34, 1, header=True)
    m.append_pair(52, "20240611-09:01:46.000", header=True)
    m.append_pair(98, 0)
    m.append_pair(108, 30)
    m.append_pair(553, "api-key-1")
    m.append_pair(554, "pass phrase")
    m.append_data(95, 96, b"sig\x01with=soh")
    m.append_pair(1137, 9)
    return m.encode()


def new_order_single() -> bytes:
    return _encode(
        "FIX.4.2", "D", 2,
        [(11, "ord-1"), (21, "1"), (55, "BTC-USD"), (54, "1"), (60, "20240611-09:01:46.228"),
         (38, "5"), (40, "2"), (44, "10.5")],
    )


def execution_report() -> bytes:
    """ExecutionReport (8) with a NoPartyIDs (453) repeating group of two entries."""
    return _encode(
        "FIX.4.4", "8", 3,
        [(37, "76"), (11, "ord-1"), (17, "144"), (150, "0"), (39, "0"), (55, "BTC-USD"),
         (54, "1"), (151, "5"), (14, "0"), (6, "0"), (453, "2"), (448, "P1"), (447, "D"),
         (452, "1"), (448, "P2"), (447, "D"), (452, "3"), (58, "accepté")],
    )


def cancel_request() -> bytes:
    return _encode(
        "FIX.4.4", "F", 4,
        [(43, "Y"), (11, "cxl-1"), (41, "ord-1"), (37, "76"), (54, "1"), (55, "BTC-USD"),
         (60, "20240611-09:01:47.000")],
    )
