"""Golden end-to-end baselines: every table of every sample capture, dumped sorted.

How this works. Each capture in ``sample_pcaps/`` is ingested on its own into a
fresh temporary dataset, the way the demo and the end-to-end tests ingest it:
with its own TLS key log where it has one (``binance_rest_dsb.pcapng`` carries
its secrets in a Decryption Secrets Block), the demo's venue map (so the FIX
samples are matched too), and the opt-in ``packets`` table. Every table the
dataset declares (``Dataset.tables``: ``pipelines/tables/schemas.py``) is read
through its DuckDB view and turned into canonical JSON rows:

* timestamps become integer nanoseconds since the epoch (UTC);
* nested values (header lists, FIX field lists, link types) become JSON lists
  and objects; a string longer than ``MAX_TEXT`` (big HTTP bodies, WebSocket
  payloads) becomes ``"sha256:<hex>:<length>"`` so the baselines stay small
  while any change to the text still shows;
* rows are sorted by every column, in column order (nulls first), so the order
  the ingest wrote them in carries no meaning.

Left out, because they legitimately change from run to run or machine to
machine (``VOLATILE``): ``captures.ingested_at`` (time of the run) and
``captures.pcapflow_version`` (changes with every release). ``captures.path``
is the absolute path the capture was ingested from; it is kept as the file's
name only (``PATH_COLUMNS``), as are the key log paths (``captures.keylogs``,
``flows.tls_keylog``). Nothing else in any table depends on the run.

The baselines live in ``tests/golden/baselines/<sample>/<table>.jsonl.gz``
(gzip without a timestamp, so regenerating unchanged tables rewrites identical
bytes). Regenerate on purpose only, and review the diff of the tables:

    python tests/golden/regen.py            # all samples
    python tests/golden/regen.py fix44_plain
    PCAPFLOW_REGEN_GOLDEN=1 pytest tests/e2e/test_golden.py

``tests/e2e/test_golden.py`` re-ingests and compares.

The third-party corpus (``$PCAPFLOW_PUBLIC_CAPTURES``, not in the repository)
has baselines too, in ``tests/golden/public/<table>.jsonl.gz`` (all captures in
one file per table, told apart by ``capture_id``; ``captures.path`` relative to
the corpus root). It is ingested in one call with every key log the corpus
lists (``analysis.json``), as ``tests/pipelines/test_fast_path.py`` does, plus the
``packets`` table; ``tests/public/test_golden_public.py`` (slow, ~2 min) compares:

    python tests/golden/regen.py --public
"""

from __future__ import annotations

import atexit
import datetime as dt
import functools
import gzip
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pcapflow

HERE = Path(__file__).resolve().parent
BASELINES = HERE / "baselines"
SAMPLES = HERE.parents[1] / "sample_pcaps"
CAPTURE_SUFFIXES = (".pcap", ".pcapng")

VOLATILE = {("captures", "ingested_at"), ("captures", "pcapflow_version")}
"""(table, column) pairs left out of the baselines: they change with the run or release."""
PATH_COLUMNS = {("captures", "path"), ("captures", "keylogs"), ("flows", "tls_keylog")}
"""(table, column) pairs holding a file path (or a list of them): kept as the file's name
only (relative to the corpus for the public captures)."""
MAX_TEXT = 200
"""Strings longer than this are stored as ``sha256:<hex>:<length>``."""

# The demo's venue map (pcapflow/cli_demo.py): the FIX samples' comp ids name the venue.
VENUE_MAP = """\
[[venue]]
name = "mockfix"
sender_comp_id = "PCFTRADER1"
target_comp_id = "MOCKEX"
matcher = "fix"
"""

Row = dict[str, object]


@dataclass(frozen=True, slots=True)
class Sample:
    """One committed capture and its key log (None: none, or embedded in the file)."""

    name: str
    capture: Path
    keylog: Path | None


def samples() -> list[Sample]:
    """Every capture in ``sample_pcaps/``, sorted by name."""
    out = []
    for path in sorted(p for p in SAMPLES.iterdir() if p.suffix in CAPTURE_SUFFIXES):
        key = path.with_suffix(".keylog")
        out.append(Sample(path.stem, path, key if key.is_file() else None))
    return out


def sets() -> list[Sample]:
    """Every recording kept in a folder of ``sample_pcaps/`` (MANIFEST.md, "Capture
    sets"): ``capture`` is the folder, ingested as ``pcapflow ingest FOLDER`` ingests
    it (its capture files as one capture; ``reference/`` is not among them)."""
    out = []
    for folder in sorted(p for p in SAMPLES.iterdir() if p.is_dir()):
        key = folder / f"{folder.name}.keylog"
        if key.is_file() or (folder / f"{folder.name}.truth.jsonl").is_file():
            out.append(Sample(folder.name, folder, key if key.is_file() else None))
    return out


def ingest(sample: Sample, root: Path, *, packets: bool = True) -> Path:
    """Ingest one sample into a new dataset under ``root``; returns the dataset path."""
    venues = root / "venues.toml"
    venues.write_text(VENUE_MAP)
    data = root / "data"
    keys = [sample.keylog] if sample.keylog is not None else []
    pcapflow.ingest([sample.capture], keylog=keys, data=data, venues=venues, packets=packets)
    return data


def _canon(value: object) -> object:
    """A JSON-ready, run-independent form of one cell."""
    if isinstance(value, dt.datetime):
        raise TypeError("timestamps are converted in SQL")  # pragma: no cover
    if isinstance(value, str) and len(value) > MAX_TEXT:
        digest = hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()
        return f"sha256:{digest}:{len(value)}"
    if isinstance(value, dict):
        return {k: _canon(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_canon(v) for v in value]
    if isinstance(value, float) and value != value:
        return "NaN"
    return value


def _sort_key(row: Row) -> tuple[object, ...]:
    """Nulls first, then values; nested values compare as their JSON text."""
    key: list[object] = []
    for v in row.values():
        if v is None:
            key.append((0, 0, ""))
        elif isinstance(v, (dict, list)):
            key.append((1, 0, json.dumps(v, sort_keys=True)))
        elif isinstance(v, bool):
            key.append((1, int(v), ""))
        elif isinstance(v, (int, float)):
            key.append((1, v, ""))
        else:
            key.append((1, 0, str(v)))
    return tuple(key)


def _path_cell(value: str, root: Path | None) -> str:
    """A capture path without the machine's directories: relative to ``root``, else
    the file name."""
    path = Path(value)
    if root is not None:
        try:
            return path.relative_to(root).as_posix()
        except ValueError:
            pass
    return path.name


def _without_dirs(value: object, dirs: list[str]) -> object:
    """Text that names a file under the samples or corpus directory (an anomaly's detail
    naming the key log it searched) with that directory left out: the machine's paths
    are no part of a baseline."""
    if isinstance(value, str):
        for d in dirs:
            value = value.replace(d, "")
    return value


def dump_tables(data: Path, path_root: Path | None = None) -> dict[str, list[Row]]:
    """Every table of the dataset at ``data`` as sorted canonical rows (paths under
    ``path_root`` relative to it, others as file names)."""
    out: dict[str, list[Row]] = {}
    with pcapflow.open(data) as ds:
        for table in ds.tables:
            schema = ds.sql(f"SELECT * FROM {table} LIMIT 0").arrow().schema
            cols = []
            for field in schema:
                if (table, field.name) in VOLATILE:
                    continue
                q = f'"{field.name}"'
                if str(field.type).startswith("timestamp"):
                    q = f"epoch_ns({q}) AS {q}"  # exact integer ns, no tz formatting
                cols.append(q)
            rel = ds.sql(f"SELECT {', '.join(cols)} FROM {table}")
            names = [c for c in rel.columns]
            rows = []
            dirs = [f"{d}/" for d in (SAMPLES, path_root) if d is not None]
            for tup in rel.fetchall():
                row = {n: _canon(v if (table, n) in PATH_COLUMNS else _without_dirs(v, dirs))
                       for n, v in zip(names, tup, strict=True)}
                for t, c in PATH_COLUMNS:
                    if t == table and isinstance(row.get(c), str):
                        row[c] = _path_cell(row[c], path_root)  # type: ignore[arg-type]
                    elif t == table and isinstance(row.get(c), list):
                        row[c] = [_path_cell(p, path_root) for p in row[c]]  # type: ignore[union-attr]
                rows.append(row)
            rows.sort(key=_sort_key)
            out[table] = rows
    return out


def dump_sample(sample: Sample) -> dict[str, list[Row]]:
    """Ingest one sample into a temporary dataset and dump its tables."""
    root = Path(tempfile.mkdtemp(prefix=f"golden_{sample.name}_"))
    try:
        return dump_tables(ingest(sample, root))
    finally:
        shutil.rmtree(root, ignore_errors=True)


def baseline_path(sample: str, table: str) -> Path:
    """Baseline file of one table; ``sample`` PUBLIC means the public corpus."""
    folder = PUBLIC_BASELINES if sample == PUBLIC else BASELINES / sample
    return folder / f"{table}.jsonl.gz"


def _lines(rows: Iterable[Row]) -> Iterator[str]:
    for row in rows:
        yield json.dumps(row, ensure_ascii=False, separators=(",", ":")) + "\n"


def write_baseline(sample: str, tables: dict[str, list[Row]]) -> None:
    """Replace the baselines of one sample, or of the public corpus for ``PUBLIC``
    (one gzip'd JSONL file per table)."""
    folder = baseline_path(sample, "x").parent
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    for table, rows in tables.items():
        text = "".join(_lines(rows)).encode("utf-8")
        # mtime=0 and no file name: identical tables give identical bytes
        with open(baseline_path(sample, table), "wb") as raw, \
                gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=9) as f:
            f.write(text)


def read_baseline(sample: str, table: str) -> list[Row] | None:
    """The committed rows of one table, None when there is no baseline file."""
    path = baseline_path(sample, table)
    if not path.is_file():
        return None
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def baseline_tables(sample: str) -> list[str]:
    """Tables with a committed baseline for ``sample`` (or ``PUBLIC``)."""
    folder = baseline_path(sample, "x").parent
    return sorted(p.name.removesuffix(".jsonl.gz") for p in folder.glob("*.jsonl.gz"))


def roundtrip(rows: list[Row]) -> list[Row]:
    """Rows as they read back from a baseline file (JSON turns tuples into lists...)."""
    return [json.loads(line) for line in _lines(rows)]


# ------------------------------------------------------------------ comparing
SHOW = 5
"""Rows shown per side in a failure message."""


def _line(row: Row) -> str:
    return json.dumps(row, ensure_ascii=False, sort_keys=False)


def describe_diff(table: str, expected: list[Row], actual: list[Row]) -> str:
    """A readable account of how ``actual`` differs from the baseline ``expected``."""
    out = [f"{table}: baseline {len(expected)} rows, now {len(actual)} rows"]
    cols_e = list(expected[0]) if expected else []
    cols_a = list(actual[0]) if actual else []
    if expected and actual and cols_e != cols_a:
        gone = [c for c in cols_e if c not in cols_a]
        new = [c for c in cols_a if c not in cols_e]
        out.append(f"  columns gone: {gone or '-'}; new: {new or '-'}"
                   + ("; order changed" if not gone and not new else ""))
    count_e, count_a = Counter(map(_line, expected)), Counter(map(_line, actual))
    only_e = list((count_e - count_a).elements())
    only_a = list((count_a - count_e).elements())
    out.append(f"  {len(only_e)} rows only in the baseline, {len(only_a)} only now")
    for label, rows in (("baseline only", only_e), ("now only", only_a)):
        for line in rows[:SHOW]:
            out.append(f"  {label}: {line}")
        if len(rows) > SHOW:
            out.append(f"  {label}: ... {len(rows) - SHOW} more")
    for i, (e, a) in enumerate(zip(expected, actual, strict=False)):
        if e != a:
            cells = [f"{c}: {e.get(c)!r} -> {a.get(c)!r}"
                     for c in dict.fromkeys([*e, *a]) if e.get(c) != a.get(c)]
            out.append(f"  first differing sorted row #{i}: " + "; ".join(cells[:12]))
            break
    out.append("  (a deliberate change? regenerate: python tests/golden/regen.py, "
               "then review the diff)")
    return "\n".join(out)


# ------------------------------------------------------------------ public corpus
PUBLIC = "public"
"""Pseudo sample name of the third-party corpus in ``baseline_path`` and friends."""
PUBLIC_BASELINES = HERE / "public"
CORPUS_INDEX = "analysis.json"


def public_root() -> Path:
    """The third-party corpus directory (``tests/helpers/paths.py`` decides; it may not exist)."""
    tests = str(HERE.parent)
    if tests not in sys.path:  # run as a script: tests/ is not on the path
        sys.path.insert(0, tests)
    from helpers.paths import PUBLIC as root

    return root


def public_inputs(root: Path) -> tuple[list[Path], list[Path]]:
    """Every capture of the corpus and every key log its index lists, sorted."""
    caps = sorted(p for p in root.rglob("*") if p.suffix in CAPTURE_SUFFIXES)
    index = json.loads((root / CORPUS_INDEX).read_text())
    keys = sorted({root / e["key"] for e in index if e.get("key")})
    return caps, keys


PUBLIC_JOBS = min(2, os.cpu_count() or 1)
"""Captures of the corpus ingested at once (``pcapflow ingest --jobs``): the CI machine's
two cores, where a test run otherwise keeps one busy."""


def ingest_public(root: Path, data: Path, jobs: int = PUBLIC_JOBS) -> Path:
    """Ingest the whole corpus into ``data`` with every key log its index lists and the
    ``packets`` table; returns ``data``. With ``jobs`` > 1 a child ``pcapflow ingest
    --jobs`` does it (a process of its own: the caller's threads are never forked); the
    tables are the same either way (``tests/test_golden_public.py`` checks them against
    baselines written by a one-process ingest)."""
    caps, keys = public_inputs(root)
    if jobs <= 1:
        pcapflow.ingest(caps, keylog=keys, data=data, packets=True)
        return data
    # --new-set: captures ingested side by side must not resume one another's rotation
    # (time_2038.pcap / time_2106.pcap), which one process, one capture after the
    # other, never does
    argv = [sys.executable, "-m", "pcapflow", "ingest", *map(str, caps), "--packets",
            "--data", str(data), "--jobs", str(jobs), "--new-set"]
    for k in keys:
        argv += ["--keylog", str(k)]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=3600,
                          env={**os.environ, "NO_COLOR": "1", "TERM": "dumb"})
    if proc.returncode != 0:
        raise RuntimeError(f"pcapflow ingest of the public corpus failed ({proc.returncode})"
                           f": {proc.stderr.strip()[-2000:]}")
    return data


@functools.cache
def public_dataset(root: Path) -> Path:
    """The corpus ingested once per test process (``ingest_public``) into a temporary
    directory removed at exit: ``test_golden_public`` dumps every table of it,
    ``test_public_ingest`` checks its counts against tshark's."""
    tmp = Path(tempfile.mkdtemp(prefix="golden_public_"))
    atexit.register(shutil.rmtree, tmp, True)
    return ingest_public(root, tmp / "data")


def dump_public(root: Path) -> dict[str, list[Row]]:
    """Ingest the whole corpus into a temporary dataset and dump its tables."""
    tmp = Path(tempfile.mkdtemp(prefix="golden_public_"))
    try:
        return dump_tables(ingest_public(root, tmp / "data"), path_root=root)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str]) -> int:
    if argv == ["--public"]:
        root = public_root()
        if not (root / CORPUS_INDEX).is_file():
            print(f"public capture corpus not found at {root}", file=sys.stderr)
            return 2
        tables = dump_public(root)
        write_baseline(PUBLIC, tables)
        print("public: " + ", ".join(f"{t} {len(r)}" for t, r in tables.items() if r))
        return 0
    wanted = set(argv)
    chosen = [s for s in samples() + sets() if not wanted or s.name in wanted]
    unknown = wanted - {s.name for s in chosen}
    if unknown:
        print(f"no such sample: {', '.join(sorted(unknown))}", file=sys.stderr)
        return 2
    for s in chosen:
        tables = dump_sample(s)
        write_baseline(s.name, tables)
        counts = ", ".join(f"{t} {len(r)}" for t, r in tables.items() if r)
        print(f"{s.name}: {counts}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
