"""Without a key log: request/response pairs from TLS record timing (encrypted.sql)."""

from __future__ import annotations

from pathlib import Path

from helpers.match_util import T0, Wire, rows

HANDSHAKE, CCS, DATA = 22, 20, 23


def tls13_handshake(w: Wire, f: object) -> None:
    w.tls(f, 0, "out", 517, HANDSHAKE)       # ClientHello
    w.tls(f, 1, "in", 127, HANDSHAKE)        # ServerHello
    w.tls(f, 1, "in", 6, CCS)
    for n in (43, 823, 101, 74):             # EncryptedExtensions .. Finished
        w.tls(f, 2, "in", n)
    w.tls(f, 3, "out", 6, CCS)
    w.tls(f, 3, "out", 74)                   # client Finished (application_data outside)


def test_tls13_rest_flow(tmp_path: Path) -> None:
    w = Wire()
    f = w.flow(sni="api.binance.com", app_protocol="tls")
    tls13_handshake(w, f)
    w.tls(f, 4, "in", 271)                   # NewSessionTickets before the first request
    w.tls(f, 4, "in", 271)
    w.tls(f, 10, "out", 355)                 # request 0
    w.rtt(f, 10, 30_000)
    w.tls(f, 20, "in", 281)                  # response 0
    w.tls(f, 30, "out", 560)                 # request 1: two records
    w.tls(f, 31, "out", 200)
    w.tls(f, 50, "in", 16_406)               # response 1: three records
    w.tls(f, 51, "in", 16_406)
    w.tls(f, 55, "in", 900)
    w.tls(f, 60, "out", 400)                 # request 2, never answered
    w.tls(f, 61, "out", 24)                  # close_notify (too short for HTTP)
    w.tls(f, 62, "in", 24)
    out = w.match(tmp_path)
    lat = rows(out, "latency")
    assert [(r["correlation_id"], r["order_ts"] - T0, r["ack_ts"] - T0, r["latency_ns"])
            for r in lat] == [(f"#0.0@{T0 + 10_000}", 10_000, 20_000, 10_000),
                              (f"#0.1@{T0 + 31_000}", 31_000, 55_000, 24_000)]
    for r in lat:
        assert (r["venue"], r["protocol"], r["kind"], r["endpoint"], r["decoded"],
                r["status"]) == ("binance", "rest", "unknown", None, False, None)
    assert lat[0]["network_rtt_ns"] == 30_000
    un = rows(out, "unmatched")
    assert [(u["what"], u["correlation_id"], u["decoded"]) for u in un] == [
        ("order", f"#0.2@{T0 + 60_000}", False)]
    assert {o["source_table"] for o in rows(out, "orders")} == {"tls_records"}


def test_tls12_flow_and_what_is_left_alone(tmp_path: Path) -> None:
    w = Wire()
    rest = w.flow(sni="api.bybit.com", app_protocol="tls", tls_version="1.2")
    w.tls(rest, 0, "out", 200, HANDSHAKE)
    w.tls(rest, 1, "in", 3000, HANDSHAKE)
    w.tls(rest, 2, "out", 6, CCS)
    w.tls(rest, 2, "out", 45, HANDSHAKE)     # Finished is a handshake record in TLS 1.2
    w.tls(rest, 3, "in", 45, HANDSHAKE)
    w.tls(rest, 10, "out", 300)
    w.tls(rest, 14, "in", 500)
    # a WebSocket host: records do not alternate as requests and responses
    ws = w.flow(sni="ws.okx.com", app_protocol="tls")
    w.tls(ws, 10, "out", 300)
    w.tls(ws, 14, "in", 500)
    # a flow whose records were decrypted is matched from its messages instead
    dec = w.flow(sni="api.binance.com", app_protocol="tls/http")
    w.tls(dec, 10, "out", 300, decrypted=True)
    w.tls(dec, 14, "in", 500, decrypted=True)
    # unknown host: only with ALPN http/1.1
    alpn = w.flow(sni="gw.example", app_protocol="tls", alpn="http/1.1", tls_version="1.2")
    w.tls(alpn, 20, "out", 300)
    w.tls(alpn, 27, "in", 500)
    none = w.flow(sni="gw.example", app_protocol="tls", tls_version="1.2")
    w.tls(none, 20, "out", 300)
    w.tls(none, 27, "in", 500)
    out = w.match(tmp_path)
    lat = rows(out, "latency")
    assert [(r["flow_id"], r["venue"], r["latency_ns"]) for r in lat] == [
        (0, "bybit", 4_000), (3, None, 7_000)]
