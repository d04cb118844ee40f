"""The original occystrap's `dir://` layout.

    <config-hex>.json      the config, byte-exact (it hashes to its name)
    <layer-hex>/layer.tar  each layer uncompressed; <layer-hex> is the compressed digest
    manifest.json          [{"Config", "RepoTags", "Layers"}], written last
    catalog.json           with ?unique_names=true: {image: {tag: manifest file name}}

With `unique_names`, several images share one directory (and its layers), each with its own
`manifest-<name>-<tag>.json`, and several runs may write to it at once: a failed image's
clean-up removes only what no manifest and no other run in progress relies on
(`destinations/shared.py`).
"""

from __future__ import annotations

import json
import os

from occystrap.destinations.base import Writer
from occystrap.destinations.shared import SharedDir, rely_on
from occystrap.errors import DestinationError
from occystrap.files import remove_paths, update_json_locked, write_atomic
from occystrap.layers.expand import expand
from occystrap.messages import ImagePlan, LayerDesc
from occystrap.reference import hex_of


def layer_file(root: str, digest: str) -> str:
    return os.path.join(root, hex_of(digest), "layer.tar")


def _slug(text: str) -> str:
    return text.replace("/", "_").replace(":", "_")


def _manifest_files(root: str) -> list[str]:
    return [
        n
        for n in os.listdir(root)
        if n == "manifest.json" or (n.startswith("manifest-") and n.endswith(".json"))
    ]


def referenced(root: str) -> set[str] | None:
    """What the manifests in `root` reference (paths relative to it): configs, layer
    directories, and each manifest's expanded tree. None when one cannot be read; call with
    the directory's lock held."""
    found: set[str] = set()
    for name in _manifest_files(root):
        found.add(name.removesuffix(".json"))  # its ?expand=true tree, if any
        try:
            with open(os.path.join(root, name), "rb") as f:
                entries = json.loads(f.read())
        except (OSError, ValueError):
            return None
        for entry in entries if isinstance(entries, list) else []:
            if not isinstance(entry, dict):
                continue
            for path in [entry.get("Config"), *(entry.get("Layers") or [])]:
                if isinstance(path, str) and path:
                    found.add(path.split("/", 1)[0])
    return found


class DirectoryWriter(Writer):
    needs_uncompressed = True
    image_only = "dir:// (layers unpacked as tar files)"
    # takes_many only with ?unique_names=true: see destinations.Destination

    def __init__(
        self,
        path: str,
        unique_names: bool,
        token: str,
        expand: bool = False,
        preserve_modes: bool = False,
    ) -> None:
        self.root = path
        self.unique_names = unique_names
        self.expand = expand
        self.preserve_modes = preserve_modes  # keep setuid/setgid/sticky: dangerous
        self.token = token
        self._added: dict[int, list[str]] = {}  # paths relative to the root
        if os.path.isdir(path) and not os.access(path, os.W_OK):
            raise DestinationError(f"cannot write to directory {path}: permission denied")
        self.shared = SharedDir(path, token)

    @staticmethod
    def has_layer(path: str, digest: str, token: str = "") -> bool:
        """Whether the directory holds the layer; with the run's `token`, the run then relies
        on it (noted in its journal), so another run's clean-up leaves it in place."""
        if not token:
            return os.path.isfile(layer_file(path, digest))
        return rely_on(
            path, token, hex_of(digest), lambda: os.path.isfile(layer_file(path, digest))
        )

    def begin_image(self, plan: ImagePlan) -> None:
        self._added[plan.image_id] = []

    def add_config(self, plan: ImagePlan) -> None:
        if not plan.config:
            return
        rel = f"{hex_of(plan.config_digest)}.json"
        if self.shared.put_bytes(rel, plan.config):
            self._added[plan.image_id].append(rel)

    def add_layer(self, plan: ImagePlan, layer: LayerDesc) -> None:
        if layer.present:
            return
        unit = hex_of(layer.digest)
        if self.shared.adopt(layer.path, f"{unit}/layer.tar", unit):
            self._added[plan.image_id].append(unit)

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
        write_atomic(
            os.path.join(self.root, name), json.dumps([entry], indent=2).encode(), self.token
        )
        if self.unique_names:
            self._update_catalog(plan, name)
        self._added.pop(plan.image_id, None)
        return f"dir://{self.root}/{name}"

    def _expand(self, plan: ImagePlan, name: str, layers: list[str]) -> None:
        """The merged root filesystem in `<root>/<name>/`, built under a temp name and
        renamed when whole (replacing an earlier one), before the manifest is written."""
        final = os.path.join(self.root, name)
        tmp = os.path.join(self.root, f".{name}.occystrap-{self.token}.tmp")
        try:
            expand(
                tmp, [layer_file(self.root, d) for d in layers], plan.source, self.preserve_modes
            )
            if os.path.lexists(final):
                remove_paths([final])
            os.rename(tmp, final)
        except BaseException:
            remove_paths([tmp])
            raise
        self._added[plan.image_id].append(name)

    def _update_catalog(self, plan: ImagePlan, manifest_name: str) -> None:
        image, _, tag = (plan.repo_tag or plan.source).rpartition(":")
        update_json_locked(
            self.root,
            "catalog.json",
            dict,
            lambda catalog: catalog.setdefault(image, {}).update({tag: manifest_name}),
            self.token,
        )

    def fail_image(self, plan: ImagePlan) -> None:
        """Remove what this image added that no manifest and no run in progress relies on,
        decided under the directory's lock (see `destinations/shared.py`)."""
        self.shared.remove_unreferenced(
            self._added.pop(plan.image_id, []), lambda: referenced(self.root)
        )

    def close(self, ok: bool) -> None:
        # A directory this run created and nobody completed an image in goes, by rmdir once
        # this run's files are out, unless another run is writing to it.
        self.shared.close(
            lambda: referenced(self.root),
            lambda: (
                bool(_manifest_files(self.root))
                or os.path.exists(os.path.join(self.root, "catalog.json"))
            ),
        )
