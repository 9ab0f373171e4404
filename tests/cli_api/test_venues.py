"""The venue registry: built-in host rules, the TOML venue map and its errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from pcapflow.parsers.errors import ConfigError
from pcapflow.pipelines.venue_rules import MATCHERS, FlowFacts, rule_tables

from pcapflow.venues import (
    HOST_RULES,
    VenueRegistry,
    load_venue_map,
    make_matcher,
    registry,
)


def facts(**kw: object) -> FlowFacts:
    base: dict[str, object] = {"flow_id": 0, "server_ip": "203.0.113.7", "server_port": 443,
                               "sni": None, "http_host": None, "app_protocol": "tls/http",
                               "alpn": None}
    return FlowFacts(**(base | kw))  # type: ignore[arg-type]


@pytest.mark.parametrize(("sni", "venue", "dialect", "protocol"), [
    ("api.binance.com", "binance", "binance", "rest"),
    ("api3.binance.com", "binance", "binance", "rest"),
    ("ws-api.binance.com", "binance", "binance", "websocket"),
    ("ws-api.testnet.binance.vision", "binance", "binance", "websocket"),
    ("fix-oe.binance.com", "binance", "fix", "fix"),
    ("fapi.binance.com", "binance_usdm", "binance", "rest"),
    ("ws-fapi.binance.com", "binance_usdm", "binance", "websocket"),
    ("dapi.binance.com", "binance_coinm", "binance", "rest"),
    ("www.okx.com", "okx", "okx", "rest"),
    ("ws.okx.com", "okx", "okx", "websocket"),
    ("wseea.okx.com", "okx", "okx", "websocket"),
    ("api.bybit.com", "bybit", "bybit", "rest"),
    ("api.bytick.com", "bybit", "bybit", "rest"),
    ("stream.bybit.com", "bybit", "bybit", "websocket"),
    ("api.coinbase.com", "coinbase", "coinbase", "rest"),
    ("fix-ord.exchange.coinbase.com", "coinbase", "fix", "fix"),
    ("api.kraken.com", "kraken", "kraken", "rest"),
    ("ws-auth.kraken.com", "kraken", "kraken", "websocket"),
    ("www.deribit.com", "deribit", "jsonrpc", None),
    ("test.deribit.com", "deribit", "jsonrpc", None),
    ("www.bitmex.com", "bitmex", "bitmex", "rest"),
    ("api.gateio.ws", "gate", "gate", "rest"),
    ("wsapi.kucoin.com", "kucoin", "kucoin", "websocket"),
    ("ws.bitget.com", "bitget", "bitget", "websocket"),
    ("api.hyperliquid.xyz", "hyperliquid", "hyperliquid", None),
    # suffix rules
    ("api-something-new.binance.com", "binance", "binance", None),
    ("private.okx.com", "okx", "okx", None),
    ("API.BINANCE.COM.", "binance", "binance", "rest"),
])
def test_builtin_host_rules(sni: str, venue: str, dialect: str, protocol: str | None) -> None:
    a = VenueRegistry().resolve(facts(sni=sni))
    assert (a.venue, a.dialect, a.protocol) == (venue, dialect, protocol)


def test_sni_wins_over_host_and_host_port_is_stripped() -> None:
    reg = VenueRegistry()
    assert reg.resolve(facts(sni="ws.okx.com", http_host="api.bybit.com")).venue == "okx"
    a = reg.resolve(facts(http_host="stream.binance.com:9443"))
    assert (a.venue, a.protocol) == ("binance", "websocket")
    assert reg.resolve(facts(http_host="[2001:db8::1]:443")).venue is None


def test_suffix_rule_needs_a_label_boundary() -> None:
    reg = VenueRegistry()
    assert reg.resolve(facts(sni="notbinance.com")).venue is None
    assert reg.resolve(facts(sni="binance.com.evil.example")).venue is None


@pytest.mark.parametrize(("app", "dialect"), [
    ("tls/http", "rest"), ("http", "rest"), ("tls/websocket", "jsonrpc"), ("fix", "fix"),
    ("tls/fix", "fix"), (None, "rest"), ("unknown", "rest"),
])
def test_unknown_hosts_get_the_generic_matcher(app: str | None, dialect: str) -> None:
    a = VenueRegistry().resolve(facts(sni="colo.example.net", app_protocol=app))
    assert (a.venue, a.dialect) == (None, dialect)


def test_every_rule_names_a_known_dialect() -> None:
    dialects = set(MATCHERS.values())
    assert {r.dialect for r in HOST_RULES} <= dialects
    tables = rule_tables()
    for name in ("rest_actions", "ws_actions", "ws_dialects", "engine_streams"):
        assert set(tables[name].column("dialect").to_pylist()) <= dialects, name
    kinds = set(tables["rest_actions"].column("kind").to_pylist())
    assert kinds == set(tables["ws_actions"].column("kind").to_pylist()) == {
        "new", "cancel", "amend"}


MAP = """
# colocation and private endpoints
[[venue]]
name = "binance-colo"
addresses = ["10.20.0.0/16", "2001:db8::/32"]
ports = [9000]
matcher = "fix"

[[venue]]
name = "okx-private"
hosts = ["okx.colo.internal", ".okx-colo.example"]
matcher = "okx_ws"
protocol = "websocket"

[[venue]]
name = "mockfix"
sender_comp_id = "PCFTRADER1"
target_comp_id = "MOCKEX"

[[venue]]
name = "my-binance"
hosts = "api.binance.com"
"""


@pytest.fixture
def venue_map(tmp_path: Path) -> Path:
    p = tmp_path / "venues.toml"
    p.write_text(MAP)
    return p


def test_venue_map_entries(venue_map: Path) -> None:
    entries = load_venue_map(venue_map)
    assert [e.name for e in entries] == ["binance-colo", "okx-private", "mockfix", "my-binance"]
    reg = registry(venue_map)
    a = reg.resolve(facts(server_ip="10.20.3.4", server_port=9000, app_protocol="tls/fix"))
    assert (a.venue, a.dialect) == ("binance-colo", "fix")
    assert reg.resolve(facts(server_ip="2001:db8::5", server_port=9000)).venue == "binance-colo"
    # every criterion of an entry must hold
    assert reg.resolve(facts(server_ip="10.20.3.4", server_port=9001)).venue is None
    assert reg.resolve(facts(server_ip="10.21.0.1", server_port=9000)).venue is None
    a = reg.resolve(facts(sni="a.okx-colo.example", app_protocol="tls/websocket"))
    assert (a.venue, a.dialect, a.protocol) == ("okx-private", "okx", "websocket")
    a = reg.resolve(facts(app_protocol="fix", sender_comp_id="PCFTRADER1",
                          target_comp_id="MOCKEX"))
    assert (a.venue, a.dialect) == ("mockfix", "fix")
    assert reg.resolve(facts(app_protocol="fix", sender_comp_id="PCFTRADER1",
                             target_comp_id="OTHER")).venue is None
    # a map entry without a matcher keeps the built-in rule's dialect and kind
    a = reg.resolve(facts(sni="api.binance.com"))
    assert (a.venue, a.dialect, a.protocol) == ("my-binance", "binance", "rest")
    # the built-in rules still apply to everything else
    assert reg.resolve(facts(sni="www.deribit.com")).venue == "deribit"


@pytest.mark.parametrize(("text", "code"), [
    ("[[venue]\nname = 'x'", "venue_map_syntax"),
    ("[[venue]]\nname = 'x'\nhosts = ['a']\ncolour = 'red'", "venue_map_unknown_key"),
    ("[[venues]]\nname = 'x'", "venue_map_unknown_key"),
    ("venue = 3", "venue_map_bad_value"),
    ("[[venue]]\nhosts = ['a']", "venue_map_missing_name"),
    ("[[venue]]\nname = ''\nhosts = ['a']", "venue_map_missing_name"),
    ("[[venue]]\nname = 'x'", "venue_map_no_criteria"),
    ("[[venue]]\nname = 'x'\naddresses = ['10.0.0.0/33']", "venue_map_bad_value"),
    ("[[venue]]\nname = 'x'\naddresses = ['not-an-ip']", "venue_map_bad_value"),
    ("[[venue]]\nname = 'x'\nports = [0]", "venue_map_bad_value"),
    ("[[venue]]\nname = 'x'\nports = ['443']", "venue_map_bad_value"),
    ("[[venue]]\nname = 'x'\nports = [true]", "venue_map_bad_value"),
    ("[[venue]]\nname = 'x'\nhosts = [1]", "venue_map_bad_value"),
    ("[[venue]]\nname = 'x'\nsender_comp_id = 5", "venue_map_bad_value"),
    ("[[venue]]\nname = 'x'\nhosts = ['a']\nmatcher = 'nasdaq_ouch'", "venue_map_unknown_matcher"),
    ("[[venue]]\nname = 'x'\nhosts = ['a']\nprotocol = 'sbe'", "venue_map_bad_value"),
])
def test_bad_venue_map_is_one_clear_line(tmp_path: Path, text: str, code: str) -> None:
    p = tmp_path / "bad.toml"
    p.write_text(text)
    with pytest.raises(ConfigError) as info:
        make_matcher(p)  # raised when the map is loaded, before any capture is read
    assert info.value.code == code
    msg = str(info.value)
    assert str(p) in msg and "\n" not in msg


def test_unreadable_venue_map(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_venue_map(tmp_path / "missing.toml")
    assert info.value.code == "venue_map_unreadable"
    p = tmp_path / "latin1.toml"
    p.write_bytes(b"[[venue]]\nname = '\xe9'\n")
    with pytest.raises(ConfigError) as info:
        load_venue_map(p)
    assert info.value.code == "venue_map_unreadable"


def test_no_map_means_builtin_only() -> None:
    assert registry(None).entries == []
    assert callable(make_matcher(None))
