"""Write: hands layers to the destination's writer as they arrive, publishes each image when
its last layer is in (in the order `publish.Publisher` keeps), and reports every image's
outcome to the supervisor. It is also the end of the line for admission: an image leaving
here frees a slot for resolve."""

from __future__ import annotations

import json
from collections.abc import Callable
from multiprocessing.synchronize import Semaphore

from occystrap.destinations.base import Writer
from occystrap.errors import OccystrapError, from_library
from occystrap.filters import FilterChain
from occystrap.layers.cache import LayerCache
from occystrap.layers.cache import key as cache_key
from occystrap.layers.rewrite import NewDescriptor
from occystrap.messages import ImageDone, ImageFailed, ImagePlan, LayerDesc
from occystrap.stages.base import Stage, Wiring
from occystrap.stages.publish import Node, Publisher, with_new_digests

__all__ = ["Write", "with_new_digests"]


def _describe(exc: BaseException, where: str) -> tuple[str, str]:
    """The failure line and kind for what the writer raised; a bug is raised again. An
    OSError here is the destination's (a DestinationError's kind)."""
    if isinstance(exc, OSError) and exc.strerror:
        path = f" {exc.filename}" if exc.filename else ""
        return f"cannot write{path}: {exc.strerror}", "DestinationError"
    mapped = from_library(exc, where)
    if mapped is None:
        raise exc
    return str(mapped), mapped.kind


def remember(
    cache: LayerCache | None, layers: list[LayerDesc], level: int | None, place: str | None
) -> str:
    """Record this image's re-encoded layers (fresh ones, and those the cache gave, now also
    at `place`); returns a note if that failed."""
    if cache is None:
        return ""
    done = [
        (
            cache_key(la.source_digest, la.compression, level),
            NewDescriptor(la.digest, la.size, la.media_type),
            place,
        )
        for la in layers
        if la.source_digest
    ]
    try:
        cache.record(done)
    except OSError as exc:
        return f"layer cache not updated: {exc.strerror}"
    return ""


def inspect_line(plan: ImagePlan, layers: list[LayerDesc]) -> dict[str, object]:
    """The inspect filter's line for one image as written."""
    from occystrap.filters.inspect import history  # only a run with the filter needs it

    doc = json.loads(plan.config)
    return {
        "name": plan.repo_tag or plan.source,
        "source": plan.source,
        "digest": plan.manifest_digest,
        "platform": "/".join(
            filter(None, (doc.get("os"), doc.get("architecture"), doc.get("variant")))
        ),
        "layers": history(
            doc,
            [(la.digest, max(la.uncompressed_size, 0)) for la in layers],
            plan.config_digest,
            [plan.repo_tag] if plan.repo_tag else [],
        ),
    }


def _notes(
    node: Node,
    plan: ImagePlan,
    source_plan: ImagePlan,
    writer_note: str,
    cache_note: str,
    rewrites: bool,
    oci_media_types: bool,
) -> str:
    notes = [writer_note, cache_note]
    if node.foreign:
        notes.append(
            f"{node.foreign} foreign layer{'s' if node.foreign > 1 else ''} not "
            "copied (the source does not serve them)"
        )
    if node.referrers_copied:
        notes.append(
            f"{node.referrers_copied} referrer{'s' if node.referrers_copied > 1 else ''} copied"
        )
    if plan.dropped:
        notes.append(
            f"{len(plan.dropped)} attestation manifest"
            f"{'s' if len(plan.dropped) > 1 else ''} left out"
        )
    notes += source_plan.notes
    if plan.manifest_digest != source_plan.manifest_digest:
        how = ["layers filtered" if rewrites else "layers re-encoded" if node.reencoded else ""]
        if oci_media_types and plan.manifest_media_type != source_plan.manifest_media_type:
            how.append("converted to OCI media types")
        said = ", ".join(filter(None, how))
        notes.append(
            f"{said + ': ' if said else ''}new manifest digest (source's was "
            f"{source_plan.manifest_digest})"
        )
    return ", ".join(filter(None, notes))


class Write(Stage):
    """The write stage: the destination's writer, the publisher's order, the outcomes."""

    # a registry's uploads fail in the background: said within this many seconds
    poll_every = 0.1

    def __init__(
        self,
        wiring: Wiring,
        writer: Writer,
        admit: Semaphore,
        cache: LayerCache | None = None,
        level: int | None = None,
        chain: FilterChain | None = None,
    ) -> None:
        super().__init__(wiring)
        self.writer = writer
        self.admit = admit
        self.released: set[int] = set()  # images resolve took no slot for (on_plan)
        self.cache = cache
        self.level = level
        self.chain = chain or FilterChain()
        self.finished = 0  # images published: a tarball holding one is kept
        # top-level image → the inspect filters' lines for it and its platforms, written
        # once the whole image is published (a platform's sibling may still fail the index)
        self.inspect_lines: dict[int, list[dict[str, object]]] = {}
        self.cache_notes: dict[int, str] = {}  # top-level image → why the cache was not updated
        self.publisher = Publisher(writer, self.chain, self.on_published, self.on_written)

    def run(self) -> None:
        ok = False
        try:
            super().run()
            ok = self.finished > 0
        finally:
            self.writer.close(ok)

    # -- the hooks -------------------------------------------------------------------------

    def on_plan(self, plan: ImagePlan) -> None:
        if plan.released:
            self.released.add(plan.image_id)
        if plan.image_id not in self.failed:
            self.step(plan, lambda: self.publisher.begin(plan))

    def on_layer(self, layer: LayerDesc) -> None:
        if layer.streaming:
            self.on_announced(layer)
            return

        def take() -> Node:
            node = self.publisher.nodes[layer.image_id]
            self.publisher.add_layer(node, layer)
            return node

        self.step(layer, take)

    def on_announced(self, layer: LayerDesc) -> None:
        """A download has begun (a blob in flight): the writer may start on it. Not a layer
        of the image yet (the publisher counts the layer's own message)."""
        node = self.publisher.nodes.get(layer.image_id)
        if node is None or layer.image_id in self.failed:
            return
        try:
            self.writer.stream_layer(node.plan, layer)
        except Exception as exc:  # noqa: BLE001 - _describe raises a bug again
            reason, kind = _describe(exc, f"layer {layer.digest}")
            top = self.publisher.nodes.get(self.publisher.top_of(layer.image_id))
            source = top.plan.source if top is not None else node.plan.source
            self.fail_tree(layer.image_id, source, "write", reason, kind)

    def on_failed(self, failed: ImageFailed) -> None:
        # marked failed by fail_tree, with the image's whole tree
        self.fail_tree(failed.image_id, failed.source, failed.stage, failed.reason, failed.kind)

    def poll(self) -> None:
        """Fail at once the images whose background work failed (Writer.failed_early):
        announced to the stages before this one, so fetch stops downloading for them."""
        for plan, exc in self.writer.failed_early():
            if plan.image_id in self.failed:
                continue
            reason, kind = _describe(exc, "")
            top = self.publisher.nodes.get(self.publisher.top_of(plan.image_id))
            self.fail_tree(
                plan.image_id,
                top.plan.source if top is not None else plan.source,
                "write",
                reason,
                kind,
            )

    def finish(self) -> None:
        self.poll()
        # Every image sent has an outcome by now, unless a stage lost a layer (a bug): say
        # so rather than end the run as if the image had never been asked for.
        publisher = self.publisher
        for image_id in [i for i in publisher.nodes if i not in publisher.parent_of]:
            self.fail_tree(
                image_id,
                publisher.nodes[image_id].plan.source,
                "write",
                "internal error: the run ended before all its layers arrived",
                "InternalError",
            )

    # -- publishing ------------------------------------------------------------------------

    def step(self, msg: ImagePlan | LayerDesc, take: Callable[[], Node]) -> None:
        """Take in a plan or a layer and publish what it completes; a failure fails the
        manifest whose writing failed (named from its top-level image)."""
        publisher = self.publisher
        try:
            publisher.advance(take())
        except Exception as exc:  # noqa: BLE001 - _describe raises a bug again
            reason, kind = _describe(
                exc, f"layer {msg.digest}" if isinstance(msg, LayerDesc) else ""
            )
            if isinstance(msg, LayerDesc):
                self.drop(msg)
            # Blame the manifest whose writing failed (a layer's arrival can publish its
            # image, then the index above it, then referrers), named from its top.
            failing = publisher.publishing
            publisher.publishing = None
            culprit = failing.image_id if failing is not None else msg.image_id
            top = publisher.nodes.get(publisher.top_of(culprit))
            source = (
                top.plan.source
                if top is not None
                else (msg.source if isinstance(msg, ImagePlan) else "?")
            )
            if (
                failing is not None
                and failing.image_id not in publisher.nodes
                and failing.image_id in publisher.parent_of
            ):
                # already out of the tree's bookkeeping (a referrer waiting for its top)
                reason = f"{publisher.kind(culprit)} {failing.manifest_digest}: {reason}"
                culprit = publisher.top_of(culprit)
            self.fail_tree(culprit, source, "write", reason, kind)

    def on_written(self, plan: ImagePlan, layers: list[LayerDesc], where: str) -> None:
        note = remember(self.cache, layers, self.level, self.writer.place(plan))
        if note:
            self.cache_notes[self.publisher.top_of(plan.image_id)] = note
        if self.chain.inspects and plan.config:
            top = self.publisher.top_of(plan.image_id)
            self.inspect_lines.setdefault(top, []).append(
                {**inspect_line(plan, layers), "destination": where}
            )

    def write_report(self, image_id: int) -> str:
        """Append the image's inspect lines; returns why they could not be, if so."""
        lines = self.inspect_lines.pop(image_id, [])
        for inspect in self.chain.inspects:
            for line in lines:
                try:
                    inspect.append(line)
                except OSError as exc:
                    return (
                        f"copied, but the inspect report could not be written to "
                        f"{inspect.file}: {exc.strerror}"
                    )
        return ""

    def on_published(
        self, node: Node, plan: ImagePlan, layers: list[LayerDesc], where: str
    ) -> None:
        self.finished += 1  # published: a tarball holding it is kept, whatever follows
        cache_note = self.cache_notes.pop(plan.image_id, "")
        report_error = self.write_report(plan.image_id)
        if report_error:
            self.tell(
                ImageFailed(
                    image_id=plan.image_id,
                    source=plan.source,
                    stage="write",
                    reason=report_error,
                    kind="DestinationError",
                )
            )
            self.give_back(plan.image_id)
            return
        detail = _notes(
            node,
            plan,
            node.plan,
            self.writer.detail(plan),
            cache_note,
            self.chain.rewrites,
            self.writer.oci_media_types,
        )
        self.tell(
            ImageDone(
                image_id=plan.image_id,
                source=plan.source,
                destination=where,
                manifest_digest=plan.manifest_digest,
                layers=plan.layer_count + node.layer_total,
                bytes=node.bytes,
                skipped_layers=node.skipped,
                up_to_date=plan.up_to_date and not node.referrers_copied,
                detail=detail,
                foreign=node.foreign,
                referrers=node.referrers_copied,
            )
        )
        self.give_back(plan.image_id)

    def give_back(self, image_id: int) -> None:
        """The image is through: its admission slot goes back, unless resolve took none
        for it (ImagePlan.released)."""
        if image_id in self.released:
            self.released.discard(image_id)
        else:
            self.admit.release()

    def fail_tree(self, image_id: int, source: str, stage: str, reason: str, kind: str) -> None:
        """Fail an image and everything in its tree (the top-level image is what fails),
        undo what the writer had of it, report it and free its admission slot."""
        if not self.mark_failed(image_id):
            return
        self.inspect_lines.pop(image_id, None)
        publisher = self.publisher
        node = publisher.drop(image_id)
        if node is not None:
            try:
                self.writer.fail_image(node.plan)
            except (OccystrapError, OSError):
                pass
            for child in (*node.plan.children, *node.plan.referrers):
                self.fail_tree(child, source, stage, reason, kind)
        if image_id in publisher.parent_of:
            # A platform of an index (or a referrer) failed: the top-level image fails.
            self.fail_tree(
                publisher.parent_of[image_id],
                source,
                stage,
                f"{publisher.kind(image_id)}: {reason}",
                kind,
            )
            return
        self.tell(
            ImageFailed(image_id=image_id, source=source, stage=stage, reason=reason, kind=kind)
        )
        self.give_back(image_id)
