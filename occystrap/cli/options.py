"""The command line's options: the global-option table (every flag with its
`OCCYSTRAP_<NAME>` environment variable) and options given before and after the command
merged. The Config they make, and the rules between flags, are `cli/settings.py`.

Global options go before the command, as in the original occystrap; a command accepts them
after it too (hidden there: `--help` lists them once, on the group).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

_GLOBAL_OPTIONS: list[tuple[tuple[str, ...], dict[str, Any]]] = [
    (
        ("-j", "--parallel"),
        dict(
            type=click.IntRange(1, 64),
            default=4,
            show_default=True,
            help="Blob downloads at once, per image.",
        ),
    ),
    (
        ("-J", "--image-parallel"),
        dict(
            type=click.IntRange(1, 64),
            default=3,
            show_default=True,
            help="Images in flight at once.",
        ),
    ),
    (
        ("--retries",),
        dict(
            type=click.IntRange(0, 20),
            default=3,
            show_default=True,
            help="Retries per request (exponential backoff, honours Retry-After).",
        ),
    ),
    (
        ("--rate-limit",),
        dict(
            type=click.FloatRange(0.1, 10000),
            default=None,
            help="Requests per second per registry host, shared by every "
            "thread and process [default: unlimited].",
        ),
    ),
    (
        ("--quay-url",),
        dict(
            default="https://quay.io",
            show_default=True,
            help="Quay instance whose API expands quay:// sources.",
        ),
    ),
    (
        ("--timeout",),
        dict(
            type=click.FloatRange(1, 3600),
            default=60.0,
            show_default=True,
            help="Network timeout in seconds.",
        ),
    ),
    (
        ("--temp-dir",),
        dict(
            type=click.Path(file_okay=False),
            default=None,
            help="Where blobs are spooled [default: beside the destination, "
            "so layers can be renamed into place].",
        ),
    ),
    (
        ("--insecure",),
        dict(
            is_flag=True,
            default=False,
            help="Talk plain HTTP to registries (e.g. a local test registry).",
        ),
    ),
    (
        ("--tls-verify/--no-tls-verify",),
        dict(default=True, show_default=True, help="Verify registry TLS certificates."),
    ),
    (
        ("--ca-file",),
        dict(
            type=click.Path(dir_okay=False, exists=True),
            default=None,
            help="Extra CA bundle (PEM) for self-signed registries.",
        ),
    ),
    (("--username",), dict(default=None, help="Registry user name (source and destination).")),
    (("--password",), dict(default=None, help="Registry password or token.")),
    (("--src-username",), dict(default=None, help="User name for the source registry.")),
    (("--src-password",), dict(default=None, help="Password for the source registry.")),
    (("--dest-username",), dict(default=None, help="User name for the destination registry.")),
    (("--dest-password",), dict(default=None, help="Password for the destination registry.")),
    (
        ("--authfile",),
        dict(
            type=click.Path(dir_okay=False, exists=True),
            default=None,
            extra_envvars=["REGISTRY_AUTH_FILE"],
            help="Read registry credentials from this auth file only (podman's "
            "auth.json or docker's config.json) [default: podman's auth "
            "files, then ~/.docker/config.json].",
        ),
    ),
    (
        ("--no-credential-helpers",),
        dict(
            is_flag=True,
            default=False,
            help="Never run the docker-credential-* helpers that "
            "auth files name (credHelpers, credsStore).",
        ),
    ),
    (
        ("--platform",),
        dict(
            default=None,
            help="os/arch[/variant] to pick from a multi-platform image, or "
            "'native' for this machine's [default: linux/amd64; into a "
            "registry: every platform].",
        ),
    ),
    (
        ("--all-platforms",),
        dict(
            is_flag=True,
            default=False,
            help="Copy a multi-platform index whole (registry:// and oci:// destinations).",
        ),
    ),
    (
        ("--referrers",),
        dict(
            is_flag=True,
            default=False,
            help="Also copy what refers to each manifest copied: OCI 1.1 "
            "referrers (signatures, SBOMs, attestations) and cosign's "
            "sha256-<hex>.sig/.att/.sbom tags (registry:// and oci://).",
        ),
    ),
    (
        ("--referrers-type",),
        dict(
            multiple=True,
            default=(),
            metavar="ARTIFACT_TYPE",
            help="Only referrers of this artifactType, config or blob "
            "media type (repeatable; implies --referrers).",
        ),
    ),
    (
        ("--compression",),
        dict(
            type=click.Choice(["gzip", "zstd"]),
            default=None,
            help="Re-encode layers (new digests; the default keeps every byte).",
        ),
    ),
    (
        ("--compression-level",),
        dict(
            type=click.IntRange(0, 22),
            default=None,
            help="gzip 0-9 with zlib [ISA-L's fast level 2], zstd 1-22 [3].",
        ),
    ),
    (
        ("--layer-cache",),
        dict(
            type=click.Path(dir_okay=False),
            default=None,
            help="JSON file remembering re-encoded layers across runs (with --compression).",
        ),
    ),
    (
        ("--verify-full",),
        dict(is_flag=True, default=False, help="Also check every layer's uncompressed diff_id."),
    ),
    (
        ("--stats",),
        dict(
            type=click.Choice(["text", "json"]),
            default=None,
            help="At the end, report per stage throughput, busy/wait split, CPU, "
            "memory, I/O and requests, queue occupancy and the bottleneck "
            "(see docs/stats.md).",
        ),
    ),
    (
        ("--stats-file",),
        dict(
            type=click.Path(dir_okay=False),
            default=None,
            help="Write the JSON statistics, with the per-second series, here "
            "(implies --stats json).",
        ),
    ),
    (
        ("-q", "--quiet"),
        dict(
            is_flag=True, default=False, help="Only print errors: no progress, results or summary."
        ),
    ),
    (
        ("-v", "--verbose"),
        dict(
            is_flag=True,
            default=False,
            help="Print more detail: the bottleneck verdict, and the "
            "traceback of an internal error.",
        ),
    ),
]


def envvar(flags: tuple[str, ...]) -> str:
    """`--image-parallel` → `OCCYSTRAP_IMAGE_PARALLEL`."""
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
                spec["envvar"] = [envvar(flags), *extra_envvars] if extra_envvars else envvar(flags)
                spec["show_envvar"] = True
            f = click.option(*flags, **spec)(f)
        return f

    return decorate


def merge(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """The options given after the command over those given before it (or their
    defaults); an option not given after the command is None (or () when repeatable)."""
    merged = dict(before)
    merged.update({k: v for k, v in after.items() if v is not None and v != ()})
    return merged


OUTPUT_FORMAT = click.option(
    "-O",
    "--output-format",
    "output_format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="Text for people, or one JSON document.",
)
