"""dir://PATH as a source: reads back the original occystrap layout we write
(`manifest.json`, `<config>.json`, `<layer>/layer.tar` uncompressed; `catalog.json` with
several images), replacing the original's `recreate-image`.

The layout keeps no registry manifest, so one is made: an OCI manifest whose layers are the
uncompressed tars (their digests are the config's diff_ids). Add `--compression` to push
compressed layers.
"""

from __future__ import annotations

import json
import os

from occystrap import mediatypes as mt
from occystrap.errors import ManifestError, NotFoundError
from occystrap.reference import digest_of
from occystrap.sources.base import BlobFile, Entry, Resolved, resolved_from_bytes
from occystrap.sources.local import name_of, read_capped, read_json


def synthesize(config: bytes, config_digest: str, layers: list[tuple[str, int]]) -> bytes:
    """An OCI manifest for uncompressed layers [(digest, size)], deterministic bytes."""
    return json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": mt.OCI_MANIFEST,
            "config": {"mediaType": mt.OCI_CONFIG, "digest": config_digest, "size": len(config)},
            "layers": [{"mediaType": mt.OCI_LAYER, "digest": d, "size": s} for d, s in layers],
        },
        indent=3,
    ).encode()


class DirectorySource:
    local = True

    def __init__(self, root: str) -> None:
        self.root = root
        if not os.path.isdir(root):
            raise NotFoundError(f"dir://{root}: no such directory")
        catalog = os.path.join(root, "catalog.json")
        names = ["manifest.json"]
        if os.path.exists(catalog):
            doc = read_json(catalog, "catalog")
            if not isinstance(doc, dict):
                raise ManifestError(f"{catalog}: not a catalog")
            names = sorted(
                {str(f) for tags in doc.values() if isinstance(tags, dict) for f in tags.values()}
            )
        self._images: dict[str, Resolved] = {}
        self._configs: dict[str, bytes] = {}
        self._layers: dict[str, str] = {}  # diff_id → layer.tar path
        self._entries: list[Entry] = []
        for name in names:
            self._load(os.path.join(root, os.path.basename(name)))

    def _load(self, manifest_path: str) -> None:
        doc = read_json(manifest_path, "manifest")
        if not isinstance(doc, list):
            raise ManifestError(f"{manifest_path}: expected a list of images")
        for item in doc:
            if not isinstance(item, dict) or "Config" not in item or "Layers" not in item:
                raise ManifestError(f"{manifest_path}: an entry lacks Config or Layers")
            config_path = self._inside(str(item["Config"]))
            config = read_capped(config_path, "config")
            config_digest = digest_of(config)
            ids = mt.config_diff_ids(config, config_path)
            if len(ids) != len(item["Layers"]):
                raise ManifestError(
                    f"{manifest_path}: {len(item['Layers'])} layers, {len(ids)} diff_ids"
                )
            layers = []
            for diff_id, rel in zip(ids, item["Layers"], strict=True):
                path = self._inside(str(rel))
                try:
                    size = os.stat(path).st_size
                except OSError:
                    raise NotFoundError(f"layer file missing: {path}") from None
                self._layers[diff_id] = path
                layers.append((diff_id, size))
            body = synthesize(config, config_digest, layers)
            got = resolved_from_bytes(body, mt.OCI_MANIFEST, manifest_path)
            self._images[got.digest] = got
            self._configs[config_digest] = config
            tags = item.get("RepoTags") or [None]
            self._entries.append(Entry(name_of(tags[0], None), got.digest, self))

    def _inside(self, rel: str) -> str:
        path = os.path.normpath(os.path.join(self.root, rel))
        if os.path.isabs(rel) or not path.startswith(os.path.normpath(self.root) + os.sep):
            raise ManifestError(f"dir://{self.root}: path {rel!r} escapes the directory")
        return path

    def entries(self) -> list[Entry]:
        if not self._entries:
            raise NotFoundError(f"dir://{self.root}: no images")
        return self._entries

    def fetch_manifest(self, reference: str) -> Resolved:
        return self._images[reference]

    def get_blob(self, digest: str) -> bytes:
        return self._configs[digest]

    def blob_file(self, digest: str) -> BlobFile:
        return BlobFile(self._layers[digest], owned=False)

    def close(self) -> None:
        pass
