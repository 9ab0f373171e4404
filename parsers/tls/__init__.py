"""TLS: record framing, handshake metadata, NSS key log, decryption (TLS 1.0-1.3).

Public API::

    KeyLog.from_files(paths) / KeyLog.from_text(text) / KeyLog.add_text(text)
    TlsSession(flow_id, keylog=None, *, max_record=MAX_CIPHERTEXT)
        .feed(direction, data, ts_first, ts_last) / .gap(direction, length, ts) / .finish(ts)
    events: TlsRecord, TlsHandshakeInfo, Plaintext (and the shared Anomaly, layer "tls")
"""

from .events import Plaintext, TlsHandshakeInfo, TlsRecord
from .keylog import PCAPNG_DSB_TLS_KEY_LOG, KeyLog
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
    "TlsHandshakeInfo",
    "TlsRecord",
    "TlsSession",
    "suite_for",
    "suite_name",
]
