"""What the supervisor looks up and loads once, before the stages fork, so that every stage
inherits it instead of doing it again (`warm_up`): the TLS context, registry credentials
(a credential helper then runs once per host and run), the idna codec, and psutil when the
memory figures are to be reported."""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import urlsplit

from occystrap.config import Config
from occystrap.reference import Location
from occystrap.registry import credentials
from occystrap.registry.tls import warm_ssl_context


def warm_up(sources: Sequence[Location], dest_location: Location, config: Config) -> None:
    """Everything below that this run's locations need. UsageError for a CA file that
    cannot be loaded; a host's credential error is kept for the image that needs it
    (`registry.credentials.warm`)."""
    if _speaks_tls(sources, dest_location, config):
        warm_ssl_context(config.tls_verify, config.ca_file)
    if any(loc.scheme in ("registry", "quay") for loc in (*sources, dest_location)):
        # A process's first getaddrinfo of a str host imports the idna codec (with stringprep
        # and unicodedata): once here, not in resolve on the way to the first request (about
        # 10 ms there, the stages starting beside it) and again in fetch and write.
        import encodings.idna  # noqa: F401, PLC0415
    _warm_credentials(sources, dest_location, config)
    if config.stats or config.stats_file:
        # The memory figures are reported: the sampler's first reading, right after the
        # fork, must not wait for this import (stats/sampler.py imports it otherwise), or
        # the stages of a short run may be gone before they are seen at all.
        import psutil  # noqa: F401, PLC0415


def _warm_credentials(sources: Sequence[Location], dest_location: Location, config: Config) -> None:
    """Look up every known registry host's credentials before the stages fork, so they
    inherit the answers and a credential helper runs once per host and run, not once per
    stage process."""
    wanted: set[tuple[str, str | None, str | None]] = set()
    for location in sources:
        host = (
            location.ref.host
            if location.ref is not None
            else location.pattern.host
            if location.pattern is not None
            else urlsplit(config.quay_url).netloc
            if location.scheme == "quay"
            else None
        )
        if host:
            wanted.add((host, *config.credentials("src")))
    if dest_location.ref is not None:
        wanted.add((dest_location.ref.host, *config.credentials("dest")))
    credentials.warm(sorted(wanted, key=lambda w: w[0]), config.authfile, config.credential_helpers)


def _speaks_tls(sources: Sequence[Location], dest_location: Location, config: Config) -> bool:
    """Will any registry of this run be reached over TLS? Loading the CA store costs some
    20 ms; a run of plain-HTTP registries and local paths never needs it."""
    for location in (*sources, dest_location):
        if location.scheme == "quay" and not config.quay_url.startswith("http://"):
            return True
        if location.scheme == "registry" and not location.insecure(config.insecure):
            return True
    return False
