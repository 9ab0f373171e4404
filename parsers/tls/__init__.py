"""TLS: record framing, handshake metadata, NSS key log, decryption (TLS 1.0-1.3).

Public API::

    KeyLog.from_files(paths) / KeyLog.from_text(text) / KeyLog.add_text(text)
    TlsSession(flow_id, keylog=None, *, max_record=MAX_CIPHERTEXT, search=SearchLimits())
        .feed(direction, data, ts_first, ts_last) / .gap(direction, length, ts) / .finish(ts)
    keysearch.search(keylog, labels, header, fragment, limits): the TLS 1.3 secret of a
        session whose handshake was not captured (used by TlsSession)
    events: TlsRecord, TlsHandshakeInfo, Plaintext (and the shared Anomaly, layer "tls")
"""

from typing import TYPE_CHECKING

from ..lazy_exports import lazy

if TYPE_CHECKING:  # (imported at their first use: ``lazy_exports``)
    from .events import Plaintext, TlsHandshakeInfo, TlsRecord
    from .keylog import PCAPNG_DSB_TLS_KEY_LOG, KeyLog
    from .keysearch import SearchLimits
    from .record import MAX_CIPHERTEXT
    from .session import TlsSession
    from .suites import SUITES, CipherSuite, suite_for, suite_name

__all__ = [
    "MAX_CIPHERTEXT",
    "PCAPNG_DSB_TLS_KEY_LOG",
    "SUITES",
    "CipherSuite",
    "KeyLog",
    "Plaintext",
    "SearchLimits",
    "TlsHandshakeInfo",
    "TlsRecord",
    "TlsSession",
    "suite_for",
    "suite_name",
]

__getattr__ = lazy(__name__, {
    "Plaintext": ".events",
    "TlsHandshakeInfo": ".events",
    "TlsRecord": ".events",
    "PCAPNG_DSB_TLS_KEY_LOG": ".keylog",
    "KeyLog": ".keylog",
    "SearchLimits": ".keysearch",
    "MAX_CIPHERTEXT": ".record",
    "TlsSession": ".session",
    "SUITES": ".suites",
    "CipherSuite": ".suites",
    "suite_for": ".suites",
    "suite_name": ".suites",
})
