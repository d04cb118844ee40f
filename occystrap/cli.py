"""The command line: options → Config → pipeline → report → exit code.

Global options go before the command, as in the original occystrap; `process` accepts them
after the command too. Every global option has an `OCCYSTRAP_<NAME>` environment variable.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import click

from occystrap import __version__
from occystrap.config import Config
from occystrap.errors import UsageError, from_library
from occystrap.filters import FilterChain
from occystrap.mediatypes import Platform, parse_platform
from occystrap.messages import ImageDone, ImageFailed, Notice
from occystrap.reference import parse_location

_GLOBAL_OPTIONS: list[tuple[tuple[str, ...], dict[str, Any]]] = [
    (("-j", "--parallel"), dict(type=click.IntRange(1, 64), default=4, show_default=True,
                                help="Blob downloads at once, per image.")),
    (("-J", "--image-parallel"), dict(type=click.IntRange(1, 64), default=3,
                                      show_default=True, help="Images in flight at once.")),
    (("--retries",), dict(type=click.IntRange(0, 20), default=3, show_default=True,
                          help="Retries per request (exponential backoff, honours "
                               "Retry-After).")),
    (("--rate-limit",), dict(type=click.FloatRange(0.1, 10000), default=None,
                             help="Requests per second per registry host, shared by every "
                                  "thread and process [default: unlimited].")),
    (("--quay-url",), dict(default="https://quay.io", show_default=True,
                           help="Quay instance whose API expands quay:// sources.")),
    (("--timeout",), dict(type=click.FloatRange(1, 3600), default=60.0, show_default=True,
                          help="Network timeout in seconds.")),
    (("--temp-dir",), dict(type=click.Path(file_okay=False), default=None,
                           help="Where blobs are spooled [default: beside the destination, "
                                "so layers can be renamed into place].")),
    (("--insecure",), dict(is_flag=True, default=False,
                           help="Talk plain HTTP to registries (e.g. a local test registry).")),
    (("--tls-verify/--no-tls-verify",), dict(default=True, show_default=True,
                                             help="Verify registry TLS certificates.")),
    (("--ca-file",), dict(type=click.Path(dir_okay=False, exists=True), default=None,
                          help="Extra CA bundle (PEM) for self-signed registries.")),
    (("--username",), dict(default=None, help="Registry user name (source and destination).")),
    (("--password",), dict(default=None, help="Registry password or token.")),
    (("--src-username",), dict(default=None, help="User name for the source registry.")),
    (("--src-password",), dict(default=None, help="Password for the source registry.")),
    (("--dest-username",), dict(default=None,
                                help="User name for the destination registry.")),
    (("--dest-password",), dict(default=None, help="Password for the destination registry.")),
    (("--authfile",), dict(type=click.Path(dir_okay=False, exists=True), default=None,
                           extra_envvars=["REGISTRY_AUTH_FILE"],
                           help="Read registry credentials from this auth file only (podman's "
                                "auth.json or docker's config.json) [default: podman's auth "
                                "files, then ~/.docker/config.json].")),
    (("--no-credential-helpers",), dict(is_flag=True, default=False,
                                        help="Never run the docker-credential-* helpers that "
                                             "auth files name (credHelpers, credsStore).")),
    (("--platform",), dict(default=None,
                           help="os/arch[/variant] to pick from a multi-platform image, or "
                                "'native' for this machine's [default: linux/amd64; into a "
                                "registry: every platform].")),
    (("--all-platforms",), dict(is_flag=True, default=False,
                                help="Copy a multi-platform index whole (registry:// and "
                                     "oci:// destinations).")),
    (("--referrers",), dict(is_flag=True, default=False,
                            help="Also copy what refers to each manifest copied: OCI 1.1 "
                                 "referrers (signatures, SBOMs, attestations) and cosign's "
                                 "sha256-<hex>.sig/.att/.sbom tags (registry:// and oci://).")),
    (("--referrers-type",), dict(multiple=True, default=(), metavar="ARTIFACT_TYPE",
                                 help="Only referrers of this artifactType, config or blob "
                                      "media type (repeatable; implies --referrers).")),
    (("--compression",), dict(type=click.Choice(["gzip", "zstd"]), default=None,
                               help="Re-encode layers (new digests; the default keeps every "
                                    "byte).")),
    (("--compression-level",), dict(type=click.IntRange(0, 22), default=None,
                                     help="gzip 0-9 with zlib [ISA-L's fast level 2], "
                                          "zstd 1-22 [3].")),
    (("--layer-cache",), dict(type=click.Path(dir_okay=False), default=None,
                              help="JSON file remembering re-encoded layers across runs "
                                   "(with --compression).")),
    (("--verify-full",), dict(is_flag=True, default=False,
                              help="Also check every layer's uncompressed diff_id.")),
    (("--stats",), dict(type=click.Choice(["text", "json"]), default=None,
                        help="At the end, report per stage throughput, busy/wait split, CPU, "
                             "memory, I/O and requests, queue occupancy and the bottleneck "
                             "(see docs/stats.md).")),
    (("--stats-file",), dict(type=click.Path(dir_okay=False), default=None,
                             help="Write the JSON statistics, with the per-second series, here "
                                  "(implies --stats json).")),
    (("-q", "--quiet"), dict(is_flag=True, default=False,
                            help="Only print errors: no progress, results or summary.")),
    (("-v", "--verbose"), dict(is_flag=True, default=False,
                              help="Print more detail: the bottleneck verdict, and the "
                                   "traceback of an internal error.")),
]


def _envvar(flags: tuple[str, ...]) -> str:
    long = next(f for f in flags if f.startswith("--")).split("/")[0]
    return "OCCYSTRAP_" + long[2:].replace("-", "_").upper()


def global_options(after_command: bool) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """The same options for the group and, repeated after it, for a command.

    After the command they default to None (meaning "as given before the command").
    """

    def decorate(f: Callable[..., Any]) -> Callable[..., Any]:
        for flags, spec in reversed(_GLOBAL_OPTIONS):
            spec = dict(spec)
            extra_envvars = spec.pop("extra_envvars", [])
            if after_command:
                spec["default"] = None
                spec.pop("show_default", None)
                spec["hidden"] = True
                if spec.get("is_flag"):
                    spec["flag_value"] = True
            else:
                # the ecosystem's own variable (REGISTRY_AUTH_FILE) after ours
                spec["envvar"] = [_envvar(flags), *extra_envvars] if extra_envvars \
                    else _envvar(flags)
                spec["show_envvar"] = True
            f = click.option(*flags, **spec)(f)
        return f

    return decorate


def _merge(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    merged = dict(before)
    merged.update({k: v for k, v in after.items() if v is not None and v != ()})
    return merged


# uname's machine names → OCI architecture and variant, as Go's GOARCH/GOARM name them (arm64's
# variant is left out: platform matching prefers its default, v8)
_MACHINES: dict[str, tuple[str, str | None]] = {
    "x86_64": ("amd64", None), "amd64": ("amd64", None), "aarch64": ("arm64", None),
    "arm64": ("arm64", None), "armv7l": ("arm", "v7"), "armv6l": ("arm", "v6"),
    "i386": ("386", None), "i686": ("386", None), "ppc64le": ("ppc64le", None),
    "s390x": ("s390x", None), "riscv64": ("riscv64", None),
}


def native_platform(machine: str | None = None) -> Platform:
    """`--platform native`: the platform docker, podman and skopeo pick by default, this
    machine's (Linux; the architecture from uname)."""
    import platform as _platform

    machine = machine or _platform.machine()
    if machine.lower() not in _MACHINES:
        raise UsageError(f"--platform native: unknown machine {machine!r}; give os/arch")
    arch, variant = _MACHINES[machine.lower()]
    return Platform("linux", arch, variant)


def build_config(opts: dict[str, Any]) -> Config:
    text = opts["platform"]
    platform: Platform = (native_platform() if text == "native" else
                          parse_platform(text or "linux/amd64"))
    stats = opts["stats"] or ("json" if opts["stats_file"] else None)
    return Config(
        parallel=opts["parallel"], image_parallel=opts["image_parallel"],
        retries=opts["retries"], timeout=opts["timeout"], temp_dir=opts["temp_dir"],
        insecure=opts["insecure"], tls_verify=opts["tls_verify"], ca_file=opts["ca_file"],
        username=opts["username"], password=opts["password"],
        src_username=opts["src_username"], src_password=opts["src_password"],
        dest_username=opts["dest_username"], dest_password=opts["dest_password"],
        authfile=opts["authfile"], credential_helpers=not opts["no_credential_helpers"],
        platform=platform, platform_given=opts["platform"] is not None,
        all_platforms=opts["all_platforms"],
        referrers=opts["referrers"] or bool(opts["referrers_type"]),
        referrer_types=tuple(opts["referrers_type"]),
        verify_full=opts["verify_full"], compression=opts["compression"],
        compression_level=opts["compression_level"],
        layer_cache=opts["layer_cache"], rate_limit=opts["rate_limit"],
        quay_url=opts["quay_url"],
        stats=stats, stats_file=opts["stats_file"],
        quiet=opts["quiet"], verbose=opts["verbose"])


def _err(message: str) -> None:
    click.echo(f"occystrap: error: {message}", err=True)


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
    """User errors become one line and an exit code; bugs keep their traceback."""

    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        try:
            code = f(*args, **kwargs)
        except Exception as exc:
            mapped = from_library(exc)  # OccystrapError as is; a library's verdict mapped
            if mapped is None:
                raise  # a bug keeps its traceback
            _err(str(mapped))
            sys.exit(mapped.exit_code)
        except KeyboardInterrupt:
            _err("interrupted")
            sys.exit(130)
        sys.exit(code)

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="occystrap")
@global_options(after_command=False)
@click.pass_context
def cli(ctx: click.Context, **opts: Any) -> None:
    """Copy container images between registries, tarballs, directories and OCI layouts,
    fast and in bounded memory.

    \b
    Sources:      registry://HOST/NAME[:TAG|@sha256:DIGEST][?insecure=true&os=&arch=&variant=]
    Destinations: registry://HOST/NAME[:TAG]  byte-exact push (tag defaults to the source's)
                  tar://PATH[?format=v1.2]   a docker-loadable tarball (Docker >= 25 shape)
                  oci://PATH[:REF]           an OCI image layout directory
                  dir://PATH[?unique_names=true]  the original occystrap directory layout
    """
    ctx.obj = opts


def _print_event(quiet: bool, display: Any = None
                 ) -> Callable[[ImageDone | ImageFailed | Notice], None]:
    """Each image's outcome, and each notice (a long wait), as one line on stderr (the live
    progress block, if any, is erased first and redrawn on the next tick)."""

    def show(event: ImageDone | ImageFailed | Notice) -> None:
        if quiet and isinstance(event, Notice):
            return
        if display is not None:
            display.clear()
        if isinstance(event, Notice):
            click.echo(f"occystrap: {event.text}", err=True)
        elif isinstance(event, ImageFailed):
            _err(f"{event.source}: {event.reason}")
        elif quiet:
            return
        elif event.up_to_date:
            click.echo(f"up to date: {event.destination} already has {event.source} "
                       f"({event.manifest_digest})", err=True)
        else:
            skipped = f", {event.skipped_layers} already present" if event.skipped_layers else ""
            if event.detail:
                skipped += f", {event.detail}"
            click.echo(f"copied {event.source} -> {event.destination} "
                       f"({event.layers} layers, {event.bytes / 1e6:.1f} MB{skipped}; "
                       f"{event.manifest_digest})", err=True)

    return show


@cli.command()
@click.argument("uris", nargs=-1, metavar="SOURCE DESTINATION")
@click.option("--from-file", "from_file", type=click.Path(dir_okay=False), default=None,
              help="Take the sources from FILE (one URI a line, or a JSON mirror spec); "
                   "then only DESTINATION is given (or none, if the spec names them).")
@click.option("--shard", default=None, metavar="K/N",
              help="Copy only the K-th of N stable, hash-based shares of the images.")
@click.option("--fail-fast/--keep-going", default=False,
              help="Stop at the first failed image [default: keep going].")
@click.option("-f", "--filter", "filters", multiple=True, metavar="FILTER",
              help="NAME[:key=value,...], repeatable, applied in order: "
                   "normalize-timestamps[:ts=N,config=true], exclude:pattern=GLOB[;GLOB...], "
                   "search:pattern=GLOB|regex=RE[,script_friendly=true], inspect:file=PATH.")
@global_options(after_command=True)
@click.pass_obj
@handle_errors
def process(obj: dict[str, Any], uris: tuple[str, ...], from_file: str | None,
            shard: str | None, fail_fast: bool, filters: tuple[str, ...], **after: Any) -> int:
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
    from occystrap import pipeline, stats

    chain = FilterChain.parse(filters)
    for inspect in chain.inspects:
        inspect.check_writable()
    config = replace(build_config(_merge(obj, after)), shard=_parse_shard(shard),
                     fail_fast=fail_fast, bulk=from_file is not None, filters=chain)
    level = config.compression_level
    if level is not None and level > 9 and config.compression != "zstd" and (
            config.compression == "gzip" or chain.rewrites):
        hint = "" if config.compression else " (filtered gzip layers stay gzip)"
        raise UsageError(f"--compression-level {level}: gzip levels are 0-9{hint}")
    if chain.searches and config.stats == "json" and not config.stats_file:
        raise UsageError("a search filter and --stats json both write to stdout: "
                         "use --stats-file FILE for the statistics")
    if config.verbose:
        _log_notes()
    jobs = _jobs(uris, from_file)
    results = []
    # Live progress only for a person watching: stderr a terminal, and not --quiet.
    display = (stats.ProgressDisplay(sys.stderr)
               if sys.stderr.isatty() and not config.quiet else None)
    for dst, sources in jobs:
        if config.referrers or any(s.option("referrers") for s in sources):
            _check_referrers(dst, config)
        if config.compression and (dst.scheme == "dir" or
                                   str(dst.option("format", "")).lower() in ("v1.2", "legacy")):
            raise UsageError(f"{dst}: stores uncompressed layers; --compression does "
                             "not apply")
        run_config = _source_config(sources[0], config) if len(sources) == 1 else config
        try:
            results.append(pipeline.run(sources, dst, run_config,
                                        on_event=_print_event(config.quiet, display),
                                        on_tick=display.update if display else None))
        finally:
            if display is not None:
                display.clear()
        if results[-1].error or (fail_fast and results[-1].failed):
            break
    result = pipeline.merge(results)
    if result.error:
        first, _, rest = result.error.partition("\n")
        if rest and not config.verbose:  # a bug's traceback: only on request
            _err(f"{first} (run with --verbose for the traceback)")
        else:
            _err(result.error)
        return 143 if result.terminated else 130 if result.interrupted else 1
    # --stats-file always gets the JSON (with the series); --stats text still prints the table
    if config.stats_file:  # whole or not at all: a killed run leaves the previous file
        tmp = f"{config.stats_file}.{os.getpid()}.tmp"
        try:
            with open(tmp, "w") as f:
                f.write(stats.to_json(result, config.shard) + "\n")
            os.replace(tmp, config.stats_file)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise UsageError(f"cannot write --stats-file {config.stats_file}: "
                             f"{exc.strerror}") from None
    if config.stats == "text":
        click.echo(stats.to_text(result), err=True)
    elif config.stats == "json" and not config.stats_file:
        click.echo(stats.to_json(result, config.shard))
    _print_search_results(chain, results)
    if config.verbose:
        for notice in result.notices:
            click.echo(f"note: {notice.text}", err=True)
    if len(result.done) + len(result.failed) > 1 and result.failed:
        click.echo("Failed images:", err=True)
        for failure in result.failed:
            click.echo(f"  {failure.source}: {failure.reason}", err=True)
    if config.verbose and config.stats != "text":
        click.echo("bottleneck: " + stats.to_dict(result)["bottleneck"]["reason"], err=True)
    if not config.quiet:
        click.echo(stats.summary_line(result), err=True)
    return 1 if result.failed or not result.done else 0


def _check_referrers(dst: Any, config: Config) -> None:
    option = config.image_semantics()
    if option:
        # It needs images: attestations would be left out of indexes (new digests) and
        # artifacts refused, so the referrers copied would point at nothing.
        raise UsageError(f"--referrers keeps signatures and attestations pointing at the "
                         f"source's digests; it cannot be combined with {option}")
    if dst.scheme not in ("registry", "oci"):
        raise UsageError(f"{dst}: --referrers needs a registry:// or oci:// destination")
    if dst.option("media_types"):
        raise UsageError(f"{dst}: --referrers keeps what points at the source's digests; "
                         "?media_types= converts manifests (new digests)")


def _print_search_results(chain: FilterChain, results: list[Any]) -> None:
    """The search filters' matches, on stdout, for the images that were copied: image by
    image, each layer in manifest order."""
    from occystrap.filters.search import report

    found = []
    for result in results:  # image ids count from 0 in each run
        done = {d.image_id for d in result.done}
        found += sorted((h for h in result.search_hits if h.top in done),
                        key=lambda h: (h.image_id, h.index))
    if not found and not any(r.done for r in results):
        return  # nothing was searched
    searches = chain.searches
    for position, search in searches:
        if len(searches) > 1 and not search.script_friendly:
            click.echo(f"search {search.pattern}:")
        for line in report(search, position, found):
            click.echo(line)


def _parse_shard(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    try:
        k, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise UsageError(f"--shard {text}: expected K/N, e.g. 0/3") from None
    if not (n >= 1 and 0 <= k < n):
        raise UsageError(f"--shard {text}: K must be in 0..N-1")
    return k, n


def _jobs(uris: tuple[str, ...], from_file: str | None) -> list[tuple[Any, list[Any]]]:
    """(destination, sources) runs: one for SOURCE DESTINATION, one per destination of a
    --from-file spec."""
    from occystrap import mirrorspec

    if from_file is None:
        if len(uris) != 2:
            raise UsageError("process takes SOURCE DESTINATION (or --from-file FILE "
                             "DESTINATION)")
        return [(parse_location(uris[1], role="destination"),
                 [parse_location(uris[0], role="source")])]
    if len(uris) > 1:
        raise UsageError("with --from-file, give only the DESTINATION")
    default = uris[0] if uris else None
    groups: dict[str, list[Any]] = {}
    for src, dest in mirrorspec.load(from_file):
        target = dest or default
        if target is None:
            raise UsageError(f"--from-file {from_file}: {src} has no destination; give one "
                             "on the command line")
        groups.setdefault(target, []).append(src)
    return [(parse_location(d, role="destination"), s) for d, s in groups.items()]


def _source_config(src: Any, config: Config) -> Config:
    """Per-source URI options (`?os=&arch=&variant=`) refine the global platform."""
    os_ = src.option("os")
    arch = src.option("arch") or src.option("architecture")
    variant = src.option("variant")
    if not (os_ or arch or variant):
        return config
    p = config.platform
    platform = Platform(str(os_ or p.os), str(arch or p.architecture),
                        str(variant) if variant else (None if arch else p.variant))
    return replace(config, platform=platform, platform_given=True)


_OUTPUT_FORMAT = click.option("-O", "--output-format", "output_format",
                              type=click.Choice(["text", "json"]), default="text",
                              show_default=True, help="Text for people, or one JSON document.")


def _inspection_config(obj: dict[str, Any], after: dict[str, Any], source: str
                       ) -> tuple[Any, Config]:
    """The parsed SOURCE and the Config for info/check/search (`?os=&arch=` applied)."""
    config = build_config(_merge(obj, after))
    location = parse_location(source, role="source")
    return location, _source_config(location, config)


@cli.command()
@click.argument("source")
@_OUTPUT_FORMAT
@global_options(after_command=True)
@click.pass_obj
@handle_errors
def info(obj: dict[str, Any], source: str, output_format: str, **after: Any) -> int:
    """Show an image's manifest, platforms, config and layers (no layer is downloaded).

    \b
    occystrap --insecure info registry://127.0.0.1:5000/library/app:1.0
    occystrap info -O json oci:///srv/layout:1.0
    """
    import json

    from occystrap import inspect

    location, config = _inspection_config(obj, after, source)
    with inspect.scratch(config, "info") as tmp:
        docs = inspect.info(location, config, tmp)
    if output_format == "json":
        click.echo(json.dumps(docs[0] if len(docs) == 1 else docs, indent=2))
    else:
        click.echo(inspect.to_text(docs))
    return 0


@cli.command()
@click.argument("source")
@click.option("--fast", is_flag=True, default=False,
              help="Only the metadata checks: no layer is downloaded.")
@_OUTPUT_FORMAT
@global_options(after_command=True)
@click.pass_obj
@handle_errors
def check(obj: dict[str, Any], source: str, fast: bool, output_format: str,
          **after: Any) -> int:
    """Check an image: metadata, and (without --fast) every blob digest, diff_id, tar
    stream and whiteout. Exit 1 when any error is found.

    \b
    occystrap --insecure check registry://127.0.0.1:5000/library/app:1.0
    occystrap check --fast -O json tar:///tmp/app.tar
    """
    import json

    from occystrap import checks

    location, config = _inspection_config(obj, after, source)
    found = checks.run(location, config, fast)
    if output_format == "json":
        click.echo(json.dumps(checks.to_dict(location, found, fast), indent=2))
    else:
        click.echo(checks.to_text(found, config.quiet))
    return 1 if checks.counts(found)[checks.ERROR] else 0


@cli.command()
@click.argument("source")
@click.argument("pattern")
@click.option("--regex", is_flag=True, default=False,
              help="PATTERN is a regular expression (searched for anywhere in the path), "
                   "not a glob.")
@click.option("--script-friendly", is_flag=True, default=False,
              help="One IMAGE:TAG:LAYER:PATH line per match, nothing else.")
@_OUTPUT_FORMAT
@global_options(after_command=True)
@click.pass_obj
@handle_errors
def search(obj: dict[str, Any], source: str, pattern: str, regex: bool,
           script_friendly: bool, output_format: str, **after: Any) -> int:
    """Find the paths matching PATTERN in each layer of SOURCE. A glob (`*`, `?`, `[...]`)
    matches the whole path, with or without a leading `/`. Exit 0 even with no match.

    \b
    occystrap --insecure search registry://127.0.0.1:5000/library/app:1.0 'etc/*'
    occystrap search --regex --script-friendly oci:///srv/layout '\\.so(\\.[0-9]+)*$'
    """
    import json

    from occystrap import searching

    location, config = _inspection_config(obj, after, source)
    matches = searching.run(location, config, pattern, regex)
    if output_format == "json":
        found = [searching.to_dict(m) for m in matches]
        click.echo(json.dumps({"source": location.text, "pattern": pattern, "regex": regex,
                               "count": len(found),
                               "layers": len({m["layer"] for m in found}),
                               "matches": found}, indent=2))
    elif script_friendly:
        for m in matches:
            click.echo(searching.script_line(m))
    else:
        for line in searching.text_lines(matches):
            click.echo(line)
    return 0


@cli.group()
def report() -> None:
    """Reports over the --stats-file JSON documents of earlier runs."""


@report.command("merge")
@click.argument("files", nargs=-1, required=True,
                type=click.Path(exists=True, dir_okay=False))
@_OUTPUT_FORMAT
@handle_errors
def report_merge(files: tuple[str, ...], output_format: str) -> int:
    """One summary of a sharded mirror from its shards' --stats-file FILES: images copied,
    up to date and failed (with reasons), bytes moved and avoided, each shard's wall time.
    Exit 1 when an image failed or a shard's file is missing.

    \b
    occystrap report merge /stats/mirror-*.json
    """
    import json

    from occystrap import mergereport

    merged = mergereport.merge(mergereport.load(files))
    if output_format == "json":
        click.echo(json.dumps(merged, indent=2))
    else:
        click.echo(mergereport.to_text(merged))
    return mergereport.exit_code(merged)


def main() -> None:
    cli(prog_name="occystrap")


if __name__ == "__main__":
    main()
