"""One exception tree for pcapflow (STYLE.md rule 8).

Tests assert the ``code`` attribute, never the message. ``code`` values are
stable snake_case strings; they double as ``anomalies.code`` when the driver
turns a ``DecodeError`` into a row.
"""

from __future__ import annotations


class PcapflowError(Exception):
    """Base of every error pcapflow raises on purpose."""

    code: str = "error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code


class CaptureError(PcapflowError):
    """The capture file itself cannot be read (only this stops an ingest).

    ``path``, ``packet_index`` and ``offset`` say where, when known.
    """

    code = "bad_capture"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        path: str | None = None,
        packet_index: int | None = None,
        offset: int | None = None,
    ) -> None:
        super().__init__(message, code=code)
        self.path = path
        self.packet_index = packet_index
        self.offset = offset

    def __str__(self) -> str:
        where = []
        if self.path is not None:
            where.append(str(self.path))
        if self.packet_index is not None:
            where.append(f"packet {self.packet_index}")
        if self.offset is not None:
            where.append(f"byte offset {self.offset}")
        prefix = ", ".join(where)
        msg = super().__str__()
        return f"{prefix}: {msg}" if prefix else msg


class DecodeError(PcapflowError):
    """Malformed traffic inside a readable capture: becomes an ``anomalies`` row."""

    code = "decode_error"

    def __init__(
        self,
        message: str,
        *,
        code: str,
        protocol: str = "",
        flow_id: int | None = None,
        direction: str | None = None,
        offset: int | None = None,
    ) -> None:
        super().__init__(message, code=code)
        self.protocol = protocol
        self.flow_id = flow_id
        self.direction = direction
        self.offset = offset


class ConfigError(PcapflowError):
    """A user-supplied setting or file (key log, venue map, option) is unusable."""

    code = "bad_config"
