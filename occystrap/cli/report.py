"""What `process` says, and the exit code it ends with (black's report.py shape).

A `Report` hears each image's outcome as it happens (`event`: one line per image on stderr,
and each notice), and at the end (`finish`) writes the statistics, the search filters'
matches, the notes, the failed list and the summary line. `return_code` is the one place
that decides how the command exits.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from typing import Any

import click

from occystrap.config import Config
from occystrap.errors import OccystrapError, UsageError
from occystrap.filters import FilterChain
from occystrap.messages import ImageDone, ImageFailed, Notice
from occystrap.outcome import RunResult
from occystrap.stats.schema import human_bytes


def err(message: str) -> None:
    """An error line on stderr, as every error of the command line is said."""
    click.echo(f"occystrap: error: {message}", err=True)


def summary_line(result: RunResult, config: Config | None = None) -> str:
    """One line in the original occystrap's style:
    `Summary: 30/30 images, 312 layers, 2.1 GB, 14.2 s, 3 retries`."""
    moved = sum(d.bytes for d in result.done)
    layers = sum(d.layers for d in result.done)
    total = len(result.done) + len(result.failed)
    current = sum(1 for d in result.done if d.up_to_date)
    noted = f" ({current} already up to date)" if current else ""
    retries = sum(r.retries for r in result.reports.values())
    line = (
        f"Summary: {len(result.done)}/{total} images{noted}, {layers} layers, "
        f"{human_bytes(moved)}, {result.wall_seconds:.1f} s, "
        f"{retries} {'retry' if retries == 1 else 'retries'}"
    )
    foreign = sum(d.foreign for d in result.done)
    if foreign:
        line += f", {foreign} foreign layer{'s' if foreign > 1 else ''} not copied"
    referred = sum(d.referrers for d in result.done)
    if referred:
        line += f", {referred} referrer{'s' if referred > 1 else ''}"
    if result.failed:
        line += f", {len(result.failed)} failed"
    if not total and config is not None and config.shard is not None:
        k, n = config.shard
        line += f" (shard {k}/{n}: none of the images falls to this share)"
    return line


class Report:
    """The outcome of one command, as the person running it sees it.

    `config`: the run's (quiet, verbose, stats); `display`: the live progress block to
    erase before a line is printed (cli/progress.py), if any.
    """

    def __init__(self, config: Config | None = None, display: Any = None) -> None:
        self.config = config
        self.display = display
        self.result: RunResult | None = None
        self.error: OccystrapError | None = None  # a user's error that ended the command
        self.interrupted = False  # Ctrl-C outside a run

    @property
    def return_code(self) -> int:
        """The exit code, decided here and nowhere else:

        0    every image was copied (or was already up to date)
        1    an image failed, none was copied, the run stopped on an error (a stage's
             crash, --fail-fast), or an error of the input or the environment ended it
        2    a usage error (a malformed URI, flags that do not go together): the error's
             own `exit_code`
        130  interrupted (Ctrl-C, SIGINT)
        143  terminated (SIGTERM)
        """
        if self.interrupted:
            return 130
        if self.error is not None:
            return self.error.exit_code
        result = self.result
        if result is None:
            return 0
        if result.error:
            return 143 if result.terminated else 130 if result.interrupted else 1
        if result.failed:
            return 1
        # Nothing copied and nothing failed: a shard whose share of the images is empty
        # has done its part (a Job would otherwise restart it until it gives up).
        sharded = self.config is not None and self.config.shard is not None
        return 0 if result.done or sharded else 1

    @classmethod
    def ended_by(cls, error: OccystrapError | None) -> Report:
        """The report of a command that a user's error (None: Ctrl-C) ended; says so."""
        report = cls()
        if error is None:
            err("interrupted")
            report.interrupted = True
        else:
            err(str(error))
            report.error = error
        return report

    # -- as it happens ---------------------------------------------------------------------

    def event(self, event: ImageDone | ImageFailed | Notice) -> None:
        """Each image's outcome, and each notice (a long wait), as one line on stderr (the
        live progress block, if any, is erased first and redrawn on the next tick)."""
        quiet = self.config is not None and self.config.quiet
        if quiet and isinstance(event, Notice):
            return
        if self.display is not None:
            self.display.clear()
        if isinstance(event, Notice):
            click.echo(f"occystrap: {event.text}", err=True)
        elif isinstance(event, ImageFailed):
            err(f"{event.source}: {event.reason}")
        elif quiet:
            return
        elif event.up_to_date:
            click.echo(
                f"up to date: {event.destination} already has {event.source} "
                f"({event.manifest_digest})",
                err=True,
            )
        else:
            skipped = f", {event.skipped_layers} already present" if event.skipped_layers else ""
            if event.detail:
                skipped += f", {event.detail}"
            click.echo(
                f"copied {event.source} -> {event.destination} "
                f"({event.layers} layers, {event.bytes / 1e6:.1f} MB{skipped}; "
                f"{event.manifest_digest})",
                err=True,
            )

    # -- at the end ------------------------------------------------------------------------

    def finish(self, result: RunResult, chain: FilterChain, runs: Sequence[RunResult]) -> None:
        """Say how the run (the merged `result` of `runs`) ended. UsageError when the
        --stats-file cannot be written."""
        from occystrap.stats import schema

        self.result = result
        config = self.config
        assert config is not None
        if result.error:
            first, _, rest = result.error.partition("\n")
            if rest and not config.verbose:  # a bug's traceback: only on request
                err(f"{first} (run with --verbose for the traceback)")
            else:
                err(result.error)
            return
        # --stats-file always gets the JSON (with the series); --stats text still prints
        # the table
        if config.stats_file:
            _write_whole(config.stats_file, schema.to_json(result, config.shard) + "\n")
        if config.stats == "text":
            click.echo(schema.to_text(result), err=True)
        elif config.stats == "json" and not config.stats_file:
            click.echo(schema.to_json(result, config.shard))
        _print_search_results(chain, runs)
        if config.verbose:
            for notice in result.notices:
                click.echo(f"note: {notice.text}", err=True)
        if len(result.done) + len(result.failed) > 1 and result.failed:
            click.echo("Failed images:", err=True)
            for failure in result.failed:
                click.echo(f"  {failure.source}: {failure.reason}", err=True)
        if config.verbose and config.stats != "text":
            click.echo("bottleneck: " + schema.to_dict(result)["bottleneck"]["reason"], err=True)
        if not config.quiet:
            click.echo(summary_line(result, config), err=True)


def _write_whole(path: str, text: str) -> None:
    """Whole or not at all: a killed run leaves the previous file. UsageError if the file
    cannot be written."""
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise UsageError(f"cannot write --stats-file {path}: {exc.strerror}") from None


def _print_search_results(chain: FilterChain, results: Sequence[RunResult]) -> None:
    """The search filters' matches, on stdout, for the images that were copied: image by
    image, each layer in manifest order."""
    searches = chain.searches
    if not searches:
        return  # (and the search module, 6 ms of imports, stays unloaded)
    from occystrap.filters.search import report

    found = []
    for result in results:  # image ids count from 0 in each run
        done = {d.image_id for d in result.done}
        found += sorted(
            (h for h in result.search_hits if h.top in done), key=lambda h: (h.image_id, h.index)
        )
    if not found and not any(r.done for r in results):
        return  # nothing was searched
    for position, search in searches:
        if len(searches) > 1 and not search.script_friendly:
            click.echo(f"search {search.pattern}:")
        for line in report(search, position, found):
            click.echo(line)
