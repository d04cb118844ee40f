"""tar:// planned in place: where each blob of a `docker save` archive will be.

A tar header depends only on the member's name and size, and a manifest gives every blob's
size, so resolve reserves each blob's region of the temp file as it plans an image, and fetch
writes each layer straight into its region (`destinations/dockerarchive.py` fills in the
headers and appends the metadata). Pure: no I/O.
"""

from __future__ import annotations

from occystrap.layers.tarwrite import header, padding
from occystrap.messages import LayerDesc, Region
from occystrap.oci import blob_rel


class TarPlanner:
    """Reserves each blob's region of the archive at `path` (a `Planner`). Lives in resolve,
    which plans images one at a time, so the layout needs no coordination between
    processes."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.end = 0  # bytes planned so far, headers and padding included
        self._reserved: dict[str, Region] = {}

    def reserve(self, name: str, size: int) -> Region:
        """A region for the blob `name` (`size` bytes); a blob already planned (a layer that
        several images share) gets the same region, so the archive holds it once."""
        if name in self._reserved:
            return self._reserved[name]
        data_offset = self.end + len(header(name, size))
        self.end = data_offset + size + padding(size)
        self._reserved[name] = region = Region(name=name, offset=data_offset, size=size)
        return region

    def plan_image(
        self,
        config_digest: str,
        config_size: int,
        manifest_digest: str,
        manifest_size: int,
        layers: list[LayerDesc],
    ) -> list[Region]:
        """Regions for config, layers and manifest (in that order); sets each layer's
        `path` and `offset` so fetch writes it in place. ManifestError for a malformed
        digest."""
        regions = [self.reserve(blob_rel(config_digest), config_size)]
        for layer in layers:
            region = self.reserve(blob_rel(layer.digest), layer.size)
            layer.path, layer.offset = self.path, region.offset
            regions.append(region)
        regions.append(self.reserve(blob_rel(manifest_digest), manifest_size))
        return regions
