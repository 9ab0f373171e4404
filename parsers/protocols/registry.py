"""The protocol registry: every application protocol, once, in detection order.

Order is priority: the first protocol whose probe accepts either direction's
first bytes wins (the HTTP/2 preface would also pass for HTTP/1; WebSocket frames
are the weakest hint, so they come last). Adding a protocol: a package with a
``spec.py`` and one line here (see ``docs/architecture.md``).
"""

from __future__ import annotations

from collections.abc import Mapping

from ..fix.spec import FIX
from ..http.spec import HTTP
from ..http2.spec import HTTP2
from ..tls.spec import TLS
from ..websocket.spec import WEBSOCKET
from .base import EventSpec, KeyMaterialSpec, ProtocolSpec, UpgradeSpec

REGISTRY: tuple[ProtocolSpec, ...] = (
    HTTP2,
    TLS,
    FIX,
    HTTP,
    WEBSOCKET,
)

BY_NAME: Mapping[str, ProtocolSpec] = {spec.name: spec for spec in REGISTRY}

KEY_MATERIAL: KeyMaterialSpec | None = next(
    (spec.key_material for spec in REGISTRY if spec.key_material is not None), None)
"""The secrets sessions decrypt with (``SessionContext.keylog``): one kind, TLS's."""

UPGRADES: Mapping[str, UpgradeSpec] = {
    spec.upgraded.token: spec.upgraded for spec in REGISTRY if spec.upgraded is not None}
"""HTTP/1.1 ``Upgrade`` token -> the protocol it switches to (``HttpSession``)."""

EVENTS: Mapping[type, EventSpec] = {t: e for spec in REGISTRY for t, e in spec.events.items()}
"""What each event type of every protocol becomes (``EventSpec``)."""
