"""Connections no protocol claims, taken in bulk (``AppLayer._quiet``) until detection
gives up: the same tables as the per-packet path.

The benchmark generator's plain TCP traffic is such a capture: JSON and text lines that
every protocol's probe refuses at the first bytes, read up to ``Limits.detect_bytes``
per direction (their ``tcp_rtt`` rows come from those packets only), with
retransmissions and out-of-order segments among them. Samples and public captures
are compared by ``test_fast_path.py``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from helpers.path_compare import assert_same_tables, read_tables
from pcapflow.pipelines.ingest import app_layer

import pcapflow

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture(scope="module")
def plain_tcp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    sys.path.insert(0, str(BENCH))
    try:
        import make_capture as mc
    finally:
        sys.path.remove(str(BENCH))
    path = tmp_path_factory.mktemp("plain") / "plain.pcap"
    mc.write(mc.plan(mc.Config(packets=12_000, seed=11)), str(path), "pcap")
    return path


def _ingest(capture: Path, data: Path, fast: bool, detect_bytes: int,
            monkeypatch: pytest.MonkeyPatch) -> tuple[int, int]:
    """Ingest with the batch path on or off (every run batched, however short);
    returns how many runs went through ``_quiet`` in bulk, and how many of them ended
    with the packet where detection gives up (``_gives_up``)."""
    bulk = gave_up = 0
    original = app_layer.AppLayer._quiet

    def counting(self: app_layer.AppLayer, *args: object) -> bool:
        nonlocal bulk, gave_up
        taken = original(self, *args)  # type: ignore[arg-type]
        bulk += taken
        gave_up += taken and len(args) > 6 and bool(args[6])
        return taken

    with monkeypatch.context() as m:
        m.setattr(app_layer, "FAST_PATH", fast)
        m.setattr(app_layer, "MIN_RUN", 1)
        m.setattr(app_layer.AppLayer, "_quiet", counting)
        pcapflow.ingest([capture], data=data, limits={"detect_bytes": detect_bytes})
    return bulk, gave_up


@pytest.mark.parametrize("detect_bytes", [4096, 700])
def test_undetected_connections_in_bulk_equal_per_packet(
        plain_tcp: Path, detect_bytes: int, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    assert _ingest(plain_tcp, tmp_path / "slow", False, detect_bytes, monkeypatch) == (0, 0)
    bulk, gave_up = _ingest(plain_tcp, tmp_path / "fast", True, detect_bytes, monkeypatch)
    # (most connections are finished by the run that reaches detect_bytes)
    assert bulk > 50 and gave_up > 20
    want, got = read_tables(tmp_path / "slow"), read_tables(tmp_path / "fast")
    assert want["tcp_rtt"].num_rows > 300
    assert set(want["flows"].column("app_protocol").to_pylist()) >= {"unknown"}
    assert_same_tables(want, got)


def test_a_layer_kept_before_refusals_resumes_unrefused() -> None:
    """A resume state written by an older pcapflow holds layers without ``refused``."""
    from pcapflow.parsers.limits import Limits

    layer = app_layer._Layer(7, None, inner=False, limits=Limits())
    layer.feed(0, b'{"e":"depthUpdate"}', 1, 1)
    assert layer.refused == [True, False]
    state = layer.__getstate__()
    again = app_layer._Layer.__new__(app_layer._Layer)
    again.__setstate__(state)
    assert again.refused == [True, False] and again.seen == layer.seen
    old = app_layer._Layer.__new__(app_layer._Layer)
    old.__setstate__((None, {k: v for k, v in state[1].items() if k != "refused"}))
    assert old.refused == [False, False] and old.pending == layer.pending
