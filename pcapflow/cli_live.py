"""``pcapflow watch`` and ``pcapflow metrics``: a rotating capture directory followed,
and a dataset's numbers served as OpenMetrics (``pcapflow.watch``, ``pcapflow.metrics``).

Thin: options in, one line per error out; the work is in those modules.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from .parsers.errors import PcapflowError
from .render import escape
from .watch_worker import WORKER_FILES

console = Console(stderr=True, soft_wrap=True)
out = Console()

PortOpt = Annotated[int | None, typer.Option(
    "--metrics-port", min=0, max=65535,
    help="Serve Prometheus/OpenMetrics on this port (/metrics); "
    "needs pip install 'pcapflow[live]'")]


def watch_cmd(
    directory: Annotated[Path, typer.Argument(help="Directory the capture rotates into "
                                              "(tcpdump -G/-C/-W, -z gzip, dumpcap ring)")],
    keylog: Annotated[list[Path] | None, typer.Option(
        "--keylog", help="NSS key log file (SSLKEYLOGFILE), read again for each file; "
        "repeatable")] = None,
    venues: Annotated[Path | None, typer.Option(
        "--venues", help="TOML venue map: addresses/ports/hosts/FIX comp ids -> venue")] = None,
    data: Annotated[Path | None, typer.Option(
        "--data", help="Dataset directory (default $PCAPFLOW_DATA or ./pcapflow_data)")] = None,
    metrics_port: PortOpt = None,
    metrics_addr: Annotated[str, typer.Option(
        "--metrics-addr", help="Address the metrics endpoint listens on")] = "0.0.0.0",
    poll: Annotated[float, typer.Option("--poll", help="Seconds between looks at the "
                                        "directory")] = 1.0,
    settle: Annotated[float, typer.Option(
        "--settle", help="Seconds a closed file must stay unchanged before it is "
        "ingested (tcpdump -z starts its compressor a moment after closing)")] = 1.0,
    idle: Annotated[float, typer.Option(
        "--idle", help="Where the writer cannot be seen in /proc: seconds unchanged after "
        "which the newest file counts as closed")] = 60.0,
    limit: Annotated[list[str] | None, typer.Option(
        "--limit", help="Resource cap NAME=VALUE for each file's ingest, e.g. "
        "resume_order_ids_s=172800; repeatable (names in the README, 'Limits')")] = None,
    worker_files: Annotated[int, typer.Option(
        "--worker-files", min=0, help="Files ingested by one worker process before it is "
        "replaced, which bounds the watch's memory over days (0: ingest in the watch's own "
        "process)")] = WORKER_FILES,
) -> None:
    """Follow a directory where a capture rotates: ingest each file once complete, in
    order, exactly once (a restart continues from the dataset's captures table).

    Shows files behind, the last file, orders/s and p50/p99 per venue; Ctrl-C stops it
    (exit 130), keeping every file ingested.
    """
    from . import watch as w

    w.ALLOCATOR.for_a_long_run()  # before the metrics' first read starts Arrow's threads
    from .dataset import data_dir
    from .pipelines import interrupts

    if not directory.is_dir():
        raise PcapflowError(f"{directory}: no such directory")
    for k in keylog or []:
        if not k.exists():
            raise PcapflowError(f"{k}: key log file not found")
    if venues is not None and not venues.exists():
        raise PcapflowError(f"{venues}: venue map file not found")
    for name, v in (("--poll", poll), ("--settle", settle), ("--idle", idle)):
        if v < 0:
            raise typer.BadParameter(f"{v}: not negative", param_hint=name)
    from .parsers.limits import Limits

    overrides: dict[str, int | str] = {}
    for item in limit or []:
        try:
            Limits.parse([item])  # a bad item fails here, before the watch starts
        except PcapflowError as err:
            raise typer.BadParameter(str(err), param_hint="--limit") from None
        name, _, value = item.partition("=")
        overrides[name] = value
    root = data_dir(data)
    root.mkdir(parents=True, exist_ok=True)
    interrupts.set_message("interrupted: watch stopped; no file was ingested by it")
    server = None
    live_state = None
    metrics = None
    if metrics_port is not None:
        from .metrics import DatasetMetrics, LiveState, Server

        live_state = LiveState()
        metrics = DatasetMetrics(root, live_state)
        metrics.refresh()
        server = Server(metrics, metrics_port, metrics_addr)
        console.print(f"metrics: http://{metrics_addr}:{server.port}/metrics", highlight=False)

    tty = out.is_terminal
    kept = [0]  # files this watch ingested (a count: the watch runs for days)
    last_kept = [""]

    def keep(path: str) -> None:
        if path == last_kept[0]:
            return  # (said by its worker's commit, then by its result)
        last_kept[0] = path
        kept[0] += 1
        interrupts.set_message(
            f"interrupted: watch stopped; {kept[0]} file(s) it ingested are kept (last "
            f"{os.path.basename(path)}); the file in progress left the dataset as it was")

    from .watch_worker import WorkerIngest

    worker = (WorkerIngest(root, keylog, venues, overrides or None, files=worker_files,
                           on_commit=keep) if worker_files else None)
    ingest_file = worker or w.watch_ingest(root, keylog, venues, overrides or None)

    def ingest_one(path: str) -> object:
        try:
            return ingest_file(path)
        except KeyboardInterrupt:
            if interrupts.committed:  # committed, then the signal was acted on
                keep(path)
            interrupts.committed.clear()  # the watch's own line says what is kept
            raise

    def on_file(path: str, result: object) -> None:
        keep(path)
        if metrics is not None:
            metrics.compacted(getattr(result, "capture_id", ""),
                              getattr(result, "compacted", None) or [])
            metrics.refresh(added=[getattr(result, "capture_id", "")],
                            removed=list(getattr(result, "replaced", [])))
        if not tty:
            out.print(w.one_line(watcher.status), highlight=False, soft_wrap=True)
            sys.stdout.flush()

    def on_error(path: str, err: PcapflowError) -> None:
        console.print(f"[yellow]warning:[/yellow] {escape(path)}: not ingested: {escape(err)}",
                      highlight=False)

    def on_lost(path: str, first_ts: int) -> None:
        import datetime as dt

        when = dt.datetime.fromtimestamp(first_ts / 1e9, dt.UTC).isoformat(
            timespec="milliseconds") if first_ts else "?"
        console.print(f"[red]lost:[/red] {escape(path)} (packets from {when}) was overwritten or "
                      "deleted by its recording before it was ingested: the watch is "
                      "behind; give the ring more or larger files (tcpdump -W, dumpcap -b "
                      "files:)", highlight=False, soft_wrap=True)

    watcher = w.Watcher(directory, root, ingest_one,
                        poll=poll, settle=settle, idle=idle, on_file=on_file,
                        on_error=on_error, on_lost=on_lost)
    if not tty:
        console.print(f"watching {escape(watcher.directory)} into {escape(root)}", highlight=False)
    try:
        if tty:
            from rich.live import Live
            from rich.text import Text

            with Live(Text(""), console=out, auto_refresh=False, transient=False) as view:
                def show(wt: w.Watcher) -> None:
                    if live_state is not None:
                        _sync(live_state, wt)
                    view.update(Text("\n".join(w.status_lines(wt.status, out.width))),
                                refresh=True)

                watcher.run(on_pass=show)
        else:
            watcher.run(on_pass=(lambda wt: _sync(live_state, wt)) if live_state else None)
    finally:
        if worker is not None:
            worker.close()
        if server is not None:
            server.close()


def _sync(live_state: object, wt: object) -> None:
    st = wt.status  # type: ignore[attr-defined]
    live_state.files_behind = st.files_behind  # type: ignore[attr-defined]
    live_state.files_ingested_run = st.files_ingested  # type: ignore[attr-defined]
    live_state.last_file = st.last_file  # type: ignore[attr-defined]
    live_state.files_lost = st.files_lost  # type: ignore[attr-defined]


def metrics_cmd(
    data: Annotated[Path | None, typer.Option(
        "--data", help="Dataset directory (default $PCAPFLOW_DATA or ./pcapflow_data)")] = None,
    port: Annotated[int, typer.Option("--port", min=0, max=65535,
                                   help="Port of the endpoint (/metrics)")]
        = 9464,
    addr: Annotated[str, typer.Option("--addr", help="Address it listens on")] = "0.0.0.0",
) -> None:
    """Serve a dataset's latency histograms and counters as Prometheus/OpenMetrics (read
    again from the tables when they change). Ctrl-C stops it."""
    from .dataset import require
    from .metrics import DatasetMetrics, Server, require_prometheus
    from .pipelines import interrupts

    require_prometheus()
    root = require(data)
    metrics = DatasetMetrics(root)
    metrics.refresh()
    server = Server(metrics, port, addr, refresh_on_scrape=True)
    interrupts.set_message("interrupted: metrics endpoint stopped")
    console.print(f"serving {escape(root)} at http://{addr}:{server.port}/metrics", highlight=False)
    try:
        while True:
            time.sleep(3600)
    finally:
        server.close()


def register(app: typer.Typer) -> None:
    app.command("watch")(watch_cmd)
    app.command("metrics")(metrics_cmd)
