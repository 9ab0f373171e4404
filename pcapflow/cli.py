"""The ``pcapflow`` command: a thin typer layer over ``pcapflow.api``.

Every ``PcapflowError`` is caught in ``main`` and printed as one line (what and
where); exit codes: 0 success, 1 bad input, 2 bad usage, 130 interrupted.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from .parsers.errors import PcapflowError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Order-to-ack latency of trading traffic, measured on the wire.",
)
console = Console(stderr=True, soft_wrap=True)
out = Console()

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
    """Keep ``ingest`` from importing pandas, SciPy and PyYAML, which it never uses
    (~0.55 s).

    pyarrow imports pandas on its first array (even one made from a list) when
    pandas is installed, Numba imports SciPy on its first kernel, to offer BLAS
    to ``np.dot``, and PyYAML at its own import, to read a ``.numba_config.yaml``
    (kept when the working directory has one). An ingest needs none of them, so
    in the CLI's own process (never a user's: the Python API leaves imports
    alone) these imports fail at once and the libraries take their "not
    installed" path. A package already imported is left as it is.
    """
    skip = ["pandas", "scipy"]
    if not os.path.exists(".numba_config.yaml"):
        skip.append("yaml")
    names = frozenset(n for n in skip if n not in sys.modules)
    if names:
        sys.meta_path.insert(0, _SkipImports(names))


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000:
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1000
    return f"{n:.1f} TB"


@app.command()
def ingest(
    captures: Annotated[
        list[str], typer.Argument(help="pcap/pcapng files (gzip/zstd ok); - = stdin")
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
                     "across them; auto: the CPUs (at most 4), 1 for a file under 16 MB"),
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
    limit: Annotated[
        list[str] | None,
        typer.Option("--limit", help="Resource cap NAME=VALUE, e.g. ws_max_message=32M; "
                     "repeatable (names in the README, 'Limits')"),
    ] = None,
) -> None:
    """Read captures into Parquet tables (replacing earlier ingests of the same files)."""
    for c in captures:
        if c != "-" and not os.path.exists(c):
            raise PcapflowError(f"{c}: no such file")
    for k in keylog or []:
        if not k.exists():
            raise PcapflowError(f"{k}: key log file not found")
    if venues is not None and not venues.exists():
        raise PcapflowError(f"{venues}: venue map file not found")
    if workers != "auto" and not (workers.isdigit() and int(workers) >= 1):
        raise typer.BadParameter(f"{workers!r}: a positive number or auto",
                                 param_hint="--workers")
    from .pipelines.limits import Limits

    overrides = {}
    for item in limit or []:
        try:
            Limits.parse([item])  # a bad item fails here, before any reading
        except PcapflowError as err:
            raise typer.BadParameter(str(err), param_hint="--limit") from None
        name, _, value = item.partition("=")
        overrides[name] = value
    _skip_unused_imports()
    from . import api
    from .dataset import data_dir

    root = data_dir(data)
    sizes = {c: (os.path.getsize(c) if c != "-" else 0) for c in captures}
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal,
        # redrawn after each chunk, not by rich's refresh thread: a sharded ingest
        # forks its workers, and no thread should be running at a fork
        auto_refresh=False,
    ) as prog:
        tasks = {c: prog.add_task(Path(c).name, total=sizes[c] or None, info="") for c in captures}

        def progress(path: str, nbytes: int, npk: int) -> None:
            t = tasks[path]
            el = prog.tasks[t].elapsed or 1e-9
            prog.update(t, completed=nbytes, info=f"{npk:,} packets, {npk / el:,.0f} pkt/s",
                        refresh=True)

        results = api.ingest(
            captures,
            keylog=keylog,
            data=root,
            venues=venues,
            packets=packets,
            app=not tcp_only,
            jobs=jobs,
            progress=progress,
            limits=overrides,
            workers="auto" if workers == "auto" else int(workers),
        )
    table = Table(title=f"ingested into {root}", title_justify="left")
    for col in ("capture", "packets", "flows", "seconds", "pkt/s", "MB/s", "anomalies"):
        table.add_column(col, justify="left" if col == "capture" else "right")
    for r in results:
        table.add_row(
            Path(r.path).name,
            f"{r.packets:,}",
            f"{r.flows:,}",
            f"{r.seconds:.2f}",
            f"{r.packets_per_second:,.0f}",
            f"{r.bytes / 1e6 / max(r.seconds, 1e-9):,.1f}",
            f"{sum(r.anomaly_codes.values()):,}",
        )
    out.print(table)
    for r in results:
        rows = ", ".join(f"{k} {v:,}" for k, v in sorted(r.rows.items()))
        out.print(f"[dim]{Path(r.path).name}: {rows}[/dim]")
        if r.anomaly_codes:
            ranked = sorted(r.anomaly_codes.items(), key=lambda kv: -kv[1])
            top = ", ".join(f"{k} {v}" for k, v in (ranked if verbose else ranked[:6]))
            out.print(f"[yellow]  anomalies: {top}[/yellow]", highlight=False)
        for problem in r.capture_problems:
            console.print(
                f"[yellow]warning:[/yellow] {r.path}: {problem}; the packets before "
                "it were ingested",
                highlight=False,
            )
    damaged = [r for r in results if r.capture_problems]
    if strict and damaged:
        raise PcapflowError(
            f"{damaged[0].path}: capture file is damaged "
            f"({damaged[0].capture_problems[0]}); --strict makes this an error"
        )


def _iso_times(df):
    """Times as ISO 8601 strings with all nine digits (pandas' JSON writer keeps only
    milliseconds or microseconds of a tz-aware time, whatever ``date_unit`` says)."""
    import pandas as pd

    out = df.copy()
    for c in out.columns:
        if pd.api.types.is_datetime64_any_dtype(out[c]):
            out[c] = [None if pd.isna(t) else t.isoformat() for t in out[c]]
    return out


def _print_frame(df, fmt: str) -> None:
    if fmt == "csv":
        sys.stdout.write(df.to_csv(index=False))
    elif fmt == "json":
        sys.stdout.write(_iso_times(df).to_json(orient="records") + "\n")
    elif fmt == "table":
        t = Table(show_lines=False)
        for c in df.columns:
            t.add_column(str(c), overflow="fold")
        for row in df.astype(object).where(df.notna(), None).itertuples(index=False):
            t.add_row(*["" if v is None else str(v) for v in row])
        out.print(t)
    else:
        raise typer.BadParameter(f"unknown format {fmt!r}: use table, csv or json")


@app.command()
def query(
    sql: Annotated[
        str,
        typer.Argument(
            help="SQL over the views: "
            + ", ".join(["captures", "flows", "tcp_events", "anomalies", "packets"])
        ),
    ],
    data: DataOpt = None,
    fmt: FormatOpt = "table",
) -> None:
    """Run DuckDB SQL over the dataset's tables."""
    from .dataset import Dataset

    with Dataset(data) as ds:
        try:
            df = ds.df(sql)
        except Exception as err:  # duckdb raises many types; all are bad input here
            raise PcapflowError(f"query failed: {str(err).splitlines()[0]}") from err
    _print_frame(df, fmt)


@app.command()
def flows(
    data: DataOpt = None,
    fmt: FormatOpt = "table",
    limit: Annotated[int, typer.Option("--limit", help="Rows to show")] = 50,
) -> None:
    """List connections: endpoints, protocol, venue, packets, retransmissions."""
    from .dataset import Dataset

    with Dataset(data) as ds:
        df = ds.df(
            "SELECT capture_id, flow_id, transport, client_ip || ':' || client_port AS client, "
            "server_ip || ':' || server_port AS server, app_protocol, sni, venue, "
            "packets_out + packets_in AS packets, bytes_out + bytes_in AS bytes, "
            "handshake_rtt_ns, retransmissions, gaps, end_reason FROM flows "
            "ORDER BY capture_id, flow_id LIMIT ?",
            [limit],
        )
    _print_frame(df, fmt)


def _register_command_modules() -> None:
    """Commands kept in their own modules (``pcapflow/cli_*.py``): each has ``register(app)``."""
    import importlib

    for name in ("cli_match", "cli_report", "cli_demo", "cli_alerts"):
        try:
            mod = importlib.import_module(f"pcapflow.{name}")
        except ModuleNotFoundError as err:
            if err.name != f"pcapflow.{name}":
                raise
            continue
        mod.register(app)


CORE_COMMANDS = ("ingest", "query", "flows")


def _core_command_only() -> bool:
    """True when this process is ``pcapflow ingest|query|flows ...`` itself.

    The report/demo/match modules pull in pandas and matplotlib (~0.5 s); a
    command-line ingest does not need them, so it skips registering them.
    Imported as a library (tests, notebooks), every command is registered.
    """
    prog = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else ""
    return (prog in ("pcapflow", "cli.py") and len(sys.argv) > 1
            and sys.argv[1] in CORE_COMMANDS)


if not _core_command_only():
    _register_command_modules()


def main() -> None:
    """Console-script entry point: one line per error, never a traceback."""
    from ._entry import INTERRUPTED

    try:
        # standalone_mode=False: typer returns (rather than exits with) the code of
        # an Exit, e.g. 130 when it turned a KeyboardInterrupt into Abort
        rc = app(standalone_mode=False)
    except PcapflowError as err:
        console.print(f"[red]error:[/red] {err}", highlight=False)
        sys.exit(1)
    except KeyboardInterrupt:
        console.print(INTERRUPTED, highlight=False)
        sys.exit(130)
    except typer.Abort:
        console.print(INTERRUPTED, highlight=False)
        sys.exit(130)
    except Exception as err:
        # click (vendored by typer) usage errors know how to show themselves: exit 2
        show, code = getattr(err, "show", None), getattr(err, "exit_code", None)
        if callable(show) and isinstance(code, int):
            show()
            sys.exit(code)
        if os.environ.get("PCAPFLOW_DEBUG"):
            raise
        console.print(
            f"[red]internal error:[/red] {type(err).__name__}: {err} (a bug: please "
            "report it; PCAPFLOW_DEBUG=1 shows the traceback)",
            highlight=False,
        )
        sys.exit(1)
    if isinstance(rc, int) and rc != 0:
        if rc == 130:
            console.print(INTERRUPTED, highlight=False)
        sys.exit(rc)


if __name__ == "__main__":
    main()
