"""The write stage's bookkeeping: which image may be published when, in which order.

A top-level image is a tree: an index and its children (indexes may nest), and, with
`--referrers`, the manifests that refer to any of them. Publication order is what a
registry and a reader need:
1. children before their parent (a registry refuses an index whose children it lacks);
2. a top-level image that has referrers is first made present by digest (`stage_image`),
   then its referrers are published in the order resolve found them (a referrer's subject is
   always before it), then the image gets its tag (`finish_image`): a reader that finds the
   tag finds its signatures too ("nothing half-published");
3. an image is reported, and frees its admission slot, when its top-level tree is done.

A failure anywhere in a tree fails the top-level image (its tag is never pushed).
"""

from __future__ import annotations

from collections.abc import Callable

import msgspec

from occystrap.destinations.base import Writer
from occystrap.filters import FilterChain
from occystrap.layers.rewrite import NewDescriptor, rewrite_config, rewrite_index, rewrite_manifest
from occystrap.messages import ImagePlan, LayerDesc


class Node(msgspec.Struct):
    """One manifest of a tree on its way to the destination."""

    plan: ImagePlan
    layers: dict[int, LayerDesc] = msgspec.field(default_factory=dict)
    children_changed: dict[str, NewDescriptor] = msgspec.field(default_factory=dict)
    waiting: set[int] = msgspec.field(default_factory=set)  # children not yet published
    # a top-level image's referrers, in publication order, and those ready to go
    referrers: list[int] = msgspec.field(default_factory=list)
    ready: dict[int, tuple[ImagePlan, list[LayerDesc]]] = msgspec.field(default_factory=dict)
    staged: bool = False  # present by digest at the destination, its referrers may follow
    layer_total: int = 0  # its children's layers
    skipped: int = 0
    foreign: int = 0
    referrers_copied: int = 0
    reencoded: bool = False  # compress gave a layer (of a child, for an index) new bytes
    bytes: int = 0

    @property
    def complete(self) -> bool:
        """Every layer in and every child published."""
        return len(self.layers) >= self.plan.layer_count and not self.waiting


def with_new_digests(
    plan: ImagePlan,
    layers: list[LayerDesc],
    children: dict[str, NewDescriptor],
    chain: FilterChain | None = None,
) -> ImagePlan:
    """The plan as published: its own, unless --compression or filters gave layers (or the
    children of an index) new bytes, or entries were left out of an index, which gives the
    manifest new bytes and a new digest. Filters that rewrite layers also give the config
    new diff_ids, and so a new digest."""
    config = None
    if chain is not None and chain.rewrites and plan.config:
        diff_ids = [la.diff_id or old for la, old in zip(layers, plan.diff_ids, strict=True)]
        body, digest = rewrite_config(plan.config, diff_ids, chain.rewrite_config)
        config = NewDescriptor(digest, len(body), plan.config_media_type)
        plan = msgspec.structs.replace(plan, config=body, config_digest=digest, diff_ids=diff_ids)
    if config is not None or any(layer.source_digest for layer in layers):
        target = "zstd" if any(layer.compression == "zstd" for layer in layers) else None
        body, media_type, digest = rewrite_manifest(
            plan.manifest,
            plan.manifest_media_type,
            [NewDescriptor(la.digest, la.size, la.media_type) for la in layers],
            target,
            config,
        )
    elif children or plan.dropped:
        body, media_type, digest = rewrite_index(
            plan.manifest, plan.manifest_media_type, children, plan.dropped
        )
    else:
        return plan
    return msgspec.structs.replace(
        plan, manifest=body, manifest_media_type=media_type, manifest_digest=digest
    )


class Publisher:
    """Holds the trees in flight and calls the writer in the order above.

    `on_published(top, node, plan, layers, where)` is called once per top-level image, when
    its whole tree is at the destination (`plan` as published).
    """

    def __init__(
        self,
        writer: Writer,
        chain: FilterChain,
        on_published: Callable[[Node, ImagePlan, list[LayerDesc], str], None],
        on_written: Callable[[ImagePlan, list[LayerDesc], str], None],
    ) -> None:
        self.writer = writer
        self.chain = chain
        self.nodes: dict[int, Node] = {}
        self.parent_of: dict[int, int] = {}
        self.on_published = on_published
        self.on_written = on_written  # every manifest written (the inspect filter's lines)
        self.referrer_ids: set[int] = set()  # referrers and everything below them
        # the manifest whose writer call is under way: a failure there is that manifest's
        self.publishing: ImagePlan | None = None

    def begin(self, plan: ImagePlan) -> Node:
        node = self.nodes[plan.image_id] = Node(
            plan, waiting=set(plan.children), referrers=list(plan.referrers)
        )
        for child in (*plan.children, *plan.referrers):
            self.parent_of[child] = plan.image_id
        if plan.referrer_of or plan.companion_tag or plan.parent in self.referrer_ids:
            self.referrer_ids.add(plan.image_id)
        self.writer.begin_image(plan)
        if not self.chain.rewrites:
            self.writer.add_config(plan)
        return node

    def add_layer(self, node: Node, layer: LayerDesc) -> None:
        self.writer.add_layer(node.plan, layer)
        node.layers[layer.index] = layer
        if layer.foreign:
            node.foreign += 1
        elif layer.present:
            node.skipped += 1
        else:
            node.bytes += layer.size

    def kind(self, image_id: int) -> str:
        """What a manifest is to its top-level image, for failure messages."""
        return "referrer" if image_id in self.referrer_ids else "platform image"

    def top_of(self, image_id: int) -> int:
        while image_id in self.parent_of:
            image_id = self.parent_of[image_id]
        return image_id

    def drop(self, image_id: int) -> Node | None:
        """Forget a node (its image failed); returns it, for the writer's clean-up."""
        return self.nodes.pop(image_id, None)

    def advance(self, node: Node) -> None:
        """Publish `node` if it is complete, and whatever that unblocks above it."""
        if not node.complete:
            return
        plan = node.plan
        if plan.referrer_of or plan.companion_tag:
            # A referrer waits for its top-level image to be present by digest.
            top = self.nodes[plan.parent]
            top.ready[plan.image_id] = (plan, [node.layers[i] for i in range(plan.layer_count)])
            top.layer_total += plan.layer_count
            self._count_into(top, node)
            self.nodes.pop(plan.image_id)
            self._release_referrers(top)
            return
        layers = [node.layers[i] for i in range(plan.layer_count)]
        node.reencoded = node.reencoded or any(la.source_digest for la in layers)
        published = self.writer.convert(
            with_new_digests(plan, layers, node.children_changed, self.chain)
        )
        parent = self.nodes.get(self.parent_of.get(plan.image_id, -1))
        if parent is None and node.referrers:
            if not node.staged:
                self._write_config(published)
                self.publishing = published
                self.writer.stage_image(published)
                node.staged = True
            self._release_referrers(node)
            return
        self._write_config(published)
        self.publishing = published
        where = self.writer.finish_image(published, [layer.digest for layer in layers])
        self.publishing = None
        self.on_written(published, layers, where)
        self.nodes.pop(plan.image_id)
        if parent is None:
            self.on_published(node, published, layers, where)
            return
        if published.manifest_digest != plan.manifest_digest:
            parent.children_changed[plan.manifest_digest] = NewDescriptor(
                published.manifest_digest, len(published.manifest), published.manifest_media_type
            )
        parent.waiting.discard(plan.image_id)
        parent.layer_total += plan.layer_count
        self._count_into(parent, node)
        self.advance(parent)

    def _write_config(self, plan: ImagePlan) -> None:
        if self.chain.rewrites:
            self.writer.add_config(plan)  # the config as rewritten

    @staticmethod
    def _count_into(parent: Node, node: Node) -> None:
        parent.layer_total += node.layer_total
        parent.bytes += node.bytes
        parent.skipped += node.skipped
        parent.foreign += node.foreign
        parent.referrers_copied += node.referrers_copied
        parent.reencoded = parent.reencoded or node.reencoded

    def _release_referrers(self, top: Node) -> None:
        """Publish the top's ready referrers in order; the top itself after the last."""
        if not top.staged:
            return
        while top.referrers and top.referrers[0] in top.ready:
            plan, layers = top.ready.pop(top.referrers.pop(0))
            self.publishing = plan
            where = self.writer.finish_image(plan, [layer.digest for layer in layers])
            self.publishing = None
            self.on_written(plan, layers, where)
            top.referrers_copied += 1
        if not top.referrers:
            # Every referrer is up: the top is published as any image now (by tag).
            top.plan = msgspec.structs.replace(top.plan, referrers=[])
            self.advance(top)
