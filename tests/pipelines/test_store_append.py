"""An append-mode commit (``store.APPEND``) of a partition with sub-directories: a
sub-directory every file of which the commit replaces moves whole (one journal entry),
one with a file kept moves file by file, and every prefix of the moves rolls forward
to the same dataset."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pcapflow.pipelines import store

CID = "c0ffee"
OLD = {"state.bin": "old", "derive/a": "old", "derive/b": "old", "derive/x/y": "old",
       "match/kept": "old", "match/old": "old", "candidates/0000-1": "old"}
NEW = {"state.bin": "new", "derive/a": "new", "derive/c": "new", "match/new": "new",
       "candidates/0000-2": "new", "flows/app": "new"}
DROP = ["derive/a", "derive/b", "derive/x/y", "match/old", "state.bin"]
AFTER = {"state.bin": "new", "derive/a": "new", "derive/c": "new", "match/kept": "old",
         "match/new": "new", "candidates/0000-1": "old", "candidates/0000-2": "new",
         "flows/app": "new"}


def _write(top: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (top / name).parent.mkdir(parents=True, exist_ok=True)
        (top / name).write_text(text)


def _files(top: Path) -> dict[str, str]:
    return {str(p.relative_to(top)): p.read_text() for p in sorted(top.rglob("*"))
            if p.is_file()}


def _staged(root: Path) -> store.Staging:
    _write(store.partition_dir(root, store.STATE, CID), OLD)
    st = store.Staging(root)
    _write(st.dir / store.STATE, NEW)
    (st.dir / store.APPEND).write_text(json.dumps({"capture_id": CID,
                                                   "drop": {store.STATE: DROP}}))
    return st


def _swaps(root: Path, monkeypatch: pytest.MonkeyPatch) -> list[dict[str, str | None]]:
    seen: list[list[dict[str, str | None]]] = []
    real = store._apply
    monkeypatch.setattr(store, "_apply", lambda swaps: (seen.append(swaps), real(swaps))[1])
    _staged(root).commit(CID, tables=[store.STATE])
    monkeypatch.undo()
    return seen[0]


def test_a_subdirectory_replaced_whole_is_one_move(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "d"
    swaps = _swaps(root, monkeypatch)
    part = store.partition_dir(root, store.STATE, CID)
    assert _files(part) == AFTER
    rel = sorted(str(Path(str(s["final"])).relative_to(part)) for s in swaps)
    # derive/ (every file replaced) and flows/ (new) whole; match/ and candidates/ keep
    # a file each: their new and replaced files one by one
    assert rel == ["candidates/0000-2", "derive", "flows", "match/new", "match/old",
                   "state.bin"]
    assert not list((root / store.TRASH).iterdir()) and not list(
        (root / store.JOURNAL).iterdir()) and not list((root / store.STAGING).iterdir())


def test_every_prefix_of_the_moves_rolls_forward(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    n = len(_swaps(tmp_path / "probe", monkeypatch))
    for k in range(n + 1):
        root = tmp_path / str(k)
        real = store._apply

        def crash(swaps: list[dict[str, str | None]], real=real, k=k) -> None:
            real(swaps[:k])
            raise KeyboardInterrupt  # (past the commit point: the journal is in place)

        monkeypatch.setattr(store, "_apply", crash)
        st = _staged(root)
        with pytest.raises(KeyboardInterrupt):
            st.commit(CID, tables=[store.STATE])
        monkeypatch.undo()
        with store.locked(root):  # (what the next command or reader does first)
            store.recover(root)
        assert _files(store.partition_dir(root, store.STATE, CID)) == AFTER, k
        assert not list((root / store.JOURNAL).iterdir()), k
