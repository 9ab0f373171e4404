"""Issue 15's opening figures, reproducible: captures as they are really taken.

    sudo python benchmarks/issue15_figures.py [--work /tmp/i15] [--messages 720000]
                                              [--json benchmarks/results/issue15_figures.json]

Root is needed to record the two TLS 1.3 captures (``make_tls_ws_capture.py``: a
network namespace and tcpdump); they are kept in ``--work`` (git-ignored sizes: the big
one is ~140 MB) and reused when present. Each scenario prints how many orders pcapflow
finds of how many the whole conversation holds, and the anomalies and coverage line
it gives:

A. a 1M-packet TLS 1.3 capture (4 WebSocket market-data connections, one WS API order
   connection, one REST order connection) split by time into 4 files with
   ``editcap -i``: ingested in one command (a capture set) and joined with ``mergecap``
   first; total = orders the client sent (the generator's count);
B. the real rotated ccxt session ``sample_pcaps/rotated_binance/`` (``tcpdump -G 2 -z
   gzip``, 7 files): the folder in one command, and one file per command (resume across
   commands, issue 15.2); total = the client's truth;
C. plain WebSocket JSON-RPC with the upgrade not captured: the Deribit sample's real
   frames over plain TCP (``tests/midstream_util.plain_copy``) cut at 20/45/70 % of its
   segments after the upgrade; total = the whole plain copy's orders after the cut;
D. TLS 1.3 REST with 2 of 3 handshakes before the capture: three REST order
   connections opened 1.5 s apart (plus WS market data and WS API orders), the capture
   cut between the second and third REST handshakes; total = the whole capture's REST
   orders after the cut;
E. TLS 1.2 with no handshake: the OKX sample (TLS 1.2) cut in half, and the TLS 1.2
   connection of ``sample_pcaps/midsession_binance/`` (a real capture begun
   mid-session); total = orders after the cut (whole capture, resp. the client's truth).
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import struct
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "sample_pcaps"
sys.path.insert(0, str(REPO / "tests"))

import pcapflow  # noqa: E402
from pcapflow.coverage import coverage  # noqa: E402


def _orders(data: Path) -> tuple[pcapflow.Dataset, int]:
    """Orders found decoded (pairs known only from TLS record timing, ``decoded``
    false, are not counted: they carry no ids)."""
    ds = pcapflow.open(data)
    return ds, int(ds.scalar("SELECT count(*) FROM latency WHERE leg = 'ack' AND decoded"))


def _anomalies(ds: pcapflow.Dataset, where: str = "") -> str:
    rows = ds.fetchall(f"SELECT code, count(*) FROM anomalies {where} GROUP BY 1 ORDER BY 1")
    return ", ".join(f"{c} {n}" for c, n in rows) or "0"


def _row(name: str, how: str, found: int, total: int, ds: pcapflow.Dataset | None,
         anomalies: str = "", seconds: float | None = None) -> dict[str, object]:
    cov = coverage(ds).line() if ds is not None else ""
    row = {"scenario": name, "how": how, "found": found, "total": total,
           "anomalies": anomalies or (_anomalies(ds) if ds is not None else ""),
           "coverage": cov.removeprefix("coverage: "), "seconds": seconds}
    print(f"{name} | {how} | {found} of {total} | {row['anomalies']} | {row['coverage']}",
          flush=True)
    return row


def _ingest(paths: list, data: Path, keylog: list[Path] | None = None,
            venues: Path | None = None) -> tuple[pcapflow.Dataset, int, float]:
    shutil.rmtree(data, ignore_errors=True)
    t0 = time.perf_counter()
    pcapflow.ingest(paths, keylog=keylog or [], data=data, venues=venues)
    seconds = time.perf_counter() - t0
    ds, n = _orders(data)
    return ds, n, seconds


def _make(work: Path, name: str, *args: str) -> tuple[Path, Path, dict[str, int]]:
    """A TLS 1.3 capture from make_tls_ws_capture.py (kept and reused)."""
    cap, meta = work / f"{name}.pcap", work / f"{name}.json"
    if not (cap.exists() and meta.exists()):
        out = subprocess.run([sys.executable, str(REPO / "benchmarks" /
                                                  "make_tls_ws_capture.py"),
                              "--out", str(cap), *args], capture_output=True, text=True,
                             check=True)
        meta.write_text(out.stdout.strip().splitlines()[-1])
    return cap, cap.with_suffix(".keylog"), json.loads(meta.read_text())


def _records(path: Path) -> tuple[bytes, list[tuple[int, bytes]]]:
    """(header, [(ts ns, record)]) of a little-endian nanosecond pcap."""
    raw = path.read_bytes()
    assert raw[:4] == b"\x4d\x3c\xb2\xa1", "nanosecond pcap expected"
    out, pos = [], 24
    while pos + 16 <= len(raw):
        sec, ns, incl = struct.unpack_from("<III", raw, pos)
        out.append((sec * 10**9 + ns, raw[pos : pos + 16 + incl]))
        pos += 16 + incl
    return raw[:24], out


def _from_time(src: Path, dst: Path, t: int) -> None:
    """``src`` from its first packet at or after ``t``: a capture begun at ``t``."""
    head, recs = _records(src)
    dst.write_bytes(head + b"".join(r for ts, r in recs if ts >= t))


# ----------------------------------------------------------------------------- A
def scenario_a(work: Path, messages: int) -> list[dict[str, object]]:
    cap, key, meta = _make(work, "ws1m", "--messages", str(messages), "--md-conns", "4",
                           "--rest-conns", "1")
    total = meta["orders"] + meta["rest_orders"]
    parts_dir = work / "ws1m_parts"
    shutil.rmtree(parts_dir, ignore_errors=True)
    parts_dir.mkdir()
    _, recs = _records(cap)
    span = (recs[-1][0] - recs[0][0]) / 1e9
    subprocess.run(["editcap", "-F", "nsecpcap", "-i", str(math.ceil(span / 4)), str(cap),
                    str(parts_dir / "ws1m.pcap")], check=True, capture_output=True)
    parts = sorted(parts_dir.iterdir())
    rows = []
    ds, n, s = _ingest([str(p) for p in parts], work / "d_a_set", [key])
    rows.append(_row(f"A. {len(recs):,}-packet TLS 1.3, split by time into {len(parts)} files",
                     "one command (set)", n, total, ds, seconds=s))
    joined = work / "ws1m_joined.pcap"
    subprocess.run(["mergecap", "-F", "nsecpcap", "-w", str(joined), *map(str, parts)],
                   check=True, capture_output=True)
    ds, n, s = _ingest([str(joined)], work / "d_a_joined", [key])
    rows.append(_row("A.", "mergecap-joined", n, total, ds, seconds=s))
    joined.unlink()
    data = work / "d_a_each"
    shutil.rmtree(data, ignore_errors=True)
    for p in parts:
        pcapflow.ingest([str(p)], keylog=[key], data=data)
    ds, n = _orders(data)
    rows.append(_row("A.", "one file per command", n, total, ds))
    return rows


# ----------------------------------------------------------------------------- B
def scenario_b(work: Path) -> list[dict[str, object]]:
    rot = SAMPLES / "rotated_binance"
    key = rot / "rotated_binance.keylog"
    total = len((rot / "rotated_binance.truth.jsonl").read_text().splitlines())
    files = sorted(p for p in rot.iterdir() if p.name.startswith("binance-"))
    rows = []
    ds, n, s = _ingest([str(rot)], work / "d_b_set", [key])
    rows.append(_row(f"B. ccxt session rotated by tcpdump -G 2 -z gzip ({len(files)} files)",
                     "folder, one command", n, total, ds, seconds=s))
    data = work / "d_b_each"
    shutil.rmtree(data, ignore_errors=True)
    for p in files:
        pcapflow.ingest([str(p)], keylog=[key], data=data)
    ds, n = _orders(data)
    rows.append(_row("B.", "one file per command", n, total, ds))
    return rows


# ----------------------------------------------------------------------------- C
def scenario_c(work: Path) -> list[dict[str, object]]:
    from midstream_util import plain_copy, write_cut

    segs = plain_copy(SAMPLES / "deribit_jsonrpc_tls13.pcap",
                      SAMPLES / "deribit_jsonrpc_tls13.keylog")
    venues = work / "venues_c.toml"
    venues.write_text('[[venue]]\nname = "deribit"\naddresses = ["10.0.0.2"]\n'
                      'matcher = "deribit"\n')
    whole = work / "c_whole.pcap"
    write_cut(whole, segs, 0)
    ds_whole, _, _ = _ingest([str(whole)], work / "d_c_whole", venues=venues)
    after_upgrade = next(i for i, s in enumerate(segs) if s.data.startswith(b"HTTP/1.1 101")) + 1
    rows = []
    for frac in (0.2, 0.45, 0.7):
        k = after_upgrade + int(frac * (len(segs) - after_upgrade))
        cut = work / f"c_cut{k}.pcap"
        write_cut(cut, segs, k)
        total = int(ds_whole.scalar("SELECT count(*) FROM latency WHERE leg = 'ack' AND "
                                    f"epoch_ns(order_ts) > {segs[k].ts}"))
        ds, n, _ = _ingest([str(cut)], work / f"d_c_{k}", venues=venues)
        rows.append(_row("C. plain WebSocket JSON-RPC, upgrade not captured",
                         f"cut at {int(frac * 100)}% after the upgrade", n, total, ds))
    return rows


# ----------------------------------------------------------------------------- D
def scenario_d(work: Path) -> list[dict[str, object]]:
    cap, key, _ = _make(work, "rest3", "--messages", "30000", "--md-conns", "1",
                        "--rest-conns", "3", "--rest-stagger", "1.5")
    ds_full, _, _ = _ingest([str(cap)], work / "d_d_full", [key])
    starts = [t for (t,) in ds_full.fetchall(
        "SELECT epoch_ns(first_ts) FROM flows WHERE sni = 'api.binance.com' ORDER BY 1")]
    assert len(starts) == 3, starts
    cut_t = (starts[1] + starts[2]) // 2  # after the 2nd REST handshake, before the 3rd
    rest = "AND endpoint LIKE 'POST %'"
    total = int(ds_full.scalar("SELECT count(*) FROM latency WHERE leg = 'ack' AND "
                               f"epoch_ns(order_ts) >= {cut_t} {rest}"))
    total_all = int(ds_full.scalar("SELECT count(*) FROM latency WHERE leg = 'ack' AND "
                                   f"epoch_ns(order_ts) >= {cut_t}"))
    cut = work / "rest3_cut.pcap"
    _from_time(cap, cut, cut_t)
    ds, n_all, _ = _ingest([str(cut)], work / "d_d_cut", [key])
    n = int(ds.scalar(f"SELECT count(*) FROM latency WHERE leg = 'ack' AND decoded {rest}"))
    return [_row("D. TLS 1.3 REST, 2 of 3 handshakes before the capture", "REST orders",
                 n, total, ds),
            _row("D.", "all orders (+ WS API)", n_all, total_all, ds)]


# ----------------------------------------------------------------------------- E
def scenario_e(work: Path) -> list[dict[str, object]]:
    src, key = SAMPLES / "okx_ws_tls12.pcap", SAMPLES / "okx_ws_tls12.keylog"
    head, recs = _records(src)
    cut_t = recs[len(recs) // 2][0]
    ds_full, _, _ = _ingest([str(src)], work / "d_e_full", [key])
    total = int(ds_full.scalar("SELECT count(*) FROM latency WHERE leg = 'ack' AND "
                               f"epoch_ns(order_ts) >= {cut_t}"))
    cut = work / "okx_cut.pcap"
    cut.write_bytes(head + b"".join(r for _, r in recs[len(recs) // 2:]))
    ds, n, _ = _ingest([str(cut)], work / "d_e_cut", [key])
    rows = [_row("E. TLS 1.2, no handshake (OKX sample cut in half)", "with its key log",
                 n, total, ds)]
    mid = SAMPLES / "midsession_binance"
    truth = [json.loads(x) for x in (mid / "midsession_binance.truth.jsonl").read_text()
             .splitlines()]
    port = {t["local_port"] for t in truth if t["extra"]["tls"] == "1.2"}.pop()
    total = sum(1 for t in truth if t["local_port"] == port and t["extra"]["phase"] == "after")
    venues = work / "venues_e.toml"
    venues.write_text('[[venue]]\nname = "binance"\nports = [443, 9443]\nmatcher = "binance"\n')
    ds, _, _ = _ingest([str(mid)], work / "d_e_mid", [mid / "midsession_binance.keylog"],
                       venues=venues)
    n = int(ds.scalar("SELECT count(*) FROM latency l JOIN flows f USING (capture_id, flow_id) "
                      f"WHERE l.leg = 'ack' AND l.decoded AND f.client_port = {port}"))
    where = f"WHERE flow_id IN (SELECT flow_id FROM flows WHERE client_port = {port})"
    rows.append(_row("E. TLS 1.2 connection of midsession_binance (real, ccxt)",
                     "with its key log", n, total, ds, anomalies=_anomalies(ds, where)))
    per_conn = Counter()
    for t in truth:
        if t["extra"]["phase"] == "after":
            per_conn[(t["extra"]["transport"], t["extra"]["tls"], t["extra"]["deflate"])] += 1
    got = dict(ds.fetchall("SELECT f.client_port, count(*) FROM latency l JOIN flows f USING "
                           "(capture_id, flow_id) WHERE l.leg = 'ack' AND l.decoded "
                           "GROUP BY 1"))
    for (transport, tls, deflate), total in sorted(per_conn.items()):
        p = {t["local_port"] for t in truth if (t["extra"]["transport"], t["extra"]["tls"],
                                                t["extra"]["deflate"]) == (transport, tls,
                                                                           deflate)}.pop()
        w = f"WHERE flow_id IN (SELECT flow_id FROM flows WHERE client_port = {p})"
        label = f"{transport} TLS {tls}" + (" deflate" if deflate else "")
        rows.append(_row("F. midsession_binance (real capture begun mid-session), per conn",
                         label, got.get(p, 0), total, ds, anomalies=_anomalies(ds, w)))
    ds, n, _ = _ingest([str(mid)], work / "d_f_nomap", [mid / "midsession_binance.keylog"])
    after = sum(1 for t in truth if t["extra"]["phase"] == "after")
    timed = int(ds.scalar("SELECT count(*) FROM latency WHERE leg = 'ack' AND NOT decoded"))
    rows.append(_row("F.", f"no venue map (+{timed} TLS 1.2 pairs from record timing only)",
                     n, after, ds))
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, default=Path("/tmp/i15"))
    ap.add_argument("--messages", type=int, default=720_000,
                    help="market-data messages of capture A (720k: ~1M packets)")
    ap.add_argument("--only", default="ABCDE", help="scenarios to run (letters)")
    ap.add_argument("--json", type=Path, help="write the rows here")
    a = ap.parse_args(argv)
    a.work.mkdir(parents=True, exist_ok=True)
    runs = {"A": lambda: scenario_a(a.work, a.messages), "B": lambda: scenario_b(a.work),
            "C": lambda: scenario_c(a.work), "D": lambda: scenario_d(a.work),
            "E": lambda: scenario_e(a.work)}
    print("scenario | how | orders found | anomalies | coverage")
    rows = [r for k in a.only for r in runs[k]()]
    if a.json:
        a.json.write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
