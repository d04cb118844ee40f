"""The messages that travel on the pipeline's queues.

Each is a tagged msgspec Struct encoded as msgpack (by `channel.py`, which also marks the end
of a stream: there is no end-of-input message). Manifests and configs are small (capped at
4 MiB) and travel inline; layer bytes never do: a `LayerDesc` names the spool file that holds them.
"""

from __future__ import annotations

import msgspec

# The pipeline's stages, in order: a stage's index here is its slot in the shared counters
# and the order of the statistics' stage rows.
STAGES = ("resolve", "fetch", "verify", "compress", "write")


class Region(msgspec.Struct):
    """A member of a tarball reserved before its bytes arrive: the data starts at `offset`."""

    name: str
    offset: int
    size: int


class ImagePlan(msgspec.Struct, tag=True):
    """What resolve learned about one image; the stages after it need it before its layers."""

    image_id: int
    source: str
    host: str
    name: str
    insecure: bool
    repo_tag: str | None
    tag: str | None
    manifest: bytes
    manifest_media_type: str
    manifest_digest: str
    config: bytes
    config_digest: str
    config_media_type: str
    diff_ids: list[str]
    layer_count: int
    # tar:// only: where each blob of this image goes in the archive, and its end
    regions: list[Region] = []
    tar_end: int = -1
    # registry://: the destination already serves this exact manifest; nothing to copy
    up_to_date: bool = False
    # registry://: no layer is at the destination and a HEAD said so for one at least, so
    # the config is taken as new too (written without a HEAD first)
    config_new: bool = False
    # resolve took no admission slot (-J) for this image: nothing of an image found up to
    # date is in flight, so the next image need not wait for it to pass through every
    # stage (and write gives none back for it)
    released: bool = False
    # an index copied whole: the index's plan lists its children (sent after it), and each
    # child names its parent; the index is published once every child is
    children: list[int] = []
    parent: int = -1
    # registry://: the repository and tag this image goes to (a bulk copy puts each image
    # below the destination's prefix)
    dest_name: str = ""
    dest_tag: str | None = None
    # --referrers: the top-level image lists its referrers (published after it is present by
    # digest and before its tag); each referrer names the digest it refers to, or, for a
    # cosign companion (`sha256-<hex>.sig`), the tag it is published under
    referrers: list[int] = []
    referrer_of: str = ""
    companion_tag: str = ""
    # the top-level image's referrers that the destination has already: subject digest →
    # their descriptors (JSON), for a destination whose referrers tag needs them listed
    known_referrers: dict[str, list[str]] = {}
    # the manifest's own `subject` (an OCI 1.1 referrer copied as an image of its own)
    subject: str = ""
    # an index copied without some entries (attestations, where image semantics are needed)
    dropped: list[str] = []
    # not a container image: its artifactType (or config media type), for messages
    artifact: str = ""
    # said in the image's result line (referrers that could not be copied, say)
    notes: list[str] = []


class LayerDesc(msgspec.Struct, tag=True):
    """One layer on its way through the stages."""

    image_id: int
    index: int
    digest: str
    size: int
    media_type: str
    compression: str
    path: str = ""
    offset: int = -1  # >= 0: the bytes go into `path` at this offset (a tarball region)
    diff_id: str | None = None
    present: bool = False  # the destination already holds it: no bytes move
    fetched_size: int = 0  # bytes fetch wrote (it checked their sha256 as they streamed)
    source_digest: str = ""  # set when compress re-encoded the layer: the source's digest
    # a local source (tar://, oci://, dir://): the file holding the blob, for fetch to copy;
    # `local_owned` means it is our own spool copy (already hashed), free to move or delete
    local_path: str = ""
    local_owned: bool = False
    local_offset: int = 0  # where in `local_path` the blob starts (a member of a tar file)
    uncompressed_size: int = -1  # known once a filter has read the layer
    # a foreign (non-distributable) layer the source does not serve: the manifest keeps its
    # descriptor, no bytes are copied (`present` is set too)
    foreign: bool = False
    # registry://: present in this other repository of the destination (the layer cache
    # said so, a HEAD confirmed it): mounted at write time, no bytes move
    mount_from: str = ""
    # registry://: resolve did not HEAD it, as this run already found it missing and sends
    # it to another repository of the destination: write mounts it from there, or HEADs it
    # in its own repository before it uploads it (destinations.Probe.blob_state)
    assumed: bool = False
    # registry://: an announcement sent when the download starts, before its bytes: the
    # write stage uploads the spool file as it grows, and commits the blob only when this
    # layer's own (final) message says fetch verified it; never counted as the layer
    streaming: bool = False

    @property
    def in_source(self) -> bool:
        """`path` is the source's own file, handed on where it lies (compress.read_in_source):
        the user's, never ours to remove or to write beside."""
        return bool(self.local_path) and self.path == self.local_path and not self.local_owned


class ImageFailed(msgspec.Struct, tag=True):
    """An image that cannot be copied: the stage that found out, the one-line reason, and
    the error's kind, its class name in the error tree (`NotFoundError`, `DigestError`, …;
    a bug's own class, `KeyError`, …), so the statistics can count failures by kind."""

    image_id: int
    source: str
    stage: str
    reason: str
    kind: str = "OccystrapError"


class ImageDone(msgspec.Struct, tag=True):
    image_id: int
    source: str
    destination: str
    manifest_digest: str
    layers: int
    bytes: int
    skipped_layers: int
    up_to_date: bool = False
    detail: str = ""
    foreign: int = 0  # foreign layers not copied (the source does not serve them)
    referrers: int = 0  # referrers and cosign companions copied with it


class StageReport(msgspec.Struct, tag=True):
    stage: str
    items_in: int = 0
    items_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    busy_seconds: float = 0.0
    wait_in_seconds: float = 0.0
    wait_out_seconds: float = 0.0
    cpu_seconds: float = 0.0
    wall_seconds: float = 0.0
    # /proc/self/io of the stage process: *_bytes hit storage, *_chars every read,
    # write and sendfile call (pipes included; a socket's recv and send are not)
    io_read_bytes: int = 0
    io_write_bytes: int = 0
    io_read_chars: int = 0
    io_write_chars: int = 0
    # registry requests this stage made (occystrap.registry.counters.COUNTERS)
    requests: dict[str, int] = {}
    retries: int = 0
    throttled: int = 0
    bytes_received: int = 0
    bytes_sent: int = 0
    mounts: int = 0
    pauses: int = 0  # waits over a second (rate-limit budget, Retry-After, backoff), each said
    paused_seconds: float = 0.0
    # layers that moved no bytes: already at the destination
    layers_skipped: int = 0
    bytes_skipped: int = 0


class Progress(msgspec.Struct, tag=True):
    """Fetch's running count for one image, sent a few times a second at most: bytes fetched
    so far of the bytes it has been asked to fetch (layers already at the destination are
    not counted in either). Cheap enough to send always; the supervisor draws it on a TTY."""

    image_id: int
    source: str
    done: int
    total: int
    layers_done: int = 0
    layers: int = 0


class SearchHit(msgspec.Struct):
    path: str
    type: str
    size: int
    target: str | None = None


class SearchHits(msgspec.Struct, tag=True):
    """What the search filter at `position` of the chain found in one layer (compress →
    supervisor, which prints them once the run is over)."""

    image_id: int
    top: int  # the image whose outcome decides whether these are printed (an index's)
    position: int
    name: str
    tag: str
    index: int
    layer: str
    hits: list[SearchHit]


class Notice(msgspec.Struct, tag=True):
    """A line for the person watching that is not an image's outcome (stage → supervisor →
    stderr). Said at once (unless -q): a wait longer than a second, with how long and why.
    With `verbose`, collected and said at the end with -v only: something worth knowing
    about a source that is not a failure (an archive whose index.json disagrees with its
    manifest.json, read the way `docker load` reads it)."""

    text: str
    stage: str = ""
    source: str = ""
    verbose: bool = False


class StageCrashed(msgspec.Struct, tag=True):
    stage: str
    error: str
    traceback: str


Message = (
    ImagePlan
    | LayerDesc
    | ImageFailed
    | ImageDone
    | StageReport
    | Progress
    | SearchHits
    | Notice
    | StageCrashed
)

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Message)


def encode(message: Message) -> bytes:
    """msgpack bytes of `message` (never empty: the channels' end marker is b"")."""
    return _encoder.encode(message)


def decode(data: bytes) -> Message:
    """The message `data` encodes; msgspec.DecodeError when it is not one."""
    return _decoder.decode(data)
