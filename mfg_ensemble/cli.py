"""The ``mfg-ensemble`` command: run, validate and inspect sweeps.

    mfg-ensemble run CONFIG [--store PATH] [--scheduler ADDRESS] [--workers N]
                            [--threads-per-worker K] [--overwrite] [--retry-failed]
    mfg-ensemble validate CONFIG
    mfg-ensemble info STORE [--verify]
    mfg-ensemble report STORE [--out DIR] [--member INDEX]

A config error (or a store of another sweep) prints its message and exits with status 2,
before anything is computed or created. Ctrl-C stops a run cleanly (status 130): the members
finished so far are in the store, and the same command resumes.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import NoReturn

import click
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Column, Table

from mfg_ensemble import schema
from mfg_ensemble.ensemble.monitor import Progress as RunProgress
from mfg_ensemble.ensemble.runner import run_sweep, warm_axis
from mfg_ensemble.ensemble.store import STORAGE_ERRORS, SweepStore, default_path
from mfg_ensemble.ensemble.sweep import Sweep
from mfg_ensemble.errors import ConfigError, NoWorkers, StoreMismatch

LOG_EVERY = 10.0
"""Seconds between the progress lines printed when the output is not a terminal."""

console = Console()
err_console = Console(stderr=True)


def _fail(exc: Exception, status: int = 2) -> NoReturn:
    """Print ``exc`` as an error (its text verbatim: no markup, no wrapping) and exit."""
    err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
    sys.exit(status)


def _load(config: str) -> Sweep:
    try:
        return Sweep.from_file(config)
    except ConfigError as exc:
        _fail(exc)


def progress_bar(out: Console) -> Progress:
    """The live bar: the count first and never cut (the running members' details give way
    to it on a narrow terminal)."""
    return Progress(
        TextColumn("{task.description}", table_column=Column(no_wrap=True)),
        BarColumn(bar_width=20),
        TextColumn("{task.completed}/{task.total}", table_column=Column(no_wrap=True, min_width=9)),
        TextColumn("{task.fields[counts]}", table_column=Column(no_wrap=True, overflow="ellipsis", ratio=1)),
        TimeElapsedColumn(table_column=Column(no_wrap=True)),
        console=out,
    )


def _fmt_eta(seconds: float | None) -> str:
    if seconds is None:
        return "ETA –"
    minutes, secs = divmod(int(seconds + 0.5), 60)
    return f"ETA {minutes}:{secs:02d}"


@click.group()
@click.version_option(package_name="mfg_ensemble")
def main() -> None:
    """Ensembles of mean field game solves on Dask, stored as labelled Zarr datasets."""


@main.command()
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("--store", type=click.Path(), default=None, help="Zarr store to write (default: <name>.zarr here).")
@click.option("--scheduler", default=None, help="Address of a running Dask scheduler (default: a LocalCluster).")
@click.option(
    "--workers", type=click.IntRange(min=1), default=None, help="LocalCluster worker processes (default: one per core)."
)
@click.option("--threads-per-worker", type=click.IntRange(min=1), default=1, show_default=True)
@click.option(
    "--overwrite", is_flag=True, help="Replace a store made from another sweep (only ever an mfg_ensemble store)."
)
@click.option("--retry-failed", is_flag=True, help="Also recompute the failed members and the damaged ones.")
@click.option(
    "--extend",
    is_flag=True,
    help="Grow a store whose sweep this one extends (more seeds, more values at the end of an axis); "
    "the members already done are kept.",
)
@click.option(
    "--warm-start",
    metavar="AXIS",
    default=None,
    help="Start each member from the converged density of its predecessor along AXIS "
    "(that axis runs in order, the others in parallel).",
)
def run(
    config: str,
    store: str | None,
    scheduler: str | None,
    workers: int | None,
    threads_per_worker: int,
    overwrite: bool,
    retry_failed: bool,
    extend: bool,
    warm_start: str | None,
) -> None:
    """Run the sweep file CONFIG (resuming its store if it exists)."""
    sweep = _load(config)
    try:
        warm_axis(sweep, warm_start)
    except ValueError as exc:
        _fail(ConfigError(config, [("--warm-start", str(exc))]))
    try:
        target = SweepStore.for_sweep(sweep, store)  # absolute: what the workers open
    except ConfigError as exc:
        _fail(exc)
    path = Path(store) if store else default_path(sweep)  # as the user wrote it, for the messages
    bar = progress_bar(console)
    job = bar.add_task("solving", total=len(sweep), counts="")
    last: list[RunProgress] = []
    printed = [time.monotonic()]
    cluster_started = False

    def started(client: object, p: RunProgress) -> None:
        nonlocal cluster_started
        cluster_started = True
        console.print(f"dashboard: {getattr(client, 'dashboard_link', 'n/a')}", soft_wrap=True, highlight=False)
        if p.skipped:
            console.print(f"resumed: {p.skipped} of {p.total} members already in the store", highlight=False)
        bar.start()
        bar.update(job, completed=p.skipped)

    def progressed(p: RunProgress, event: dict | None = None) -> None:
        last[:] = [p]
        running = p.running
        shown = "  ".join(f"#{e['index']} it {e['iteration']} r {e['residual']:.1e}" for e in running[:4])
        counts = f"done {p.done}  failed {p.failed}  {_fmt_eta(p.eta)}  queued {p.queued}  running: {shown}"
        bar.update(job, completed=p.skipped + p.finished, counts=escape(counts))
        if not console.is_terminal:  # a batch job's log: a plain line at a steady rhythm
            now, finished = time.monotonic(), p.skipped + p.finished
            if finished == p.total or event is None and now - printed[0] >= LOG_EVERY:
                printed[0] = now
                console.print(
                    f"progress: {finished}/{p.total} members, done {p.done}, failed {p.failed}, "
                    f"running {len(running)}, queued {p.queued}, {_fmt_eta(p.eta)}",
                    markup=False,
                    highlight=False,
                    soft_wrap=True,
                )

    try:  # from the first line on, a Ctrl-C ends in the short message below
        console.print(
            f"sweep [bold]{escape(str(sweep.name))}[/]: {len(sweep)} members → {escape(str(path))}", soft_wrap=True
        )
        ds = run_sweep(
            sweep,
            target.path,
            client=scheduler,
            overwrite=overwrite,
            retry_failed=retry_failed,
            extend=extend,
            warm_start=warm_start,
            n_workers=workers,
            threads_per_worker=threads_per_worker,
            on_start=started,
            on_progress=progressed,
            on_event=progressed,
        )
    except (StoreMismatch, ConfigError, NoWorkers) as exc:
        _fail(exc)
    except OSError as exc:
        if exc.errno in STORAGE_ERRORS:  # a full disk, a read-only or forbidden folder
            _fail(OSError(f"cannot write the store {path}: {exc.strerror} ({exc.filename or path})"))
        if scheduler is None:
            raise
        # includes TimeoutError: the scheduler could not be reached
        _fail(OSError(f"cannot connect to the Dask scheduler at {scheduler}: {exc}"))
    except KeyboardInterrupt:
        if cluster_started:
            bar.stop()
        done = last[0].finished if last else 0
        err_console.print(
            f"interrupted: {done} member(s) finished in this run are in {path}; run the same command to resume",
            markup=False,
            soft_wrap=True,
        )
        sys.exit(130)
    if cluster_started:
        bar.stop()
    else:  # run_sweep found every member already done or failed, and started no cluster
        console.print(
            f"nothing to run: all {len(sweep)} members are already done or failed in {escape(str(path))}",
            soft_wrap=True,
        )
    _print_summary(path)
    console.print(
        f"open it with:  xarray.open_zarr({str(path)!r})   (dims {dict(ds.sizes)})", markup=False, soft_wrap=True
    )


def _print_summary(path: Path) -> None:
    summary = SweepStore(path).summary()
    table = Table(title=f"store {escape(str(path))}")
    columns = ("members", "done", "not converged", "failed", "pending")
    for col in columns:
        table.add_column(col, justify="right")
    table.add_row(*(str(summary[k]) for k in columns))
    console.print(table)
    if summary["errors"]:
        errors = Table(title="failed members")
        errors.add_column("member", justify="right")
        errors.add_column("error")
        for index, error in list(summary["errors"].items())[:20]:
            errors.add_row(str(index), escape(str(error)))
        console.print(errors)


@main.command()
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("--list", "limit", type=int, default=10, show_default=True, help="Members to list.")
def validate(config: str, limit: int) -> None:
    """Check the sweep file CONFIG without computing: print its axes and member count."""
    sweep = _load(config)
    console.print(sweep.describe(limit), markup=False, highlight=False, soft_wrap=True)
    console.print(f"[green]ok[/]: {len(sweep)} members")


@main.command()
@click.argument("store", type=click.Path())
@click.option("--verify", is_flag=True, help="Check every done member against its digest; exit 1 if any is damaged.")
def info(store: str, verify: bool) -> None:
    """What the sweep store STORE holds: members done, failed and missing."""
    path = Path(store)
    target = SweepStore(path)
    try:
        attrs = target.attrs()
    except StoreMismatch as exc:
        _fail(exc)
    fingerprint = str(attrs[schema.FINGERPRINT])[:12]
    console.print(f"{attrs.get('title', path)}  (fingerprint {fingerprint}…)", markup=False, soft_wrap=True)
    axes, source = attrs.get(schema.AXES), attrs.get(schema.SWEEP_SOURCE)
    console.print(f"axes: {axes}  from {source}", markup=False, soft_wrap=True)
    _print_summary(path)
    if verify:
        found = target.verify()
        if found["unverifiable"]:
            console.print(f"{len(found['unverifiable'])} done member(s) have no digest (written by 0.1)", markup=False)
        if found["damaged"]:
            shown = ", ".join(map(str, found["damaged"][:50]))
            err_console.print(
                f"damaged: {len(found['damaged'])} done member(s) no longer match their digest: {shown}; "
                "`mfg-ensemble run CONFIG --retry-failed` recomputes them",
                markup=False,
                soft_wrap=True,
            )
            sys.exit(1)
        console.print("verified: every done member with a digest matches it", markup=False)


@main.command()
@click.argument("store", type=click.Path())
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Folder for the PNG files (default: <STORE without .zarr>_report next to the store).",
)
@click.option(
    "--member",
    type=click.IntRange(min=0),
    default=None,
    help="Draw this member's density and value function instead of the seed-means "
    "(its flat index: C order over the axes, as in `info` and members/<index>).",
)
@click.option(
    "--members",
    type=click.Choice(["converged", "all"]),
    default="converged",
    show_default=True,
    help="Which done members the seed statistics use: the converged ones, or all (also those stopped at max_iter).",
)
@click.option(
    "--band",
    type=click.Choice(["std", "quantiles"]),
    default="std",
    show_default=True,
    help="Band around the final densities: mean ± 1 std, or median with the 5–95 % quantiles.",
)
def report(store: str, out_dir: str | None, member: int | None, members: str, band: str) -> None:
    """Write PNG figures of the sweep store STORE (also while it is running, or interrupted)."""
    path = Path(store)
    try:
        SweepStore(path).attrs()  # refuses what is not an mfg_ensemble store
    except StoreMismatch as exc:
        _fail(exc)
    from mfg_ensemble.analysis.report import make_report  # matplotlib only for this command

    out = Path(out_dir) if out_dir else path.with_name(f"{path.name.removesuffix('.zarr')}_report")
    try:
        files = make_report(path, out, member=member, members=members, band=band)
    except (IndexError, ValueError, OSError) as exc:
        _fail(exc)
    summary = SweepStore(path).summary()
    for file in files:
        console.print(str(file), markup=False, highlight=False, soft_wrap=True)
    console.print(
        f"{len(files)} figures in {escape(str(out))} ({summary['done']} of {summary['members']} members done, "
        f"{summary['failed']} failed, {summary['pending']} pending)",
        soft_wrap=True,
    )


if __name__ == "__main__":  # pragma: no cover
    main()
