"""Write: hands layers to the destination's writer as they arrive, publishes each image when
its last layer is in, and reports every image's outcome to the supervisor. It is also the
end of the line for admission: an image leaving here frees a slot for resolve."""

from __future__ import annotations

from dataclasses import dataclass, field
from threading import Semaphore

from occystrap.errors import OccystrapError
from occystrap.formats.base import Writer
from occystrap.messages import ImageDone, ImageFailed, ImagePlan, LayerDesc, Shutdown
from occystrap.stages.base import StageIO


@dataclass
class _Image:
    plan: ImagePlan
    layers: dict[int, str] = field(default_factory=dict)
    skipped: int = 0
    bytes: int = 0


def _describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        where = f" {exc.filename}" if exc.filename else ""
        return f"cannot write{where}: {exc.strerror}"
    return str(exc)


def run(io: StageIO, writer: Writer, admit: Semaphore, destination: str) -> None:
    images: dict[int, _Image] = {}
    finished = 0

    def fail(image_id: int, source: str, stage: str, reason: str) -> None:
        image = images.pop(image_id, None)
        if image_id in io.failed:
            return
        io.failed.add(image_id)
        if image is not None:
            try:
                writer.fail_image(image.plan)
            except OSError:
                pass
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
                    image = images[image_id] = _Image(msg)
                    writer.begin_image(msg)
                elif isinstance(msg, LayerDesc):
                    image = images[image_id]
                    writer.add_layer(image.plan, msg)
                    image.layers[msg.index] = msg.digest
                    if msg.present:
                        image.skipped += 1
                    else:
                        image.bytes += msg.size
                else:
                    continue
                plan = image.plan
                if len(image.layers) == plan.layer_count:
                    ordered = [image.layers[i] for i in range(plan.layer_count)]
                    where = writer.finish_image(plan, ordered)
                    images.pop(image_id)
                    finished += 1
                    io.tell(ImageDone(
                        image_id=image_id, source=plan.source, destination=where,
                        manifest_digest=plan.manifest_digest, layers=plan.layer_count,
                        bytes=image.bytes, skipped_layers=image.skipped))
                    admit.release()
            except (OccystrapError, OSError) as exc:
                if isinstance(msg, LayerDesc):
                    io.drop(msg)
                source = images[image_id].plan.source if image_id in images else "?"
                fail(image_id, source, "write", _describe(exc))
        ok = finished > 0
    finally:
        writer.close(ok)
