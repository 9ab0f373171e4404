"""What the matching SQL needs to know about each venue, declared as data.

How this works. The SQL in ``pipelines/sql/`` knows the *shapes* of order entry
(an HTTP request and its response; a JSON request and the reply carrying the
same id; a FIX message and the execution report carrying its ClOrdID) but no
venue. Each venue's specifics are rows of the tables below, keyed by a
*dialect*, and are registered with DuckDB as tables of the same names:

``rest_actions``
    method + path (a SQL ``LIKE`` pattern; optionally a JSON body field that
    names the action, as Hyperliquid's ``action.type``) -> kind, and where the
    client order id, the original client order id and the exchange order id
    of the order acted on are. An entry is a parameter name (looked up in the
    query string, then the form body, then the top level of a JSON body) or a
    JSON path starting with ``$``.
``rest_replies``
    where a response body holds the exchange order id and the error code,
    and which codes mean "outcome unknown" (Binance ``-1007``).
``ws_dialects`` / ``ws_actions``
    JSON paths of the request id, the method/op, the reply id; action names
    -> kind and id paths (venues.md section 15.4 lists the id pairs).
``engine_streams`` / ``engine_states``
    how to recognise the venue's private order-stream events (the second leg,
    venues.md 15.5) and how their state maps to new / cancel / amend.

Lists of paths are tried in order; the first non-null value wins. A flow is
tied to a dialect by the venue registry (``pcapflow.venues``) through the
``Resolver`` protocol below, so this module does not know host names.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import pyarrow as pa

# --- The interface between the venue registry and the matcher ----------------


@dataclass(frozen=True, slots=True, kw_only=True)
class FlowFacts:
    """What the registry may look at to tie a connection to a venue."""

    flow_id: int
    server_ip: str | None
    server_port: int | None
    sni: str | None
    http_host: str | None
    app_protocol: str | None
    alpn: str | None
    sender_comp_id: str | None = None  # FIX 49 of our (outbound) messages
    target_comp_id: str | None = None  # FIX 56 of our (outbound) messages


@dataclass(frozen=True, slots=True, kw_only=True)
class Assignment:
    """A flow's venue (None = unknown) and the dialect its messages are read with."""

    venue: str | None
    dialect: str
    # "rest", "websocket" or "fix" when the rule knows the API kind (used to
    # decide whether an undecrypted TLS flow is HTTP/1.1 REST); None otherwise.
    protocol: str | None = None
    # How the venue was found (``flows.venue_source``): "map" (the user's venue map),
    # "name" (SNI / Host), "address", "dataset" or "content" (``venue_infer``); None
    # when there is no venue.
    source: str | None = None


@dataclass(frozen=True, slots=True)
class FlowContent:
    """What a connection without a name sent: request paths (query cut off) and the
    WebSocket calls, as (JSON field, value) pairs such as ("method", "order.place")."""

    paths: tuple[str, ...] = ()
    calls: tuple[tuple[str, str], ...] = ()


class Resolver(Protocol):
    """Ties a flow to a venue and dialect (``pcapflow.venues.VenueRegistry``)."""

    def resolve(self, flow: FlowFacts) -> Assignment: ...

    def by_known_address(self, flow: FlowFacts) -> Assignment | None:
        """The venue earlier captures of the dataset named for the flow's server
        address and port (one venue only), else None."""
        ...

    def by_content(self, flow: FlowFacts, content: FlowContent) -> Assignment | None:
        """The venue (or at least the dialect) the flow's paths and calls name, else None."""
        ...


ADDRESS_KEY = ("server_ip", "server_port", "app_protocol")
"""What the venue of a flow without application-layer data depends on: it has no SNI,
Host, ALPN, FIX comp ids or content, so its server address, port and (``None`` or
``"unknown"``) protocol are all of its ``FlowFacts`` a ``Resolver`` can look at."""
ADDRESS_VENUES = pa.schema([
    ("server_ip", pa.string()), ("server_port", pa.int32()), ("app_protocol", pa.string()),
    ("venue", pa.string()), ("venue_source", pa.string()),
])
"""The venue of each distinct ``ADDRESS_KEY`` (``match.address_venues``)."""


# --- Dialects -----------------------------------------------------------------

# Generic dialects serve flows no venue rule names (DESIGN.md "Venues and
# matching"): "rest" applies every venue's REST action rows by method + path,
# "jsonrpc" is JSON-RPC 2.0 with Deribit's method names, "fix" is FIX 4.x/5.0.
GENERIC_DIALECTS = ("rest", "jsonrpc", "fix")
VENUE_DIALECTS = ("binance", "okx", "bybit", "coinbase", "kraken", "bitmex", "gate",
                  "kucoin", "bitget", "hyperliquid")
DIALECTS = VENUE_DIALECTS + GENERIC_DIALECTS

# Matcher names a venue map may use -> dialect. Venue-flavoured names are
# accepted for readability; the transport is taken from the flow itself.
MATCHERS: dict[str, str] = {d: d for d in DIALECTS} | {
    "binance_rest": "binance", "binance_wsapi": "binance", "binance_futures": "binance",
    "okx_rest": "okx", "okx_ws": "okx", "bybit_rest": "bybit", "bybit_ws": "bybit",
    "coinbase_rest": "coinbase", "kraken_rest": "kraken", "kraken_ws": "kraken",
    "deribit": "jsonrpc", "bitmex_rest": "bitmex", "gate_ws": "gate", "kucoin_ws": "kucoin",
    "bitget_ws": "bitget", "hyperliquid_ws": "hyperliquid", "http": "rest",
}

# --- REST -----------------------------------------------------------------------

_REST_ACTION_COLUMNS = ("dialect", "method", "path_like", "body_path", "body_value", "kind",
                        "coid", "orig_coid", "orig_order_id")

# (dialect, method, path LIKE, body field naming the action, its value, kind,
#  client order id, original client order id, exchange order id acted on)
REST_ACTIONS: list[tuple[object, ...]] = [
    # Binance spot [venues.md 1], USD-M [2] and COIN-M (same shapes under /dapi)
    ("binance", "POST", "/api/v3/order", None, None, "new", ["newClientOrderId"], [], []),
    ("binance", "DELETE", "/api/v3/order", None, None, "cancel", ["newClientOrderId"],
     ["origClientOrderId"], ["orderId"]),
    ("binance", "POST", "/api/v3/order/cancelReplace", None, None, "amend",
     ["newClientOrderId"], ["cancelOrigClientOrderId"], ["cancelOrderId"]),
    ("binance", "PUT", "/api/v3/order/amend/keepPriority", None, None, "amend",
     ["newClientOrderId"], ["origClientOrderId"], ["orderId"]),
    ("binance", "POST", "/fapi/v1/order", None, None, "new", ["newClientOrderId"], [], []),
    ("binance", "PUT", "/fapi/v1/order", None, None, "amend", [], ["origClientOrderId"],
     ["orderId"]),
    ("binance", "DELETE", "/fapi/v1/order", None, None, "cancel", [], ["origClientOrderId"],
     ["orderId"]),
    ("binance", "POST", "/fapi/v1/batchOrders", None, None, "new", [], [], []),
    ("binance", "DELETE", "/fapi/v1/batchOrders", None, None, "cancel", [], [], []),
    ("binance", "POST", "/dapi/v1/order", None, None, "new", ["newClientOrderId"], [], []),
    ("binance", "PUT", "/dapi/v1/order", None, None, "amend", [], ["origClientOrderId"],
     ["orderId"]),
    ("binance", "DELETE", "/dapi/v1/order", None, None, "cancel", [], ["origClientOrderId"],
     ["orderId"]),
    # OKX v5 [3]: JSON bodies (an array for batches)
    ("okx", "POST", "/api/v5/trade/order", None, None, "new", ["clOrdId"], [], []),
    ("okx", "POST", "/api/v5/trade/batch-orders", None, None, "new", ["$[0].clOrdId"], [], []),
    ("okx", "POST", "/api/v5/trade/cancel-order", None, None, "cancel", [], ["clOrdId"],
     ["ordId"]),
    ("okx", "POST", "/api/v5/trade/cancel-batch-orders", None, None, "cancel", [],
     ["$[0].clOrdId"], ["$[0].ordId"]),
    ("okx", "POST", "/api/v5/trade/amend-order", None, None, "amend", [], ["clOrdId"],
     ["ordId"]),
    ("okx", "POST", "/api/v5/trade/amend-batch-orders", None, None, "amend", [],
     ["$[0].clOrdId"], ["$[0].ordId"]),
    # Bybit v5 [4]
    ("bybit", "POST", "/v5/order/create", None, None, "new", ["orderLinkId"], [], []),
    ("bybit", "POST", "/v5/order/cancel", None, None, "cancel", [], ["orderLinkId"],
     ["orderId"]),
    ("bybit", "POST", "/v5/order/amend", None, None, "amend", [], ["orderLinkId"],
     ["orderId"]),
    ("bybit", "POST", "/v5/order/create-batch", None, None, "new",
     ["$.request[0].orderLinkId"], [], []),
    ("bybit", "POST", "/v5/order/cancel-batch", None, None, "cancel", [],
     ["$.request[0].orderLinkId"], []),
    ("bybit", "POST", "/v5/order/amend-batch", None, None, "amend", [],
     ["$.request[0].orderLinkId"], []),
    # Coinbase Advanced Trade [5a]: cancels and edits name the exchange id only
    ("coinbase", "POST", "/api/v3/brokerage/orders", None, None, "new", ["client_order_id"],
     [], []),
    ("coinbase", "POST", "/api/v3/brokerage/orders/batch_cancel", None, None, "cancel", [],
     [], ["$.order_ids[0]"]),
    ("coinbase", "POST", "/api/v3/brokerage/orders/edit", None, None, "amend", [], [],
     ["order_id"]),
    # Kraken REST [6]: form bodies; the ack does not echo the client id
    ("kraken", "POST", "/0/private/AddOrder", None, None, "new", ["cl_ord_id"], [], []),
    ("kraken", "POST", "/0/private/AddOrderBatch", None, None, "new", [], [], []),
    ("kraken", "POST", "/0/private/CancelOrder", None, None, "cancel", [], ["cl_ord_id"],
     ["txid"]),
    ("kraken", "POST", "/0/private/AmendOrder", None, None, "amend", [], ["cl_ord_id"],
     ["txid"]),
    ("kraken", "POST", "/0/private/EditOrder", None, None, "amend", [], [], ["txid"]),
    # BitMEX [8]
    ("bitmex", "POST", "/api/v1/order", None, None, "new", ["clOrdID"], [], []),
    ("bitmex", "PUT", "/api/v1/order", None, None, "amend", ["clOrdID"], ["origClOrdID"],
     ["orderID"]),
    ("bitmex", "DELETE", "/api/v1/order", None, None, "cancel", [], ["clOrdID"], ["orderID"]),
    # Gate [10] (cancel by exchange id in the path)
    ("gate", "POST", "/api/v4/spot/orders", None, None, "new", ["text"], [], []),
    ("gate", "DELETE", "/api/v4/spot/orders/%", None, None, "cancel", [], [], []),
    ("gate", "PATCH", "/api/v4/spot/orders/%", None, None, "amend", [], [], []),
    # KuCoin [11] (REST paths inferred from SDK types, see venues.md)
    ("kucoin", "POST", "/api/v1/orders", None, None, "new", ["clientOid"], [], []),
    ("kucoin", "POST", "/api/v1/hf/orders", None, None, "new", ["clientOid"], [], []),
    ("kucoin", "DELETE", "/api/v1/orders/%", None, None, "cancel", [], [], []),
    ("kucoin", "DELETE", "/api/v1/hf/orders/%", None, None, "cancel", [], [], []),
    # Bitget [12] (V2 spot REST, not verified in venues.md)
    ("bitget", "POST", "/api/v2/spot/trade/place-order", None, None, "new", ["clientOid"],
     [], []),
    ("bitget", "POST", "/api/v2/spot/trade/cancel-order", None, None, "cancel", [],
     ["clientOid"], ["orderId"]),
    # Hyperliquid [9]: one endpoint, the action type is in the body
    ("hyperliquid", "POST", "/exchange", "$.action.type", "order", "new",
     ["$.action.orders[0].c"], [], []),
    ("hyperliquid", "POST", "/exchange", "$.action.type", "cancel", "cancel", [], [],
     ["$.action.cancels[0].o"]),
    ("hyperliquid", "POST", "/exchange", "$.action.type", "cancelByCloid", "cancel", [],
     ["$.action.cancels[0].cloid"], []),
    ("hyperliquid", "POST", "/exchange", "$.action.type", "modify", "amend", [], [],
     ["$.action.oid"]),
    ("hyperliquid", "POST", "/exchange", "$.action.type", "batchModify", "amend", [], [], []),
    # Deribit JSON-RPC over HTTP [7]: the method is the path, params in the query
    ("jsonrpc", "GET", "/api/v2/private/buy", None, None, "new", ["label"], [], []),
    ("jsonrpc", "GET", "/api/v2/private/sell", None, None, "new", ["label"], [], []),
    ("jsonrpc", "GET", "/api/v2/private/edit", None, None, "amend", [], [], ["order_id"]),
    ("jsonrpc", "GET", "/api/v2/private/cancel", None, None, "cancel", [], [], ["order_id"]),
]

_REPLY_COLUMNS = ("dialect", "order_id_paths", "error_paths", "unknown_codes")

# Error codes are read from the first path that holds a value other than a
# success code (``ok_code`` in sql/common.sql: "0", "200000", "ok", "");
# HTTP / WebSocket status >= 500 and ``unknown_codes`` mean the outcome is
# unknown ("error"), other errors are rejects (venues.md 15.8).

REST_REPLIES: list[tuple[object, ...]] = [
    ("binance", ["$.orderId", "$.amendedOrder.orderId", "$.newOrderResponse.orderId",
                 "$[0].orderId"],
     ["$.code"], ["-1006", "-1007"]),
    ("okx", ["$.data[0].ordId"], ["$.data[0].sCode", "$.code"], []),
    ("bybit", ["$.result.orderId"], ["$.retCode"], []),
    ("coinbase", ["$.success_response.order_id", "$.results[0].order_id"],
     ["$.error_response.error", "$.results[0].failure_reason"], []),
    ("kraken", ["$.result.txid[0]"], ["$.error[0]"], []),
    ("bitmex", ["$.orderID", "$[0].orderID"], ["$.error.name"], []),
    ("gate", ["$.id"], ["$.label"], []),
    ("kucoin", ["$.data.orderId"], ["$.code"], []),
    ("bitget", ["$.data.orderId"], ["$.code"], []),
    ("hyperliquid", ["$.response.data.statuses[0].resting.oid",
                     "$.response.data.statuses[0].filled.oid"],
     ["$.response.data.statuses[0].error"], []),
    ("jsonrpc", ["$.result.order.order_id", "$.result.order_id"], ["$.error.code"], []),
]

# --- WebSocket JSON ---------------------------------------------------------------

_WS_DIALECT_COLUMNS = ("dialect", "req_id_paths", "method_paths", "method_strip",
                       "reply_id_paths", "reply_method_paths", "reply_filter_path",
                       "reply_filter_value", "status_path", "order_id_paths", "error_paths",
                       "unknown_codes")

# reply_method_paths: when a request carries no id (Bybit without reqId), the
# request and its reply are paired FIFO per op (venues.md 15.4, last point).
# reply_filter_*: only replies with that value are acks (Gate sends an
# ``"ack":true`` reply first, then the result).
WS_DIALECTS: list[tuple[object, ...]] = [
    ("binance", ["$.id"], ["$.method"], "^v[0-9]+/", ["$.id"], [], None, None, "$.status",
     ["$.result.orderId", "$.result.amendedOrder.orderId",
      "$.result.newOrderResponse.orderId"], ["$.error.code"], ["-1006", "-1007"]),
    ("okx", ["$.id"], ["$.op"], None, ["$.id"], [], None, None, None, ["$.data[0].ordId"],
     ["$.data[0].sCode", "$.code"], []),
    ("bybit", ["$.reqId"], ["$.op"], None, ["$.reqId"], ["$.op"], None, None, None,
     ["$.data.orderId"], ["$.retCode"], []),
    ("kraken", ["$.req_id", "$.reqid"], ["$.method", "$.event"], None, ["$.req_id", "$.reqid"],
     [], None, None, None, ["$.result.order_id", "$.txid"], ["$.error", "$.errorMessage"], []),
    ("jsonrpc", ["$.id"], ["$.method"], None, ["$.id"], [], None, None, None,
     ["$.result.order.order_id", "$.result.order_id"], ["$.error.code"], []),
    ("kucoin", ["$.id"], ["$.op"], None, ["$.id"], [], None, None, None, ["$.data.orderId"],
     ["$.code"], []),
    ("gate", ["$.payload.req_id"], ["$.channel"], None, ["$.request_id"], [], "$.ack", "true",
     "$.header.status", ["$.data.result.id"], ["$.data.errs.label"], []),
    ("bitget", ["$.args[0].id", "$.id"], ["$.args[0].channel", "$.topic"], None,
     ["$.arg[0].id", "$.id"], [], None, None, None, ["$.arg[0].params.orderId"], ["$.code"],
     []),
    ("hyperliquid", ["$.id"], ["$.request.payload.action.type"], None, ["$.data.id"], [],
     None, None, None,
     ["$.data.response.payload.response.data.statuses[0].resting.oid",
      "$.data.response.payload.response.data.statuses[0].filled.oid"],
     ["$.data.response.payload.response.data.statuses[0].error"], []),
]

_WS_ACTION_COLUMNS = ("dialect", "method", "kind", "coid", "orig_coid", "orig_order_id")

WS_ACTIONS: list[tuple[object, ...]] = [
    # Binance WS API, spot [1] and futures [2] (``vN/`` prefixes are stripped)
    ("binance", "order.place", "new", ["$.params.newClientOrderId"], [], []),
    ("binance", "order.cancel", "cancel", ["$.params.newClientOrderId"],
     ["$.params.origClientOrderId"], ["$.params.orderId"]),
    ("binance", "order.cancelReplace", "amend", ["$.params.newClientOrderId"],
     ["$.params.cancelOrigClientOrderId"], ["$.params.cancelOrderId"]),
    ("binance", "order.amend.keepPriority", "amend", ["$.params.newClientOrderId"],
     ["$.params.origClientOrderId"], ["$.params.orderId"]),
    ("binance", "order.modify", "amend", [], ["$.params.origClientOrderId"],
     ["$.params.orderId"]),
    # OKX [3]
    ("okx", "order", "new", ["$.args[0].clOrdId"], [], []),
    ("okx", "batch-orders", "new", ["$.args[0].clOrdId"], [], []),
    ("okx", "cancel-order", "cancel", [], ["$.args[0].clOrdId"], ["$.args[0].ordId"]),
    ("okx", "batch-cancel-orders", "cancel", [], ["$.args[0].clOrdId"], ["$.args[0].ordId"]),
    ("okx", "amend-order", "amend", [], ["$.args[0].clOrdId"], ["$.args[0].ordId"]),
    ("okx", "batch-amend-orders", "amend", [], ["$.args[0].clOrdId"], ["$.args[0].ordId"]),
    # Bybit [4]
    ("bybit", "order.create", "new", ["$.args[0].orderLinkId"], [], []),
    ("bybit", "order.cancel", "cancel", [], ["$.args[0].orderLinkId"], ["$.args[0].orderId"]),
    ("bybit", "order.amend", "amend", [], ["$.args[0].orderLinkId"], ["$.args[0].orderId"]),
    ("bybit", "order.create-batch", "new", ["$.args[0].request[0].orderLinkId"], [], []),
    ("bybit", "order.cancel-batch", "cancel", [], ["$.args[0].request[0].orderLinkId"], []),
    ("bybit", "order.amend-batch", "amend", [], ["$.args[0].request[0].orderLinkId"], []),
    # Kraken v2 and v1 [6]
    ("kraken", "add_order", "new", ["$.params.cl_ord_id"], [], []),
    ("kraken", "batch_add", "new", ["$.params.orders[0].cl_ord_id"], [], []),
    ("kraken", "cancel_order", "cancel", [], ["$.params.cl_ord_id[0]"],
     ["$.params.order_id[0]"]),
    ("kraken", "amend_order", "amend", [], ["$.params.cl_ord_id"], ["$.params.order_id"]),
    ("kraken", "edit_order", "amend", [], [], ["$.params.order_id"]),
    ("kraken", "addOrder", "new", [], [], []),
    ("kraken", "cancelOrder", "cancel", [], [], ["$.txid[0]"]),
    ("kraken", "editOrder", "amend", [], [], ["$.orderid"]),
    # Deribit and generic JSON-RPC 2.0 [7]
    ("jsonrpc", "private/buy", "new", ["$.params.label"], [], []),
    ("jsonrpc", "private/sell", "new", ["$.params.label"], [], []),
    ("jsonrpc", "private/edit", "amend", [], [], ["$.params.order_id"]),
    ("jsonrpc", "private/edit_by_label", "amend", [], ["$.params.label"], []),
    ("jsonrpc", "private/cancel", "cancel", [], [], ["$.params.order_id"]),
    ("jsonrpc", "private/cancel_by_label", "cancel", [], ["$.params.label"], []),
    # KuCoin [11]
    ("kucoin", "spot.order", "new", ["$.args.clientOid"], [], []),
    ("kucoin", "spot.sync_order", "new", ["$.args.clientOid"], [], []),
    ("kucoin", "margin.order", "new", ["$.args.clientOid"], [], []),
    ("kucoin", "futures.order", "new", ["$.args.clientOid"], [], []),
    ("kucoin", "futures.multi_order", "new", [], [], []),
    ("kucoin", "spot.modify", "amend", [], ["$.args.clientOid"], ["$.args.orderId"]),
    ("kucoin", "spot.cancel", "cancel", [], ["$.args.clientOid"], ["$.args.orderId"]),
    ("kucoin", "spot.sync_cancel", "cancel", [], ["$.args.clientOid"], ["$.args.orderId"]),
    ("kucoin", "margin.cancel", "cancel", [], ["$.args.clientOid"], ["$.args.orderId"]),
    ("kucoin", "futures.cancel", "cancel", [], ["$.args.clientOid"], ["$.args.orderId"]),
    ("kucoin", "futures.multi_cancel", "cancel", [], [], []),
    # Gate [10]
    ("gate", "spot.order_place", "new", ["$.payload.req_param.text"], [], []),
    ("gate", "futures.order_place", "new", ["$.payload.req_param.text"], [], []),
    ("gate", "futures.order_batch_place", "new", [], [], []),
    ("gate", "spot.order_cancel", "cancel", [], [], ["$.payload.req_param.order_id"]),
    ("gate", "spot.order_cancel_ids", "cancel", [], [], []),
    ("gate", "spot.order_cancel_cp", "cancel", [], [], []),
    ("gate", "futures.order_cancel", "cancel", [], [], ["$.payload.req_param.order_id"]),
    ("gate", "spot.order_amend", "amend", [], [], ["$.payload.req_param.order_id"]),
    ("gate", "futures.order_amend", "amend", [], [], ["$.payload.req_param.order_id"]),
    # Bitget spot V2 and UTA [12]
    ("bitget", "place-order", "new", ["$.args[0].params.clientOid", "$.args[0].clientOid"],
     [], []),
    ("bitget", "cancel-order", "cancel", [], ["$.args[0].params.clientOid",
                                              "$.args[0].clientOid"],
     ["$.args[0].params.orderId", "$.args[0].orderId"]),
    ("bitget", "modify-order", "amend", [], ["$.args[0].clientOid"], ["$.args[0].orderId"]),
    # Hyperliquid WS post [9]
    ("hyperliquid", "order", "new", ["$.request.payload.action.orders[0].c"], [], []),
    ("hyperliquid", "cancel", "cancel", [], [], ["$.request.payload.action.cancels[0].o"]),
    ("hyperliquid", "cancelByCloid", "cancel", [],
     ["$.request.payload.action.cancels[0].cloid"], []),
    ("hyperliquid", "modify", "amend", [], [], ["$.request.payload.action.oid"]),
    ("hyperliquid", "batchModify", "amend", [], [], []),
]

# --- Second leg: private order streams (venues.md 15.5) ---------------------------

_ENGINE_COLUMNS = ("dialect", "match_path", "match_like", "coid_path", "orig_coid_path",
                   "order_id_path", "state_path", "amend_path", "amend_like")

# An event is about the order whose client id is ``orig_coid`` when that is
# non-empty (Binance ``C`` on a cancel), else ``coid``; or whose exchange id is
# ``order_id``. amend_path/amend_like mark amend confirmations (OKX
# ``amendResult``, Deribit ``replaced``).
ENGINE_STREAMS: list[tuple[object, ...]] = [
    ("binance", "$.event.e", "executionReport", "$.event.c", "$.event.C", "$.event.i",
     "$.event.x", None, None),
    ("binance", "$.e", "executionReport", "$.c", "$.C", "$.i", "$.x", None, None),
    ("binance", "$.e", "ORDER_TRADE_UPDATE", "$.o.c", None, "$.o.i", "$.o.x", None, None),
    ("binance", "$.event.e", "ORDER_TRADE_UPDATE", "$.event.o.c", None, "$.event.o.i",
     "$.event.o.x", None, None),
    ("okx", "$.arg.channel", "orders", "$.data[0].clOrdId", None, "$.data[0].ordId",
     "$.data[0].state", "$.data[0].amendResult", "_%"),
    # "order" and "order.spot" / "order.linear" / ..., not "orderbook.50.BTCUSDT"
    ("bybit", "$.topic", "order", "$.data[0].orderLinkId", None, "$.data[0].orderId",
     "$.data[0].orderStatus", None, None),
    ("bybit", "$.topic", "order.%", "$.data[0].orderLinkId", None, "$.data[0].orderId",
     "$.data[0].orderStatus", None, None),
    ("kraken", "$.channel", "executions", "$.data[0].cl_ord_id", None, "$.data[0].order_id",
     "$.data[0].exec_type", None, None),
    ("jsonrpc", "$.params.channel", "user.orders.%", "$.params.data.label", None,
     "$.params.data.order_id", "$.params.data.order_state", "$.params.data.replaced", "true"),
    ("kucoin", "$.topic", "/spotMarket/tradeOrders%", "$.data.clientOid", None,
     "$.data.orderId", "$.data.type", None, None),
    ("coinbase", "$.channel", "user", "$.events[0].orders[0].client_order_id", None,
     "$.events[0].orders[0].order_id", "$.events[0].orders[0].status", None, None),
]

ENGINE_STATES: list[tuple[str, str, str]] = [
    ("binance", "NEW", "new"), ("binance", "REJECTED", "new"),
    ("binance", "CANCELED", "cancel"), ("binance", "REPLACED", "amend"),
    ("binance", "AMENDMENT", "amend"),
    ("okx", "live", "new"), ("okx", "partially_filled", "new"), ("okx", "filled", "new"),
    ("okx", "canceled", "cancel"), ("okx", "mmp_canceled", "cancel"),
    ("bybit", "New", "new"), ("bybit", "PartiallyFilled", "new"), ("bybit", "Filled", "new"),
    ("bybit", "Untriggered", "new"), ("bybit", "Rejected", "new"),
    ("bybit", "Cancelled", "cancel"), ("bybit", "PartiallyFilledCanceled", "cancel"),
    ("kraken", "new", "new"), ("kraken", "pending_new", "new"),
    ("kraken", "canceled", "cancel"), ("kraken", "amended", "amend"),
    ("kraken", "restated", "amend"),
    ("jsonrpc", "open", "new"), ("jsonrpc", "filled", "new"), ("jsonrpc", "rejected", "new"),
    ("jsonrpc", "untriggered", "new"), ("jsonrpc", "cancelled", "cancel"),
    ("kucoin", "open", "new"), ("kucoin", "canceled", "cancel"), ("kucoin", "update", "amend"),
    ("coinbase", "OPEN", "new"), ("coinbase", "CANCELLED", "cancel"),
]


def _table(columns: tuple[str, ...], rows: list[tuple[object, ...]],
           types: dict[str, pa.DataType]) -> pa.Table:
    cols = {c: [r[i] for r in rows] for i, c in enumerate(columns)}
    schema = pa.schema([(c, types.get(c, pa.string())) for c in columns])
    return pa.table(cols, schema=schema)


_LIST = pa.list_(pa.string())


def rule_tables() -> dict[str, pa.Table]:
    """Every rule table above as Arrow, ready to register with DuckDB."""
    lists = {c: _LIST for c in ("coid", "orig_coid", "orig_order_id", "order_id_paths",
                                "error_paths", "unknown_codes", "req_id_paths",
                                "method_paths", "reply_id_paths", "reply_method_paths")}
    return {
        "rest_actions": _table(_REST_ACTION_COLUMNS, REST_ACTIONS, lists),
        "rest_replies": _table(_REPLY_COLUMNS, REST_REPLIES, lists),
        "ws_dialects": _table(_WS_DIALECT_COLUMNS, WS_DIALECTS, lists),
        "ws_actions": _table(_WS_ACTION_COLUMNS, WS_ACTIONS, lists),
        "engine_streams": _table(_ENGINE_COLUMNS, ENGINE_STREAMS, {}),
        "engine_states": _table(("dialect", "state", "event_kind"),
                                [tuple(r) for r in ENGINE_STATES], {}),
    }
