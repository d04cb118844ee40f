"""stages/publish.py, the write stage's bookkeeping: children before their parent, a tree's
referrers after its top is present by digest and before its tag, one report per top-level
image, and the new digests of re-encoded images. The writer here records the calls the
Publisher makes, in order (a Writer of its own, holding nothing)."""

from __future__ import annotations

import hashlib
import json

from occystrap import mediatypes as mt
from occystrap.destinations.base import Writer
from occystrap.filters import FilterChain
from occystrap.messages import ImagePlan, LayerDesc
from occystrap.reference import ImageRef
from occystrap.sources import resolved_from_bytes
from occystrap.stages.plan import layerless_plan
from occystrap.stages.publish import Node, Publisher, with_new_digests

REF = ImageRef("h", "a", tag="1")


def _digest(body: bytes) -> str:
    return "sha256:" + hashlib.sha256(body).hexdigest()


class Recorder(Writer):
    """Every writer call, as (what, image id)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []

    def begin_image(self, plan: ImagePlan) -> None:
        self.calls.append(("begin", plan.image_id))

    def add_config(self, plan: ImagePlan) -> None:
        self.calls.append(("config", plan.image_id))

    def add_layer(self, plan: ImagePlan, layer: LayerDesc) -> None:
        self.calls.append(("layer", plan.image_id))

    def stage_image(self, plan: ImagePlan) -> None:
        self.calls.append(("stage", plan.image_id))

    def finish_image(self, plan: ImagePlan, layers: list[str]) -> str:
        self.calls.append(("finish", plan.image_id))
        return f"dest@{plan.manifest_digest}"

    def fail_image(self, plan: ImagePlan) -> None:
        self.calls.append(("fail", plan.image_id))

    def close(self, ok: bool) -> None:
        pass


def _layer(image_id: int, index: int, data: bytes) -> LayerDesc:
    return LayerDesc(
        image_id=image_id,
        index=index,
        digest=_digest(data),
        size=len(data),
        media_type=mt.OCI_LAYER_GZIP,
        compression="gzip",
    )


def _image(image_id: int, layers: list[LayerDesc], **extra: object) -> ImagePlan:
    config = json.dumps({"rootfs": {"diff_ids": [la.digest for la in layers]}}).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": mt.OCI_MANIFEST,
            "config": {"mediaType": mt.OCI_CONFIG, "digest": _digest(config), "size": len(config)},
            "layers": [
                {"mediaType": la.media_type, "digest": la.digest, "size": la.size} for la in layers
            ],
        }
    ).encode()
    return ImagePlan(
        image_id=image_id,
        source="registry://h/a:1",
        host="h",
        name="a",
        insecure=False,
        repo_tag="h/a:1",
        tag="1",
        manifest=manifest,
        manifest_media_type=mt.OCI_MANIFEST,
        manifest_digest=_digest(manifest),
        config=config,
        config_digest=_digest(config),
        config_media_type=mt.OCI_CONFIG,
        diff_ids=[la.digest for la in layers],
        layer_count=len(layers),
        **extra,  # type: ignore[arg-type]
    )


def _index(image_id: int, children: list[ImagePlan]) -> ImagePlan:
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": mt.OCI_INDEX,
            "manifests": [
                {
                    "mediaType": c.manifest_media_type,
                    "digest": c.manifest_digest,
                    "size": len(c.manifest),
                }
                for c in children
            ],
        }
    ).encode()
    got = resolved_from_bytes(manifest, mt.OCI_INDEX, "test")
    return layerless_plan(
        image_id, REF, "registry://h/a:1", got, False, None, children=[c.image_id for c in children]
    )


class Run:
    def __init__(self) -> None:
        self.writer = Recorder()
        self.published: list[tuple[int, str]] = []
        self.written: list[int] = []
        self.publisher = Publisher(self.writer, FilterChain(), self.on_published, self.on_written)

    def on_published(
        self, node: Node, plan: ImagePlan, layers: list[LayerDesc], where: str
    ) -> None:
        self.published.append((plan.image_id, where))

    def on_written(self, plan: ImagePlan, layers: list[LayerDesc], where: str) -> None:
        self.written.append(plan.image_id)

    def send(self, plan: ImagePlan, layers: list[LayerDesc]) -> None:
        """As the write stage does: the plan, then its layers, advancing after each."""
        node = self.publisher.begin(plan)
        self.publisher.advance(node)
        for layer in layers:
            self.publisher.add_layer(node, layer)
            self.publisher.advance(node)


def test_an_index_is_published_after_its_children() -> None:
    run = Run()
    a_layers, b_layers = [_layer(1, 0, b"a")], [_layer(2, 0, b"b"), _layer(2, 1, b"c")]
    a = _image(1, a_layers, parent=0)
    b = _image(2, b_layers, parent=0)
    index = _index(0, [a, b])
    run.send(index, [])
    run.send(a, a_layers)
    assert ("finish", 0) not in run.writer.calls  # b is not in yet
    run.send(b, b_layers)
    finishes = [i for what, i in run.writer.calls if what == "finish"]
    assert finishes == [1, 2, 0]
    assert run.written == [1, 2, 0]
    assert run.published == [(0, f"dest@{index.manifest_digest}")]  # once, for the tree
    assert run.publisher.nodes == {}


def test_referrers_go_between_the_top_present_by_digest_and_its_tag() -> None:
    run = Run()
    top_layers = [_layer(0, 0, b"top")]
    sig_layers = [_layer(5, 0, b"signature")]
    top = _image(0, top_layers, referrers=[5])
    sig = _image(5, sig_layers, parent=0, referrer_of=top.manifest_digest)
    run.send(top, top_layers)
    assert ("stage", 0) in run.writer.calls and ("finish", 0) not in run.writer.calls
    assert run.published == []
    run.send(sig, sig_layers)
    order = [(what, i) for what, i in run.writer.calls if what in ("stage", "finish")]
    assert order == [("stage", 0), ("finish", 5), ("finish", 0)]
    assert [i for i, _ in run.published] == [0]


def test_top_of_and_kind_name_a_failure_after_its_top_level_image() -> None:
    run = Run()
    child_layers = [_layer(1, 0, b"a")]
    child = _image(1, child_layers, parent=0)
    run.send(_index(0, [child]), [])
    run.publisher.begin(child)
    assert run.publisher.top_of(1) == 0
    assert run.publisher.kind(1) == "platform image"
    assert run.publisher.drop(1) is not None and 1 not in run.publisher.nodes


def test_with_new_digests_keeps_an_untouched_plan() -> None:
    layers = [_layer(0, 0, b"a")]
    plan = _image(0, layers)
    assert with_new_digests(plan, layers, {}) is plan


def test_with_new_digests_for_a_re_encoded_layer() -> None:
    layers = [_layer(0, 0, b"a")]
    plan = _image(0, layers)
    recoded = LayerDesc(
        image_id=0,
        index=0,
        digest=_digest(b"zstd bytes"),
        size=10,
        media_type=mt.OCI_LAYER_ZSTD,
        compression="zstd",
        source_digest=layers[0].digest,
    )
    new = with_new_digests(plan, [recoded], {})
    assert new.manifest_digest == _digest(new.manifest) != plan.manifest_digest
    doc = json.loads(new.manifest)
    assert doc["layers"][0]["digest"] == recoded.digest
    assert new.config == plan.config  # no filter: the config keeps its bytes


def test_with_new_digests_for_an_index_whose_entries_were_dropped() -> None:
    a, b = _image(1, [_layer(1, 0, b"a")]), _image(2, [_layer(2, 0, b"b")])
    index = _index(0, [a, b])
    index.dropped = [b.manifest_digest]
    new = with_new_digests(index, [], {})
    assert [m["digest"] for m in json.loads(new.manifest)["manifests"]] == [a.manifest_digest]
