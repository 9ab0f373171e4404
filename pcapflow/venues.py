"""The venue registry: which exchange a connection talks to, and how to read it.

A flow's venue comes from, in this order:

1. the user's venue map (``--venues venues.toml``), entries tried in file order;
2. the built-in host rules (``HOST_RULES``), on the TLS SNI, then the HTTP
   Host (port stripped); an exact name wins over a suffix rule (a rule
   written ``.binance.com`` matches any name ending so);
3. for a connection with no name of its own (begun before the capture: no SNI, no
   Host), what ``pipelines.venue_infer`` finds: the venue other connections to the same
   server address were given (in this capture, else in the dataset's earlier captures),
   else the venue its request paths or WebSocket methods name (``CONTENT_RULES``);
4. nothing: venue NULL, and the flow is read with the generic matcher of its
   protocol (HTTP: ``rest``, WebSocket: ``jsonrpc``, FIX: ``fix``).
``flows.venue_source`` says which of these named the venue.

The venue map is TOML: a list of ``[[venue]]`` tables. Every key but ``name``
is optional; an entry matches a flow when every key it gives matches (a list
matches if any element does)::

    # venues.toml
    [[venue]]
    name = "binance"                  # written to flows.venue / latency.venue
    addresses = ["10.20.0.0/16"]      # server address or CIDR (IPv4 or IPv6)
    ports = [9000, 9001]              # server port
    matcher = "fix"                   # see MATCHERS below; default: by host / protocol

    [[venue]]
    name = "okx-colo"
    hosts = ["okx.colo.internal", ".okx-colo.example"]   # exact, or ".suffix"
    matcher = "okx"
    protocol = "websocket"            # rest | websocket | fix: the API kind, used to
                                      # pair undecrypted TLS (rest only)

    [[venue]]
    name = "mockfix"
    sender_comp_id = "PCFTRADER1"     # FIX 49 of OUR messages
    target_comp_id = "MOCKEX"         # FIX 56 of our messages

Matchers (``matcher = ...``) are the dialects of ``pipelines.venue_rules``:
binance, okx, bybit, coinbase, kraken, bitmex, gate, kucoin, bitget,
hyperliquid, jsonrpc (Deribit and generic JSON-RPC 2.0), rest (any venue's
REST paths), fix; and aliases such as ``binance_wsapi`` or ``deribit``.

A bad file raises ``ConfigError`` with one line naming the file and the
problem, when the map is loaded (before any capture is read).
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from .parsers.errors import ConfigError
from .pipelines.match import (
    INPUT_TABLES,
    MESSAGE_TABLES,
    MatchOutput,
    address_venues,
    match_tables,
)
from .pipelines.venue_rules import MATCHERS, Assignment, FlowContent, FlowFacts


@dataclass(frozen=True, slots=True, kw_only=True)
class HostRule:
    """Built-in: a host name (or ``.suffix``) -> venue, dialect and API kind."""

    host: str
    venue: str
    dialect: str
    protocol: str | None = None  # rest / websocket / fix when the host serves one kind


def _rules(venue: str, dialect: str, protocol: str | None, *hosts: str) -> list[HostRule]:
    return [HostRule(host=h, venue=venue, dialect=dialect, protocol=protocol) for h in hosts]


# Host names from venues.md (section per venue). Suffix rules last per venue.
HOST_RULES: list[HostRule] = [
    *_rules("binance", "binance", "rest", "api.binance.com", "api-gcp.binance.com",
            "api1.binance.com", "api2.binance.com", "api3.binance.com", "api4.binance.com",
            "testnet.binance.vision"),
    *_rules("binance", "binance", "websocket", "ws-api.binance.com",
            "ws-api.testnet.binance.vision", "stream.binance.com"),
    *_rules("binance", "fix", "fix", "fix-oe.binance.com", "fix-dc.binance.com",
            "fix-md.binance.com"),
    *_rules("binance_usdm", "binance", "rest", "fapi.binance.com", "demo-fapi.binance.com"),
    *_rules("binance_usdm", "binance", "websocket", "ws-fapi.binance.com",
            "testnet.binancefuture.com", "fstream.binance.com"),
    *_rules("binance_coinm", "binance", "rest", "dapi.binance.com"),
    *_rules("binance_coinm", "binance", "websocket", "ws-dapi.binance.com",
            "dstream.binance.com"),
    *_rules("binance", "binance", None, ".binance.com", ".binance.vision"),
    *_rules("okx", "okx", "rest", "www.okx.com", "okx.com", "eea.okx.com", "us.okx.com",
            "aws.okx.com"),
    *_rules("okx", "okx", "websocket", "ws.okx.com", "wspap.okx.com", "wseea.okx.com",
            "wsaws.okx.com", "wsus.okx.com"),
    *_rules("okx", "okx", None, ".okx.com"),
    *_rules("bybit", "bybit", "rest", "api.bybit.com", "api.bytick.com",
            "api-testnet.bybit.com", "api-demo.bybit.com", "api.bybit.nl", "api.bybit.tr",
            "api.bybit.kz", "api.bybitgeorgia.ge", "api.bybit.ae", "api.bybit.eu",
            "api.bybit.id"),
    *_rules("bybit", "bybit", "websocket", "stream.bybit.com", "stream-testnet.bybit.com",
            "stream.bytick.com"),
    *_rules("bybit", "bybit", None, ".bybit.com", ".bytick.com"),
    *_rules("coinbase", "coinbase", "rest", "api.coinbase.com"),
    *_rules("coinbase", "coinbase", "websocket", "advanced-trade-ws.coinbase.com",
            "advanced-trade-ws-user.coinbase.com"),
    *_rules("coinbase", "fix", "fix", "fix-ord.exchange.coinbase.com",
            "fix-ord.sandbox.exchange.coinbase.com", "fix-dc.exchange.coinbase.com",
            "fix.exchange.coinbase.com"),
    *_rules("coinbase", "coinbase", None, ".coinbase.com"),
    *_rules("kraken", "kraken", "rest", "api.kraken.com"),
    *_rules("kraken", "kraken", "websocket", "ws-auth.kraken.com", "ws.kraken.com",
            "beta-ws-auth.kraken.com", "beta-ws.kraken.com"),
    *_rules("kraken", "kraken", None, ".kraken.com"),
    *_rules("deribit", "jsonrpc", None, "www.deribit.com", "test.deribit.com", ".deribit.com"),
    *_rules("bitmex", "bitmex", "rest", "www.bitmex.com", "testnet.bitmex.com"),
    *_rules("bitmex", "bitmex", None, ".bitmex.com"),
    *_rules("gate", "gate", "rest", "api.gateio.ws"),
    *_rules("gate", "gate", None, ".gateio.ws", ".gate.io", ".gate.com"),
    *_rules("kucoin", "kucoin", "rest", "api.kucoin.com"),
    *_rules("kucoin", "kucoin", "websocket", "wsapi.kucoin.com", "mixed-ws-colo.kucoin.com"),
    *_rules("kucoin", "kucoin", None, ".kucoin.com"),
    *_rules("bitget", "bitget", "rest", "api.bitget.com"),
    *_rules("bitget", "bitget", "websocket", "ws.bitget.com"),
    *_rules("bitget", "bitget", None, ".bitget.com"),
    *_rules("hyperliquid", "hyperliquid", None, "api.hyperliquid.xyz",
            "api.hyperliquid-testnet.xyz", ".hyperliquid.xyz"),
]



@dataclass(frozen=True, slots=True, kw_only=True)
class ContentRule:
    """What a connection sent -> its venue (``venue=None``: the dialect is certain, the
    venue is not) and dialect. ``path``: a request path prefix (the longest matching
    prefix wins); ``field`` + ``values``: a WebSocket JSON call (a value ending in "/"
    or "." is a prefix, as "orderList." or "private/")."""

    venue: str | None
    dialect: str
    protocol: str
    path: str | None = None
    field: str | None = None
    values: tuple[str, ...] = ()


# Request paths and WebSocket calls that only one venue's API has (venues.md). Binance
# spot and futures share their WebSocket API's method names: the dialect is known, the
# venue is not. Paths shared by two venues (e.g. /api/v1/order*) are told apart by the
# longest prefix; anything still ambiguous names nothing.
CONTENT_RULES: list[ContentRule] = [
    ContentRule(venue="binance", dialect="binance", protocol="rest", path="/api/v3/"),
    ContentRule(venue="binance_usdm", dialect="binance", protocol="rest", path="/fapi/"),
    ContentRule(venue="binance_coinm", dialect="binance", protocol="rest", path="/dapi/"),
    ContentRule(venue="coinbase", dialect="coinbase", protocol="rest",
                path="/api/v3/brokerage/"),
    ContentRule(venue="okx", dialect="okx", protocol="rest", path="/api/v5/"),
    ContentRule(venue="bybit", dialect="bybit", protocol="rest", path="/v5/"),
    ContentRule(venue="kraken", dialect="kraken", protocol="rest", path="/0/private/"),
    ContentRule(venue="bitmex", dialect="bitmex", protocol="rest", path="/api/v1/order"),
    ContentRule(venue="kucoin", dialect="kucoin", protocol="rest", path="/api/v1/orders"),
    ContentRule(venue="kucoin", dialect="kucoin", protocol="rest", path="/api/v1/hf/"),
    ContentRule(venue="gate", dialect="gate", protocol="rest", path="/api/v4/"),
    ContentRule(venue="bitget", dialect="bitget", protocol="rest", path="/api/v2/"),
    ContentRule(venue="hyperliquid", dialect="hyperliquid", protocol="rest",
                path="/exchange"),
    ContentRule(venue=None, dialect="binance", protocol="websocket", field="method",
                values=("order.place", "order.cancel", "order.status", "session.logon",
                        "userDataStream.start", "ping", "time")),
    ContentRule(venue="binance", dialect="binance", protocol="websocket", field="method",
                values=("order.cancelReplace", "order.amend.keepPriority", "orderList.",
                        "sor.order.", "openOrders.cancelAll")),
    ContentRule(venue="binance_usdm", dialect="binance", protocol="websocket",
                field="method", values=("order.modify", "account.position",
                                        "v2/account.")),
    ContentRule(venue="okx", dialect="okx", protocol="websocket", field="op",
                values=("order", "batch-orders", "cancel-order", "batch-cancel-orders",
                        "amend-order", "batch-amend-orders", "login")),
    ContentRule(venue="bybit", dialect="bybit", protocol="websocket", field="op",
                values=("order.create", "order.cancel", "order.amend", "auth")),
    ContentRule(venue="deribit", dialect="jsonrpc", protocol="websocket", field="method",
                values=("private/", "public/auth")),
    ContentRule(venue="kraken", dialect="kraken", protocol="websocket", field="method",
                values=("add_order", "cancel_order", "amend_order", "edit_order")),
]


def _call_matches(rule: ContentRule, field_name: str, value: str) -> bool:
    return rule.field == field_name and any(
        value.startswith(v) if v.endswith(("/", ".")) else value == v for v in rule.values)


def content_rules(content: FlowContent) -> list[ContentRule]:
    """The rules a flow's content meets: per path its longest prefix rule, per call
    every rule naming it."""
    met: list[ContentRule] = []
    for path in content.paths:
        rules = [r for r in CONTENT_RULES if r.path is not None and path.startswith(r.path)]
        if rules:
            met.append(max(rules, key=lambda r: len(r.path or "")))
    for field_name, value in content.calls:
        met += [r for r in CONTENT_RULES if _call_matches(r, field_name, value)]
    return met


# The matcher a flow gets when no rule names one, by detected app protocol.
GENERIC_BY_PROTOCOL = {"http": "rest", "websocket": "jsonrpc", "fix": "fix"}
_ENTRY_KEYS = {"name", "matcher", "protocol", "hosts", "addresses", "ports",
               "sender_comp_id", "target_comp_id"}
_PROTOCOLS = ("rest", "websocket", "fix")

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True, kw_only=True)
class MapEntry:
    """One ``[[venue]]`` of a user venue map."""

    name: str
    matcher: str | None = None
    protocol: str | None = None
    hosts: tuple[str, ...] = ()
    addresses: tuple[IpNetwork, ...] = ()
    ports: tuple[int, ...] = ()
    sender_comp_id: str | None = None
    target_comp_id: str | None = None

    def matches(self, f: FlowFacts) -> bool:
        """True when every criterion this entry gives matches the flow."""
        if self.hosts and not any(_host_match(h, n) for h in self.hosts
                                  for n in _names(f)):
            return False
        if self.addresses and not _in_networks(f.server_ip, self.addresses):
            return False
        if self.ports and f.server_port not in self.ports:
            return False
        if self.sender_comp_id is not None and f.sender_comp_id != self.sender_comp_id:
            return False
        return self.target_comp_id is None or f.target_comp_id == self.target_comp_id


def _names(f: FlowFacts) -> list[str]:
    """SNI first, then the HTTP Host without its port, lower case."""
    out = []
    for n in (f.sni, f.http_host):
        if n:
            host = n.strip().lower()
            if host.startswith("["):  # [v6]:port
                host = host[1:].split("]", 1)[0]
            elif host.count(":") == 1:
                host = host.split(":", 1)[0]
            out.append(host.rstrip("."))
    return out


def _host_match(rule: str, name: str) -> bool:
    rule = rule.lower()
    return name.endswith(rule) if rule.startswith(".") else name == rule


def _in_networks(ip: str | None, nets: tuple[IpNetwork, ...]) -> bool:
    if not ip:
        return False
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return False
    return any(addr.version == n.version and addr in n for n in nets)


def _generic(f: FlowFacts) -> str:
    proto = (f.app_protocol or "").split("/")[-1]
    return GENERIC_BY_PROTOCOL.get(proto, "rest")


@dataclass(slots=True)
class VenueRegistry:
    """User map entries, then the built-in host rules (a ``venue_rules.Resolver``)."""

    entries: list[MapEntry] = field(default_factory=list)
    host_rules: list[HostRule] = field(default_factory=lambda: list(HOST_RULES))
    # The dataset's earlier captures: (server ip, port) -> the one venue named flows to
    # it were given; read on first use (``known_addresses``), None: no dataset.
    data: Path | None = None
    _known: dict[tuple[str, int], str] | None = None

    def host_rule(self, f: FlowFacts) -> HostRule | None:
        """The built-in rule for the flow's SNI, else its Host: exact beats suffix."""
        for name in _names(f):
            exact = [r for r in self.host_rules if r.host == name]
            if exact:
                return exact[0]
            suffix = [r for r in self.host_rules
                      if r.host.startswith(".") and name.endswith(r.host)]
            if suffix:
                return max(suffix, key=lambda r: len(r.host))
        return None

    def resolve(self, flow: FlowFacts) -> Assignment:
        """Venue and dialect of one flow."""
        rule = self.host_rule(flow)
        for e in self.entries:
            if e.matches(flow):
                if e.matcher is not None:
                    dialect = MATCHERS[e.matcher]
                else:
                    dialect = rule.dialect if rule else _generic(flow)
                return Assignment(venue=e.name, dialect=dialect,
                                  protocol=e.protocol or (rule.protocol if rule else None),
                                  source="map")
        if rule is not None:
            return Assignment(venue=rule.venue, dialect=rule.dialect, protocol=rule.protocol,
                              source="name")
        return Assignment(venue=None, dialect=_generic(flow), protocol=None)

    def by_known_address(self, flow: FlowFacts) -> Assignment | None:
        """The venue the dataset's earlier captures named for this server address."""
        if self._known is None:
            self._known = known_addresses(self.data) if self.data is not None else {}
        if flow.server_ip is None or flow.server_port is None:
            return None
        venue = self._known.get((flow.server_ip, flow.server_port))
        if venue is None:
            return None
        kind = _generic(flow)  # rest / jsonrpc / fix, by the flow's protocol
        rules = [r for r in self.host_rules if r.venue == venue]
        fit = [r for r in rules if r.protocol == {"jsonrpc": "websocket"}.get(kind, kind)]
        rule = (fit or rules)[0] if fit or rules else None
        return Assignment(venue=venue, dialect=rule.dialect if rule else kind,
                          protocol=rule.protocol if fit and rule else None, source="dataset")

    def by_content(self, flow: FlowFacts, content: FlowContent) -> Assignment | None:
        """The venue (or the dialect alone) the flow's paths and calls name."""
        met = content_rules(content)
        if len({r.dialect for r in met}) != 1:
            return None  # nothing recognised, or two venues' APIs: decide nothing
        venues = {r.venue for r in met} - {None}  # None: any venue of the dialect
        venue = venues.pop() if len(venues) == 1 else None
        return Assignment(venue=venue, dialect=met[0].dialect, protocol=met[0].protocol,
                          source="content" if venue is not None else None)


_KNOWN: dict[str, tuple[int, int, list[tuple[str, int, str]]]] = {}
"""Per file read (a set's ``known.arrow``, else a ``flows`` part), by path: its inode and
mtime (a replaced file is read again) and its named flows' distinct (server ip, port,
venue). ``pcapflow watch``'s worker ingests file after file: each is read once."""


def known_addresses(root: Path) -> dict[tuple[str, int], str]:
    """(server ip, port) -> venue over the dataset's flows that carried a name (SNI or
    Host), for the addresses all such flows agree on.

    A capture set that keeps state counts its flows' in its state
    (``pipelines.ingest.known``: read in O(its distinct addresses)); another capture's
    ``flows`` parts are read."""
    from .pipelines.ingest import known

    # (os.scandir, no pathlib: a capture without ``known.arrow`` may have many parts)
    files: list[str] = []
    try:
        with os.scandir(root / "flows") as captures:
            dirs = sorted(e.name for e in captures if e.name.startswith("capture_id="))
    except FileNotFoundError:
        return {}
    for name in dirs:
        kept = root / "_state" / name / known.KNOWN
        if kept.is_file():
            files.append(str(kept))
            continue
        try:
            with os.scandir(root / "flows" / name) as it:
                files += [e.path for e in it if e.name.endswith(".parquet")]
        except FileNotFoundError:
            continue
    if not files:
        return {}
    files.sort()
    venues: dict[tuple[str, int], set[str]] = {}
    for path in files:
        try:
            st = os.stat(path)
        except FileNotFoundError:
            continue
        have = _KNOWN.get(path)
        if have is None or have[:2] != (st.st_ino, st.st_mtime_ns):
            rows = known.read(path) if path.endswith(known.KNOWN) else known.part_triples(path)
            have = _KNOWN[path] = (st.st_ino, st.st_mtime_ns, rows)
        for ip, port, venue in have[2]:
            venues.setdefault((ip, port), set()).add(venue)
    if len(_KNOWN) > 2 * len(files) + 64:  # (files gone: forget them)
        now = set(files)
        for k in [k for k in _KNOWN if k not in now]:
            del _KNOWN[k]
    return {a: next(iter(v)) for a, v in venues.items() if len(v) == 1}


def _str_list(where: str, key: str, value: object) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(i, str) and i for i in items):
        raise ConfigError(f"{where}: {key} must be a string or a list of strings",
                          code="venue_map_bad_value")
    return tuple(items)


def _entry(where: str, raw: object) -> MapEntry:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: each [[venue]] must be a table", code="venue_map_bad_value")
    unknown = sorted(set(raw) - _ENTRY_KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r} "
                          f"(allowed: {', '.join(sorted(_ENTRY_KEYS))})",
                          code="venue_map_unknown_key")
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{where}: 'name' (a non-empty string) is required",
                          code="venue_map_missing_name")
    matcher = raw.get("matcher")
    if matcher is not None and matcher not in MATCHERS:
        raise ConfigError(f"{where}: unknown matcher {matcher!r} "
                          f"(known: {', '.join(sorted(MATCHERS))})",
                          code="venue_map_unknown_matcher")
    protocol = raw.get("protocol")
    if protocol is not None and protocol not in _PROTOCOLS:
        raise ConfigError(f"{where}: protocol must be one of {', '.join(_PROTOCOLS)}",
                          code="venue_map_bad_value")
    nets = []
    for a in _str_list(where, "addresses", raw.get("addresses", [])):
        try:
            nets.append(ipaddress.ip_network(a, strict=False))
        except ValueError as err:
            raise ConfigError(f"{where}: bad address {a!r}: {err}",
                              code="venue_map_bad_value") from err
    ports = raw.get("ports", [])
    ports = [ports] if isinstance(ports, int) else ports
    if not isinstance(ports, list) or not all(
            isinstance(p, int) and not isinstance(p, bool) and 0 < p < 65536 for p in ports):
        raise ConfigError(f"{where}: ports must be integers 1..65535",
                          code="venue_map_bad_value")
    comp = {}
    for key in ("sender_comp_id", "target_comp_id"):
        v = raw.get(key)
        if v is not None and not isinstance(v, str):
            raise ConfigError(f"{where}: {key} must be a string", code="venue_map_bad_value")
        comp[key] = v
    criteria = raw.keys() & {"hosts", "addresses", "ports", "sender_comp_id", "target_comp_id"}
    if not criteria:
        raise ConfigError(f"{where}: give at least one of hosts, addresses, ports, "
                          "sender_comp_id, target_comp_id", code="venue_map_no_criteria")
    return MapEntry(name=name, matcher=matcher, protocol=protocol,
                    hosts=_str_list(where, "hosts", raw.get("hosts", [])),
                    addresses=tuple(nets), ports=tuple(ports), **comp)


def load_venue_map(path: str | os.PathLike[str]) -> list[MapEntry]:
    """Parse a TOML venue map (format in the module docstring)."""
    import tomllib  # (only with a venue map: ~5 ms of every ingest's start otherwise)

    p = Path(path)
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except OSError as err:
        raise ConfigError(f"{p}: cannot read venue map: {err.strerror or err}",
                          code="venue_map_unreadable") from err
    except UnicodeDecodeError as err:
        raise ConfigError(f"{p}: venue map is not UTF-8 text",
                          code="venue_map_unreadable") from err
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{p}: invalid TOML: {err}", code="venue_map_syntax") from err
    unknown = sorted(set(data) - {"venue"})
    if unknown:
        raise ConfigError(f"{p}: unknown top-level key {unknown[0]!r} (expected [[venue]])",
                          code="venue_map_unknown_key")
    raw = data.get("venue", [])
    if not isinstance(raw, list):
        raise ConfigError(f"{p}: 'venue' must be an array of tables ([[venue]])",
                          code="venue_map_bad_value")
    return [_entry(f"{p}: venue #{i + 1}", r) for i, r in enumerate(raw)]


def registry(venues_path: str | os.PathLike[str] | None = None,
             data: str | os.PathLike[str] | None = None) -> VenueRegistry:
    """The built-in registry, preceded by the user's map when given; ``data``: the
    dataset whose earlier captures name server addresses (``by_known_address``)."""
    entries = load_venue_map(venues_path) if venues_path is not None else []
    return VenueRegistry(entries=entries, data=Path(data) if data is not None else None)


@dataclass(slots=True)
class IngestMatcher:
    """The ingest's matcher (a ``pipelines.match.Matcher``) over one venue registry.
    Called with the capture's id (the last call of an ingest), it also derives
    ``causes``, ``feed_gaps`` and ``alerts`` (``pcapflow.why``)."""

    registry: VenueRegistry

    def __call__(self, stage_dir: Path, flows: pa.Table,
                 capture_id: str | None = None) -> MatchOutput:
        if capture_id is None:
            from .pipelines.ingest.resume import staged_parts
            from .pipelines.prefilter import staged_candidates

            # the set's earlier parts too, when the ingest continues a rotation's set
            files = staged_parts(stage_dir, INPUT_TABLES)
            candidates = (staged_candidates(stage_dir, files["ws_messages"])
                          if any(files[t] for t in MESSAGE_TABLES) else None)
            return match_tables(files, flows, self.registry, candidates=candidates)
        from .why import nothing_to_derive

        if nothing_to_derive(stage_dir, MESSAGE_TABLES):
            # (a plain TCP capture: nothing to pair, and no derived row; the matcher's
            # empty tables and the venues of the flows it is given, as it would give them)
            return match_tables({}, flows, self.registry)
        from .pipelines import match_carry
        from .why import FeedPrep, derive_staged

        # the derive's feed work that needs no venue, in a thread beside the matcher
        prep = FeedPrep(stage_dir, capture_id, flows)
        try:
            # a rotation's command matches its own rows and what the set's previous one
            # carried (``match_carry``); the derived tables read the set's rows
            res = match_carry.match(stage_dir, flows, self.registry, capture_id)
            final, provisional = derive_staged(stage_dir, capture_id, flows, res.whole,
                                               prep)
        finally:
            prep.bursts_done()  # (nothing reads the staging directory past the ingest's end)
        return MatchOutput(flow_venue=res.whole.flow_venue,
                           tables={**res.provisional, **provisional},
                           flow_venue_source=res.whole.flow_venue_source,
                           final={**res.final, **final, **(
                               {"anomalies": res.anomalies} if res.anomalies is not None
                               else {})})

    def venues(self, addresses: pa.Table) -> pa.Table:
        return address_venues(addresses, self.registry)


def make_matcher(
    venues_path: str | os.PathLike[str] | None = None,
    data: str | os.PathLike[str] | None = None,
) -> IngestMatcher:
    """The ingest's matcher: loads the venue map now (errors raised here)."""
    return IngestMatcher(registry(venues_path, data))
