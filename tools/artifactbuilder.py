"""What registries hold besides plain images, built deterministically for tests: attested
indexes (as `docker buildx` pushes them), Helm charts, cosign signatures, OCI 1.1 artifacts
with a `subject`, nested indexes and foreign layers.

Every shape is made from our own seeded bytes with the media types and annotations the real
tools write (buildx's attestation storage, Helm's OCI support, cosign's signature format, the
image-spec 1.1 artifact guidance), so tests can assert byte-exact copies of each. Nothing is
fetched from anywhere; a foreign layer's `urls` point at a closed loopback port.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass, field

import httpx

from tools.imagebuilder import (
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    OCI_CONFIG,
    OCI_INDEX,
    OCI_MANIFEST,
    Blob,
    BuiltImage,
    BuiltIndex,
    Platform,
    _client,
    _encode,
    _platform_doc,
    _write_json_blob,
    build_image,
    push_blob,
    push_manifest,
    sha256_digest,
)

IN_TOTO = "application/vnd.in-toto+json"
HELM_CONFIG = "application/vnd.cncf.helm.config.v1+json"
HELM_CHART = "application/vnd.cncf.helm.chart.content.v1.tar+gzip"
HELM_PROV = "application/vnd.cncf.helm.chart.provenance.v1.prov"
COSIGN_SIG = "application/vnd.dev.cosign.simplesigning.v1+json"
DSSE = "application/vnd.dsse.envelope.v1+json"  # cosign attest's layers (.att)
COSIGN_LAYER = {".sig": COSIGN_SIG, ".att": DSSE, ".sbom": "text/spdx+json"}
SPDX = "application/spdx+json"
EMPTY = "application/vnd.oci.empty.v1+json"
FOREIGN = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
CLOSED_URL = "http://127.0.0.1:9/never-fetched"  # the discard port: a fetch would fail


@dataclass(frozen=True)
class BuiltManifest:
    """Any single manifest (an artifact, say): its exact bytes and the blobs it names.
    `absent` blobs are named but never pushed (a foreign layer)."""

    manifest: bytes
    media_type: str
    digest: str
    blobs: list[Blob]
    absent: tuple[Blob, ...] = ()
    artifact_type: str | None = None
    annotations: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class BuiltTree:
    """An index whose entries may be images, artifacts or indexes."""

    manifest: bytes
    media_type: str
    digest: str
    children: list[Node]


Node = BuiltImage | BuiltIndex | BuiltManifest | BuiltTree


def digest_of(node: Node) -> str:
    return node.manifest_digest if isinstance(node, BuiltImage) else node.digest


def media_type_of(node: Node) -> str:
    return node.manifest_media_type if isinstance(node, BuiltImage) else node.media_type


def descriptor(node: Node, **extra: object) -> dict[str, object]:
    return {
        "mediaType": media_type_of(node),
        "size": len(node.manifest),
        "digest": digest_of(node),
        **extra,
    }


def _json(data: object) -> bytes:
    return json.dumps(data, separators=(",", ":"), sort_keys=True).encode()


def attestation_for(workdir: str | os.PathLike[str], image: BuiltImage) -> BuiltManifest:
    """A buildx provenance attestation manifest for `image`: an OCI image config over one
    in-toto statement layer (not a tar)."""
    statement = _json(
        {
            "_type": "https://in-toto.io/Statement/v0.1",
            "predicateType": "https://slsa.dev/provenance/v0.2",
            "subject": [{"name": "_", "digest": {"sha256": image.manifest_digest[7:]}}],
            "predicate": {"builder": {"id": "occystrap-test"}, "buildType": "test"},
        }
    )
    layer = _write_json_blob(workdir, statement, IN_TOTO)
    config = _write_json_blob(
        workdir,
        _json(
            {
                "architecture": "unknown",
                "os": "unknown",
                "config": {},
                "rootfs": {"type": "layers", "diff_ids": [layer.digest]},
            }
        ),
        OCI_CONFIG,
    )
    body = _encode(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": config.descriptor(),
            "layers": [
                {
                    **layer.descriptor(),
                    "annotations": {
                        "in-toto.io/predicate-type": "https://slsa.dev/provenance/v0.2"
                    },
                }
            ],
        }
    )
    return BuiltManifest(body, OCI_MANIFEST, sha256_digest(body), [config, layer])


def attestation_entry(attestation: BuiltManifest, image: BuiltImage) -> dict[str, object]:
    return descriptor(
        attestation,
        platform={"architecture": "unknown", "os": "unknown"},
        annotations={
            "vnd.docker.reference.digest": image.manifest_digest,
            "vnd.docker.reference.type": "attestation-manifest",
        },
    )


def attested_index(
    workdir: str | os.PathLike[str],
    seed: int,
    platforms: Sequence[Platform],
    layer_sizes: Sequence[int],
    *,
    oci: bool = True,
) -> BuiltTree:
    """What `docker buildx build --platform … --push` makes by default: an index (OCI, or a
    Docker manifest list with `oci=False`) holding each platform's image followed by its
    provenance attestation manifest (platform unknown/unknown)."""
    children: list[Node] = []
    entries = []
    for platform in platforms:
        image = build_image(
            workdir, seed, layer_sizes, oci=oci, platform=platform, shared_base_key=f"{seed}:shared"
        )
        attestation = attestation_for(workdir, image)
        children += [image, attestation]
        entries += [
            descriptor(image, platform=_platform_doc(platform)),
            attestation_entry(attestation, image),
        ]
    media_type = OCI_INDEX if oci else DOCKER_MANIFEST_LIST
    body = _encode({"schemaVersion": 2, "mediaType": media_type, "manifests": entries})
    return BuiltTree(body, media_type, sha256_digest(body), children)


def nested_index(
    workdir: str | os.PathLike[str], seed: int, layer_sizes: Sequence[int]
) -> BuiltTree:
    """An index of indexes, as containerd and Docker's containerd image store write: the
    top index lists (without platforms) one attested index per platform."""
    inner = [
        attested_index(workdir, seed + n, [platform], layer_sizes)
        for n, platform in enumerate([("linux", "amd64", None), ("linux", "arm64", "v8")])
    ]
    body = _encode(
        {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [descriptor(i) for i in inner]}
    )
    return BuiltTree(body, OCI_INDEX, sha256_digest(body), list(inner))


def _chart_tgz(name: str, version: str) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        files = {
            f"{name}/Chart.yaml": f"apiVersion: v2\nname: {name}\nversion: {version}\n",
            f"{name}/values.yaml": "replicaCount: 1\nimage: registry.example/app:1.4\n",
            f"{name}/templates/deployment.yaml": "kind: Deployment\napiVersion: apps/v1\n",
        }
        for path, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(path)
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            tar.addfile(info, io.BytesIO(data))
    return gzip.compress(raw.getvalue(), mtime=0)


def helm_chart(
    workdir: str | os.PathLike[str],
    name: str = "web",
    version: str = "0.3.1",
    *,
    provenance: bool = True,
) -> BuiltManifest:
    """A Helm chart as `helm push` stores it: Helm's config, the chart archive and (signed
    charts) the provenance file. Helm writes no top-level mediaType."""
    config = _write_json_blob(
        workdir, _json({"apiVersion": "v2", "name": name, "version": version}), HELM_CONFIG
    )
    chart = _write_json_blob(workdir, _chart_tgz(name, version), HELM_CHART)
    layers = [chart]
    if provenance:
        prov = (
            f"-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA512\n\nname: {name}\n"
            f"version: {version}\nfiles:\n  {name}-{version}.tgz: "
            f"{chart.digest}\n-----BEGIN PGP SIGNATURE-----\n\nwsBcBAEBCgAQ\n"
            "-----END PGP SIGNATURE-----\n"
        ).encode()
        layers.append(_write_json_blob(workdir, prov, HELM_PROV))
    body = _encode(
        {
            "schemaVersion": 2,
            "config": config.descriptor(),
            "layers": [layer.descriptor() for layer in layers],
            "annotations": {
                "org.opencontainers.image.title": name,
                "org.opencontainers.image.version": version,
            },
        }
    )
    return BuiltManifest(body, OCI_MANIFEST, sha256_digest(body), [config, *layers])


def cosign_signature(
    workdir: str | os.PathLike[str],
    subject: str,
    reference: str = "127.0.0.1/team/app",
    suffix: str = ".sig",
) -> BuiltManifest:
    """What `cosign sign` pushes as `sha256-<hex>.sig` (with `suffix` ".att" what
    `cosign attest` pushes, ".sbom" what `cosign attach sbom` pushes): an OCI image config
    over one payload layer, the signature in the layer's annotations. No subject."""
    payload = _json(
        {
            "critical": {
                "identity": {"docker-reference": reference},
                "image": {"docker-manifest-digest": subject},
                "type": f"cosign container image {suffix[1:]}",
            },
            "optional": None,
        }
    )
    layer = _write_json_blob(workdir, payload, COSIGN_LAYER[suffix])
    config = _write_json_blob(
        workdir,
        _json(
            {
                "architecture": "",
                "created": "0001-01-01T00:00:00Z",
                "os": "",
                "history": [{"created": "0001-01-01T00:00:00Z"}],
                "config": {},
                "rootfs": {"type": "layers", "diff_ids": [layer.digest]},
            }
        ),
        OCI_CONFIG,
    )
    annotations = {
        "dev.cosignproject.cosign/signature": "MEUCIQDtest" + subject[7:31] + "==",
        "dev.sigstore.cosign/bundle": _json({"SignedEntryTimestamp": "dGVzdA=="}).decode(),
    }
    body = _encode(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": config.descriptor(),
            "layers": [{**layer.descriptor(), "annotations": annotations}],
        }
    )
    return BuiltManifest(body, OCI_MANIFEST, sha256_digest(body), [config, layer])


def sbom_artifact(
    workdir: str | os.PathLike[str], subject: Node | None, seed: int = 1, artifact_type: str = SPDX
) -> BuiltManifest:
    """An image-spec 1.1 artifact: `artifactType`, the empty config, one SPDX document, and
    (unless None) a `subject` naming the manifest it describes."""
    empty = _write_json_blob(workdir, b"{}", EMPTY)
    sbom = _write_json_blob(
        workdir, _json({"spdxVersion": "SPDX-2.3", "name": f"sbom-{seed}", "packages": []}), SPDX
    )
    annotations = {"org.opencontainers.image.created": "2024-01-01T00:00:00Z"}
    doc: dict[str, object] = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": artifact_type,
        "config": empty.descriptor(),
        "layers": [sbom.descriptor()],
        "annotations": annotations,
    }
    if subject is not None:
        doc["subject"] = descriptor(subject)
    body = _encode(doc)
    return BuiltManifest(
        body,
        OCI_MANIFEST,
        sha256_digest(body),
        [empty, sbom],
        artifact_type=artifact_type,
        annotations=annotations,
    )


def referrer_index(workdir: str | os.PathLike[str], subject: Node, seed: int) -> BuiltTree:
    """An index that is itself a referrer (`subject` and `artifactType` on an index, as
    image-spec 1.1 allows): two SBOM artifacts under one signed bundle."""
    parts = [sbom_artifact(workdir, None, seed=seed + n) for n in range(2)]
    body = _encode(
        {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "artifactType": "application/vnd.example.bundle.v1",
            "manifests": [descriptor(p) for p in parts],
            "subject": descriptor(subject),
        }
    )
    return BuiltTree(body, OCI_INDEX, sha256_digest(body), list(parts))


def referrers_index(referrers: Sequence[Node]) -> bytes:
    """The referrers tag index (`sha256-<hex>`) listing `referrers`, as a client keeps it for
    a registry without the referrers API."""

    def entry(r: Node) -> dict[str, object]:
        kind = getattr(r, "artifact_type", None) or json.loads(r.manifest).get("artifactType")
        notes = getattr(r, "annotations", None)
        return descriptor(
            r,
            **({"artifactType": kind} if kind else {}),
            **({"annotations": notes} if notes else {}),
        )

    return _json(
        {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [entry(r) for r in referrers]}
    )


def foreign_layer_image(workdir: str | os.PathLike[str], seed: int) -> BuiltManifest:
    """A Docker image whose base layer is foreign (a Windows-style base): the manifest
    names it with `urls`, the registry never holds its bytes."""
    image = build_image(workdir, seed, [64 << 10, 32 << 10], special_entries=False)
    base = image.layers[0]
    doc = json.loads(image.manifest)
    doc["layers"][0] = {
        "mediaType": FOREIGN,
        "size": base.size,
        "digest": base.digest,
        "urls": [CLOSED_URL],
    }
    body = _encode(doc)
    return BuiltManifest(
        body,
        DOCKER_MANIFEST,
        sha256_digest(body),
        [image.config, *image.layers[1:]],
        absent=(base,),
    )


def push_node(client: httpx.Client, name: str, tag: str | None, node: Node) -> None:
    """Push children (by digest) and blobs first, then the manifest by digest and tag."""
    if isinstance(node, BuiltImage):
        blobs = node.blobs
    elif isinstance(node, BuiltManifest):
        blobs = node.blobs
    else:
        blobs = []
        for child in node.images if isinstance(node, BuiltIndex) else node.children:
            push_node(client, name, None, child)
    for blob in blobs:
        push_blob(client, name, blob)
    push_manifest(client, name, digest_of(node), node.manifest, media_type_of(node))
    if tag:
        push_manifest(client, name, tag, node.manifest, media_type_of(node))


def push(
    registry_url: str,
    name: str,
    tag: str | None,
    node: Node,
    *,
    auth: tuple[str, str] | None = None,
) -> None:
    with _client(registry_url, auth) as client:
        push_node(client, name, tag, node)


def push_raw(
    registry_url: str, name: str, reference: str, body: bytes, media_type: str = OCI_INDEX
) -> None:
    """A manifest that is only bytes (a referrers tag index)."""
    with _client(registry_url, None) as client:
        push_manifest(client, name, reference, body, media_type)
