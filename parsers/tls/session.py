"""``TlsSession``: one TCP connection's TLS, both directions, sans-IO.

How this works: each direction has a ``RecordReader`` (framing + times), a
``HandshakeReassembler`` and a protection state. Every record becomes a
``TlsRecord`` event; a record is *protected* once that direction has sent
ChangeCipherSpec (TLS <= 1.2) or, in TLS 1.3, whenever its outer type is
application_data (RFC 8446 §5: the CCS there is a compatibility dummy).

Keys come from the ``KeyLog`` when the ServerHello is seen:

- TLS <= 1.2: the master secret (``CLIENT_RANDOM``) expands into *pending*
  states that each direction's ChangeCipherSpec activates (RFC 5246 §7.1).
  Renegotiation follows naturally: its hellos are parsed from decrypted
  records and its CCS activates the new pending state.
- TLS 1.3: handshake traffic secrets protect records right after the
  ServerHello; each side's Finished switches that side to its application
  traffic secret; KeyUpdate derives the next generation (RFC 8446 §7.2).
  A HelloRetryRequest installs nothing (the second ServerHello does).
  Early data (0-RTT) is not decrypted: while a client that offered it is in
  the handshake epoch, records that fail to decrypt are skipped silently
  until one succeeds ("trial" mode).

Sessions already open when the capture began (no ClientHello): TLS 1.3 keys
are found by trial decryption of each direction's first protected records
against every secret of the key log (``keysearch``: suites, KeyUpdate
generations and record sequence numbers within ``SearchLimits``); the other
direction then tries the same key log entry first. Decryption goes on from the
found sequence number and emits the same events as after a handshake, with a
``handshake_not_captured`` anomaly saying what was found, or
``tls13_secret_not_found`` saying what was tried and what to do.

Decryption of a direction stops for good after a failed authentication
(``decrypt_failed``) or a loss of record alignment (``gap``, resync): the
record sequence number, an implicit input of every AEAD nonce and MAC, is
unknown from then on. Records are still framed and timed.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from enum import Enum, auto
from typing import cast

import numpy as np
from cryptography.exceptions import InvalidTag

from .. import native
from ..errors import DecodeError
from ..events import IN, OUT, Anomaly, Direction, Event, Run, feed_pieces
from . import handshake as hs
from . import keysearch
from .ciphers import (
    BlockDecryptor,
    RecordDecryptor,
    StreamDecryptor,
    Tls12AeadDecryptor,
    Tls13Decryptor,
    tls12_decryptor,
)
from .events import (
    VERSION_NAMES,
    Plaintext,
    PlaintextRun,
    TlsHandshakeInfo,
    TlsRecord,
    TlsRecordRun,
)
from .handshake import ClientHello, HandshakeReassembler, ServerHello
from .keylog import (
    CLIENT_HANDSHAKE_TRAFFIC_SECRET,
    CLIENT_RANDOM,
    CLIENT_TRAFFIC_SECRET_0,
    SERVER_HANDSHAKE_TRAFFIC_SECRET,
    SERVER_TRAFFIC_SECRET_0,
    KeyLog,
)
from .keyschedule import tls12_key_block, tls13_next_traffic_secret, tls13_traffic_keys
from .keysearch import SEARCH_RECORDS, SearchLimits
from .record import (
    APPLICATION_DATA,
    CHANGE_CIPHER_SPEC,
    HANDSHAKE,
    MAX_CIPHERTEXT,
    RawRecord,
    ReaderIssue,
    ReaderState,
    RecordReader,
)
from .scan import tls_app_records
from .suites import CipherSuite, suite_for, suite_name

LAYER = "tls"
TLS13 = 0x0304
NO_HANDSHAKE = (
    "the TLS session began before the capture (no ClientHello/ServerHello seen): its "
    "records are kept with their times but not decrypted. TLS 1.2 cannot be decrypted "
    "without the handshake (its key block needs both hello randoms, client and server). "
    "To decode: start the capture before the connection opens, or make the client "
    "reconnect (restart the session) while capturing")

# key log labels of each direction: (application secret, handshake secret)
_LABELS = {
    OUT: (CLIENT_TRAFFIC_SECRET_0, CLIENT_HANDSHAKE_TRAFFIC_SECRET),
    IN: (SERVER_TRAFFIC_SECRET_0, SERVER_HANDSHAKE_TRAFFIC_SECRET),
}


class Epoch(Enum):
    """Which protection one direction's records are under: the switches of RFC 5246 §7.1
    (ChangeCipherSpec) and RFC 8446 §7 (Finished, then the application traffic secret).
    Whether decryption works is another matter (``decryptor``, ``stopped_reason``): a
    direction without keys changes epoch all the same."""

    INITIAL = auto()
    """TLS <= 1.2 before ChangeCipherSpec: records in the clear; TLS 1.3 before this
    side's Finished: the handshake epoch (application_data records protected)."""
    CIPHER_CHANGED = auto()
    """ChangeCipherSpec read while the version was not TLS 1.3 (TLS <= 1.2, or before a
    ServerHello): every record is protected."""
    APPLICATION = auto()
    """TLS 1.3 application epoch: this side's Finished was read, or the application
    secret was installed without a handshake epoch."""
    CHANGED_APPLICATION = auto()
    """Both: a ChangeCipherSpec read before the version was known (a capture that began
    after the ServerHello), then a TLS 1.3 application epoch."""


class Switch(Enum):
    """What moves a direction's ``Epoch`` (``_TRANSITIONS``)."""

    CHANGE_CIPHER_SPEC = auto()  # a ChangeCipherSpec record, the version not TLS 1.3
    TLS13_SERVER_HELLO = auto()  # a TLS 1.3 ServerHello: an earlier CCS was a dummy
    FINISHED = auto()  # TLS 1.3: this side's Finished message
    APPLICATION_KEYS = auto()  # TLS 1.3: keys of the application epoch installed directly
    HANDSHAKE_KEYS = auto()  # TLS 1.3: the key search matched a handshake secret


@dataclass(slots=True)
class _Direction:
    """Per-direction state."""

    reader: RecordReader
    hs: HandshakeReassembler = field(default_factory=HandshakeReassembler)
    epoch: Epoch = Epoch.INITIAL
    decryptor: RecordDecryptor | None = None
    pending: RecordDecryptor | None = None  # TLS <= 1.2: activated by CCS
    app_secret: bytes | None = None  # TLS 1.3 current/next application secret
    trial: bool = False  # failures are silent until the first success
    stopped_reason: str | None = None  # decryption stopped for good
    epoch_records: int = 0  # protected records since the last key change
    plaintext_offset: int = 0
    finished_ts: int | None = None
    first_protected_ts: int | None = None
    search_tries: int = 0  # no handshake: records tried by the key search
    search_keys: int = 0  # ... and the keys tried on them
    search_secrets: int = 0
    # ... and the first 8 bytes of each: a TLS 1.2 AES-GCM record's explicit nonce
    search_nonces: list[int] = field(default_factory=list)
    # where the keys came from, for resuming across capture files (``resume``):
    # (key log label, KeyUpdate generation) of ``decryptor``'s and ``pending``'s
    # secret, and the generation of ``app_secret``; never the secrets themselves
    key_src: tuple[str, int] | None = None
    pending_src: tuple[str, int] | None = None
    app_gen: int = 0

    @property
    def encrypted(self) -> bool:
        """Every record protected (a ChangeCipherSpec switched this side)?"""
        return self.epoch in (Epoch.CIPHER_CHANGED, Epoch.CHANGED_APPLICATION)

    @property
    def in_app_epoch(self) -> bool:
        """TLS 1.3: in the application epoch?"""
        return self.epoch in (Epoch.APPLICATION, Epoch.CHANGED_APPLICATION)


class TlsSession:
    """Sans-IO TLS parser for one connection (see the module docstring)."""

    def __init__(
        self, flow_id: int, keylog: KeyLog | None = None, *, max_record: int = MAX_CIPHERTEXT,
        search: SearchLimits | None = None,
    ) -> None:
        self.flow_id = flow_id
        self.keylog = keylog
        self._search_limits = search or SearchLimits()
        self._midstream = False  # keys found by the key search (no handshake seen)
        self._found_random: bytes | None = None
        self._dirs: dict[Direction, _Direction] = {
            OUT: _Direction(RecordReader(max_record)),
            IN: _Direction(RecordReader(max_record)),
        }
        self._ch: ClientHello | None = None
        self._ch_ts: int | None = None
        self._sh: ServerHello | None = None
        self._sh_offset = 0
        self._sh_ts = 0
        self._suite: CipherSuite | None = None
        self._tls13 = False
        self._hello_retry = False
        self._resumed = False
        self._server_hello_done = False
        self._alpn: str | None = None
        self._keys_found = False
        self._missing_reported = False
        self._info_emitted = False  # a TlsHandshakeInfo went out (the key search asks)
        self._complete = False
        self._handshake_ns: int | None = None
        self._out: list[Event] = []

    # -- SessionParser protocol ------------------------------------------------------
    def feed(self, direction: Direction, data: bytes, ts_first: int, ts_last: int) -> list[Event]:
        """Feed the next in-order piece of ``direction``'s stream."""
        for item in self._dirs[direction].reader.feed(data, ts_first, ts_last):
            if isinstance(item, ReaderIssue):
                self._on_issue(direction, item)
            else:
                self._on_record(direction, item)
        return self._drain()

    def independent(self) -> bool:
        """Is each direction now read without regard to the other?

        TLS 1.3 after the handshake, both directions decrypting: post-handshake
        messages (KeyUpdate, NewSessionTicket) change only their own direction's
        state. Not TLS 1.2, which can renegotiate (the client's new keys depend on
        the server's next hello), nor a direction without keys or out of sync.
        """
        if not ((self._complete or self._midstream) and self._tls13):
            return False
        return all(st.decryptor is not None and not st.trial
                   and st.first_protected_ts is not None
                   and st.reader.state is ReaderState.SYNC for st in self._dirs.values())

    def feed_many(self, direction: Direction, run: Run) -> list[Event]:
        """Feed a run of in-order pieces: the same events as ``feed`` piece by piece.

        Once the handshake is over, consecutive application-data records are
        decrypted in one tight loop (``_fast_records``) and come out as one
        ``TlsRecordRun`` and one ``PlaintextRun``; anything else (a handshake or
        alert record, a failed tag, a bad header) goes through the general
        per-record code, and the tight loop resumes after it.
        """
        st = self._dirs[direction]
        reader = st.reader
        if reader.state is not ReaderState.SYNC:
            return feed_pieces(self, direction, run)
        reader.append_run(run)
        while True:
            self._fast_records(direction, st)
            item, progress = reader.step()
            if item is not None:
                if isinstance(item, ReaderIssue):
                    self._on_issue(direction, item)
                else:
                    self._on_record(direction, item)
            elif not progress:
                break
        reader.compact()
        return self._drain()

    def _fast_records(self, d: Direction, st: _Direction) -> None:
        """Decrypt the whole application-data records buffered at the reader's position.

        Runs only in the steady state where ``_on_record`` would do nothing but
        decrypt, emit the record and emit its plaintext; it stops (leaving the
        record to the general path) at the first record that is anything else.
        """
        dec = st.decryptor
        if (not (self._complete or self._midstream) or st.trial or dec is None
                or (st.first_protected_ts is None and self._sh is not None)):
            return
        if not isinstance(dec, (Tls13Decryptor, Tls12AeadDecryptor)):
            return  # CBC/stream contexts change state even on failure: general path
        reader = st.reader
        buf, pos = reader._buf, reader._pos
        arr = np.frombuffer(buf, dtype=np.uint8)
        starts, lengths, versions = tls_app_records(arr, pos, reader.max_record)
        del arr  # release the export before the buffer is resized
        if not starts.size:
            return
        if dec.native is not None:
            k, plaintext, plen = self._open_native(dec, dec.native, buf, starts, lengths)
        else:
            k, plaintext, plen = self._open_py(dec, buf, starts, lengths, versions)
        if not k:
            return
        pos = int(starts[k - 1] + 5 + lengths[k - 1])
        versions = versions[:k]
        base = reader._base
        start = starts[:k] + base
        stop = np.empty(k, dtype=np.int64)
        stop[:-1] = start[1:]
        stop[-1] = pos + base
        ends, ts_first, ts_last = reader.piece_arrays()
        last = ends.size - 1
        tsf = ts_first[np.minimum(np.searchsorted(ends, start, "right"), last)]
        tsl = ts_last[np.minimum(np.searchsorted(ends, stop - 1, "right"), last)]
        reader.advance(pos, k)
        st.epoch_records += k
        self._out.append(TlsRecordRun(
            flow_id=self.flow_id, direction=d, ts_first=tsf, ts_last=tsl, stream_offset=start,
            version=versions, length=stop - start,
            plaintext_length=plen, inner_content_type=APPLICATION_DATA if self._tls13 else None))
        self._out.append(PlaintextRun(
            flow_id=self.flow_id, direction=d, stream_offset=st.plaintext_offset,
            run=Run(plaintext, np.cumsum(plen), tsf, tsl)))
        st.plaintext_offset += int(plen.sum())

    @staticmethod
    def _open_native(dec: Tls13Decryptor | Tls12AeadDecryptor, ctx: native.AeadContext,
                     buf: bytearray, starts: np.ndarray, lengths: np.ndarray
                     ) -> tuple[int, bytes, np.ndarray]:
        """``native.open_records`` over the records: ``(count, plaintexts, lengths)``."""
        arr = np.frombuffer(buf, dtype=np.uint8)
        out = np.empty(int(lengths.sum()), dtype=np.uint8)
        ends = np.empty(starts.size, dtype=np.int64)
        kind = cast(int, dec.native_kind)  # set whenever ``native`` is
        k = native.open_records(ctx.ptr, kind, arr, starts, lengths,
                                dec.native_iv, dec.seq, out, ends)
        del arr  # release the export before the buffer is resized
        dec.seq += k
        ends = ends[:k]
        plen = np.diff(ends, prepend=0)
        return k, out[: int(ends[-1]) if k else 0].tobytes(), plen

    @staticmethod
    def _open_py(dec: Tls13Decryptor | Tls12AeadDecryptor, buf: bytearray,
                 starts: np.ndarray, lengths: np.ndarray, versions: np.ndarray
                 ) -> tuple[int, bytes, np.ndarray]:
        """``_open_native`` with ``cryptography``, one record per call (AES-CCM, or no
        native libraries)."""
        plains: list[bytes] = []
        append = plains.append
        with memoryview(buf) as mv:
            if isinstance(dec, Tls13Decryptor):
                aead, iv, seq = dec._aead, dec._iv, dec.seq
                decrypt = aead.decrypt
                for a, n in zip(starts.tolist(), lengths.tolist(), strict=True):
                    try:
                        inner = decrypt((iv ^ seq).to_bytes(12, "big"), mv[a + 5 : a + 5 + n],
                                        mv[a : a + 5])
                    except InvalidTag:
                        break
                    inner = inner.rstrip(b"\x00")
                    if len(inner) < 2 or inner[-1] != APPLICATION_DATA:
                        break
                    seq += 1
                    append(inner[:-1])
                dec.seq = seq
            else:
                for a, n, v in zip(starts.tolist(), lengths.tolist(), versions.tolist(),
                                   strict=True):
                    result = dec.decrypt(APPLICATION_DATA, v, bytes(mv[a : a + 5]),
                                         bytes(mv[a + 5 : a + 5 + n]))
                    if result is None or not result[1]:
                        if result is not None:
                            dec.seq -= 1
                        break
                    append(result[1])
        plen = np.fromiter(map(len, plains), dtype=np.int64, count=len(plains))
        return len(plains), b"".join(plains), plen

    def gap(self, direction: Direction, length: int, ts: int) -> list[Event]:
        """``length`` bytes of ``direction`` were never captured."""
        for issue in self._dirs[direction].reader.gap(length, ts):
            self._on_issue(direction, issue)
        return self._drain()

    def finish(self, ts: int) -> list[Event]:
        """End of connection: report partial records and the final handshake info."""
        for d, st in self._dirs.items():
            for issue in st.reader.finish(ts):
                self._on_issue(d, issue)
            if st.search_tries and st.decryptor is None and st.stopped_reason is None:
                # the connection ended before the search had all its records
                st.stopped_reason = "tls13_secret_not_found"
                self._anomaly(d, *self._not_found(st), ts, st.reader.next_offset)
        if self._sh is not None and not self._complete:
            self._emit_info(ts)
        return self._drain()

    def _drain(self) -> list[Event]:
        out, self._out = self._out, []
        return out

    def _anomaly(
        self, d: Direction | None, code: str, detail: str, ts: int, offset: int | None
    ) -> None:
        self._out.append(
            Anomaly(
                ts=ts,
                flow_id=self.flow_id,
                direction=d,
                layer=LAYER,
                code=code,
                detail=detail,
                stream_offset=offset,
            )
        )

    def _on_issue(self, d: Direction, issue: ReaderIssue) -> None:
        detail = issue.detail
        st = self._dirs[d]
        if issue.lost_sync and not self._searching(st):
            # Records were lost after the hellos: sequence numbers (an implicit
            # input of every nonce and MAC) are unknown from here on.
            st.hs.reset()
            detail += "; decryption stopped for this direction (record sequence number lost)"
            st.decryptor = st.pending = None
            st.trial = False
            st.stopped_reason = issue.code
        self._anomaly(d, issue.code, detail, issue.ts, issue.stream_offset)

    # -- records ---------------------------------------------------------------------
    def _on_record(self, d: Direction, rec: RawRecord) -> None:
        st = self._dirs[d]
        ctype = rec.content_type
        protected = st.encrypted or ctype == APPLICATION_DATA
        if not protected:
            self._emit_record(d, rec, decrypted=False, plaintext_length=len(rec.fragment))
            self._on_content(d, rec, ctype, rec.fragment)
            return
        if st.first_protected_ts is None and self._sh is not None:
            st.first_protected_ts = rec.ts_last
        if st.encrypted and ctype == HANDSHAKE and st.finished_ts is None and not self._tls13:
            st.finished_ts = rec.ts_last  # RFC 5246 §7.4.9: first handshake message after CCS
        result = self._decrypt(d, st, rec)
        if result is None:
            self._emit_record(d, rec, decrypted=False, plaintext_length=None)
        else:
            inner_type, plaintext = result
            self._emit_record(
                d,
                rec,
                decrypted=True,
                plaintext_length=len(plaintext),
                inner=inner_type if self._tls13 else None,
            )
            self._on_content(d, rec, inner_type, plaintext)
        self._check_complete(d, rec)

    def _emit_record(
        self,
        d: Direction,
        rec: RawRecord,
        *,
        decrypted: bool,
        plaintext_length: int | None,
        inner: int | None = None,
    ) -> None:
        self._out.append(
            TlsRecord(
                ts_first=rec.ts_first,
                ts_last=rec.ts_last,
                flow_id=self.flow_id,
                direction=d,
                stream_offset=rec.stream_offset,
                content_type=rec.content_type,
                version=rec.version,
                length=len(rec.header) + len(rec.fragment),
                decrypted=decrypted,
                plaintext_length=plaintext_length,
                inner_content_type=inner,
            )
        )

    def _on_content(self, d: Direction, rec: RawRecord, ctype: int, data: bytes) -> None:
        st = self._dirs[d]
        if ctype == HANDSHAKE:
            try:
                messages = st.hs.feed(data)
            except DecodeError as err:
                self._anomaly(d, err.code, str(err), rec.ts_last, rec.stream_offset)
                return
            for msg_type, body in messages:
                self._on_handshake(d, rec, msg_type, body)
        elif ctype == CHANGE_CIPHER_SPEC:
            self._on_change_cipher_spec(d, rec)
        elif ctype == APPLICATION_DATA and data:
            self._out.append(
                Plaintext(
                    ts_first=rec.ts_first,
                    ts_last=rec.ts_last,
                    flow_id=self.flow_id,
                    direction=d,
                    stream_offset=st.plaintext_offset,
                    data=data,
                )
            )
            st.plaintext_offset += len(data)
        elif ctype == 0:  # TLS 1.3 inner plaintext of only zeros (RFC 8446 §5.4)
            self._anomaly(
                d, "bad_inner_plaintext", "no content type", rec.ts_last, rec.stream_offset
            )

    # -- decryption ------------------------------------------------------------------
    def _decrypt(self, d: Direction, st: _Direction, rec: RawRecord) -> tuple[int, bytes] | None:
        if st.decryptor is None and st.stopped_reason is None:
            self._late_key_lookup(d, st)
            if (st.decryptor is None and rec.content_type == APPLICATION_DATA
                    and self._searching(st)):
                self._search(d, st, rec)
        dec = st.decryptor
        if dec is None:
            if st.stopped_reason is None:
                self._report_missing(d, rec)
            return None
        result = dec.decrypt(rec.content_type, rec.version, rec.header, rec.fragment)
        if result is None:
            if not st.trial:
                st.decryptor = None
                st.stopped_reason = "decrypt_failed"
                detail = f"record {dec.seq} of this key epoch failed authentication"
                self._anomaly(d, "decrypt_failed", detail, rec.ts_last, rec.stream_offset)
            return None
        st.trial = False
        st.epoch_records += 1
        return result

    # -- sessions without a captured handshake ---------------------------------------
    def _searching(self, st: _Direction) -> bool:
        """Is this direction still looking for its keys by trial decryption? (No
        ClientHello seen, so no client random to look up; TLS 1.3 or unknown.)"""
        return (self.keylog is not None and self._ch is None and st.decryptor is None
                and st.stopped_reason is None and st.search_tries < SEARCH_RECORDS
                and (self._sh is None or (self._tls13 and self._suite is not None)))

    def _search(self, d: Direction, st: _Direction, rec: RawRecord) -> None:
        """Try the key log's secrets on ``rec``; install the one that decrypts it."""
        assert self.keylog is not None
        app, hs_label = _LABELS[d]
        limits = self._search_limits
        st.search_tries += 1
        if len(rec.fragment) >= 8:
            st.search_nonces.append(int.from_bytes(rec.fragment[:8], "big"))
        result = keysearch.search(
            self.keylog, ((app, limits.generations), (hs_label, 1)), rec.header, rec.fragment,
            limits, suites=(self._suite,) if self._suite is not None else None,
            prefer=self._found_random, chacha=st.search_tries == 1)
        st.search_keys += result.keys
        st.search_secrets = max(st.search_secrets, result.secrets)
        found = result.found
        if found is None:
            if st.search_tries >= SEARCH_RECORDS:
                st.stopped_reason = "tls13_secret_not_found"
                self._anomaly(d, *self._not_found(st), rec.ts_last, rec.stream_offset)
            return
        suite = found.suite
        self._midstream = self._keys_found = self._tls13 = True
        self._suite = suite
        self._found_random = found.client_random
        st.decryptor = dec = _tls13_decryptor(suite, found.secret)
        dec.seq = found.seq
        st.key_src = (found.label, found.generation)
        self._switch(d, st, Switch.APPLICATION_KEYS if found.label == app
                     else Switch.HANDSHAKE_KEYS, rec)
        st.app_gen = found.generation if st.in_app_epoch else 0
        # a handshake secret matched: its Finished switches to the same entry's
        # application secret, as after a captured ServerHello
        st.app_secret = found.secret if st.in_app_epoch else self.keylog.get(
            found.client_random, app)
        st.trial = False
        st.epoch_records = 0
        if st.first_protected_ts is None:
            st.first_protected_ts = rec.ts_last
        updates = {0: "no KeyUpdate", 1: "1 KeyUpdate"}.get(
            found.generation, f"{found.generation} KeyUpdates")
        detail = (f"TLS 1.3 session already open when the capture began: {found.label} of "
                  f"client_random {found.client_random.hex()} found by trial decryption "
                  f"({suite.name}, {updates}, record {found.seq}; keys tried: "
                  f"{st.search_keys}); SNI, ALPN and handshake time unknown")
        self._anomaly(d, "handshake_not_captured", detail, rec.ts_last, rec.stream_offset)
        if not self._info_emitted and self._sh is None:
            self._emit_found_info(d, rec)

    def _not_found(self, st: _Direction) -> tuple[str, str]:
        """The anomaly of a direction whose keys the search did not find: a TLS 1.2
        AES-GCM connection is recognised by its records' explicit nonces, which
        count up by one (the record sequence number, as OpenSSL and most stacks
        send it: RFC 5288 3); a TLS 1.3 record starts with ciphertext."""
        nonces = getattr(st, "search_nonces", [])  # (a state kept before they were)
        if len(nonces) >= 2 and all(b - a == 1 for a, b in itertools.pairwise(nonces)):
            return "tls12_no_handshake", (
                "TLS 1.2 (AES-GCM: its records' explicit nonces count up by one from "
                f"{nonces[0]}) whose handshake was not captured: TLS 1.2 derives its keys "
                "from both hello randoms, which only the handshake carries, so the key log "
                "cannot decrypt it. Its records keep their times; to decode it, capture "
                "from before the connection opens (or ingest the earlier rotation file "
                "first)")
        return "tls13_secret_not_found", self._not_found_detail(st)

    def _not_found_detail(self, st: _Direction) -> str:
        assert self.keylog is not None
        limits = self._search_limits
        log = self.keylog
        # file names only: a table row must not depend on where the dataset was made
        where = ", ".join(os.path.basename(src) for src in log.sources) or "the key log"
        if not st.search_secrets:
            return (f"no handshake captured, and {where} ({len(log)} client randoms) holds "
                    "no TLS 1.3 traffic secret to search: if this is TLS 1.2 it cannot be "
                    "decrypted without its handshake (capture from before the connection "
                    "opens); if TLS 1.3, pass the key log the client wrote when it opened")
        chacha_gens = min(limits.generations, keysearch.CHACHA_GENERATIONS)
        records = "record" if st.search_tries == 1 else f"{st.search_tries} records"
        return (f"no handshake captured, and no TLS 1.3 traffic secret in {where} "
                f"({st.search_secrets} secrets, {st.search_keys} keys tried) decrypts this "
                f"direction's first {records} at KeyUpdate generations "
                f"0-{limits.generations - 1} and record numbers below {limits.records} "
                f"(AES-GCM), generations 0-{chacha_gens - 1} and numbers below "
                f"{limits.chacha_records} (ChaCha20, first record): the key log lacks this "
                "session, or it is TLS 1.2 (not decryptable without its handshake). Pass the "
                "key log the client wrote when the connection opened (--keylog); for an "
                "older session raise --limit tls13_search_generations or "
                "tls13_search_chacha_records")

    def _emit_found_info(self, d: Direction, rec: RawRecord) -> None:
        """Handshake info of a session found by the key search: version, suite, random."""
        suite = self._suite
        assert suite is not None and self._found_random is not None
        self._out.append(TlsHandshakeInfo(
            ts_first=rec.ts_first, ts_last=rec.ts_last, flow_id=self.flow_id, direction=d,
            stream_offset=rec.stream_offset, sni=None, alpn_offered=(), alpn=None,
            version=VERSION_NAMES[TLS13], cipher=suite.name, cipher_id=suite.id,
            resumed=False, hello_retry=False, client_random=self._found_random.hex(),
            handshake_ns=None, keys_found=True, complete=False,
            keylog=self.keylog.source_of(self._found_random) if self.keylog else None))
        self._info_emitted = True

    def _report_missing(self, d: Direction, rec: RawRecord) -> None:
        if self._sh is None and self._ch is None:
            # (with a key log the key search says what it found or tried instead)
            if not self._missing_reported and not self._searching(self._dirs[d]):
                self._missing_reported = True  # once per connection
                self._anomaly(None, "handshake_not_captured", NO_HANDSHAKE, rec.ts_last, None)
            return
        if self.keylog is None or self._missing_reported or self._suite is None:
            return
        self._missing_reported = True
        what = "no secrets for this client_random" if not self._keys_found else "secret missing"
        self._anomaly(d, "missing_keys", what, rec.ts_last, rec.stream_offset)

    def _late_key_lookup(self, d: Direction, st: _Direction) -> None:
        """Secrets may reach the key log after the ServerHello (pcapng DSB)."""
        if self._keys_found or st.epoch_records or self._sh is None or self._sh.hello_retry:
            return
        if st.encrypted or self._tls13:
            self._install_keys(self._sh)
            if not self._tls13 and st.decryptor is None:
                st.decryptor, st.pending = st.pending, None
                st.key_src, st.pending_src = st.pending_src, None

    def _install_keys(self, sh: ServerHello) -> None:
        suite, ch, log = self._suite, self._ch, self.keylog
        if suite is None or ch is None or log is None:
            return
        if self._tls13:
            self._install_tls13(suite, ch, log)
            return
        master = log.get(ch.random, CLIENT_RANDOM)
        if master is None:
            return
        self._keys_found = True
        for d, dec in zip((OUT, IN), self._tls12_decryptors(suite, ch, sh, master), strict=True):
            self._dirs[d].pending = dec
            self._dirs[d].pending_src = (CLIENT_RANDOM, 0)

    @staticmethod
    def _tls12_decryptors(suite: CipherSuite, ch: ClientHello, sh: ServerHello, master: bytes
                          ) -> tuple[RecordDecryptor, RecordDecryptor]:
        """The (client, server) write states of a TLS <= 1.2 master secret."""
        etm = (
            suite.kind == "block"
            and hs.EXT_ENCRYPT_THEN_MAC in ch.extensions
            and hs.EXT_ENCRYPT_THEN_MAC in sh.extensions
        )
        version = sh.version
        kb = tls12_key_block(
            master,
            ch.random,
            sh.random,
            version=version,
            prf_hash=suite.prf_hash,
            mac_key_length=suite.mac_length,
            key_length=suite.key_length,
            iv_length=suite.iv_length,
        )
        return (
            tls12_decryptor(suite, key=kb.client_write_key, iv=kb.client_write_iv,
                            mac_key=kb.client_write_mac_key, version=version, etm=etm),
            tls12_decryptor(suite, key=kb.server_write_key, iv=kb.server_write_iv,
                            mac_key=kb.server_write_mac_key, version=version, etm=etm),
        )

    def _install_tls13(self, suite: CipherSuite, ch: ClientHello, log: KeyLog) -> None:
        labels = {
            OUT: (CLIENT_HANDSHAKE_TRAFFIC_SECRET, CLIENT_TRAFFIC_SECRET_0),
            IN: (SERVER_HANDSHAKE_TRAFFIC_SECRET, SERVER_TRAFFIC_SECRET_0),
        }
        for d, (hs_label, app_label) in labels.items():
            st = self._dirs[d]
            hs_secret = log.get(ch.random, hs_label)
            app_secret = log.get(ch.random, app_label)
            if hs_secret is None and app_secret is None:
                continue
            self._keys_found = True
            st.app_secret = app_secret
            st.app_gen = 0
            if hs_secret is not None:
                st.decryptor = _tls13_decryptor(suite, hs_secret)
                st.key_src = (hs_label, 0)
                st.trial = d == OUT and hs.EXT_EARLY_DATA in ch.extensions
            elif app_secret is not None:
                # Only application secrets logged: skip handshake records silently.
                st.decryptor = _tls13_decryptor(suite, app_secret)
                st.key_src = (app_label, 0)
                self._switch(d, st, Switch.APPLICATION_KEYS, None)
                st.trial = True

    # -- handshake -------------------------------------------------------------------
    def _on_handshake(self, d: Direction, rec: RawRecord, msg_type: int, body: bytes) -> None:
        try:
            if msg_type == hs.CLIENT_HELLO and d == OUT:
                self._ch = hs.parse_client_hello(body)
                if self._ch_ts is None:
                    self._ch_ts = rec.ts_first
            elif msg_type == hs.SERVER_HELLO and d == IN:
                self._on_server_hello(rec, hs.parse_server_hello(body))
            elif msg_type == hs.ENCRYPTED_EXTENSIONS and d == IN:
                self._alpn = hs.parse_encrypted_extensions(body)
            elif msg_type == hs.SERVER_HELLO_DONE and d == IN:
                self._server_hello_done = True
            elif msg_type == hs.FINISHED and self._tls13:
                self._on_tls13_finished(d, rec)
            elif msg_type == hs.KEY_UPDATE and self._tls13:
                self._on_key_update(d)
        except DecodeError as err:
            self._anomaly(
                d, err.code, f"handshake type {msg_type}: {err}", rec.ts_last, rec.stream_offset
            )

    def _on_server_hello(self, rec: RawRecord, sh: ServerHello) -> None:
        first = self._sh is None
        self._sh = sh
        self._sh_offset, self._sh_ts = rec.stream_offset, rec.ts_last
        self._tls13 = sh.version == TLS13
        if sh.hello_retry:
            self._hello_retry = True
            return
        suite = suite_for(sh.cipher_suite)
        # a TLS 1.2 suite in a TLS 1.3 ServerHello (or the reverse) has no key schedule
        mismatch = suite is not None and suite.tls13 != self._tls13
        self._suite = None if mismatch else suite
        if self._tls13:
            self._resumed = hs.EXT_PRE_SHARED_KEY in sh.extensions
            for d, st in self._dirs.items():  # a compatibility CCS meant nothing
                self._switch(d, st, Switch.TLS13_SERVER_HELLO, rec)
        else:
            self._alpn = sh.alpn
            ch = self._ch
            self._resumed = bool(ch and sh.session_id and sh.session_id == ch.session_id)
        if mismatch:
            detail = (f"{suite_name(sh.cipher_suite)} selected in a "
                      f"{VERSION_NAMES.get(sh.version, hex(sh.version))} ServerHello")
            self._anomaly(IN, "cipher_version_mismatch", detail, rec.ts_last, rec.stream_offset)
        elif self._suite is None:
            name = suite_name(sh.cipher_suite)
            self._anomaly(IN, "unsupported_cipher", name, rec.ts_last, rec.stream_offset)
        elif self.keylog is not None:
            self._install_keys(sh)
        if first:
            self._emit_info(rec.ts_last)

    def _on_change_cipher_spec(self, d: Direction, rec: RawRecord) -> None:
        if self._tls13:
            return  # RFC 8446 §5: middlebox compatibility only
        st = self._dirs[d]
        if d == IN and self._sh is not None and not self._server_hello_done:
            self._resumed = True  # abbreviated handshake: no ServerHelloDone
        self._switch(d, st, Switch.CHANGE_CIPHER_SPEC, rec)

    def _on_tls13_finished(self, d: Direction, rec: RawRecord) -> None:
        st = self._dirs[d]
        if st.finished_ts is None:
            st.finished_ts = rec.ts_last
        self._switch(d, st, Switch.FINISHED, rec)

    # -- the epoch state machine -----------------------------------------------------
    def _switch(self, d: Direction, st: _Direction, switch: Switch,
                rec: RawRecord | None) -> None:
        """Move ``st`` by ``_TRANSITIONS`` (the new epoch first, then the action, as h2's
        ``H2StreamStateMachine.process_input``). A switch its epoch has no row for is a
        ``protocol_error`` at ``rec`` (the record that made it): decryption of the
        direction stops (records are still framed), its epoch stays."""
        row = _TRANSITIONS.get((st.epoch, switch))
        if row is None:
            detail = (f"{switch.name.lower()} in epoch {st.epoch.name.lower()}; "
                      "decryption stopped for this direction")
            st.decryptor = st.pending = None
            st.trial = False
            st.stopped_reason = "protocol_error"
            self._anomaly(d, "protocol_error", detail,
                          rec.ts_last if rec is not None else self._sh_ts,
                          rec.stream_offset if rec is not None else None)
            return
        action, st.epoch = row
        if action is not None:
            action(self, st)

    def _activate_pending(self, st: _Direction) -> None:
        """ChangeCipherSpec (RFC 5246 §7.1): the pending keys become current."""
        st.finished_ts = None
        st.decryptor, st.pending = st.pending, None
        st.key_src, st.pending_src = st.pending_src, None
        st.epoch_records = 0
        if st.decryptor is not None:
            st.stopped_reason = None

    def _application_keys(self, st: _Direction) -> None:
        """TLS 1.3 Finished (RFC 8446 §7.1): on to the application traffic secret."""
        st.epoch_records = 0
        st.trial = False
        suite = self._suite
        if st.stopped_reason is None and suite is not None and st.app_secret is not None:
            st.decryptor = _tls13_decryptor(suite, st.app_secret)
            d = OUT if st is self._dirs[OUT] else IN
            st.key_src = (_LABELS[d][0], st.app_gen)
        else:
            st.decryptor = None

    def _on_key_update(self, d: Direction) -> None:
        st = self._dirs[d]
        suite = self._suite
        if suite is None or st.app_secret is None or st.stopped_reason is not None:
            return
        st.app_secret = tls13_next_traffic_secret(st.app_secret, suite.prf_hash)
        st.app_gen += 1
        st.decryptor = _tls13_decryptor(suite, st.app_secret)
        st.key_src = (_LABELS[d][0], st.app_gen)
        st.epoch_records = 0

    # -- handshake info --------------------------------------------------------------
    def _check_complete(self, d: Direction, rec: RawRecord) -> None:
        if self._complete or self._sh is None or self._ch_ts is None:
            return
        fin_out, fin_in = self._dirs[OUT].finished_ts, self._dirs[IN].finished_ts
        if fin_out is not None and fin_in is not None:
            self._finish_handshake(max(fin_out, fin_in) - self._ch_ts, rec.ts_last)
        elif self._tls13 and d == OUT and not self._dirs[OUT].in_app_epoch and fin_out is None:
            # Without keys the client's Finished flight is its first protected record.
            first = self._dirs[OUT].first_protected_ts
            if first is not None and self._dirs[OUT].decryptor is None:
                self._finish_handshake(first - self._ch_ts, rec.ts_last)

    def _finish_handshake(self, handshake_ns: int, ts: int) -> None:
        self._complete = True
        self._handshake_ns = handshake_ns
        self._emit_info(ts)

    def _emit_info(self, ts: int) -> None:
        sh, ch = self._sh, self._ch
        assert sh is not None
        version = VERSION_NAMES.get(sh.version, f"0x{sh.version:04x}")
        self._out.append(
            TlsHandshakeInfo(
                ts_first=self._ch_ts if self._ch_ts is not None else self._sh_ts,
                ts_last=ts,
                flow_id=self.flow_id,
                direction=IN,
                stream_offset=self._sh_offset,
                sni=ch.sni if ch else None,
                alpn_offered=ch.alpn if ch else (),
                alpn=self._alpn,
                version=version,
                cipher=suite_name(sh.cipher_suite),
                cipher_id=sh.cipher_suite,
                resumed=self._resumed,
                hello_retry=self._hello_retry,
                client_random=ch.random.hex() if ch else None,
                handshake_ns=self._handshake_ns if self._complete else None,
                keys_found=self._keys_found,
                complete=self._complete,
                keylog=self._keylog_source(),
            )
        )
        self._info_emitted = True


    def _keylog_source(self) -> str | None:
        """The key log (file, or the capture's secrets block) that held this session's
        secrets: looked up by the ClientHello's random, or the one the key search found."""
        if not self._keys_found or self.keylog is None:
            return None
        random = self.client_random()
        return None if random is None else self.keylog.source_of(random)

    # -- resuming across capture files (``pipelines.ingest.resume``) ------------------
    # A session is pickled without key material: the key log, every decryptor and the
    # application secrets are left out; what is kept says where each key came from
    # (client random, key log label, KeyUpdate generation) and its record sequence
    # number, so ``resume_keys`` derives the same keys again from the next command's
    # key log.
    def __getstate__(self) -> dict[str, object]:
        state = dict(self.__dict__)
        state["keylog"] = None
        state["_out"] = []
        refs: dict[Direction, dict[str, object]] = {}
        dirs: dict[Direction, _Direction] = {}
        for d, st in self._dirs.items():
            refs[d] = {"dec": _key_ref(st.decryptor, st.key_src),
                       "pending": _key_ref(st.pending, st.pending_src),
                       "app": st.app_secret is not None}
            dirs[d] = replace(st, decryptor=None, pending=None, app_secret=None)
        state["_dirs"] = dirs
        state["_keyrefs"] = refs
        return state

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__dict__.update(state)

    def client_random(self) -> bytes | None:
        """The session's client random: from its ClientHello, or found by the key search."""
        return self._ch.random if self._ch is not None else self._found_random

    def resume_secret(self) -> tuple[bytes, str, bytes] | None:
        """``(client_random, label, secret)``: a key log secret this session's keys came
        from (the key state kept for resuming is sealed under a key derived from it),
        or None when it decrypted nothing."""
        random = self.client_random()
        if random is None or self.keylog is None:
            return None
        for st in self._dirs.values():
            for src in (st.key_src, st.pending_src):
                if src is not None:
                    secret = self.keylog.get(random, src[0])
                    if secret is not None:
                        return random, src[0], secret
        return None

    def resume_keys(self, keylog: KeyLog | None, ts: int) -> list[Event]:
        """After unpickling: derive the keys again from ``keylog`` (anomalies for what
        it lacks: decryption of that direction stops)."""
        self.keylog = keylog
        refs = cast("dict[Direction, dict[str, object]]", self.__dict__.pop("_keyrefs", {}))
        random = self.client_random()
        for d, ref in refs.items():
            st = self._dirs[d]
            for slot in ("dec", "pending"):
                r = ref[slot]
                if r is None:
                    continue
                dec = None if r == "unsupported" or random is None else self._rebuild(
                    d, random, *cast("tuple[str, int, int]", r))
                if dec is None:
                    self._resume_failed(d, r, random, ts)
                    continue
                if slot == "dec":
                    st.decryptor = dec
                else:
                    st.pending = dec
            if ref["app"] and random is not None and keylog is not None and self._suite:
                secret = keylog.get(random, _LABELS[d][0])
                if secret is not None:
                    for _ in range(st.app_gen):
                        secret = tls13_next_traffic_secret(secret, self._suite.prf_hash)
                st.app_secret = secret
        return self._drain()

    def _rebuild(self, d: Direction, random: bytes, label: str, gen: int, seq: int
                 ) -> RecordDecryptor | None:
        log, suite = self.keylog, self._suite
        if log is None or suite is None:
            return None
        secret = log.get(random, label)
        if secret is None:
            return None
        dec: RecordDecryptor
        if label == CLIENT_RANDOM:
            if self._ch is None or self._sh is None:
                return None
            out, in_ = self._tls12_decryptors(suite, self._ch, self._sh, secret)
            dec = out if d == OUT else in_
        else:
            for _ in range(gen):
                secret = tls13_next_traffic_secret(secret, suite.prf_hash)
            dec = _tls13_decryptor(suite, secret)
        dec.seq = seq
        return dec

    def _resume_failed(self, d: Direction, ref: object, random: bytes | None, ts: int) -> None:
        st = self._dirs[d]
        st.decryptor = None
        if ref == "unsupported":
            st.stopped_reason = "resume_unsupported"
            self._anomaly(d, "resume_unsupported", "this cipher's state (TLS 1.0 CBC chaining, "
                          "RC4) cannot be carried to the next capture file: decryption of "
                          "this direction stops (ingest the files in one command)", ts,
                          st.reader.next_offset)
            return
        label = cast("tuple[str, int, int]", ref)[0]
        where = ", ".join(self.keylog.sources) if self.keylog is not None else "no key log"
        st.stopped_reason = "resume_missing_keys"
        self._anomaly(d, "resume_missing_keys",
                      f"resuming this connection from the previous capture file needs "
                      f"{label} of client_random {random.hex() if random else '?'} and "
                      f"the key log given ({where}) lacks it: pass the key log the client "
                      "wrote when this connection opened (--keylog)", ts,
                      st.reader.next_offset)


def _key_ref(dec: RecordDecryptor | None, src: tuple[str, int] | None) -> object:
    """What is kept of a decryptor for resuming: ``(label, generation, seq)``, or
    ``"unsupported"`` for a cipher whose running state is not a sequence number."""
    if dec is None:
        return None
    if src is None or isinstance(dec, StreamDecryptor) or (
            isinstance(dec, BlockDecryptor) and dec._chained is not None):
        return "unsupported"
    return (src[0], src[1], dec.seq)

def _tls13_decryptor(suite: CipherSuite, secret: bytes) -> Tls13Decryptor:
    key, iv = tls13_traffic_keys(secret, suite.key_length, 12, suite.prf_hash)
    return Tls13Decryptor(suite, key, iv)


_Action = Callable[[TlsSession, _Direction], None]
_TRANSITIONS: dict[tuple[Epoch, Switch], tuple[_Action | None, Epoch]] = {
    # TLS <= 1.2: each ChangeCipherSpec activates the pending keys (renegotiation too)
    (Epoch.INITIAL, Switch.CHANGE_CIPHER_SPEC): (TlsSession._activate_pending,
                                                 Epoch.CIPHER_CHANGED),
    (Epoch.CIPHER_CHANGED, Switch.CHANGE_CIPHER_SPEC): (TlsSession._activate_pending,
                                                        Epoch.CIPHER_CHANGED),
    # TLS 1.3 (RFC 8446 §5, Appendix D.4): a CCS read before the ServerHello said 1.3
    # was a compatibility dummy
    (Epoch.INITIAL, Switch.TLS13_SERVER_HELLO): (None, Epoch.INITIAL),
    (Epoch.CIPHER_CHANGED, Switch.TLS13_SERVER_HELLO): (None, Epoch.INITIAL),
    # TLS 1.3 Finished: the application epoch; a later one (post-handshake
    # authentication, §4.6.2) changes nothing
    (Epoch.INITIAL, Switch.FINISHED): (TlsSession._application_keys, Epoch.APPLICATION),
    (Epoch.CIPHER_CHANGED, Switch.FINISHED): (TlsSession._application_keys,
                                              Epoch.CHANGED_APPLICATION),
    (Epoch.APPLICATION, Switch.FINISHED): (None, Epoch.APPLICATION),
    (Epoch.CHANGED_APPLICATION, Switch.FINISHED): (None, Epoch.CHANGED_APPLICATION),
    # keys installed without the handshake epoch (only application secrets logged; the
    # key search of a session that began before the capture)
    (Epoch.INITIAL, Switch.APPLICATION_KEYS): (None, Epoch.APPLICATION),
    (Epoch.CIPHER_CHANGED, Switch.APPLICATION_KEYS): (None, Epoch.CHANGED_APPLICATION),
    (Epoch.APPLICATION, Switch.APPLICATION_KEYS): (None, Epoch.APPLICATION),
    (Epoch.CHANGED_APPLICATION, Switch.APPLICATION_KEYS): (None, Epoch.CHANGED_APPLICATION),
    # the key search matched a handshake secret: the handshake epoch, its Finished to come
    (Epoch.INITIAL, Switch.HANDSHAKE_KEYS): (None, Epoch.INITIAL),
    (Epoch.CIPHER_CHANGED, Switch.HANDSHAKE_KEYS): (None, Epoch.CIPHER_CHANGED),
    (Epoch.APPLICATION, Switch.HANDSHAKE_KEYS): (None, Epoch.INITIAL),
    (Epoch.CHANGED_APPLICATION, Switch.HANDSHAKE_KEYS): (None, Epoch.CIPHER_CHANGED),
}
"""``(epoch, switch) -> (action, next epoch)`` of one direction, in the manner of h2's
``stream.py``: every epoch change of ``TlsSession`` is a row here. No row: a
ChangeCipherSpec or a TLS 1.3 ServerHello in a TLS 1.3 application epoch (a second,
contradicting ServerHello), a ``protocol_error`` (``TlsSession._switch``)."""
