"""What every destination writer provides to the write stage, and what a destination that
plans its layout in advance (tar://) provides to resolve.

Writers receive layers in completion order, not manifest order: none of the formats needs
them in order (tar members and blob files can come in any order; the manifests that give
the order are written last). That is what keeps a sequential writer from deadlocking against
fetch: it never waits for a particular layer.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Protocol

import msgspec

from occystrap.errors import DestinationError
from occystrap.layers.rewrite import to_oci
from occystrap.mediatypes import OCI_CONFIG
from occystrap.messages import ImagePlan, LayerDesc, Region


class Planner(Protocol):
    """Reserves each blob's place in an output before any byte exists (`TarPlanner`), so
    fetch writes layers where they end up. Lives in resolve, which plans one image at a
    time."""

    #: the end of everything planned so far (bytes from the start of the output)
    end: int

    def plan_image(
        self,
        config_digest: str,
        config_size: int,
        manifest_digest: str,
        manifest_size: int,
        layers: list[LayerDesc],
    ) -> list[Region]:
        """Regions for config, layers and manifest, in that order (sizes in bytes); sets
        each layer's `path` and `offset` so fetch writes it in place."""
        ...


class Writer(ABC):
    """A destination's writer. Its capabilities are class attributes, so the supervisor and
    resolve can ask them of a destination before a writer exists (`Destination`); a writer
    whose location options change one (`tar://?format=v1.2`, `dir://?unique_names=true`)
    says so in `destinations.Destination`."""

    #: layers must arrive uncompressed (the compress stage decompresses them)
    needs_uncompressed = False
    #: can hold a multi-platform index whole (else one platform is picked)
    takes_index = False
    #: can hold several images of one source (a multi-image tarball, say)
    takes_many = False
    #: why it can hold only container images, for messages (None: any OCI content,
    #: byte-exact)
    image_only: str | None = None
    #: `?media_types=oci`: Docker manifests and lists are stored in their OCI forms
    oci_media_types = False

    def convert(self, plan: ImagePlan) -> ImagePlan:
        """The plan as this destination stores it. With `?media_types=oci` a Docker
        manifest or manifest list becomes its OCI form (new bytes and digest; config and
        layers unchanged), as skopeo's `oci:` transport does; otherwise it is unchanged."""
        if not self.oci_media_types:
            return plan
        try:
            body, media_type, digest = to_oci(plan.manifest, plan.manifest_media_type)
        except (ValueError, KeyError, TypeError) as exc:
            raise DestinationError(
                f"{plan.source}: cannot convert the manifest to OCI media types: {exc}"
            ) from None
        if digest == plan.manifest_digest:
            return plan
        return msgspec.structs.replace(
            plan,
            manifest=body,
            manifest_media_type=media_type,
            manifest_digest=digest,
            config_media_type=OCI_CONFIG if plan.config else plan.config_media_type,
        )

    def planner(self) -> Planner | None:
        """A layout planner when blobs are written in place (tar://), for resolve."""
        return None

    @abstractmethod
    def begin_image(self, plan: ImagePlan) -> None: ...

    @abstractmethod
    def add_config(self, plan: ImagePlan) -> None:
        """Store the image config (`plan.config`): right after begin_image, or, when filters
        rewrite the config, just before finish_image. Nothing for an index."""

    @abstractmethod
    def add_layer(self, plan: ImagePlan, layer: LayerDesc) -> None:
        """Take ownership of `layer.path` (move it in, or copy and delete it)."""

    def stream_layer(self, plan: ImagePlan, layer: LayerDesc) -> None:
        """Fetch began downloading `layer` into `layer.path` (an announcement, sent only to
        a destination that uploads while bytes arrive: pipeline.streams). The layer's own
        message follows through `add_layer`; until then `layer.path` is fetch's to grow
        and to remove. Nothing to do for other destinations."""
        return None

    def place(self, plan: ImagePlan) -> str | None:
        """Where the image's blobs are published, as the layer cache records it
        (`HOST/REPOSITORY`), or None for destinations other images cannot mount from."""
        return None

    def stage_image(self, plan: ImagePlan) -> None:
        """Make the manifest present by digest, without naming it, so that what refers to
        it (`--referrers`) can follow before `finish_image` names it. Nothing to do for
        formats whose referrers are never written (tar, dir, docker)."""
        return None

    @abstractmethod
    def finish_image(self, plan: ImagePlan, layers: list[str]) -> str:
        """All layers are in (`layers`: their digests in manifest order): make the image
        visible, last of all its files. Returns where it went."""

    def detail(self, plan: ImagePlan) -> str:
        """A few words on how the image went, for the summary line (e.g. blobs mounted)."""
        return ""

    def failed_early(self) -> list[tuple[ImagePlan, BaseException]]:
        """Work this writer runs in the background (a registry's uploads) that has failed
        since the last call: the write stage fails those images at once, rather than when
        their last layer arrives, so fetch stops downloading for them. Writers that work
        in the write stage's own thread raise at once instead."""
        return []

    @abstractmethod
    def fail_image(self, plan: ImagePlan) -> None:
        """Undo what this image added that nothing else uses."""

    @abstractmethod
    def close(self, ok: bool) -> None:
        """End of run: publish (ok) or remove every temp file (not ok)."""
