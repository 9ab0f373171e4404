"""The ``pcapflow`` command: a thin typer layer over ``pcapflow.api``.

Every ``PcapflowError`` is caught in ``main`` and printed as one line (what and
where); exit codes: 0 success, 1 bad input, 2 bad usage, 130 interrupted.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from .parsers.errors import PcapflowError
from .render import LazyConsole, escape

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Order-to-ack latency of trading traffic, measured on the wire.",
)
console = LazyConsole(stderr=True, soft_wrap=True)


def _version(value: bool) -> None:
    if value:
        from . import __version__

        out.print(f"pcapflow {__version__}", highlight=False)
        raise typer.Exit()


@app.callback()
def _root(
    ctx: typer.Context,
    version: Annotated[bool, typer.Option(
        "--version", callback=_version, is_eager=True, help="Print the version and exit")]
        = False,
) -> None:
    """Order-to-ack latency of trading traffic, measured on the wire."""
    if ctx.invoked_subcommand != "ingest":  # (an ingest: once its libraries are imported)
        _startup_done()


def _startup_done() -> None:
    """The console script starts with Python's cyclic garbage collector off
    (``pcapflow._entry``): importing NumPy, Numba, pyarrow and pcapflow's parsers makes
    some 130,000 container objects that live as long as the process, and the collector
    ran ~230 times during a 1 MB ingest (~200 while importing, one pass over all of
    them), ~50 ms of its ~0.85 s of CPU. Once the command's libraries are in, the objects
    made so far are moved out of the collector's sight for good (``gc.freeze``: its later
    passes no longer walk them) and it runs as usual: ~45 passes in that ingest."""
    import gc

    from . import _entry

    if _entry.CONSOLE and not gc.isenabled():
        gc.freeze()
        gc.enable()


out = LazyConsole()

DataOpt = Annotated[
    Path | None,
    typer.Option("--data", help="Dataset directory (default $PCAPFLOW_DATA or ./pcapflow_data)"),
]
FormatOpt = Annotated[str, typer.Option("--format", help="table, csv or json")]


class _SkipImports:
    """A ``sys.meta_path`` finder that makes importing the named packages fail."""

    def __init__(self, names: frozenset[str]) -> None:
        self.names = names

    def find_spec(self, fullname: str, path: object = None, target: object = None) -> None:
        if fullname.partition(".")[0] in self.names:
            raise ModuleNotFoundError(f"{fullname} is not used by an ingest", name=fullname)


def _skip_unused_imports() -> None:
    """Keep ``ingest`` from importing pandas, SciPy, cffi and PyYAML, which it never
    uses (~0.6 s).

    pyarrow imports pandas on its first array (even one made from a list) when
    pandas is installed, Numba imports SciPy on its first kernel, to offer BLAS
    to ``np.dot``, and cffi there too, parsing C declarations with pycparser
    (~30 ms) to type cffi functions (pcapflow calls C through ctypes; cryptography
    through its own Rust bindings), and PyYAML at its own import, to read a ``.numba_config.yaml``
    (kept when the working directory has one). An ingest needs none of them, so
    in the CLI's own process (never a user's: the Python API leaves imports
    alone) these imports fail at once and the libraries take their "not
    installed" path. A package already imported is left as it is.
    """
    skip = ["pandas", "scipy", "cffi"]
    if not os.path.exists(".numba_config.yaml"):
        skip.append("yaml")
    names = frozenset(n for n in skip if n not in sys.modules)
    if names:
        sys.meta_path.insert(0, _SkipImports(names))


class _NoDoc(dict):
    """numpydoc sections of none: every section empty."""

    def __init__(self, text: object = None, config: object = None) -> None:
        super().__init__()

    def __missing__(self, key: str) -> list:
        return []


def _import_compute_without_docs() -> None:
    """Import ``pyarrow.compute`` without parsing the numpydoc text of its options
    classes: at import it wraps each of its ~290 compute functions and writes the
    wrapper a docstring, each options class's text parsed by its vendored numpydoc
    reader (~13 ms of CPU of a 1 MB ingest's ~0.6 s). An ingest reads no docstring, so in
    the CLI's own process (as ``_skip_unused_imports``) that reader gives empty sections
    while the module loads (the wrappers lose their options' parameter lists), and is
    put back after. Already imported, or anything unexpected: imported as it is."""
    if "pyarrow.compute" in sys.modules:
        return
    try:
        from pyarrow.vendored import docscrape
    except ImportError:
        return
    reader = getattr(docscrape, "NumpyDocString", None)
    if reader is None:
        return
    docscrape.NumpyDocString = _NoDoc
    try:
        import pyarrow.compute  # noqa: F401
    except Exception:  # (a pyarrow that wants more of it: imported as it is below)
        pass
    finally:
        docscrape.NumpyDocString = reader


COMPILING = ("compiling pcapflow's kernels for this machine (once after installing: about "
             "a minute of CPU; later runs load them)")


def compiling_notice() -> None:
    """Say on stderr, once, when this command must compile a kernel (``jitload``): on a
    terminal only, as the progress bars (piped, no line for a script to skip)."""
    if not console.is_terminal:
        return
    from .parsers import jitload

    jitload.on_first_compile(lambda: console.print(f"[dim]{COMPILING}[/dim]", highlight=False))


@app.command()
def ingest(
    captures: Annotated[
        list[str], typer.Argument(help="pcap/pcapng files (gzip/zstd ok), directories of "
                                  "them, glob patterns; - = stdin")
    ],
    keylog: Annotated[
        list[Path] | None,
        typer.Option("--keylog", help="NSS key log file (SSLKEYLOGFILE); repeatable"),
    ] = None,
    data: DataOpt = None,
    packets: Annotated[
        bool, typer.Option("--packets", help="Also write the packets table")
    ] = False,
    tcp_only: Annotated[
        bool, typer.Option("--tcp-only", help="Stop at the TCP layer (flows, tcp_events)")
    ] = False,
    jobs: Annotated[int, typer.Option("--jobs", "-j", help="Captures ingested in parallel")] = 1,
    workers: Annotated[
        str,
        typer.Option("--workers", "-w", help="Processes per capture, its connections sharded "
                     "across them; auto: the idle CPUs (CPUs less the load average, at most "
                     "4), 1 for a file under 16 MB"),
    ] = "auto",
    venues: Annotated[
        Path | None,
        typer.Option(
            "--venues", help="TOML venue map: addresses/ports/hosts/FIX comp ids -> venue"
        ),
    ] = None,
    strict: Annotated[
        bool,
        typer.Option(
            "--strict", help="Exit 1 when a capture file is damaged (truncated, corrupt block)"
        ),
    ] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Every anomaly code")] = False,
    separate: Annotated[
        bool,
        typer.Option("--separate", help="Every file is a capture of its own (by default, files "
                     "of one recording, e.g. a tcpdump -G/-C rotation, are read as one)"),
    ] = False,
    limit: Annotated[
        list[str] | None,
        typer.Option("--limit", help="Resource cap NAME=VALUE, e.g. ws_max_message=32M; "
                     "repeatable (names in the README, 'Limits')"),
    ] = None,
    new_set: Annotated[
        bool,
        typer.Option("--new-set", help="Do not continue a rotation ingested by earlier "
                     "commands (by default the next file of a tcpdump -G/-C rotation resumes "
                     "the connections the previous one left open: docs/resume.md)"),
    ] = False,
    cluster: Annotated[
        str | None,
        typer.Option("--cluster", help="Dask scheduler address (tcp://host:port), or "
                     "local:N for N local worker processes: capture sets are spread over "
                     "the workers (needs pip install 'pcapflow[live]')"),
    ] = None,
) -> None:
    """Read captures into Parquet tables (replacing earlier ingests of the same files).

    Files of one recording given together (same directory, names that differ only in
    digits: a tcpdump -G/-C rotation, a dumpcap ring buffer, an editcap split) are
    one capture: connections run on from file to file.
    """
    if cluster is None:  # dask.distributed reads its configuration with PyYAML
        _skip_unused_imports()  # first: checking the key logs already imports the parsers
        _import_compute_without_docs()
    for c in captures:
        if c != "-" and not os.path.exists(c) and not any(ch in c for ch in "*?["):
            raise PcapflowError(f"{c}: no such file")
    if jobs < 1:
        raise typer.BadParameter(f"{jobs}: at least 1", param_hint="--jobs")
    captures, keylog = _keylogs_among_captures(captures, list(keylog or []))
    for k in keylog:
        if not k.exists():
            raise PcapflowError(f"{k}: key log file not found")
    _check_keylogs(keylog)
    if venues is not None and not venues.exists():
        raise PcapflowError(f"{venues}: venue map file not found")
    if workers != "auto" and not (workers.isdigit() and int(workers) >= 1):
        raise typer.BadParameter(f"{workers!r}: a positive number or auto",
                                 param_hint="--workers")
    from .parsers.limits import Limits

    overrides = {}
    for item in limit or []:
        try:
            Limits.parse([item])  # a bad item fails here, before any reading
        except PcapflowError as err:
            raise typer.BadParameter(str(err), param_hint="--limit") from None
        name, _, value = item.partition("=")
        overrides[name] = value
    from . import api
    from .dataset import data_dir

    _startup_done()  # (its libraries are in: see there)
    compiling_notice()
    plan = api.capture_sets(captures, sets=not separate)
    named = {f for s in plan for f in s}
    for c in captures:
        if c != "-" and not any(f == c or f.startswith(os.path.join(c, "")) for f in named) \
                and (os.path.isdir(c) or not os.path.exists(c)):
            raise PcapflowError(f"{c}: no capture files " + (
                "in this directory" if os.path.isdir(c) else "match this pattern"))
    root = data_dir(data)
    had = {p.name.removeprefix("capture_id=") for p in (root / "captures").glob("capture_id=*")}
    sizes = {s[0]: sum(os.path.getsize(f) if f != "-" else 0 for f in s) for s in plan}
    names = {s[0]: _set_name(s) for s in plan}

    def run(progress: Callable[[str, int, int], None] | None) -> list:
        return api.ingest(
            plan,
            keylog=keylog,
            data=root,
            venues=venues,
            packets=packets,
            app=not tcp_only,
            jobs=jobs,
            progress=progress,
            limits=overrides,
            workers="auto" if workers == "auto" else int(workers),
            resume=not new_set,
            cluster=cluster,
        )

    if not console.is_terminal:  # no progress bars to draw: rich.progress stays unloaded
        results = run(None)
    else:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        with Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            console=console.get() if isinstance(console, LazyConsole) else console,
            transient=True,
            # redrawn after each chunk, not by rich's refresh thread: a sharded ingest
            # forks its workers, and no thread should be running at a fork
            auto_refresh=False,
        ) as prog:
            tasks = {c: prog.add_task(names[c], total=sizes[c] or None, info="")
                     for c in sizes}

            def progress(path: str, nbytes: int, npk: int) -> None:
                t = tasks[path]
                el = prog.tasks[t].elapsed or 1e-9
                prog.update(t, completed=nbytes,
                            info=f"{npk:,} packets, {npk / el:,.0f} pkt/s", refresh=True)

            results = run(progress)
    _print_summary(root, results, had, tcp_only=tcp_only, verbose=verbose,
                   keylogs=bool(keylog))
    damaged = [r for r in results if r.capture_problems]
    if strict and damaged:
        raise PcapflowError(
            f"{damaged[0].path}: capture file is damaged "
            f"({damaged[0].capture_problems[0]}); --strict makes this an error"
        )


def _print_summary(root: Path, results: list, had: set[str], *, tcp_only: bool,
                   verbose: bool, keylogs: bool = True) -> None:
    """The ingest summary: a table (a row per capture; plain when piped), then under it
    what each capture wrote, its anomalies, the coverage line and, per key log file, how
    many TLS sessions it had the secrets of. Warnings (a key log that matched nothing,
    sessions no key log covered, a damaged file) go to stderr. ``keylogs``: the ingest
    was given a key log (False: no key log lines unless a capture could hold secrets)."""
    from . import render

    header = ["capture", "packets", "flows", "orders", "anomalies", "seconds", "pkt/s", "MB/s"]
    rows = [[
        _set_name(r.paths or [r.path]), f"{r.packets:,}", f"{r.flows:,}",
        f"{r.rows.get('orders', 0):,}", f"{sum(r.anomaly_codes.values()):,}",
        f"{r.seconds:.2f}", f"{r.packets_per_second:,.0f}",
        f"{r.bytes / 1e6 / max(r.seconds, 1e-9):,.1f}"] for r in results]
    notes = []
    for r in results:
        name = _set_name(r.paths or [r.path])
        notes.append(f"{name}: " + ", ".join(f"{k} {v:,}" for k, v in sorted(r.rows.items())))
        if r.resumed_from is not None:
            notes.append(f"  resumed {r.resumed:,} connections from "
                         f"{Path(r.resumed_from).name} (capture {r.capture_id}, now "
                         f"{len(r.paths)} files)")
        if r.replaced:
            notes.append(f"  replaced earlier capture(s) sharing its files: "
                         f"{', '.join(r.replaced)}")
        if r.anomaly_codes:
            ranked = sorted(r.anomaly_codes.items(), key=lambda kv: -kv[1])
            shown = ranked if verbose else ranked[:TOP_ANOMALIES]
            more = len(ranked) - len(shown)
            notes.append("  anomalies: " + ", ".join(f"{k} {v:,}" for k, v in shown)
                         + (f", and {more} more codes (--verbose: all)" if more else ""))
    warnings = []
    if not tcp_only and results:
        # No key log given, pcap files only (no pcapng Decryption Secrets Block) and no set
        # resumed (an earlier command's key logs): no capture has key material, so the
        # key log query would return no line (``keylog_coverage``) and is not run
        secrets = keylogs or any(r.format != "pcap" or r.resumed_from is not None
                                 for r in results)
        cov, keys = _coverage_lines(root, [r.capture_id for r in results], keylogs=secrets)
        notes += cov
        warnings += keys
    render.show(header, rows, range(1, len(header)), out=out, err=console,
                title=f"ingested into {root}", notes=notes, droppable=("MB/s", "pkt/s"))
    for r in results:
        for problem in r.capture_problems:
            warnings.append(f"{r.path}: {problem}; the packets before it were ingested")
        if r.capture_id in had and r.resumed_from is None:
            console.print(f"{escape(Path(r.path).name)}: replaced its earlier ingest (same "
                          f"content, capture_id {r.capture_id})", highlight=False)
    for w in warnings:
        render.note(console, f"[yellow]warning:[/yellow] {escape(w)}")


TOP_ANOMALIES = 6
"""Anomaly codes named per capture under the ingest summary (``--verbose``: all)."""


def _coverage_lines(root: Path, capture_ids: list[str], *, keylogs: bool = True
                    ) -> tuple[list[str], list[str]]:
    """(lines for under the summary, warnings): the coverage line (orders from how many
    connections, what was not decoded and why), and how many TLS sessions each key log
    file had the secrets of (``keylogs`` False: none, not asked)."""
    from .coverage import (
        TABLES,
        coverage,
        keylog_coverage,
        keylog_summary,
        keylog_warnings,
        plain_coverage,
    )

    plain = plain_coverage(root, capture_ids) if not keylogs else None
    if plain is not None:  # (no message row, no key log: no DuckDB database opened)
        line = plain.line()
        return [line] * bool(line), []
    from .dataset import Dataset

    # the views these queries read, over these captures' partitions only (a dataset of
    # many captures: the others' files are not opened)
    with Dataset(root, captures=capture_ids, views=TABLES, internal=True) as ds:
        line = coverage(ds, capture_ids=capture_ids).line()
        keys = keylog_coverage(ds, capture_ids=capture_ids) if keylogs else []
    return [line] * bool(line) + keylog_summary(keys), keylog_warnings(keys)


def _set_name(files: list[str]) -> str:
    """A capture's name in the summary: its file, or a set's first file and count."""
    first = Path(files[0]).name if files[0] != "-" else "-"
    return first if len(files) == 1 else f"{first} +{len(files) - 1} files"


# First bytes of the files a capture argument may be (pcap both byte orders, µs and ns;
# pcapng; gzip; zstd): anything else that reads as an NSS key log is one.
CAPTURE_MAGICS = (b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\xc3\xd4", b"\x4d\x3c\xb2\xa1",
                  b"\xa1\xb2\x3c\x4d", b"\x0a\x0d\x0d\x0a", b"\x1f\x8b", b"\x28\xb5\x2f\xfd")
KEYLOG_LABELS = (b"CLIENT_RANDOM ", b"CLIENT_HANDSHAKE_TRAFFIC_SECRET ",
                 b"SERVER_HANDSHAKE_TRAFFIC_SECRET ", b"CLIENT_TRAFFIC_SECRET_0 ",
                 b"SERVER_TRAFFIC_SECRET_0 ", b"EXPORTER_SECRET ", b"CLIENT_EARLY_TRAFFIC_SECRET ")


def _is_keylog(path: str) -> bool:
    """Whether a file given as a capture is an NSS key log (its first key line says so)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(4096)
    except OSError:
        return False
    if head.startswith(CAPTURE_MAGICS):
        return False
    lines = [ln.strip() for ln in head.splitlines() if ln.strip()]
    first = next((ln for ln in lines if not ln.startswith(b"#")), b"")
    return first.startswith(KEYLOG_LABELS)


def _keylogs_among_captures(captures: list[str], keylog: list[Path]
                            ) -> tuple[list[str], list[Path]]:
    """``--keylog a.keylog b.keylog`` (a shell glob) leaves b.keylog among the captures:
    a key log there is used as one, and said so on stderr."""
    caps, keys = [], list(keylog)
    for c in captures:
        if c != "-" and _is_keylog(c):
            keys.append(Path(c))
            console.print(f"{escape(c)} is a key log, not a capture: used as --keylog (give "
                          "several as --keylog A --keylog B)", highlight=False)
        else:
            caps.append(c)
    if not caps:
        raise PcapflowError("no capture to ingest: every file given is a key log")
    return caps, keys


def _check_keylogs(keylog: list[Path]) -> None:
    """A key log with no key line at all is named before any reading (it decrypts nothing)."""
    from .parsers.tls.keylog import KeyLog

    for k in keylog:
        try:
            log = KeyLog.from_file(k)
        except PcapflowError as err:
            raise PcapflowError(f"{k}: {err}") from err
        if log.lines == 0:
            console.print(f"[yellow]warning:[/yellow] {escape(k)}: no key lines in it "
                          f"({log.bad_lines} lines are not `LABEL <client_random> <secret>`): "
                          "is it an NSS key log (SSLKEYLOGFILE)?", highlight=False)


def _iso_times(df):
    """Times as ISO 8601 strings with all nine digits (pandas' JSON writer keeps only
    milliseconds or microseconds of a tz-aware time, whatever ``date_unit`` says)."""
    import pandas as pd

    out = df.copy()
    for c in out.columns:
        if pd.api.types.is_datetime64_any_dtype(out[c]):
            out[c] = [None if pd.isna(t) else t.isoformat() for t in out[c]]
    return out


_NUMBER = re.compile(r"-?[\d,]+(\.\d+)?(B|KB|MB|GB|TB)?|-|")
"""A cell that reads as a number (``1,234.5``, ``381.6KB``, ``-``): right-aligned."""


def _cell(v: object) -> str:
    if v is None:
        return ""
    if isinstance(v, list | tuple) or type(v).__name__ == "ndarray":
        return ", ".join(_cell(x) for x in v)  # type: ignore[attr-defined]
    if isinstance(v, float):
        return f"{v:g}" if abs(v) < 1e15 else str(v)
    return str(v)


def _print_frame(df, fmt: str, *, title: str | None = None, notes: list[str] | None = None,
                 droppable: tuple[str, ...] = ()) -> None:
    """A DataFrame on stdout: csv, json (times ISO 8601 with all nine digits), or a table
    fitted to the terminal (plain, aligned text when piped; ``pcapflow.render``)."""
    if fmt == "csv":
        sys.stdout.write(df.to_csv(index=False))
    elif fmt == "json":
        sys.stdout.write(_iso_times(df).to_json(orient="records") + "\n")
    elif fmt == "table":
        from . import render

        rows = [[_cell(v) for v in row]
                for row in df.astype(object).where(df.notna(), None).itertuples(index=False)]
        numeric = [i for i, c in enumerate(df.columns)
                   if df[c].dtype.kind in "iuf" or str(df[c].dtype) in ("Int64", "Float64")
                   or (rows and all(_NUMBER.fullmatch(r[i]) for r in rows))]
        render.show([str(c) for c in df.columns], rows, numeric, out=out, err=console,
                    title=title, notes=notes or [], droppable=droppable)
    else:
        raise typer.BadParameter(f"unknown format {fmt!r}: use table, csv or json")
    if fmt != "table":
        for n in notes or []:
            console.print(n, highlight=False, soft_wrap=True)


TABLE_NAMES = ("captures", "flows", "packets", "tcp_events", "anomalies", "tls_records",
               "http_messages", "ws_messages", "fix_messages", "tcp_rtt", "orders", "acks",
               "latency", "unmatched", "causes", "feed_gaps", "alerts")
"""For ``query --help`` without importing pyarrow (tests check it equals ``schemas.TABLES``)."""


def _check_format(fmt: str) -> None:
    if fmt not in ("table", "csv", "json"):
        raise typer.BadParameter(f"unknown format {fmt!r}: use table, csv or json",
                                 param_hint="--format")


def _table_help() -> str:
    return ("SQL over the views: " + ", ".join(TABLE_NAMES) + " (columns: docs/tables.md; "
            "FIX endpoints by name: endpoint_name(protocol, endpoint))")


@app.command()
def query(
    sql: Annotated[str, typer.Argument(help=_table_help())],
    data: DataOpt = None,
    fmt: FormatOpt = "table",
) -> None:
    """Run DuckDB SQL over the dataset's tables (SHOW TABLES lists them)."""
    from .dataset import Dataset, require

    _check_format(fmt)
    with Dataset(require(data), views=_views_for(sql)) as ds:
        try:
            plain = _plain_query(ds._con, sql) if fmt == "table" else None
            if plain is None:
                rel = ds.sql(sql)  # (None for a statement without a result: fails here)
                plain = _plain_result(rel) if fmt == "table" and rel is not None else None
            if plain is None:
                from .dataset import to_pandas

                df = to_pandas(rel.to_arrow_table())
        except Exception as err:  # duckdb raises many types; all are bad input here
            raise PcapflowError(f"query failed: {str(err).splitlines()[0]}") from err
    if plain is not None:
        from . import render

        header, rows, numeric = plain
        render.show(header, rows, numeric, out=out, err=console)
        return
    _print_frame(df, fmt)


_CATALOG = re.compile(r"show|describe|summarize|information_schema|duckdb_|pragma|pg_|"
                      r"sqlite_|table_info", re.IGNORECASE)
"""SQL that may list or read views it does not name (SHOW TABLES, ``duckdb_views()``...)."""


def _views_for(sql: str) -> list[str] | None:
    """The views ``sql`` can read: the tables it names (a word of it; each view costs a
    few ms to make, ~30 ms for all), or every one (None) when it looks at the catalog."""
    if _CATALOG.search(sql):
        return None
    from .pipelines.tables.declared import declared

    words = {w.lower() for w in re.findall(r"\w+", sql)}
    return [t for t in declared() if t in words]


def _utc_ns(ns: int) -> str:
    """Epoch nanoseconds as pandas prints a UTC ``Timestamp``: nine digits when there are
    nanoseconds, six when there are microseconds, none for a whole second."""
    import datetime as dt

    sec, frac = divmod(ns, 1_000_000_000)
    base = (dt.datetime(1970, 1, 1) + dt.timedelta(seconds=sec)).strftime("%Y-%m-%d %H:%M:%S")
    if frac % 1000:
        base += f".{frac:09d}"
    elif frac:
        base += f".{frac // 1000:06d}"
    return base + "+00:00"


_INT_TYPES = frozenset({"TINYINT", "SMALLINT", "INTEGER", "BIGINT", "UTINYINT", "USMALLINT",
                        "UINTEGER", "UBIGINT"})
_PLAIN_TYPES = _INT_TYPES | {"VARCHAR", "BOOLEAN", "DOUBLE", "FLOAT"}


def _plain_query(con, sql: str) -> tuple[list[str], list[list[str]], list[int]] | None:
    """``_plain_result`` of ``sql`` through the engine's ``execute`` alone (so without
    importing DuckDB's Python relation layer, ~50 ms): one statement that ``DESCRIBE``
    takes; ``None`` for anything else (a script, a statement without rows, a bad one,
    other column types), which the relation path then runs and, if need be, explains."""
    text = sql.strip().rstrip(";").rstrip()
    if ";" in text:  # a script (or a literal ';'): the relation path runs it
        return None
    try:
        described = con.execute(f"DESCRIBE {text}").fetchall()
    except Exception:  # not a query DESCRIBE takes, or a bad one
        return None
    header = [str(r[0]) for r in described]
    types = [str(r[1]) for r in described]
    if not _plain_types(header, types):
        return None
    if "TIMESTAMPTZ_NS" in types:
        text = f"SELECT {_epoch_ns_projection(header, types)} FROM ({text}) AS _q"
    return _plain_cells(header, types, con.execute(text).fetchall())


def _plain_types(header: list[str], types: list[str]) -> bool:
    """Are these columns ones ``_plain_cells`` renders as the DataFrame path does?"""
    if not all(t in _PLAIN_TYPES or t == "TIMESTAMPTZ_NS" for t in types):
        return False
    return "TIMESTAMPTZ_NS" not in types or len(set(header)) == len(header)


def _epoch_ns_projection(header: list[str], types: list[str]) -> str:
    """Every column as it is but ``TIMESTAMPTZ_NS`` ones as epoch ns (a Python datetime
    stops at µs)."""
    return ", ".join(
        (f"epoch_ns({q}) AS {q}" if t == "TIMESTAMPTZ_NS" else q)
        for q, t in (('"' + c.replace('"', '""') + '"', t) for c, t in zip(
            header, types, strict=True)))


def _plain_result(rel) -> tuple[list[str], list[list[str]], list[int]] | None:
    """A query result's table cells without pandas, when every column is a string, boolean,
    integer or float; ``None`` for any other result (``_print_frame`` shows it).

    The cells are exactly what ``_print_frame`` makes of the same result as a
    DataFrame (``Dataset.df``), so the output is the same either way; what this
    saves is importing pandas, pyarrow and NumPy (~0.3 s) for a small answer. The
    DataFrame's rules, kept here: a null is an empty cell (so is a float NaN); an
    integer column with a null becomes float64 in pandas (printed ``{:g}``) unless
    its name ends in ``_ns`` (nullable Int64: printed as an integer); integer and
    float columns are right-aligned, others when every cell reads as a number.
    """
    types = [str(t) for t in rel.types]
    header = [str(c) for c in rel.columns]
    if not _plain_types(header, types):
        return None
    if "TIMESTAMPTZ_NS" in types:
        rel = rel.project(_epoch_ns_projection(header, types))
    return _plain_cells(header, types, rel.fetchall())


def _plain_cells(header: list[str], types: list[str], data: list[tuple[object, ...]]
                 ) -> tuple[list[str], list[list[str]], list[int]]:
    """The cells of ``_plain_result`` from the rows (``TIMESTAMPTZ_NS`` as epoch ns)."""
    as_float = [t in ("DOUBLE", "FLOAT") or (
        t in _INT_TYPES and not header[i].endswith("_ns") and any(r[i] is None for r in data))
        for i, t in enumerate(types)]
    rows = []
    for r in data:
        row = []
        for i, v in enumerate(r):
            if v is None or (isinstance(v, float) and v != v):
                row.append("")
            elif as_float[i]:
                row.append(_cell(float(v)))  # type: ignore[arg-type]
            elif types[i] == "TIMESTAMPTZ_NS":
                row.append(_utc_ns(v))  # type: ignore[arg-type]
            else:
                row.append(str(v))
        rows.append(row)
    numeric = [i for i, t in enumerate(types)
               if t in _INT_TYPES or t in ("DOUBLE", "FLOAT")
               or (rows and all(_NUMBER.fullmatch(r[i]) for r in rows))]
    return header, rows, numeric


def _duration_cells(values_ns: list[object]) -> tuple[str, list[str]]:
    """A column of ns durations in one unit (µs, or ms from 10 ms: ``render``)."""
    from . import render

    us = [None if v is None else float(v) / 1e3 for v in values_ns]  # type: ignore[arg-type]
    unit, div = render.duration_unit(us)
    return unit, [render.number(None if u is None else u / div) for u in us]


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000:
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1000
    return f"{n:.1f} TB"


def _bytes(n: object) -> str:
    return "" if n is None else _size(float(n)).replace(" ", "")  # type: ignore[arg-type]


@app.command()
def flows(
    data: DataOpt = None,
    fmt: FormatOpt = "table",
    limit: Annotated[int, typer.Option("--limit", help="Rows to show; -1 for all")] = 50,
) -> None:
    """List connections: endpoints, protocol, venue, packets, retransmissions."""
    import pandas as pd

    from .dataset import Dataset, require

    if limit < -1:
        raise typer.BadParameter("a row count, or -1 for all", param_hint="--limit")
    _check_format(fmt)
    with Dataset(require(data)) as ds:
        total = ds.fetchall("SELECT count(*) FROM flows")[0][0]
        df = ds.df(
            "SELECT capture_id, regexp_extract(c.path, '[^/]*$') AS capture, flow_id, transport, "
            "client_ip || ':' || client_port AS client, "
            "server_ip || ':' || server_port AS server, app_protocol, sni, venue, "
            "packets_out + packets_in AS packets, bytes_out + bytes_in AS bytes, "
            "handshake_rtt_ns, retransmissions, gaps, end_reason "
            "FROM flows LEFT JOIN (SELECT capture_id, any_value(path) AS path FROM captures "
            "GROUP BY ALL) c USING (capture_id) "
            "ORDER BY capture_id, flow_id" + ("" if limit < 0 else " LIMIT ?"),
            [] if limit < 0 else [limit],
        )
    notes = []
    if len(df) < total:
        notes.append(f"showing {len(df):,} of {total:,} flows (--limit N; --limit -1 for all)")
    if fmt != "table":
        _print_frame(df, fmt, notes=notes)
        return
    # A person's view: capture file names, units, short headings (80 columns).
    unit, rtt = _duration_cells(df["handshake_rtt_ns"].astype(object).where(
        df["handshake_rtt_ns"].notna(), None).tolist())
    view = pd.DataFrame({
        "capture": df["capture"], "flow": df["flow_id"], "client": df["client"],
        "server": df["server"], "proto": df["app_protocol"].fillna(df["transport"]),
        "venue/sni": df["venue"].fillna(df["sni"]).fillna(""),
        "pkts": df["packets"], "bytes": [_bytes(b) for b in df["bytes"]],
        f"rtt {unit}": rtt, "rexmit": df["retransmissions"], "gaps": df["gaps"],
        "end": df["end_reason"],
    })
    if df["capture"].nunique() <= 1:
        view = view.drop(columns=["capture"])
    _print_frame(view, fmt, notes=notes, droppable=(
        "end", "gaps", "rexmit", f"rtt {unit}", "bytes", "venue/sni", "capture"))


@app.command("coverage")
def coverage_cmd(
    data: DataOpt = None,
    capture: Annotated[str | None, typer.Option(
        "--capture", help="One capture: capture_id prefix, path or file name")] = None,
    fmt: FormatOpt = "table",
) -> None:
    """What the numbers cover, per capture: connections with orders, why the others were
    not decoded, and which key log file had the secrets of which TLS sessions."""
    import json

    from . import render
    from .analysis import resolve_capture
    from .coverage import coverage, keylog_coverage, keylog_warnings
    from .dataset import Dataset, require
    from .parsers.errors import ConfigError

    _check_format(fmt)
    with Dataset(require(data)) as ds:
        try:
            ids = resolve_capture(ds, capture) if capture is not None else None
        except ConfigError as err:
            raise typer.BadParameter(str(err), param_hint="--capture") from None
        caps = ds.fetchall(
            "SELECT capture_id, arg_min(regexp_extract(path, '[^/]*$'), file_index) AS name "
            "FROM captures GROUP BY ALL ORDER BY name, capture_id")
        caps = [(c, n) for c, n in caps if ids is None or c in ids]
        conns = {c: coverage(ds, capture_ids=[c]) for c, _ in caps}
        keys = keylog_coverage(ds, capture_ids=[c for c, _ in caps])
    if not caps:
        raise PcapflowError("no captures in this dataset: run `pcapflow ingest CAPTURE` first")
    if fmt == "json":
        sys.stdout.write(json.dumps([
            {"capture_id": c, "capture": n, "connections": conns[c].as_dict(),
             "keylogs": [k.as_dict() for k in keys if k.capture_id == c]}
            for c, n in caps], indent=1) + "\n")
        return
    if fmt == "csv":
        import csv

        w = csv.writer(sys.stdout, lineterminator="\n")
        w.writerow(["capture_id", "capture", "keylog", "sessions", "tls_sessions"])
        w.writerows([k.capture_id, k.capture, k.keylog, k.sessions, k.tls_sessions]
                     for k in keys)
        return
    notes = [f"{n}: {conns[c].line() or 'no connection with payload'}" for c, n in caps]
    if keys:
        rows = [[k.capture, k.keylog, f"{k.sessions:,}", f"{k.tls_sessions:,}"] for k in keys]
        render.show(["capture", "key log", "sessions", "of TLS"], rows, [2, 3], out=out,
                    err=console, title="TLS sessions whose secrets each key log had",
                    notes=notes)
    else:
        for line in notes:
            render.note(console, escape(line))
        render.note(console, "no capture holding TLS was ingested with a key log")
    for warning in keylog_warnings(keys):
        render.note(console, f"[yellow]warning:[/yellow] {escape(warning)}")


COMMAND_MODULES = {"match": "cli_match", "report": "cli_report", "demo": "cli_demo",
                   "alerts": "cli_alerts", "compare": "cli_compare", "verify": "cli_verify",
                   "watch": "cli_live", "metrics": "cli_live",
                   "compact": "cli_match"}
"""Commands kept in their own modules (``pcapflow/cli_*.py``): each has ``register(app)``."""


def _register_command_modules(names: tuple[str, ...] | None = None) -> None:
    """Register the command modules named (all of them by default)."""
    import importlib

    for name in dict.fromkeys(COMMAND_MODULES.values()) if names is None else names:
        importlib.import_module(f"pcapflow.{name}").register(app)


CORE_COMMANDS = ("ingest", "query", "flows", "coverage")


def _modules_needed() -> tuple[str, ...] | None:
    """The command modules this process needs: ``None`` for all of them.

    When this process is the ``pcapflow`` command itself, only the module of the
    command it runs is imported (the report/demo/alerts modules pull in pandas and
    matplotlib, ~0.5 s; a command-line ingest or query needs none of them, nor does
    ``--version``). ``--help``, a bare ``pcapflow`` or an unknown command lists every
    command, so all are registered; imported as a library (tests, notebooks), too.
    """
    prog = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else ""
    if prog not in ("pcapflow", "cli.py", "__main__.py") or len(sys.argv) < 2:
        return None
    first = sys.argv[1]
    if first in CORE_COMMANDS or (first == "--version" and len(sys.argv) == 2):
        return ()
    return (COMMAND_MODULES[first],) if first in COMMAND_MODULES else None


_register_command_modules(_modules_needed())


def main() -> None:
    """Console-script entry point: one line per error, never a traceback."""
    from ._entry import INTERRUPTED
    from .pipelines import interrupts

    interrupts.install_cli(INTERRUPTED)
    try:
        # standalone_mode=False: typer returns (rather than exits with) the code of
        # an Exit, e.g. 130 when it turned a KeyboardInterrupt into Abort
        rc = app(standalone_mode=False)
    except PcapflowError as err:
        console.print(f"[red]error:[/red] {escape(err)}", highlight=False)
        sys.exit(1)
    except (KeyboardInterrupt, typer.Abort):
        _exit_interrupted()
    except Exception as err:
        # click (vendored by typer) usage errors know how to show themselves: exit 2
        show, code = getattr(err, "show", None), getattr(err, "exit_code", None)
        if callable(show) and isinstance(code, int):
            show()
            sys.exit(code)
        if os.environ.get("PCAPFLOW_DEBUG"):
            raise
        console.print(
            f"[red]internal error:[/red] {type(err).__name__}: {escape(err)} (a bug: please "
            "report it; PCAPFLOW_DEBUG=1 shows the traceback)",
            highlight=False,
        )
        sys.exit(1)
    if isinstance(rc, int) and rc != 0:
        if rc == 130:
            _exit_interrupted()
        sys.exit(rc)


def _exit_interrupted() -> None:
    """The clean-up has run: one line, exit 130, without the interpreter's own shutdown
    (joining threads of DuckDB and Arrow; see ``pipelines.interrupts``)."""
    from .pipelines import interrupts

    with contextlib.suppress(Exception):
        sys.stdout.flush()
    interrupts.exit_now()


if __name__ == "__main__":
    main()
