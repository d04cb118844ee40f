"""From the command line's options to a Config: `--platform native`, the Config of the
merged options, the rules between flags that a Config alone cannot check (UsageError), and
the per-source refinements (`?os=&arch=`). The options themselves are `cli/options.py`.

Like the option table, this module imports the rest of occystrap only where it is used:
`--version` and `--help` need none of it.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from occystrap.cli.options import merge
from occystrap.errors import UsageError

if TYPE_CHECKING:
    from occystrap.config import Config
    from occystrap.filters import FilterChain
    from occystrap.mediatypes import Platform
    from occystrap.reference import Location

# uname's machine names → OCI architecture and variant, as Go's GOARCH/GOARM name them (arm64's
# variant is left out: platform matching prefers its default, v8)
_MACHINES: dict[str, tuple[str, str | None]] = {
    "x86_64": ("amd64", None),
    "amd64": ("amd64", None),
    "aarch64": ("arm64", None),
    "arm64": ("arm64", None),
    "armv7l": ("arm", "v7"),
    "armv6l": ("arm", "v6"),
    "i386": ("386", None),
    "i686": ("386", None),
    "ppc64le": ("ppc64le", None),
    "s390x": ("s390x", None),
    "riscv64": ("riscv64", None),
}


def native_platform(machine: str | None = None) -> Platform:
    """`--platform native`: the platform docker, podman and skopeo pick by default, this
    machine's (Linux; the architecture from uname)."""
    import platform as _platform

    from occystrap.mediatypes import Platform

    machine = machine or _platform.machine()
    if machine.lower() not in _MACHINES:
        raise UsageError(f"--platform native: unknown machine {machine!r}; give os/arch")
    arch, variant = _MACHINES[machine.lower()]
    return Platform("linux", arch, variant)


def build_config(opts: dict[str, Any]) -> Config:
    """The Config of the merged options (`merge`); UsageError for a bad --platform."""
    from occystrap.config import Config
    from occystrap.mediatypes import parse_platform

    text = opts["platform"]
    platform: Platform = (
        native_platform() if text == "native" else parse_platform(text or "linux/amd64")
    )
    stats = opts["stats"] or ("json" if opts["stats_file"] else None)
    return Config(
        parallel=opts["parallel"],
        image_parallel=opts["image_parallel"],
        retries=opts["retries"],
        timeout=opts["timeout"],
        temp_dir=opts["temp_dir"],
        insecure=opts["insecure"],
        tls_verify=opts["tls_verify"],
        ca_file=opts["ca_file"],
        username=opts["username"],
        password=opts["password"],
        src_username=opts["src_username"],
        src_password=opts["src_password"],
        dest_username=opts["dest_username"],
        dest_password=opts["dest_password"],
        authfile=opts["authfile"],
        credential_helpers=not opts["no_credential_helpers"],
        platform=platform,
        platform_given=opts["platform"] is not None,
        all_platforms=opts["all_platforms"],
        referrers=opts["referrers"] or bool(opts["referrers_type"]),
        referrer_types=tuple(opts["referrers_type"]),
        verify_full=opts["verify_full"],
        compression=opts["compression"],
        compression_level=opts["compression_level"],
        layer_cache=opts["layer_cache"],
        rate_limit=opts["rate_limit"],
        quay_url=opts["quay_url"],
        stats=stats,
        stats_file=opts["stats_file"],
        quiet=opts["quiet"],
        verbose=opts["verbose"],
    )


def process_config(
    obj: dict[str, Any],
    after: dict[str, Any],
    chain: FilterChain,
    shard: str | None,
    fail_fast: bool,
    bulk: bool,
) -> Config:
    """The Config of `process`: the global options, the command's own, and the rules
    between them (UsageError)."""
    from msgspec.structs import replace  # msgspec stays out of --help and --version

    config = replace(
        build_config(merge(obj, after)),
        shard=parse_shard(shard),
        fail_fast=fail_fast,
        bulk=bulk,
        filters=chain,
    )
    level = config.compression_level
    if (
        level is not None
        and level > 9
        and config.compression != "zstd"
        and (config.compression == "gzip" or chain.rewrites)
    ):
        hint = "" if config.compression else " (filtered gzip layers stay gzip)"
        raise UsageError(f"--compression-level {level}: gzip levels are 0-9{hint}")
    if config.stats_file:
        # Said now, not after the copy: a run that worked would otherwise exit 2.
        folder = os.path.dirname(os.path.abspath(config.stats_file))
        if not (os.path.isdir(folder) and os.access(folder, os.W_OK)):
            raise UsageError(
                f"--stats-file {config.stats_file}: {folder} is not a writable directory"
            )
    for role, (user, secret) in (
        ("", (config.username, config.password)),
        ("src-", (config.src_username, config.src_password)),
        ("dest-", (config.dest_username, config.dest_password)),
    ):
        if user and not secret:
            raise UsageError(
                f"--{role}username without --{role}password (or "
                f"OCCYSTRAP_{role.upper().replace('-', '_')}PASSWORD): "
                "occystrap does not prompt"
            )
    if chain.searches and config.stats == "json" and not config.stats_file:
        raise UsageError(
            "a search filter and --stats json both write to stdout: "
            "use --stats-file FILE for the statistics"
        )
    return config


def check_destination(dst: Location, sources: list[Location], config: Config) -> None:
    """The rules between the flags and one run's destination (UsageError)."""
    if config.referrers or any(s.option("referrers") for s in sources):
        _check_referrers(dst, config)
    if config.compression and (
        dst.scheme == "dir" or str(dst.option("format", "")).lower() in ("v1.2", "legacy")
    ):
        raise UsageError(f"{dst}: stores uncompressed layers; --compression does not apply")


def _check_referrers(dst: Location, config: Config) -> None:
    option = config.image_semantics()
    if option:
        # It needs images: attestations would be left out of indexes (new digests) and
        # artifacts refused, so the referrers copied would point at nothing.
        raise UsageError(
            f"--referrers keeps signatures and attestations pointing at the "
            f"source's digests; it cannot be combined with {option}"
        )
    if dst.scheme not in ("registry", "oci"):
        raise UsageError(f"{dst}: --referrers needs a registry:// or oci:// destination")
    if dst.option("media_types"):
        raise UsageError(
            f"{dst}: --referrers keeps what points at the source's digests; "
            "?media_types= converts manifests (new digests)"
        )


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """--shard K/N as (K, N), or None; UsageError unless 0 <= K < N."""
    if text is None:
        return None
    try:
        k, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise UsageError(f"--shard {text}: expected K/N, e.g. 0/3") from None
    if not (n >= 1 and 0 <= k < n):
        raise UsageError(f"--shard {text}: K must be in 0..N-1")
    return k, n


def source_config(src: Location, config: Config) -> Config:
    """Per-source URI options (`?os=&arch=&variant=`) refine the global platform."""
    from occystrap.mediatypes import Platform

    os_ = src.option("os")
    arch = src.option("arch") or src.option("architecture")
    variant = src.option("variant")
    if not (os_ or arch or variant):
        return config
    p = config.platform
    platform = Platform(
        str(os_ or p.os),
        str(arch or p.architecture),
        str(variant) if variant else (None if arch else p.variant),
    )
    from msgspec.structs import replace

    return replace(config, platform=platform, platform_given=True)


def inspection_config(
    obj: dict[str, Any], after: dict[str, Any], source: str
) -> tuple[Location, Config]:
    """The parsed SOURCE and the Config for info/check/search (`?os=&arch=` applied)."""
    config = build_config(merge(obj, after))
    from occystrap.reference import parse_location

    location = parse_location(source, role="source")
    return location, source_config(location, config)
