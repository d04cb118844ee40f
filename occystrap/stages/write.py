"""Write: hands layers to the destination's writer as they arrive, publishes each image when
its last layer is in (in the order `publish.Publisher` keeps), and reports every image's
outcome to the supervisor. It is also the end of the line for admission: an image leaving
here frees a slot for resolve."""

from __future__ import annotations

import json
from threading import Semaphore

from occystrap.errors import OccystrapError, from_library
from occystrap.filters import FilterChain
from occystrap.filters.inspect import history
from occystrap.formats.base import Writer
from occystrap.layercache import LayerCache
from occystrap.layercache import key as cache_key
from occystrap.messages import ImageDone, ImageFailed, ImagePlan, LayerDesc, Shutdown
from occystrap.stages.base import StageIO
from occystrap.stages.publish import Node, Publisher, with_new_digests
from occystrap.transform import NewDescriptor

__all__ = ["run", "with_new_digests"]


def _describe(exc: Exception, where: str) -> str:
    """The failure line for what the writer raised; a bug is raised again."""
    if isinstance(exc, OSError) and exc.strerror:
        path = f" {exc.filename}" if exc.filename else ""
        return f"cannot write{path}: {exc.strerror}"
    mapped = from_library(exc, where)
    if mapped is None:
        raise exc
    return str(mapped)


def remember(cache: LayerCache | None, layers: list[LayerDesc], level: int | None,
             place: str | None) -> str:
    """Record this image's re-encoded layers (fresh ones, and those the cache gave, now also
    at `place`); returns a note if that failed."""
    if cache is None:
        return ""
    done = [(cache_key(la.source_digest, la.compression, level),
             NewDescriptor(la.digest, la.size, la.media_type), place)
            for la in layers if la.source_digest]
    try:
        cache.record(done)
    except OSError as exc:
        return f"layer cache not updated: {exc.strerror}"
    return ""


def inspect_line(plan: ImagePlan, layers: list[LayerDesc]) -> dict[str, object]:
    """The inspect filter's line for one image as written."""
    doc = json.loads(plan.config)
    return {
        "name": plan.repo_tag or plan.source,
        "source": plan.source,
        "digest": plan.manifest_digest,
        "platform": "/".join(filter(None, (doc.get("os"), doc.get("architecture"),
                                           doc.get("variant")))),
        "layers": history(doc, [(la.digest, max(la.uncompressed_size, 0)) for la in layers],
                          plan.config_digest, [plan.repo_tag] if plan.repo_tag else []),
    }


def _notes(node: Node, plan: ImagePlan, source_plan: ImagePlan, writer_note: str,
           cache_note: str, rewrites: bool, oci_media_types: bool) -> str:
    notes = [writer_note, cache_note]
    if node.foreign:
        notes.append(f"{node.foreign} foreign layer{'s' if node.foreign > 1 else ''} not "
                     "copied (the source does not serve them)")
    if node.referrers_copied:
        notes.append(f"{node.referrers_copied} referrer"
                     f"{'s' if node.referrers_copied > 1 else ''} copied")
    if plan.dropped:
        notes.append(f"{len(plan.dropped)} attestation manifest"
                     f"{'s' if len(plan.dropped) > 1 else ''} left out")
    notes += source_plan.notes
    if plan.manifest_digest != source_plan.manifest_digest:
        how = ["layers filtered" if rewrites else "layers re-encoded" if node.reencoded
               else ""]
        if oci_media_types and plan.manifest_media_type != source_plan.manifest_media_type:
            how.append("converted to OCI media types")
        said = ", ".join(filter(None, how))
        notes.append(f"{said + ': ' if said else ''}new manifest digest (source's was "
                     f"{source_plan.manifest_digest})")
    return ", ".join(filter(None, notes))


def run(io: StageIO, writer: Writer, admit: Semaphore, cache: LayerCache | None = None,
        level: int | None = None, chain: FilterChain | None = None) -> None:
    chain = chain or FilterChain()
    finished = 0
    # top-level image → the inspect filters' lines for it and its platforms, written once
    # the whole image is published (a platform's sibling may still fail the index)
    inspect_lines: dict[int, list[dict[str, object]]] = {}

    cache_notes: dict[int, str] = {}  # top-level image → why the cache was not updated

    def on_written(plan: ImagePlan, layers: list[LayerDesc], where: str) -> None:
        note = remember(cache, layers, level, writer.place(plan))
        if note:
            cache_notes[publisher.top_of(plan.image_id)] = note
        if chain.inspects and plan.config:
            top = publisher.top_of(plan.image_id)
            inspect_lines.setdefault(top, []).append(
                {**inspect_line(plan, layers), "destination": where})

    def write_report(image_id: int) -> str:
        """Append the image's inspect lines; returns why they could not be, if so."""
        lines = inspect_lines.pop(image_id, [])
        for inspect in chain.inspects:
            for line in lines:
                try:
                    inspect.append(line)
                except OSError as exc:
                    return (f"copied, but the inspect report could not be written to "
                            f"{inspect.file}: {exc.strerror}")
        return ""

    def on_published(node: Node, plan: ImagePlan, layers: list[LayerDesc], where: str
                     ) -> None:
        nonlocal finished
        finished += 1  # published: a tarball holding it is kept, whatever follows
        cache_note = cache_notes.pop(plan.image_id, "")
        report_error = write_report(plan.image_id)
        if report_error:
            io.tell(ImageFailed(image_id=plan.image_id, source=plan.source, stage="write",
                                reason=report_error))
            admit.release()
            return
        detail = _notes(node, plan, node.plan, writer.detail(plan), cache_note,
                        chain.rewrites, writer.oci_media_types)
        io.tell(ImageDone(
            image_id=plan.image_id, source=plan.source, destination=where,
            manifest_digest=plan.manifest_digest, layers=plan.layer_count + node.layer_total,
            bytes=node.bytes, skipped_layers=node.skipped,
            up_to_date=plan.up_to_date and not node.referrers_copied, detail=detail,
            foreign=node.foreign, referrers=node.referrers_copied))
        admit.release()

    publisher = Publisher(writer, chain, on_published, on_written)

    def fail(image_id: int, source: str, stage: str, reason: str) -> None:
        if image_id in io.failed:
            return
        io.failed.add(image_id)
        inspect_lines.pop(image_id, None)
        node = publisher.drop(image_id)
        if node is not None:
            try:
                writer.fail_image(node.plan)
            except (OccystrapError, OSError):
                pass
            for child in (*node.plan.children, *node.plan.referrers):
                fail(child, source, stage, reason)
        if image_id in publisher.parent_of:
            # A platform of an index (or a referrer) failed: the top-level image fails.
            fail(publisher.parent_of[image_id], source, stage,
                 f"{publisher.kind(image_id)}: {reason}")
            return
        io.tell(ImageFailed(image_id=image_id, source=source, stage=stage, reason=reason))
        admit.release()

    ok = False
    try:
        while True:
            msg = io.get()
            if isinstance(msg, Shutdown):
                break
            if isinstance(msg, ImageFailed):
                fail(msg.image_id, msg.source, msg.stage, msg.reason)
                continue
            image_id = msg.image_id
            if image_id in io.failed:
                if isinstance(msg, LayerDesc):
                    io.drop(msg)
                continue
            try:
                if isinstance(msg, ImagePlan):
                    node = publisher.begin(msg)
                elif isinstance(msg, LayerDesc):
                    node = publisher.nodes[image_id]
                    publisher.add_layer(node, msg)
                else:
                    continue
                publisher.advance(node)
            except Exception as exc:  # noqa: BLE001 - _describe raises a bug again
                reason = _describe(exc, f"layer {msg.digest}" if isinstance(msg, LayerDesc)
                                   else "")
                if isinstance(msg, LayerDesc):
                    io.drop(msg)
                # Blame the manifest whose writing failed (a layer's arrival can publish its
                # image, then the index above it, then referrers), named from its top.
                failing = publisher.publishing
                publisher.publishing = None
                culprit = failing.image_id if failing is not None else image_id
                top = publisher.nodes.get(publisher.top_of(culprit))
                source = top.plan.source if top is not None else (
                    msg.source if isinstance(msg, ImagePlan) else "?")
                if failing is not None and failing.image_id not in publisher.nodes \
                        and failing.image_id in publisher.parent_of:
                    # already out of the tree's bookkeeping (a referrer waiting for its top)
                    reason = f"{publisher.kind(culprit)} {failing.manifest_digest}: {reason}"
                    culprit = publisher.top_of(culprit)
                fail(culprit, source, "write", reason)
        # Every image sent has an outcome by now, unless a stage lost a layer (a bug): say
        # so rather than end the run as if the image had never been asked for.
        for image_id in [i for i in publisher.nodes if i not in publisher.parent_of]:
            fail(image_id, publisher.nodes[image_id].plan.source, "write",
                 "internal error: the run ended before all its layers arrived")
        ok = finished > 0
    finally:
        writer.close(ok)
