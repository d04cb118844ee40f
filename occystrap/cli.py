"""The command line: options → Config → pipeline → report → exit code.

Global options go before the command, as in the original occystrap; `process` accepts them
after the command too. Every global option has an `OCCYSTRAP_<NAME>` environment variable.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import click

from occystrap import __version__
from occystrap.config import Config
from occystrap.errors import OccystrapError, UsageError
from occystrap.mediatypes import Platform, parse_platform
from occystrap.messages import ImageDone, ImageFailed
from occystrap.reference import parse_location

_GLOBAL_OPTIONS: list[tuple[tuple[str, ...], dict[str, Any]]] = [
    (("-j", "--parallel"), dict(type=click.IntRange(1, 64), default=4, show_default=True,
                                help="Blob downloads at once, per image.")),
    (("-J", "--image-parallel"), dict(type=click.IntRange(1, 64), default=3,
                                      show_default=True, help="Images in flight at once.")),
    (("--retries",), dict(type=click.IntRange(0, 20), default=3, show_default=True,
                          help="Retries per request (exponential backoff, honours "
                               "Retry-After).")),
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
    (("--platform",), dict(default=None,
                           help="os/arch[/variant] to pick from a multi-platform image "
                                "[default: linux/amd64; into a registry: every platform].")),
    (("--all-platforms",), dict(is_flag=True, default=False,
                                help="Copy a multi-platform index whole (registry:// and "
                                     "oci:// destinations).")),
    (("--compression",), dict(type=click.Choice(["gzip", "zstd"]), default=None,
                               help="Re-encode layers (new digests; the default keeps every "
                                    "byte).")),
    (("--compression-level",), dict(type=click.IntRange(0, 22), default=None,
                                     help="gzip 0-9 [6], zstd 1-22 [3].")),
    (("--layer-cache",), dict(type=click.Path(dir_okay=False), default=None,
                              help="JSON file remembering re-encoded layers across runs "
                                   "(with --compression).")),
    (("--verify-full",), dict(is_flag=True, default=False,
                              help="Also check every layer's uncompressed diff_id.")),
    (("--stats",), dict(type=click.Choice(["text", "json"]), default=None,
                        help="Report per-stage throughput, CPU and memory at the end.")),
    (("--stats-file",), dict(type=click.Path(dir_okay=False), default=None,
                             help="Write the JSON statistics here (implies --stats json).")),
    (("-q", "--quiet"), dict(is_flag=True, default=False, help="Only print errors.")),
    (("-v", "--verbose"), dict(is_flag=True, default=False, help="Print more detail.")),
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
            if after_command:
                spec["default"] = None
                spec.pop("show_default", None)
                spec["hidden"] = True
                if spec.get("is_flag"):
                    spec["flag_value"] = True
            else:
                spec["envvar"] = _envvar(flags)
                spec["show_envvar"] = True
            f = click.option(*flags, **spec)(f)
        return f

    return decorate


def _merge(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    merged = dict(before)
    merged.update({k: v for k, v in after.items() if v is not None})
    return merged


def build_config(opts: dict[str, Any]) -> Config:
    platform: Platform = parse_platform(opts["platform"] or "linux/amd64")
    stats = opts["stats"] or ("json" if opts["stats_file"] else None)
    return Config(
        parallel=opts["parallel"], image_parallel=opts["image_parallel"],
        retries=opts["retries"], timeout=opts["timeout"], temp_dir=opts["temp_dir"],
        insecure=opts["insecure"], tls_verify=opts["tls_verify"], ca_file=opts["ca_file"],
        username=opts["username"], password=opts["password"],
        src_username=opts["src_username"], src_password=opts["src_password"],
        dest_username=opts["dest_username"], dest_password=opts["dest_password"],
        platform=platform, platform_given=opts["platform"] is not None,
        all_platforms=opts["all_platforms"],
        verify_full=opts["verify_full"], compression=opts["compression"],
        compression_level=opts["compression_level"],
        layer_cache=opts["layer_cache"], stats=stats, stats_file=opts["stats_file"],
        quiet=opts["quiet"], verbose=opts["verbose"])


def _err(message: str) -> None:
    click.echo(f"occystrap: error: {message}", err=True)


def handle_errors(f: Callable[..., int]) -> Callable[..., None]:
    """User errors become one line and an exit code; bugs keep their traceback."""

    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        try:
            code = f(*args, **kwargs)
        except OccystrapError as exc:
            _err(str(exc))
            sys.exit(exc.exit_code)
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


def _print_event(quiet: bool) -> Callable[[ImageDone | ImageFailed], None]:
    def show(event: ImageDone | ImageFailed) -> None:
        if isinstance(event, ImageFailed):
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
@click.argument("source")
@click.argument("destination")
@global_options(after_command=True)
@click.pass_obj
@handle_errors
def process(obj: dict[str, Any], source: str, destination: str, **after: Any) -> int:
    """Copy SOURCE to DESTINATION.

    \b
    occystrap --insecure process registry://127.0.0.1:5000/library/app:1.0 tar:///tmp/app.tar
    occystrap process registry://ghcr.io/org/app@sha256:<digest> oci:///srv/layout
    occystrap -j 8 --stats json process registry://HOST/NAME:TAG dir:///tmp/out
    """
    from occystrap import pipeline, stats

    config = build_config(_merge(obj, after))
    src = parse_location(source, role="source")
    dst = parse_location(destination, role="destination")
    if config.compression and (dst.scheme == "dir" or
                               str(dst.option("format", "")).lower() in ("v1.2", "legacy")):
        raise UsageError(f"{destination}: stores uncompressed layers; --compression does "
                         "not apply")
    result = pipeline.run([src], dst, _source_config(src, config),
                          on_event=_print_event(config.quiet))
    if result.error:
        _err(result.error)
        return 130 if result.interrupted else 1
    if config.stats == "text":
        click.echo(stats.to_text(result), err=True)
    elif config.stats == "json":
        if config.stats_file:
            try:
                with open(config.stats_file, "w") as f:
                    f.write(stats.to_json(result) + "\n")
            except OSError as exc:
                raise UsageError(f"cannot write --stats-file {config.stats_file}: "
                                 f"{exc.strerror}") from None
        else:
            click.echo(stats.to_json(result))
    if not config.quiet:
        moved = sum(d.bytes for d in result.done)
        layers = sum(d.layers for d in result.done)
        total = len(result.done) + len(result.failed)
        rate = moved / 1e6 / result.wall_seconds if result.wall_seconds else 0.0
        current = sum(1 for d in result.done if d.up_to_date)
        noted = f" ({current} already up to date)" if current else ""
        click.echo(f"Summary: {len(result.done)}/{total} images{noted}, {layers} layers, "
                   f"{moved / 1e6:.1f} MB in {result.wall_seconds:.1f} s ({rate:.0f} MB/s)"
                   + (f", {len(result.failed)} failed" if result.failed else ""), err=True)
    return 1 if result.failed or not result.done else 0


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


def main() -> None:
    cli(prog_name="occystrap")


if __name__ == "__main__":
    main()
