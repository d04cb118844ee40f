"""Where images come from: a registry (one image, a catalog glob, a `quay://` namespace), or a
tarball, OCI layout, directory or Docker engine on this machine.

`open_source` turns a source Location into a `Source` (the protocols, and what sources
answer, are in `sources/base.py`); resolve and the `info`, `check` and `search` commands
open sources only through it.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from occystrap.config import Config
from occystrap.reference import Location
from occystrap.registry.clients import ClientPool
from occystrap.sources.base import (
    BlobFile,
    Entry,
    ImageSource,
    LocalSource,
    Resolved,
    Source,
    check_blob,
    check_depth,
    is_local,
    local_blob,
    platform_manifest,
    resolved_from_bytes,
    serves,
)

if TYPE_CHECKING:
    from occystrap.sources.registry import RegistryReferrers

__all__ = [
    "BlobFile",
    "Entry",
    "ImageSource",
    "LocalSource",
    "Resolved",
    "Source",
    "check_blob",
    "check_depth",
    "is_local",
    "local_blob",
    "open_source",
    "platform_manifest",
    "resolved_from_bytes",
    "serves",
]


def open_source(
    location: Location,
    config: Config,
    clients: ClientPool,
    spool: str,
    discovery: RegistryReferrers | None = None,
) -> tuple[Source, bool]:
    """The source behind `location`, and whether it is reached over plain HTTP.

    `clients` gives the registry clients (one per host); `spool` is where a tar:// or
    docker:// source unpacks its members as it reads them (one pass); `discovery`, with
    --referrers, is the run's referrer discovery (registry sources only). A tar:// and
    docker:// source is read whole here. UsageError, NotFoundError, ManifestError for what
    is wrong with the source, naming it.

    Each kind of source is imported here, for its own scheme only: a run from a registry
    never loads the archive readers, the Quay API or the Docker engine client (issue 16)."""
    insecure = location.insecure(config.insecure)
    if location.scheme == "quay":
        from occystrap.sources.quay import QuaySource, parse_since
        from occystrap.sources.quay import registry_host as quay_registry_host

        api = config.quay_url
        plain = api.startswith("http://")
        client = clients.get(quay_registry_host(api), plain or insecure)
        namespace, _, glob = (location.path or "").partition("/")
        token = location.option("token") or config.password
        return QuaySource(
            api,
            namespace,
            glob,
            location.tag or "latest",
            parse_since(location.option("since")),
            str(token) if token else None,
            client,
            config.parallel,
            discovery,
        ), plain or insecure
    if location.scheme == "registry" and location.pattern is not None:
        from occystrap.sources.bulk import RegistryBulkSource

        client = clients.get(location.pattern.host, insecure)
        return RegistryBulkSource(client, location.pattern, config.parallel, discovery), insecure
    if location.scheme == "registry":
        from occystrap.sources.registry import RegistrySource

        assert location.ref is not None
        client = clients.get(location.ref.host, insecure)
        return RegistrySource(client, location.ref, discovery), insecure
    path = os.path.abspath(location.path or "")
    if location.scheme == "oci":
        from occystrap.sources.ocilayout import OCILayoutSource

        return OCILayoutSource(path, location.tag), False
    if location.scheme == "dir":
        from occystrap.sources.directory import DirectorySource

        return DirectorySource(path), False
    from occystrap.sources.tarball import TarballSource

    if location.scheme == "docker":
        from occystrap.engine import Engine, docker_socket

        engine = Engine(docker_socket(location))
        resp, conn = engine.export(location.path or "")
        try:
            return TarballSource("", None, spool, fileobj=resp, where=location.text), False
        finally:
            conn.close()
    return TarballSource(location.path or "", location.select, spool, where=location.text), False
