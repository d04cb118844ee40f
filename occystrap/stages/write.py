"""Write: hands layers to the destination's writer as they arrive, publishes each image when
its last layer is in, and reports every image's outcome to the supervisor. It is also the
end of the line for admission: an image leaving here frees a slot for resolve."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from threading import Semaphore

import msgspec

from occystrap.errors import OccystrapError
from occystrap.filters import FilterChain
from occystrap.filters.inspect import history
from occystrap.formats.base import Writer
from occystrap.layercache import LayerCache
from occystrap.layercache import key as cache_key
from occystrap.messages import ImageDone, ImageFailed, ImagePlan, LayerDesc, Shutdown
from occystrap.stages.base import StageIO
from occystrap.transform import NewDescriptor, rewrite_config, rewrite_index, rewrite_manifest


@dataclass
class _Image:
    plan: ImagePlan
    layers: dict[int, LayerDesc] = field(default_factory=dict)
    children_changed: dict[str, NewDescriptor] = field(default_factory=dict)
    waiting: set[int] = field(default_factory=set)  # an index: children not yet published
    layer_total: int = 0  # an index: its children's layers
    reencoded: bool = False  # compress gave a layer (of a child, for an index) new bytes
    skipped: int = 0
    bytes: int = 0


def with_new_digests(plan: ImagePlan, layers: list[LayerDesc],
                     children: dict[str, NewDescriptor],
                     chain: FilterChain | None = None) -> ImagePlan:
    """The plan as published: its own, unless --compression or filters gave layers (or the
    children of an index) new bytes, which gives the manifest new bytes and a new digest.
    Filters that rewrite layers also give the config new diff_ids, and so a new digest."""
    config = None
    if chain is not None and chain.rewrites and plan.config:
        diff_ids = [la.diff_id or old for la, old in zip(layers, plan.diff_ids, strict=True)]
        body, digest = rewrite_config(plan.config, diff_ids, chain.rewrite_config)
        config = NewDescriptor(digest, len(body), plan.config_media_type)
        plan = msgspec.structs.replace(plan, config=body, config_digest=digest,
                                       diff_ids=diff_ids)
    if config is not None or any(layer.source_digest for layer in layers):
        target = "zstd" if any(layer.compression == "zstd" for layer in layers) else None
        body, media_type, digest = rewrite_manifest(
            plan.manifest, plan.manifest_media_type,
            [NewDescriptor(la.digest, la.size, la.media_type) for la in layers], target,
            config)
    elif children:
        body, media_type, digest = rewrite_index(plan.manifest, plan.manifest_media_type,
                                                 children)
    else:
        return plan
    return msgspec.structs.replace(plan, manifest=body, manifest_media_type=media_type,
                                   manifest_digest=digest)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        where = f" {exc.filename}" if exc.filename else ""
        return f"cannot write{where}: {exc.strerror}"
    return str(exc)


def remember(cache: LayerCache | None, layers: list[LayerDesc], level: int | None) -> str:
    """Record this image's freshly re-encoded layers; returns a note if that failed."""
    if cache is None:
        return ""
    fresh = [(cache_key(la.source_digest, la.compression, level),
              NewDescriptor(la.digest, la.size, la.media_type))
             for la in layers if la.source_digest and not la.present]
    try:
        cache.record(fresh)
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


def run(io: StageIO, writer: Writer, admit: Semaphore, cache: LayerCache | None = None,
        level: int | None = None, chain: FilterChain | None = None) -> None:
    images: dict[int, _Image] = {}
    parent_of: dict[int, int] = {}
    finished = 0
    chain = chain or FilterChain()
    # top-level image → the inspect filters' lines for it and its platforms, written once
    # the whole image is published (a platform's sibling may still fail the index)
    inspect_lines: dict[int, list[dict[str, object]]] = {}

    def report(plan: ImagePlan, layers: list[LayerDesc], where: str) -> None:
        if chain.inspects and plan.config:
            top = plan.parent if plan.parent >= 0 else plan.image_id
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

    def fail(image_id: int, source: str, stage: str, reason: str) -> None:
        if image_id in io.failed:
            return
        io.failed.add(image_id)
        inspect_lines.pop(image_id, None)
        image = images.pop(image_id, None)
        if image is not None:
            try:
                writer.fail_image(image.plan)
            except (OccystrapError, OSError):
                pass
            for child in image.plan.children:
                fail(child, source, stage, reason)
        if image_id in parent_of:
            # A platform of an index failed: the index fails (and with it its siblings).
            fail(parent_of[image_id], source, stage, f"platform image: {reason}")
            return
        io.tell(ImageFailed(image_id=image_id, source=source, stage=stage, reason=reason))
        admit.release()

    def maybe_finish(image: _Image) -> None:
        nonlocal finished
        plan = source_plan = image.plan
        if len(image.layers) < plan.layer_count or image.waiting:
            return
        layers = [image.layers[i] for i in range(plan.layer_count)]
        image.reencoded = image.reencoded or any(la.source_digest for la in layers)
        plan = writer.convert(with_new_digests(plan, layers, image.children_changed, chain))
        if chain.rewrites:
            writer.add_config(plan)  # the config as rewritten
        where = writer.finish_image(plan, [layer.digest for layer in layers])
        report(plan, layers, where)
        cache_note = remember(cache, layers, level)
        images.pop(plan.image_id)
        parent = images.get(parent_of.get(plan.image_id, -1))
        if parent is not None and plan.manifest_digest != source_plan.manifest_digest:
            parent.children_changed[source_plan.manifest_digest] = NewDescriptor(
                plan.manifest_digest, len(plan.manifest), plan.manifest_media_type)
        if parent is not None:
            parent.waiting.discard(plan.image_id)
            parent.layer_total += plan.layer_count
            parent.bytes += image.bytes
            parent.skipped += image.skipped
            parent.reencoded = parent.reencoded or image.reencoded
            maybe_finish(parent)
            return
        finished += 1  # published: a tarball holding it is kept, whatever follows
        report_error = write_report(plan.image_id)
        if report_error:
            io.tell(ImageFailed(image_id=plan.image_id, source=plan.source, stage="write",
                                reason=report_error))
            admit.release()
            return
        notes = [writer.detail(plan), cache_note]
        if plan.manifest_digest != source_plan.manifest_digest:
            how = ["layers filtered" if chain.rewrites else
                   "layers re-encoded" if image.reencoded else ""]
            if writer.oci_media_types and plan.manifest_media_type != \
                    source_plan.manifest_media_type:
                how.append("converted to OCI media types")
            notes.append(f"{', '.join(filter(None, how))}: new manifest digest (source's "
                         f"was {source_plan.manifest_digest})")
        detail = ", ".join(filter(None, notes))
        io.tell(ImageDone(
            image_id=plan.image_id, source=plan.source, destination=where,
            manifest_digest=plan.manifest_digest, layers=plan.layer_count + image.layer_total,
            bytes=image.bytes, skipped_layers=image.skipped, up_to_date=plan.up_to_date,
            detail=detail))
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
                    image = images[image_id] = _Image(msg, waiting=set(msg.children))
                    for child in msg.children:
                        parent_of[child] = image_id
                    writer.begin_image(msg)
                    if not chain.rewrites:
                        writer.add_config(msg)
                elif isinstance(msg, LayerDesc):
                    image = images[image_id]
                    writer.add_layer(image.plan, msg)
                    image.layers[msg.index] = msg
                    if msg.present:
                        image.skipped += 1
                    else:
                        image.bytes += msg.size
                else:
                    continue
                maybe_finish(image)
            except (OccystrapError, OSError) as exc:
                if isinstance(msg, LayerDesc):
                    io.drop(msg)
                source = images[image_id].plan.source if image_id in images else "?"
                fail(image_id, source, "write", _describe(exc))
        # Every image sent has an outcome by now, unless a stage lost a layer (a bug): say
        # so rather than end the run as if the image had never been asked for.
        for image_id in [i for i in images if i not in parent_of]:
            fail(image_id, images[image_id].plan.source, "write",
                 "internal error: the run ended before all its layers arrived")
        ok = finished > 0
    finally:
        writer.close(ok)
