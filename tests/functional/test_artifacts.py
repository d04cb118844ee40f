"""Everything a registry holds: attested indexes, Helm charts, cosign signatures, OCI 1.1
artifacts with a subject, nested indexes and foreign layers, copied byte-exact between real
registries and through OCI layouts; image-only destinations refuse artifacts cleanly.

Sources are built by tools/artifactbuilder.py and pushed to the worker's real registry;
copies are read back with skopeo (`inspect --raw`) as an independent client.
"""

from __future__ import annotations

import hashlib
import json

import httpx
import pytest

from tests.faultproxy import FaultProxy
from tools import artifactbuilder as ab
from tools.imagebuilder import DEFAULT_PLATFORMS
from tools.testregistry import TestRegistry

SIZES = [40_000, 20_000]


def tag_of(digest: str, suffix: str = "") -> str:
    return f"sha256-{digest[7:]}{suffix}"


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def shapes(registry, tmp_path_factory):
    """repo:tag → the node pushed there (names below art/, unique to this module)."""
    work = tmp_path_factory.mktemp("artifacts")
    found: dict[str, ab.Node] = {
        "art/attested:1.4": ab.attested_index(work, 1301, DEFAULT_PLATFORMS[:2], SIZES),
        "art/attested-docker:1.4": ab.attested_index(
            work, 1302, DEFAULT_PLATFORMS[:2], SIZES, oci=False
        ),
        "art/charts/web:0.3.1": ab.helm_chart(work),
        "art/charts/web-plain:0.3.1": ab.helm_chart(work, "web-plain", provenance=False),
        "art/nested:1.0": ab.nested_index(work, 1303, [30_000]),
        "art/foreign:1.0": ab.foreign_layer_image(work, 1304),
        "art/empty:1.0": ab.sbom_artifact(work, None, seed=1305),
    }
    for ref, node in found.items():
        name, tag = ref.split(":")
        ab.push(registry.url, name, tag, node)
    return found


@pytest.fixture(scope="module")
def signed(registry, tmp_path_factory):
    """art/signed:2.0, an attested index with cosign's signature, attestation and SBOM
    companions (`sha256-<hex>.sig/.att/.sbom`), an SBOM and an index artifact whose subject
    is the index, listed in the referrers tag (distribution 2.8 has no referrers API), and
    an SBOM of the amd64 image."""
    work = tmp_path_factory.mktemp("signed")
    index = ab.attested_index(work, 1310, DEFAULT_PLATFORMS[:2], SIZES)
    ab.push(registry.url, "art/signed", "2.0", index)
    companions = {}
    for suffix in (".sig", ".att", ".sbom"):
        companions[suffix] = ab.cosign_signature(work, index.digest, suffix=suffix)
        ab.push(registry.url, "art/signed", tag_of(index.digest, suffix), companions[suffix])
    sbom = ab.sbom_artifact(work, index, seed=1311)
    bundle = ab.referrer_index(work, index, seed=1314)
    for referrer in (sbom, bundle):
        ab.push(registry.url, "art/signed", None, referrer)
    ab.push_raw(
        registry.url, "art/signed", tag_of(index.digest), ab.referrers_index([sbom, bundle])
    )
    child = index.children[0]
    child_sbom = ab.sbom_artifact(work, child, seed=1312, artifact_type="application/vnd.x+json")
    ab.push(registry.url, "art/signed", None, child_sbom)
    ab.push_raw(
        registry.url, "art/signed", tag_of(ab.digest_of(child)), ab.referrers_index([child_sbom])
    )
    return {
        "index": index,
        "sig": companions[".sig"],
        "companions": companions,
        "sbom": sbom,
        "bundle": bundle,
        "child_sbom": child_sbom,
    }


ALL_REFERRERS = 6  # three companions, the SBOM, the bundle index, the child's SBOM


@pytest.fixture(scope="module")
def mirror():
    with TestRegistry() as reg:
        yield reg


def raw(skopeo, ref: str) -> bytes:
    r = skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{ref}")
    assert r.returncode == 0, r.stderr
    return r.stdout.encode()


def assert_same_tree(skopeo, host: str, name: str, node: ab.Node) -> None:
    """Every manifest of `node` is at host/name by digest, byte for byte."""
    assert raw(skopeo, f"{host}/{name}@{ab.digest_of(node)}") == node.manifest
    for child in getattr(node, "children", None) or getattr(node, "images", None) or []:
        assert_same_tree(skopeo, host, name, child)


SHAPES = [
    "art/attested:1.4",
    "art/attested-docker:1.4",
    "art/charts/web:0.3.1",
    "art/charts/web-plain:0.3.1",
    "art/nested:1.0",
    "art/foreign:1.0",
    "art/empty:1.0",
]


@pytest.mark.parametrize("ref", SHAPES)
def test_registry_to_registry_is_byte_exact(occystrap_cli, registry, mirror, shapes, skopeo, ref):
    name, tag = ref.split(":")
    r = occystrap_cli(
        "--insecure",
        "process",
        f"registry://{registry.host}/{ref}",
        f"registry://{mirror.host}/{ref}",
    )
    assert r.returncode == 0, r.stderr
    node = shapes[ref]
    assert raw(skopeo, f"{mirror.host}/{ref}") == node.manifest
    assert_same_tree(skopeo, mirror.host, name, node)
    if ref == "art/foreign:1.0":
        assert "1 foreign layer not copied" in r.stderr
        absent = node.absent[0]
        got = httpx.head(f"{mirror.url}/v2/{name}/blobs/{absent.digest}")
        assert got.status_code == 404  # never fetched, from the source or the URL


@pytest.mark.parametrize("ref", SHAPES)
def test_through_an_oci_layout_is_byte_exact(
    occystrap_cli, registry, mirror, shapes, skopeo, tmp_path, ref
):
    layout = tmp_path / "layout"
    name, tag = ref.split(":")
    r = occystrap_cli(
        "--insecure",
        "--all-platforms",
        "process",
        f"registry://{registry.host}/{ref}",
        f"oci://{layout}",
    )
    assert r.returncode == 0, r.stderr
    index = json.loads((layout / "index.json").read_text())
    assert [m["digest"] for m in index["manifests"]] == [ab.digest_of(shapes[ref])]
    back = f"{mirror.host}/via-oci/{name}:{tag}"
    r = occystrap_cli("--insecure", "process", f"oci://{layout}", f"registry://{back}")
    assert r.returncode == 0, r.stderr
    assert raw(skopeo, back) == shapes[ref].manifest
    assert_same_tree(skopeo, mirror.host, f"via-oci/{name}", shapes[ref])


@pytest.mark.parametrize(
    "dest", ["tar://{tmp}/out.tar", "dir://{tmp}/out", "tar://{tmp}/legacy.tar?format=v1.2"]
)
def test_image_destinations_refuse_artifacts(occystrap_cli, registry, shapes, tmp_path, dest):
    dest = dest.format(tmp=tmp_path)
    r = occystrap_cli(
        "--insecure", "process", f"registry://{registry.host}/art/charts/web:0.3.1", dest
    )
    assert r.returncode == 1
    errors = [line for line in r.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and "Traceback" not in r.stderr
    assert "OCI artifact (application/vnd.cncf.helm.config.v1+json)" in errors[0]
    assert "registry:// or oci://" in errors[0]
    assert not any(p.name.startswith(("out", "legacy")) for p in tmp_path.iterdir())


@pytest.mark.parametrize("ref", ["art/attested:1.4", "art/attested-docker:1.4", "art/nested:1.0"])
def test_attested_index_to_tar_and_dir_picks_the_platform_image(
    occystrap_cli, registry, shapes, skopeo, tmp_path, ref
):
    node = shapes[ref]
    amd64 = node.children[0] if ref != "art/nested:1.0" else node.children[0].children[0]
    r = occystrap_cli(
        "--insecure",
        "process",
        f"registry://{registry.host}/{ref}",
        f"tar://{tmp_path / 'out.tar'}",
    )
    assert r.returncode == 0, r.stderr
    assert ab.digest_of(amd64) in r.stderr
    got = skopeo("inspect", "--raw", f"docker-archive:{tmp_path / 'out.tar'}")
    assert got.returncode == 0, got.stderr
    assert json.loads(got.stdout)["config"]["digest"] == amd64.config.digest
    r = occystrap_cli(
        "--insecure",
        "--platform",
        "linux/arm64",
        "process",
        f"registry://{registry.host}/{ref}",
        f"dir://{tmp_path / 'dir'}",
    )
    assert r.returncode == 0, r.stderr
    manifest = json.loads((tmp_path / "dir" / "manifest.json").read_text())
    assert "arm64" in (tmp_path / "dir" / manifest[0]["Config"]).read_text()


def test_transformations_leave_attestations_out(occystrap_cli, registry, mirror, shapes, skopeo):
    dest = f"{mirror.host}/zstd/attested:1.4"
    r = occystrap_cli(
        "--insecure",
        "-v",
        "--compression",
        "zstd",
        "process",
        f"registry://{registry.host}/art/attested:1.4",
        f"registry://{dest}",
    )
    assert r.returncode == 0, r.stderr
    assert r.stderr.count("leaving out attestation manifest") == 2
    assert "2 attestation manifests left out" in r.stderr
    index = json.loads(raw(skopeo, dest))
    assert [m["platform"]["os"] for m in index["manifests"]] == ["linux", "linux"]
    r = occystrap_cli(
        "--insecure",
        "--compression",
        "zstd",
        "process",
        f"registry://{registry.host}/art/charts/web:0.3.1",
        f"registry://{mirror.host}/zstd/web:0.3.1",
    )
    assert r.returncode == 1 and "--compression needs an image" in r.stderr


def test_info_check_and_search(occystrap_cli, registry, shapes):
    src = f"registry://{registry.host}"
    r = occystrap_cli("--insecure", "info", f"{src}/art/attested:1.4")
    assert r.returncode == 0, r.stderr
    assert "Platforms:   2 (and 2 attestation manifests)" in r.stdout
    assert "attestation of linux/amd64" in r.stdout
    r = occystrap_cli("--insecure", "info", "-O", "json", f"{src}/art/charts/web:0.3.1")
    doc = json.loads(r.stdout)
    assert doc["image"] is None
    assert doc["artifact"]["type"] == ab.HELM_CONFIG
    assert [b["media_type"] for b in doc["artifact"]["blobs"]] == [ab.HELM_CHART, ab.HELM_PROV]
    r = occystrap_cli("--insecure", "info", f"{src}/art/empty:1.0")
    assert f"Artifact:    {ab.SPDX} (not a container image)" in r.stdout
    r = occystrap_cli("--insecure", "check", f"{src}/art/charts/web:0.3.1")
    assert r.returncode == 0 and "OCI artifact" in r.stdout, r.stdout + r.stderr
    r = occystrap_cli("--insecure", "check", f"{src}/art/attested:1.4")
    assert r.returncode == 0, r.stdout
    r = occystrap_cli("--insecure", "check", f"{src}/art/foreign:1.0")
    assert r.returncode == 0 and "a foreign layer the source does not serve" in r.stdout
    r = occystrap_cli("--insecure", "search", f"{src}/art/charts/web:0.3.1", "*")
    assert r.returncode == 1 and "not a container image" in r.stderr


def test_index_nested_past_the_bound_is_refused(occystrap_cli, registry, shapes, tmp_path):
    node: ab.Node = shapes["art/charts/web-plain:0.3.1"]
    for _ in range(9):
        body = json.dumps(
            {"schemaVersion": 2, "mediaType": ab.OCI_INDEX, "manifests": [ab.descriptor(node)]}
        ).encode()
        node = ab.BuiltTree(body, ab.OCI_INDEX, sha(body), [node])
    ab.push(registry.url, "art/deep", "1.0", node)
    for dest in (f"registry://{registry.host}/art/deep-copy:1.0", f"tar://{tmp_path}/x.tar"):
        r = occystrap_cli("--insecure", "process", f"registry://{registry.host}/art/deep:1.0", dest)
        assert r.returncode == 1
        assert "nested more than 8 levels deep" in r.stderr and "Traceback" not in r.stderr


# -- referrers --------------------------------------------------------------------------------


def test_referrers_with_the_tag_schema(occystrap_cli, registry, mirror, signed, skopeo):
    """distribution 2.8 has no referrers API: the source's referrers tag is read, and the
    destination's is written (read-modify-write); cosign's tags are copied as tags."""
    index = signed["index"]
    dest = f"{mirror.host}/ref/signed"
    r = occystrap_cli(
        "--insecure",
        "--referrers",
        "process",
        f"registry://{registry.host}/art/signed:2.0",
        f"registry://{dest}:2.0",
    )
    assert r.returncode == 0, r.stderr
    assert f"{ALL_REFERRERS} referrers copied" in r.stderr
    assert raw(skopeo, f"{dest}:2.0") == index.manifest
    for suffix, companion in signed["companions"].items():
        assert raw(skopeo, f"{dest}:{tag_of(index.digest, suffix)}") == companion.manifest
    assert raw(skopeo, f"{dest}@{signed['sbom'].digest}") == signed["sbom"].manifest
    assert_same_tree(skopeo, mirror.host, "ref/signed", signed["bundle"])
    listing = json.loads(raw(skopeo, f"{dest}:{tag_of(index.digest)}"))
    assert [(m["digest"], m["artifactType"]) for m in listing["manifests"]] == [
        (signed["sbom"].digest, ab.SPDX),
        (signed["bundle"].digest, "application/vnd.example.bundle.v1"),
    ]
    assert listing["manifests"][0]["annotations"] == signed["sbom"].annotations
    child = json.loads(raw(skopeo, f"{dest}:{tag_of(ab.digest_of(index.children[0]))}"))
    assert [m["digest"] for m in child["manifests"]] == [signed["child_sbom"].digest]

    # A re-run with nothing new: the source answers the image's manifest, its tag list and
    # the two referrers tags; the destination one HEAD for the image, one per referrer, the
    # referrers tags to check; nothing is fetched or pushed.
    with FaultProxy(registry.port) as src, FaultProxy(mirror.port) as dst:
        r = occystrap_cli(
            "--insecure",
            "--referrers",
            "process",
            f"registry://{src.host}/art/signed:2.0",
            f"registry://{dst.host}/ref/signed:2.0",
        )
        src_requests, dest_requests = len(src.request_times), len(dst.request_times)
    assert r.returncode == 0, r.stderr
    assert "1 already up to date" in r.stderr
    # source: the manifest, the API probe, the tag list, 2 referrers tags, 3 companions
    assert src_requests <= 1 + 1 + 1 + 2 + 3
    # destination: the image's HEAD, one per referrer, the API probe, 2 referrers tags
    assert dest_requests <= 1 + ALL_REFERRERS + 1 + 2


def test_a_rerun_repairs_the_referrers_tag(occystrap_cli, registry, mirror, signed, skopeo):
    """A referrer already at the destination (an earlier run died before updating the tag,
    or another tool copied it) is listed in the referrers tag all the same."""
    index, sbom = signed["index"], signed["sbom"]
    dest = f"{mirror.host}/ref/repaired"
    copied = skopeo(
        "copy",
        "--src-tls-verify=false",
        "--dest-tls-verify=false",
        "--preserve-digests",
        f"docker://{registry.host}/art/signed@{sbom.digest}",
        f"docker://{dest}@{sbom.digest}",
    )
    assert copied.returncode == 0, copied.stderr
    r = occystrap_cli(
        "--insecure",
        "--referrers",
        "process",
        f"registry://{registry.host}/art/signed:2.0",
        f"registry://{dest}:2.0",
    )
    assert r.returncode == 0, r.stderr
    listing = json.loads(raw(skopeo, f"{dest}:{tag_of(index.digest)}"))
    assert {m["digest"] for m in listing["manifests"]} == {sbom.digest, signed["bundle"].digest}


def test_a_referrers_tag_holding_something_else_is_left_alone(
    occystrap_cli, registry, mirror, signed, shapes, skopeo
):
    index = signed["index"]
    dest = f"{mirror.host}/ref/occupied"
    chart = shapes["art/charts/web-plain:0.3.1"]
    ab.push(mirror.url, "ref/occupied", tag_of(index.digest), chart)
    r = occystrap_cli(
        "--insecure",
        "--referrers",
        "process",
        f"registry://{registry.host}/art/signed:2.0",
        f"registry://{dest}:2.0",
    )
    assert r.returncode == 0, r.stderr
    assert f"referrers tag {tag_of(index.digest)}: it holds something other" in r.stderr
    assert raw(skopeo, f"{dest}:{tag_of(index.digest)}") == chart.manifest


def test_publication_order_and_a_failing_referrer(occystrap_cli, registry, mirror, signed, skopeo):
    """Children, then the index by digest, then each referrer after its subject, the tag
    last; a referrer the destination refuses fails the image, and the tag never goes up."""
    from tests.referrersapi import ReferrersAPI

    index = signed["index"]
    with ReferrersAPI(mirror.port) as dst:
        r = occystrap_cli(
            "--insecure",
            "--referrers",
            "process",
            f"registry://{registry.host}/art/signed:2.0",
            f"registry://{dst.host}/ref/ordered:2.0",
        )
        assert r.returncode == 0, r.stderr
        puts = [
            path.rsplit("/", 1)[1]
            for method, path in dst.requests
            if method == "PUT" and "/manifests/" in path
        ]
    assert puts[-1] == "2.0"
    assert puts.index(index.digest) < min(
        puts.index(signed["sbom"].digest), puts.index(tag_of(index.digest, ".sig"))
    )
    assert puts.index(ab.digest_of(index.children[0])) < puts.index(index.digest)
    assert puts.index(signed["bundle"].children[0].digest) < puts.index(signed["bundle"].digest)

    with ReferrersAPI(mirror.port, refuse=frozenset({signed["sbom"].digest})) as dst:
        r = occystrap_cli(
            "--insecure",
            "--referrers",
            "process",
            f"registry://{registry.host}/art/signed:2.0",
            f"registry://{dst.host}/ref/refused:2.0",
        )
    assert r.returncode == 1
    line = next(x for x in r.stderr.splitlines() if "error" in x)
    assert line.startswith(
        f"occystrap: error: registry://{registry.host}/art/signed:2.0: "
        f"referrer {signed['sbom'].digest}"
    )
    missing = skopeo(
        "inspect", "--raw", "--tls-verify=false", f"docker://{mirror.host}/ref/refused:2.0"
    )
    assert missing.returncode != 0


def test_referrers_beyond_the_depth_bound(occystrap_cli, registry, mirror, tmp_path):
    work = tmp_path / "work"
    image = ab.attested_index(work, 1340, DEFAULT_PLATFORMS[:1], SIZES)
    ab.push(registry.url, "art/deep-refs", "1.0", image)
    subject: ab.Node = image
    for n in range(10):  # an SBOM of an SBOM of … ten deep
        sbom = ab.sbom_artifact(work, subject, seed=1341 + n)
        ab.push(registry.url, "art/deep-refs", None, sbom)
        ab.push_raw(
            registry.url, "art/deep-refs", tag_of(ab.digest_of(subject)), ab.referrers_index([sbom])
        )
        subject = sbom
    r = occystrap_cli(
        "--insecure",
        "--referrers",
        "process",
        f"registry://{registry.host}/art/deep-refs:1.0",
        f"registry://{mirror.host}/ref/deep:1.0",
    )
    assert r.returncode == 0, r.stderr
    assert "8 referrers copied" in r.stderr and "more than 8 levels of referrers" in r.stderr


def test_referrers_type_filter(occystrap_cli, registry, mirror, signed, skopeo):
    dest = f"{mirror.host}/ref/filtered"
    r = occystrap_cli(
        "--insecure",
        "--referrers-type",
        ab.SPDX,
        "process",
        f"registry://{registry.host}/art/signed:2.0",
        f"registry://{dest}:2.0",
    )
    assert r.returncode == 0, r.stderr
    assert "1 referrer copied" in r.stderr
    assert raw(skopeo, f"{dest}@{signed['sbom'].digest}") == signed["sbom"].manifest
    missing = skopeo(
        "inspect",
        "--raw",
        "--tls-verify=false",
        f"docker://{dest}:{tag_of(signed['index'].digest, '.sig')}",
    )
    assert missing.returncode != 0


def test_referrers_through_an_oci_layout(occystrap_cli, registry, mirror, signed, skopeo, tmp_path):
    layout = tmp_path / "layout"
    r = occystrap_cli(
        "--insecure",
        "--referrers",
        "--all-platforms",
        "process",
        f"registry://{registry.host}/art/signed:2.0",
        f"oci://{layout}",
    )
    assert r.returncode == 0, r.stderr
    entries = json.loads((layout / "index.json").read_text())["manifests"]
    refs = {(m.get("annotations") or {}).get("org.opencontainers.image.ref.name") for m in entries}
    assert refs == {
        "2.0",
        None,
        *(tag_of(signed["index"].digest, suffix) for suffix in (".sig", ".att", ".sbom")),
    }
    dest = f"{mirror.host}/ref/from-oci"
    r = occystrap_cli(
        "--insecure", "--referrers", "process", f"oci://{layout}", f"registry://{dest}:2.0"
    )
    assert r.returncode == 0, r.stderr
    assert "Summary: 1/1 images" in r.stderr  # the referrers are not images of their own
    assert raw(skopeo, f"{dest}@{signed['child_sbom'].digest}") == signed["child_sbom"].manifest
    assert raw(skopeo, f"{dest}:{tag_of(signed['index'].digest, '.sig')}") == signed["sig"].manifest


def test_referrers_api(occystrap_cli, registry, mirror, tmp_path, skopeo):
    """Against the spec stand-in: discovery through `GET /v2/<name>/referrers/<digest>`,
    its pages followed, and a destination that answers OCI-Subject needs no referrers tag."""
    from tests.referrersapi import ReferrersAPI

    work = tmp_path / "work"
    image = ab.attested_index(work, 1320, DEFAULT_PLATFORMS[:1], SIZES)
    sboms = [ab.sbom_artifact(work, image, seed=1321 + n) for n in range(3)]
    with ReferrersAPI(registry.port, page_size=2) as src, ReferrersAPI(mirror.port) as dst:
        ab.push(f"http://{src.host}", "art/api", "1.0", image)
        for sbom in sboms:
            ab.push(f"http://{src.host}", "art/api", None, sbom)  # recorded by the stand-in
        r = occystrap_cli(
            "--insecure",
            "--referrers",
            "process",
            f"registry://{src.host}/art/api:1.0",
            f"registry://{dst.host}/api/app:1.0",
        )
        assert r.returncode == 0, r.stderr
        assert "3 referrers copied" in r.stderr
        assert ("GET", f"/v2/art/api/referrers/{image.digest}?page=1") in src.requests
        listed = httpx.get(f"http://{dst.host}/v2/api/app/referrers/{image.digest}").json()
        assert {m["digest"] for m in listed["manifests"]} == {s.digest for s in sboms}
    assert raw(skopeo, f"{mirror.host}/api/app@{sboms[2].digest}") == sboms[2].manifest
    no_tag = skopeo(
        "inspect",
        "--raw",
        "--tls-verify=false",
        f"docker://{mirror.host}/api/app:{tag_of(image.digest)}",
    )
    assert no_tag.returncode != 0  # the registry indexes its referrers itself


def test_broken_referrers_are_left_out_and_said(occystrap_cli, registry, mirror, tmp_path, skopeo):
    """A referrers tag that lists a manifest the registry lacks, the subject itself (a loop)
    and an artifact whose blob is gone: the image and its good referrer are copied, the
    rest is named in the result line."""
    work = tmp_path / "work"
    image = ab.attested_index(work, 1330, DEFAULT_PLATFORMS[:1], SIZES)
    good = ab.sbom_artifact(work, image, seed=1331)
    gone = ab.sbom_artifact(work, image, seed=1332)  # deleted once listed
    blobless = ab.sbom_artifact(work, image, seed=1333)
    name = "art/broken-refs"
    ab.push(registry.url, name, "1.0", image)
    for referrer in (good, gone, blobless):
        ab.push(registry.url, name, None, referrer)
    loop = ab.BuiltManifest(image.manifest, ab.OCI_INDEX, image.digest, [])
    ab.push_raw(
        registry.url, name, tag_of(image.digest), ab.referrers_index([gone, good, blobless, loop])
    )
    # The registry checks what an index lists when it is pushed: break it afterwards.
    for path in (f"manifests/{gone.digest}", f"blobs/{blobless.blobs[1].digest}"):
        assert httpx.delete(f"{registry.url}/v2/{name}/{path}").status_code == 202
    dest = f"{mirror.host}/ref/broken"
    r = occystrap_cli(
        "--insecure",
        "--referrers",
        "process",
        f"registry://{registry.host}/art/broken-refs:1.0",
        f"registry://{dest}:1.0",
    )
    assert r.returncode == 0, r.stderr
    assert "1 referrer copied" in r.stderr
    assert f"referrer {gone.digest[:19]} of {image.digest[:19]} not copied" in r.stderr
    assert "not served by the source" in r.stderr
    assert raw(skopeo, f"{dest}@{good.digest}") == good.manifest


def test_bulk_mirror_with_referrers(occystrap_cli, registry, mirror, signed, shapes, skopeo):
    r = occystrap_cli(
        "--insecure",
        "--referrers",
        "-J",
        "4",
        "process",
        f"registry://{registry.host}/art/sig*:*",
        f"registry://{mirror.host}/bulk",
    )
    assert r.returncode == 0, r.stderr
    # the signature and the referrers tags travel with their image, not as images
    assert "Summary: 1/1 images" in r.stderr and f"{ALL_REFERRERS} referrers" in r.stderr
    index = signed["index"]
    assert (
        raw(skopeo, f"{mirror.host}/bulk/art/signed:{tag_of(index.digest, '.sig')}")
        == signed["sig"].manifest
    )
    r = occystrap_cli(
        "--insecure",
        "--referrers",
        "process",
        f"registry://{registry.host}/art/sig*:*",
        f"registry://{mirror.host}/bulk",
    )
    assert r.returncode == 0 and "1 already up to date" in r.stderr, r.stderr


def test_referrers_need_a_registry_or_oci_destination(occystrap_cli, registry, signed, tmp_path):
    r = occystrap_cli(
        "--insecure",
        "--referrers",
        "process",
        f"registry://{registry.host}/art/signed:2.0",
        f"tar://{tmp_path}/x.tar",
    )
    assert r.returncode == 2 and "--referrers needs a registry:// or oci://" in r.stderr
    r = occystrap_cli(
        "--insecure",
        "--referrers",
        "--compression",
        "gzip",
        "process",
        f"registry://{registry.host}/art/signed:2.0",
        f"oci://{tmp_path}/layout",
    )
    assert r.returncode == 2 and "cannot be combined with --compression" in r.stderr
    r = occystrap_cli(
        "--insecure",
        "--referrers",
        "--verify-full",
        "process",
        f"registry://{registry.host}/art/signed:2.0",
        f"oci://{tmp_path}/layout",
    )
    assert r.returncode == 2 and "cannot be combined with --verify-full" in r.stderr
    assert not (tmp_path / "x.tar").exists() and not (tmp_path / "layout").exists()


def test_mirror_spec_referrers_field(occystrap_cli, registry, mirror, signed, skopeo, tmp_path):
    spec = tmp_path / "mirror.yaml"
    spec.write_text(
        "mirrors:\n"
        f"  - source: registry://{registry.host}/art/signed:2.0\n"
        f"    destination: registry://{mirror.host}/spec\n"
        "    referrers: true\n"
    )
    r = occystrap_cli("--insecure", "process", "--from-file", str(spec))
    assert r.returncode == 0, r.stderr
    assert f"{ALL_REFERRERS} referrers copied" in r.stderr
    index = signed["index"]
    assert (
        raw(skopeo, f"{mirror.host}/spec/art/signed:{tag_of(index.digest, '.sig')}")
        == signed["sig"].manifest
    )
