"""`occystrap info`: what an image is, from its manifest and config alone (no layer
downloads). What it shares with `check` and `search` is in `commands/images.py`.
"""

from __future__ import annotations

import json
from typing import Any

from occystrap import mediatypes
from occystrap.commands.images import opened, parse_config
from occystrap.config import Config
from occystrap.errors import NotFoundError
from occystrap.mediatypes import ImageIndex, ImageManifest
from occystrap.reference import Location
from occystrap.sources import Entry, platform_manifest


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


def describe(entry: Entry, config: Config) -> dict[str, Any]:
    """Everything `info` shows about one entry, as a JSON-ready dict."""
    source = entry.source
    top = source.fetch_manifest(entry.reference)
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
        entries = top.parsed.manifests
        platforms = {d.digest: str(d.platform) for d in entries if d.platform}
        doc["platforms"] = [
            {
                "platform": str(d.platform) if d.platform else None,
                "digest": d.digest,
                "media_type": d.media_type,
                "size": d.size,
            }
            for d in entries
            if not mediatypes.is_attestation(d)
        ]
        # an attestation describes the entry its annotation names: listed under it
        doc["attestations"] = [
            {
                "of": platforms.get(ref, ref)
                if (ref := (d.annotations or {}).get(mediatypes.REFERENCE_DIGEST))
                else None,
                "digest": d.digest,
                "media_type": d.media_type,
                "size": d.size,
            }
            for d in entries
            if mediatypes.is_attestation(d)
        ]
        resolved = platform_manifest(source, top, config.platform)
    manifest = resolved.parsed
    assert isinstance(manifest, ImageManifest)
    kind = mediatypes.artifact_type(manifest)
    if kind is not None:
        doc["image"] = None
        doc["artifact"] = {
            "type": kind,
            "digest": resolved.digest,
            "media_type": resolved.media_type,
            "artifact_type": manifest.artifact_type,
            "config": {
                "digest": manifest.config.digest,
                "media_type": manifest.config.media_type,
                "size": manifest.config.size,
            },
            "blobs": [
                {"digest": d.digest, "size": d.size, "media_type": d.media_type}
                for d in manifest.layers
            ],
            "subject": manifest.subject.digest if manifest.subject else None,
            "annotations": manifest.annotations or {},
        }
        return doc
    cfg = parse_config(source.get_blob(manifest.config.digest))
    rootfs = cfg.get("rootfs") if isinstance(cfg.get("rootfs"), dict) else {}
    diff_ids = list(rootfs.get("diff_ids") or []) if rootfs else []
    layers = []
    for i, d in enumerate(manifest.layers):
        layers.append(
            {
                "digest": d.digest,
                "size": d.size,
                "media_type": d.media_type,
                "diff_id": diff_ids[i] if i < len(diff_ids) else None,
                "foreign": mediatypes.is_foreign(d),
            }
        )
    doc["image"] = {
        "digest": resolved.digest,
        "media_type": resolved.media_type,
        "config": {
            "digest": manifest.config.digest,
            "media_type": manifest.config.media_type,
            "size": manifest.config.size,
            **config_summary(cfg),
        },
        "layers": layers,
        "layers_size": sum(d.size for d in manifest.layers),
    }
    return doc


def info(location: Location, config: Config, spool: str) -> list[dict[str, Any]]:
    """What `info` shows about each image the source holds (NotFoundError: none)."""
    with opened(location, config, spool) as source:
        entries = source.entries()
        if not entries:
            raise NotFoundError(f"{location}: no images")
        return [dict(source=location.text, **describe(e, config)) for e in entries]


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
            attestations = doc.get("attestations") or []
            n = len(attestations)
            more = f" (and {n} attestation manifest{'s' if n > 1 else ''})" if n else ""
            out.append(f"Platforms:   {len(doc['platforms'])}{more}")
            width = max([20] + [16 + len(str(a["of"])) for a in attestations])
            for p in doc["platforms"]:
                what = p["platform"] or (
                    "(index)" if p["media_type"] in mediatypes.INDEX_TYPES else "(none)"
                )
                out.append(f"  {what:<{width}} {p['digest']}")
            for a in attestations:
                out.append(f"  {'attestation of ' + str(a['of'] or '?'):<{width}} {a['digest']}")
        if doc.get("artifact"):
            out.extend(_artifact_text(doc["artifact"], doc["platforms"] is not None))
            continue
        image = doc["image"]
        cfg = image["config"]
        if doc["platforms"] is not None:
            out.append(f"Selected:    {image['digest']}")
        platform = "/".join(str(p) for p in (cfg["os"], cfg["architecture"], cfg["variant"]) if p)
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
            foreign = "  (foreign)" if lay.get("foreign") else ""
            out.append(
                f"  {i:>3}  {lay['digest']}  {lay['size']:>12}  {lay['media_type']}{foreign}"
            )
    return "\n".join(out)


def _artifact_text(art: dict[str, Any], selected: bool) -> list[str]:
    out = [f"Selected:    {art['digest']}"] if selected else []
    out.append(f"Artifact:    {art['type']} (not a container image)")
    out.append(f"Config:      {art['config']['digest']}  {art['config']['media_type']}")
    if art["subject"]:
        out.append(f"Subject:     {art['subject']}")
    out.append(f"Blobs:       {len(art['blobs'])}")
    for i, blob in enumerate(art["blobs"]):
        out.append(f"  {i:>3}  {blob['digest']}  {blob['size']:>12}  {blob['media_type']}")
    for key, value in sorted(art["annotations"].items()):
        out.append(f"  {key}={value}")
    return out
