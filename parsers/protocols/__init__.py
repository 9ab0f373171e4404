"""Application protocols as data: one ``ProtocolSpec`` per protocol (``base``),
listed once, in detection order, in ``registry.REGISTRY``.

Each protocol is a package beside this one (``parsers/tls``, ``http``, ``http2``,
``websocket``, ``fix``) whose ``spec.py`` declares its record; detection
(``parsers.detect``), the application layer, row conversion, the table schemas
and the matcher loop over the registry. See ``docs/architecture.md``.
"""
