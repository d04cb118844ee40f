"""Referrers: manifests that point at another one through `subject` (OCI image-spec 1.1), and
cosign's companion tags. Pure: index bodies in, descriptors and bytes out.

Where referrers are found (distribution-spec 1.1, "Listing Referrers" and "Referrers Tag
Schema"; sigstore cosign's tag convention):
- the referrers API, `GET /v2/<name>/referrers/<digest>`, an index of descriptors;
- without the API, the referrers tag `sha256-<hex>` of the subject, holding such an index,
  kept up to date by the clients that push referrers;
- cosign's companion tags `sha256-<hex>.sig`, `.att` and `.sbom`: plain manifests under a tag
  derived from the signed digest, with no `subject`.

A destination without the API gets the referrers tag index updated by read-modify-write
(`merged_index`), as the spec tells clients to do.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from typing import Any

import msgspec

from occystrap import mediatypes
from occystrap.errors import ManifestError
from occystrap.mediatypes import ImageIndex, ImageManifest
from occystrap.reference import digest_of

COMPANION_SUFFIXES = (".sig", ".att", ".sbom")
MAX_DEPTH = 8  # referrers of referrers of ... followed this far
_FALLBACK_RE = re.compile(r"^sha256-[a-f0-9]{64}$")
_COMPANION_RE = re.compile(r"^sha256-[a-f0-9]{64}\.(?:sig|att|sbom)$")


class Found(msgspec.Struct, frozen=True):
    """One referrer of `subject` at a source: a manifest digest, or (cosign) a tag."""

    reference: str  # what to fetch: a digest, or the companion tag
    subject: str  # the digest it refers to
    tag: str = ""  # a cosign companion: published under this tag at the destination
    artifact_type: str | None = None  # when the referrers index says it
    # the listing's entry for it (mediaType, digest, size, artifactType, annotations): what
    # a destination's referrers tag lists when the referrer is there already
    descriptor: dict[str, Any] | None = None


def fallback_tag(digest: str) -> str:
    """The referrers tag of a subject: `sha256:<hex>` → `sha256-<hex>`."""
    return digest.replace(":", "-", 1)


def companion_tags(digest: str) -> list[str]:
    """cosign's tags for the signature, attestations and SBOM of `digest`."""
    return [fallback_tag(digest) + suffix for suffix in COMPANION_SUFFIXES]


def is_referrer_tag(tag: str) -> bool:
    """A tag that only exists to carry referrers (a referrers tag or a cosign companion):
    a mirror with --referrers copies these with their subject, not as images of their own."""
    return bool(_FALLBACK_RE.match(tag) or _COMPANION_RE.match(tag))


def listed(bodies: Sequence[bytes], subject: str, where: str) -> list[Found]:
    """The referrers an index lists (an API answer, possibly in pages, or a referrers tag
    index). ManifestError when one is not an index."""
    found = []
    for body in bodies:
        try:
            parsed = mediatypes.parse(body, mediatypes.OCI_INDEX)
            entries = json.loads(body)["manifests"]
        except (ManifestError, ValueError, KeyError, TypeError) as exc:
            raise ManifestError(f"{where}: referrers of {subject}: {exc}") from None
        assert isinstance(parsed, ImageIndex)
        found += [
            Found(d.digest, subject, artifact_type=d.artifact_type, descriptor=raw)
            for d, raw in zip(parsed.manifests, entries, strict=True)
        ]
    return found


def unique(found: Iterable[Found]) -> list[Found]:
    """In order, each reference once."""
    seen: set[str] = set()
    out = []
    for f in found:
        if f.reference not in seen:
            seen.add(f.reference)
            out.append(f)
    return out


def wanted(
    types: Sequence[str], declared: str | None, parsed: ImageManifest | ImageIndex | None = None
) -> bool:
    """Does a referrer pass `--referrers-type` (no types: everything passes)? Decided from
    the type the index declared, else from the manifest itself (`referrer_types`)."""
    if not types:
        return True
    if declared is not None:
        return declared in types
    if parsed is None:
        return True  # decide once the manifest is fetched
    return bool(mediatypes.referrer_types(parsed) & set(types))


def descriptor_for(manifest: bytes, media_type: str) -> dict[str, Any]:
    """The entry a referrers index holds for a pushed referrer: its descriptor, with
    `artifactType` (the manifest's, else its config's media type) and its annotations, as
    distribution-spec 1.1 asks of clients maintaining the referrers tag."""
    doc = mediatypes.json_object(manifest, "manifest")
    entry: dict[str, Any] = {
        "mediaType": media_type,
        "digest": digest_of(manifest),
        "size": len(manifest),
    }
    kind = doc.get("artifactType") or (doc.get("config") or {}).get("mediaType")
    if isinstance(kind, str) and kind:
        entry["artifactType"] = kind
    if isinstance(doc.get("annotations"), dict) and doc["annotations"]:
        entry["annotations"] = doc["annotations"]
    return entry


def merged_index(existing: bytes | None, entries: Sequence[dict[str, Any]]) -> bytes | None:
    """The referrers tag index with `entries` added (those not listed yet, by digest), or
    None when it already lists them all. ValueError when the tag holds something other than
    an index: the spec tells clients to report that and leave it alone."""
    doc: dict[str, Any] = {"schemaVersion": 2, "mediaType": mediatypes.OCI_INDEX, "manifests": []}
    if existing is not None:
        try:
            old = json.loads(existing)
        except ValueError:
            old = None
        if not (
            isinstance(old, dict)
            and isinstance(old.get("manifests"), list)
            and old.get("mediaType", mediatypes.OCI_INDEX) == mediatypes.OCI_INDEX
        ):
            raise ValueError("it holds something other than an OCI index; left alone")
        doc = old
    have = {m.get("digest") for m in doc["manifests"] if isinstance(m, dict)}
    new = [e for e in entries if e["digest"] not in have]
    if not new:
        return None
    doc["manifests"] = [*doc["manifests"], *new]
    return json.dumps(doc, separators=(",", ":")).encode()
