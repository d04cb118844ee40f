"""The command line: options → Config → pipeline → report → exit code.

    options.py   the global options (each with its OCCYSTRAP_<NAME> variable)
    settings.py  the Config they make, and the rules between flags
    report.py    each image's line, the failed list, the summary, the exit code
    progress.py  the live progress display on a terminal

Global options go before the command, as in the original occystrap; every command accepts
them after it too. What a command needs beyond click is imported when it runs.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any

import click

from occystrap import __version__
from occystrap.cli import options, settings
from occystrap.cli.settings import build_config, native_platform
from occystrap.errors import from_library

__all__ = ["build_config", "cli", "main", "native_platform"]


def _log_notes() -> None:
    """-v: the stages' notes (what was left out and why) on stderr, one line each. The
    stages are forked after this, so they inherit it."""
    import logging

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("occystrap: %(message)s"))
    root = logging.getLogger("occystrap")
    root.addHandler(handler)
    root.setLevel(logging.INFO)


def handle_errors(f: Callable[..., int]) -> Callable[..., None]:
    """User errors become one line and an exit code (cli/report.py); bugs keep their
    traceback."""

    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        try:
            code = f(*args, **kwargs)
        except Exception as exc:
            mapped = from_library(exc)  # OccystrapError as is; a library's verdict mapped
            if mapped is None:
                raise  # a bug keeps its traceback
            from occystrap.cli.report import Report

            code = Report.ended_by(mapped).return_code
        except KeyboardInterrupt:
            from occystrap.cli.report import Report

            code = Report.ended_by(None).return_code
        sys.exit(code)

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="occystrap")
@options.global_options(after_command=False)
@click.pass_context
def cli(ctx: click.Context, /, **opts: Any) -> None:
    """Copy container images between registries, tarballs, directories and OCI layouts,
    fast and in bounded memory.

    \b
    Sources:
      registry://HOST/NAME[:TAG|@sha256:DIGEST]  an image, index or artifact
                  [?insecure=true&os=&arch=&variant=&referrers=true]
      registry://HOST/NAMESPACE/GLOB[:TAG_GLOB]  many, from the catalog [?tag_regex=RE]
      quay://NAMESPACE[/GLOB][:TAG]      many, through Quay's API [?since=&token=]
      tar://PATH[#NAME:TAG]              a docker save archive (tar:///dev/stdin works)
      oci://PATH[:REF]  dir://PATH  docker://NAME[:TAG][?socket=PATH]
    Destinations:
      registry://HOST/NAME[:TAG]         byte-exact push (tag defaults to the source's)
      tar://PATH[?format=v1.2&media_types=oci]   a docker-loadable tarball
      oci://PATH[:REF][?media_types=oci] an OCI image layout directory
      dir://PATH[?unique_names=true&expand=true&preserve_modes=true]
      docker://[NAME[:TAG]][?socket=PATH]  load into a Docker engine
    See docs/uris.md for every option.
    """
    ctx.obj = opts


@cli.command()
@click.argument("uris", nargs=-1, metavar="SOURCE DESTINATION")
@click.option(
    "--from-file",
    "from_file",
    type=click.Path(dir_okay=False),
    default=None,
    help="Take the sources from FILE (one URI a line, or a JSON mirror spec); "
    "then only DESTINATION is given (or none, if the spec names them).",
)
@click.option(
    "--shard",
    default=None,
    metavar="K/N",
    help="Copy only the K-th of N stable, hash-based shares of the images.",
)
@click.option(
    "--fail-fast/--keep-going",
    default=False,
    help="Stop at the first failed image [default: keep going].",
)
@click.option(
    "-f",
    "--filter",
    "filters",
    multiple=True,
    metavar="FILTER",
    help="NAME[:key=value,...], repeatable, applied in order: "
    "normalize-timestamps[:ts=N,config=true], exclude:pattern=GLOB[;GLOB...], "
    "search:pattern=GLOB|regex=RE[,script_friendly=true], inspect:file=PATH.",
)
@options.global_options(after_command=True)
@click.pass_obj
@handle_errors
def process(
    obj: dict[str, Any],
    uris: tuple[str, ...],
    from_file: str | None,
    shard: str | None,
    fail_fast: bool,
    filters: tuple[str, ...],
    **after: Any,
) -> int:
    """Copy SOURCE to DESTINATION.

    \b
    occystrap --insecure process registry://127.0.0.1:5000/library/app:1.0 tar:///tmp/app.tar
    occystrap process registry://ghcr.io/org/app@sha256:<digest> oci:///srv/layout
    occystrap -j 8 --stats json process registry://HOST/NAME:TAG dir:///tmp/out
    occystrap -J 6 process 'registry://src.example/team/*:latest' registry://dst.example/mirror
    occystrap process --from-file images.txt --shard 0/3 registry://dst.example/mirror
    occystrap process registry://HOST/NAME:TAG tar:///tmp/app.tar \\
        -f normalize-timestamps:config=true -f 'exclude:pattern=*.pyc;var/cache'
    """
    from occystrap import mirrorspec, pipeline
    from occystrap.cli.progress import ProgressDisplay
    from occystrap.cli.report import Report
    from occystrap.filters import FilterChain
    from occystrap.outcome import merge

    chain = FilterChain.parse(filters)
    for inspect in chain.inspects:
        inspect.check_writable()
    config = settings.process_config(obj, after, chain, shard, fail_fast, from_file is not None)
    if config.verbose:
        _log_notes()
    runs = mirrorspec.plan_runs(uris, from_file)
    # Live progress only for a person watching: stderr a terminal, and not --quiet.
    display = ProgressDisplay(sys.stderr) if sys.stderr.isatty() and not config.quiet else None
    report, results = Report(config, display), []
    for dst, sources in runs:
        settings.check_destination(dst, sources, config)
        run_config = settings.source_config(sources[0], config) if len(sources) == 1 else config
        try:
            results.append(
                pipeline.run(
                    sources,
                    dst,
                    run_config,
                    on_event=report.event,
                    on_tick=display.update if display else None,
                )
            )
        finally:
            if display is not None:
                display.clear()
        if results[-1].error or (fail_fast and results[-1].failed):
            break
    report.finish(merge(results), chain, results)
    return report.return_code


@cli.command()
@click.argument("source")
@options.OUTPUT_FORMAT
@options.global_options(after_command=True)
@click.pass_obj
@handle_errors
def info(obj: dict[str, Any], source: str, output_format: str, **after: Any) -> int:
    """Show an image's manifest, platforms, config and layers (no layer is downloaded).

    \b
    occystrap --insecure info registry://127.0.0.1:5000/library/app:1.0
    occystrap info -O json oci:///srv/layout:1.0
    """
    import json

    from occystrap.commands import images
    from occystrap.commands import info as describe

    location, config = settings.inspection_config(obj, after, source)
    with images.scratch(config, "info") as tmp:
        docs = describe.info(location, config, tmp)
    if output_format == "json":
        click.echo(json.dumps(docs[0] if len(docs) == 1 else docs, indent=2))
    else:
        click.echo(describe.to_text(docs))
    return 0


@cli.command()
@click.argument("source")
@click.option(
    "--fast", is_flag=True, default=False, help="Only the metadata checks: no layer is downloaded."
)
@options.OUTPUT_FORMAT
@options.global_options(after_command=True)
@click.pass_obj
@handle_errors
def check(obj: dict[str, Any], source: str, fast: bool, output_format: str, **after: Any) -> int:
    """Check an image: metadata, and (without --fast) every blob digest, diff_id, tar
    stream and whiteout. Exit 1 when any error is found.

    \b
    occystrap --insecure check registry://127.0.0.1:5000/library/app:1.0
    occystrap check --fast -O json tar:///tmp/app.tar
    """
    import json

    from occystrap.commands import check as checks

    location, config = settings.inspection_config(obj, after, source)
    found = checks.run(location, config, fast)
    if output_format == "json":
        click.echo(json.dumps(checks.to_dict(location, found, fast), indent=2))
    else:
        click.echo(checks.to_text(found, config.quiet))
    return 1 if checks.counts(found)[checks.ERROR] else 0


@cli.command()
@click.argument("source")
@click.argument("pattern")
@click.option(
    "--regex",
    is_flag=True,
    default=False,
    help="PATTERN is a regular expression (searched for anywhere in the path), not a glob.",
)
@click.option(
    "--script-friendly",
    is_flag=True,
    default=False,
    help="One IMAGE:TAG:LAYER:PATH line per match, nothing else.",
)
@options.OUTPUT_FORMAT
@options.global_options(after_command=True)
@click.pass_obj
@handle_errors
def search(
    obj: dict[str, Any],
    source: str,
    pattern: str,
    regex: bool,
    script_friendly: bool,
    output_format: str,
    **after: Any,
) -> int:
    """Find the paths matching PATTERN in each layer of SOURCE. A glob (`*`, `?`, `[...]`)
    matches the whole path, with or without a leading `/`. Exit 0 even with no match.

    \b
    occystrap --insecure search registry://127.0.0.1:5000/library/app:1.0 'etc/*'
    occystrap search --regex --script-friendly oci:///srv/layout '\\.so(\\.[0-9]+)*$'
    """
    import json

    from occystrap.commands import search as searching

    location, config = settings.inspection_config(obj, after, source)
    matches = searching.run(location, config, pattern, regex)
    if output_format == "json":
        found = [searching.to_dict(m) for m in matches]
        click.echo(
            json.dumps(
                {
                    "source": location.text,
                    "pattern": pattern,
                    "regex": regex,
                    "count": len(found),
                    "layers": len({m["layer"] for m in found}),
                    "matches": found,
                },
                indent=2,
            )
        )
    elif script_friendly:
        for m in matches:
            click.echo(searching.script_line(m))
    else:
        for line in searching.text_lines(matches):
            click.echo(line)
    return 0


@cli.group("report")
def report_group() -> None:
    """Reports over the --stats-file JSON documents of earlier runs."""


@report_group.command("merge")
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@options.OUTPUT_FORMAT
@handle_errors
def report_merge(files: tuple[str, ...], output_format: str) -> int:
    """One summary of a sharded mirror from its shards' --stats-file FILES: images copied,
    up to date and failed (with reasons), bytes moved and avoided, each shard's wall time.
    Exit 1 when an image failed or a shard's file is missing.

    \b
    occystrap report merge /stats/mirror-*.json
    """
    import json

    from occystrap.stats import merge

    merged = merge.merge(merge.load(files))
    if output_format == "json":
        click.echo(json.dumps(merged, indent=2))
    else:
        click.echo(merge.to_text(merged))
    return merge.exit_code(merged)


def main() -> None:
    """The console script: run the command, then exit without tearing the interpreter down.

    Python's own exit frees every module and object one by one, some 25-30 ms after a copy
    (issue 16's last byte → exit); the operating system does it at once. So exit handlers
    run (logging's flush, weakref finalizers, multiprocessing's), the standard streams are
    flushed, and the process ends with `os._exit`. Only when nothing else could still need
    the interpreter: with another thread alive, the ordinary exit joins it.
    """
    try:
        cli(prog_name="occystrap")
    except SystemExit as done:
        _exit_now(done)
        raise


def _exit_now(done: SystemExit) -> None:
    """End the process with `done`'s status as `sys.exit` would (None 0, an int itself,
    anything else printed to stderr and 1), or return when another thread is alive."""
    import atexit
    import os
    import threading

    if threading.active_count() > 1:
        return
    code = done.code
    if code is None:
        status = 0
    elif isinstance(code, int):
        status = code
    else:
        print(code, file=sys.stderr)
        status = 1
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            status = status or 120  # what the interpreter exits with when its flush fails
    os._exit(status)


if __name__ == "__main__":
    main()
