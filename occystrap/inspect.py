"""`occystrap info`: what an image is, from its manifest and config alone (no layer downloads).

Also the plumbing `check` and `search` share with it: opening a source exactly as the
pipeline's resolve stage does, picking the image(s) of an index, and streaming a layer's
bytes from wherever they are (a registry download into a temp file, or the file a local
source already has on disk).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from occystrap import mediatypes
from occystrap.config import Config
from occystrap.errors import DigestError, ManifestError, NotFoundError, UsageError
from occystrap.mediatypes import Descriptor, ImageIndex, ImageManifest
from occystrap.reference import Location
from occystrap.registry.pool import ClientPool
from occystrap.sources import Entry, Resolved
from occystrap.stages.resolve import Resolver

# -- opening sources ---------------------------------------------------------------------------


def scratch(config: Config, what: str) -> tempfile.TemporaryDirectory[str]:
    """The temporary directory layers (and a tar:// source's members) pass through."""
    try:
        return tempfile.TemporaryDirectory(prefix=f"occystrap-{what}-", dir=config.temp_dir)
    except OSError as exc:
        raise UsageError(f"cannot create a temporary directory in "
                         f"{config.temp_dir or tempfile.gettempdir()}: {exc.strerror}") from None


class Opener:
    """Opens sources with the resolve stage's own `Resolver.open`, outside a pipeline.

    `spool` is where a tar:// or docker:// source unpacks its members (a temp directory).
    """

    open = Resolver.open  # needs only .config, .clients and .spool

    def __init__(self, config: Config, spool: str) -> None:
        self.config = config
        self.spool = spool
        self.clients = ClientPool(config, 4, role="src")

    def close(self) -> None:
        self.clients.close()

    def __enter__(self) -> Opener:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class Image:
    """One single-platform image of an entry: its manifest, and the index it came from."""

    entry: Entry
    source: Any
    top: Resolved  # what the reference names: an index or the manifest itself
    resolved: Resolved  # the image manifest
    platform: str | None = None  # from the index descriptor, when there is one

    @property
    def manifest(self) -> ImageManifest:
        assert isinstance(self.resolved.parsed, ImageManifest)
        return self.resolved.parsed

    @property
    def label(self) -> str:
        text = str(self.entry.ref.repo_tag or self.entry.ref)
        return f"{text} [{self.platform}]" if self.platform else text


def child_manifest(source: Any, digest: str) -> Resolved:
    got: Resolved = source.fetch_manifest(digest)
    if isinstance(got.parsed, ImageIndex):
        raise ManifestError(f"index entry {digest} points at another index")
    return got


def images_of(entry: Entry, source: Any, config: Config) -> Iterator[Image]:
    """The image(s) to look at for one entry: the manifest, or for an index the platform
    `config` asks for (every platform with --all-platforms)."""
    source = entry.source or source
    top: Resolved = source.fetch_manifest(entry.reference)
    if not isinstance(top.parsed, ImageIndex):
        yield Image(entry, source, top, top)
        return
    if config.all_platforms:
        chosen = list(top.parsed.manifests)
    else:
        chosen = [mediatypes.select_platform(top.parsed, config.platform)]
    for d in chosen:
        yield Image(entry, source, top, child_manifest(source, d.digest),
                    str(d.platform) if d.platform else None)


def parse_config(raw: bytes) -> dict[str, Any]:
    return mediatypes.json_object(raw, "image config")


# -- layer bytes -------------------------------------------------------------------------------


@dataclass
class LayerFile:
    path: str
    verified: bool  # the blob's digest was checked while it was downloaded
    temporary: bool = field(default=False)

    def discard(self) -> None:
        if self.temporary:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass


def layer_file(image: Image, layer: Descriptor, tmpdir: str) -> LayerFile:
    """The layer's compressed bytes in a file. A registry layer is downloaded into `tmpdir`
    (DigestError when its bytes do not match); a local source's file is used in place."""
    source = image.source
    if getattr(source, "local", False):
        blob = source.blob_file(layer.digest)
        if blob.digest_seen is not None and blob.digest_seen != layer.digest:
            raise DigestError(f"layer {layer.digest}: the archive's bytes hash to "
                              f"{blob.digest_seen}")
        return LayerFile(blob.path, verified=blob.digest_seen is not None)
    dest = os.path.join(tmpdir, layer.digest.replace(":", "-"))
    try:
        source.client.download_blob(source.ref.name, layer.digest, layer.size, dest)
    except BaseException:
        LayerFile(dest, False, True).discard()
        raise
    return LayerFile(dest, verified=True, temporary=True)


# -- info --------------------------------------------------------------------------------------


def config_summary(doc: dict[str, Any]) -> dict[str, Any]:
    inner = doc.get("config") or {}
    if not isinstance(inner, dict):
        inner = {}
    return {
        "os": doc.get("os"),
        "architecture": doc.get("architecture"),
        "variant": doc.get("variant"),
        "created": doc.get("created"),
        "entrypoint": inner.get("Entrypoint"),
        "cmd": inner.get("Cmd"),
        "working_dir": inner.get("WorkingDir") or None,
        "user": inner.get("User") or None,
        "env": inner.get("Env") or [],
        "labels": inner.get("Labels") or {},
    }


def describe(entry: Entry, source: Any, config: Config) -> dict[str, Any]:
    """Everything `info` shows about one entry, as a JSON-ready dict."""
    source = entry.source or source
    top: Resolved = source.fetch_manifest(entry.reference)
    doc: dict[str, Any] = {
        "name": entry.ref.name or None,
        "tag": entry.ref.tag,
        "digest": top.digest,
        "media_type": top.media_type,
        "size": len(top.manifest),
        "platforms": None,
    }
    resolved = top
    if isinstance(top.parsed, ImageIndex):
        doc["platforms"] = [
            {"platform": str(d.platform) if d.platform else None, "digest": d.digest,
             "media_type": d.media_type, "size": d.size}
            for d in top.parsed.manifests]
        resolved = child_manifest(source,
                                  mediatypes.select_platform(top.parsed,
                                                             config.platform).digest)
    manifest = resolved.parsed
    assert isinstance(manifest, ImageManifest)
    cfg = parse_config(source.get_blob(manifest.config.digest))
    rootfs = cfg.get("rootfs") if isinstance(cfg.get("rootfs"), dict) else {}
    diff_ids = list(rootfs.get("diff_ids") or []) if rootfs else []
    layers = []
    for i, d in enumerate(manifest.layers):
        layers.append({"digest": d.digest, "size": d.size, "media_type": d.media_type,
                       "diff_id": diff_ids[i] if i < len(diff_ids) else None})
    doc["image"] = {
        "digest": resolved.digest,
        "media_type": resolved.media_type,
        "config": {"digest": manifest.config.digest, "media_type": manifest.config.media_type,
                   "size": manifest.config.size, **config_summary(cfg)},
        "layers": layers,
        "layers_size": sum(d.size for d in manifest.layers),
    }
    return doc


def info(location: Location, config: Config, spool: str) -> list[dict[str, Any]]:
    with Opener(config, spool) as opener:
        source, _ = opener.open(location)
        entries = source.entries()
        if not entries:
            raise NotFoundError(f"{location}: no images")
        return [dict(source=location.text, **describe(e, source, config)) for e in entries]


def _human(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def to_text(docs: list[dict[str, Any]]) -> str:
    out: list[str] = []
    for doc in docs:
        if out:
            out.append("")
        name = doc["name"] or "-"
        out.append(f"Image:       {name}:{doc['tag']}" if doc["tag"] else f"Image:       {name}")
        out.append(f"Digest:      {doc['digest']}")
        out.append(f"Media type:  {doc['media_type']}")
        if doc["platforms"] is not None:
            out.append(f"Platforms:   {len(doc['platforms'])}")
            for p in doc["platforms"]:
                out.append(f"  {p['platform'] or '(none)':<20} {p['digest']}")
        image = doc["image"]
        cfg = image["config"]
        if doc["platforms"] is not None:
            out.append(f"Selected:    {image['digest']}")
        platform = "/".join(str(p) for p in (cfg["os"], cfg["architecture"], cfg["variant"])
                            if p)
        out.append(f"Platform:    {platform or '-'}")
        out.append(f"Created:     {cfg['created'] or '-'}")
        out.append(f"Config:      {cfg['digest']}")
        out.append(f"Entrypoint:  {json.dumps(cfg['entrypoint'])}")
        out.append(f"Cmd:         {json.dumps(cfg['cmd'])}")
        if cfg["working_dir"]:
            out.append(f"WorkingDir:  {cfg['working_dir']}")
        if cfg["user"]:
            out.append(f"User:        {cfg['user']}")
        out.append("Env:" + ("" if cfg["env"] else "         (none)"))
        out.extend(f"  {e}" for e in cfg["env"])
        out.append("Labels:" + ("" if cfg["labels"] else "      (none)"))
        out.extend(f"  {k}={v}" for k, v in sorted(cfg["labels"].items()))
        out.append(f"Layers:      {len(image['layers'])} ({_human(image['layers_size'])})")
        for i, lay in enumerate(image["layers"]):
            out.append(f"  {i:>3}  {lay['digest']}  {lay['size']:>12}  {lay['media_type']}")
    return "\n".join(out)
