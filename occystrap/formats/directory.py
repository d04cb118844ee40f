"""The original occystrap's `dir://` layout.

    <config-hex>.json      the config, byte-exact (it hashes to its name)
    <layer-hex>/layer.tar  each layer uncompressed; <layer-hex> is the compressed digest
    manifest.json          [{"Config", "RepoTags", "Layers"}], written last
    catalog.json           with ?unique_names=true: {image: {tag: manifest file name}}

With `unique_names`, several images share one directory (and its layers), each with its own
`manifest-<name>-<tag>.json`.
"""

from __future__ import annotations

import json
import os
import shutil

from occystrap.errors import DestinationError
from occystrap.formats.base import (
    Writer,
    adopt,
    hex_of,
    remove_paths,
    update_json_locked,
    write_atomic,
)
from occystrap.formats.expand import expand
from occystrap.messages import ImagePlan, LayerDesc


def layer_file(root: str, digest: str) -> str:
    return os.path.join(root, hex_of(digest), "layer.tar")


def _slug(text: str) -> str:
    return text.replace("/", "_").replace(":", "_")


class DirectoryWriter(Writer):
    needs_uncompressed = True

    def __init__(self, path: str, unique_names: bool, token: str, expand: bool = False
                 ) -> None:
        self.root = path
        self.unique_names = unique_names
        self.expand = expand
        self.token = token
        self._created_root = not os.path.exists(path)
        self._published = 0
        self._added: dict[int, list[str]] = {}
        try:
            os.makedirs(path, exist_ok=True)
        except OSError as exc:
            raise DestinationError(f"cannot create directory {path}: {exc.strerror}") from None
        if not os.access(path, os.W_OK):
            raise DestinationError(f"cannot write to directory {path}: permission denied")

    @staticmethod
    def has_layer(path: str, digest: str) -> bool:
        return os.path.isfile(layer_file(path, digest))

    def begin_image(self, plan: ImagePlan) -> None:
        self._added[plan.image_id] = []

    def add_config(self, plan: ImagePlan) -> None:
        if not plan.config:
            return
        target = os.path.join(self.root, f"{hex_of(plan.config_digest)}.json")
        if not os.path.exists(target):
            write_atomic(target, plan.config, self.token)
            self._added[plan.image_id].append(target)

    def add_layer(self, plan: ImagePlan, layer: LayerDesc) -> None:
        if layer.present:
            return
        target = layer_file(self.root, layer.digest)
        if adopt(layer.path, target):
            self._added[plan.image_id].append(os.path.dirname(target))

    def _manifest_name(self, plan: ImagePlan) -> str:
        if not self.unique_names:
            return "manifest.json"
        name = plan.repo_tag or plan.manifest_digest
        return f"manifest-{_slug(name)}.json"

    def finish_image(self, plan: ImagePlan, layers: list[str]) -> str:
        entry: dict[str, object] = {
            "Config": f"{hex_of(plan.config_digest)}.json",
            "RepoTags": [plan.repo_tag] if plan.repo_tag else [],
            "Layers": [f"{hex_of(d)}/layer.tar" for d in layers],
        }
        if self.unique_names:
            entry["ImageName"] = plan.repo_tag or plan.source
        name = self._manifest_name(plan)
        if self.expand:
            self._expand(plan, name.removesuffix(".json"), layers)
        write_atomic(os.path.join(self.root, name), json.dumps([entry], indent=2).encode(),
                     self.token)
        if self.unique_names:
            self._update_catalog(plan, name)
        self._added.pop(plan.image_id, None)
        self._published += 1
        return f"dir://{self.root}/{name}"

    def _expand(self, plan: ImagePlan, name: str, layers: list[str]) -> None:
        """The merged root filesystem in `<root>/<name>/`, built under a temp name and
        renamed when whole (replacing an earlier one), before the manifest is written."""
        final = os.path.join(self.root, name)
        tmp = os.path.join(self.root, f".{name}.occystrap-{self.token}.tmp")
        try:
            expand(tmp, [layer_file(self.root, d) for d in layers], plan.source)
            if os.path.lexists(final):
                remove_paths([final])
            os.rename(tmp, final)
        except BaseException:
            remove_paths([tmp])
            raise
        self._added[plan.image_id].append(final)

    def _update_catalog(self, plan: ImagePlan, manifest_name: str) -> None:
        image, _, tag = (plan.repo_tag or plan.source).rpartition(":")
        update_json_locked(self.root, "catalog.json", dict,
                           lambda catalog: catalog.setdefault(image, {}).update(
                               {tag: manifest_name}),
                           self.token)

    def fail_image(self, plan: ImagePlan) -> None:
        remove_paths(self._added.pop(plan.image_id, []))

    def close(self, ok: bool) -> None:
        if self._created_root and not self._published:
            # A directory this run created and never completed an image in goes entirely.
            shutil.rmtree(self.root, ignore_errors=True)
