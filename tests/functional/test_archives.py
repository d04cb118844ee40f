"""`docker save` archives as real Docker versions write them (issue 14).

Each shape is built here, deterministically (`tools/archivebuilder.py`), and copied to every
kind of destination; each output is then read by independent tools: umoci unpacks it
(`--rootless`, which checks every layer's diff_id), skopeo copies it to a docker-archive and
back (the way back checks the diff_ids), the test suite's own Docker engine loads every
tarball we write (`docker load` checks them too), and our own `check` must call it sound.
The source archives themselves go through `docker load` as well: what we copy is what the
engine reads from them.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import tarfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tools import archivebuilder as ab

UMOCI = "/usr/bin/umoci"


@dataclass
class Shape:
    """An archive, the images a copy of it must hold, and what must fail."""

    members: list[ab.Member]
    images: list[ab.Image]  # what manifest.json holds and docker load loads
    failed: list[str] = field(default_factory=list)  # fragments of the failure lines
    notes: list[str] = field(default_factory=list)  # fragments of the -v notes
    kept: dict[int, bytes] = field(default_factory=dict)  # image → manifest kept byte-exact


def _shapes(work: Path) -> dict[str, Shape]:
    a = ab.make_image(work, 1, (200 << 10, 50 << 10), tags=["app:1"])
    b = ab.make_image(work, 2, (100 << 10,), tags=["other:2"])
    empty = ab.make_image(
        work, 3, (100 << 10, 20 << 10), tags=["empty:1"], empty={1: "file", 3: "file"}
    )
    gz = ab.make_image(
        work,
        4,
        (100 << 10, 20 << 10),
        compression="gzip",
        tags=["emptygz:1"],
        empty={1: "gzip", 3: "gzip"},
    )
    unnamed = ab.Image(a.config, a.layers, [], a.platform)
    broken = json.loads(b.config)
    broken["rootfs"]["diff_ids"][0] = "sha256:" + "0" * 64
    bad = ab.Image(ab.compact(broken), b.layers, ["bad:1"])
    counted = json.loads(b.config)
    counted["rootfs"]["diff_ids"].append(ab.EMPTY_TAR_DIFF_ID)
    short = ab.Image(ab.compact(counted), b.layers, ["short:1"])
    return {
        "legacy": Shape(ab.legacy_members([a, b]), [a, b]),
        "docker25": Shape(ab.docker25_members([a]), [a], kept={0: a.manifest()}),
        # 1: `docker save IMAGE_ID` on Docker 25.0.x; the manifest in blobs/ is still found
        "manifests-null": Shape(
            ab.docker25_members([a], index_null=True, repo_tags_null=True),
            [unnamed],
            notes=['"manifests": null'],
            kept={0: a.manifest()},
        ),
        # 2: two images in manifest.json, one in index.json
        "unindexed": Shape(
            ab.docker25_members([a, b], indexed=lambda im: im is a), [a, b], kept={0: a.manifest()}
        ),
        # 3: the OCI manifest in blobs/ disagrees with manifest.json and the config
        "fewer-layers": Shape(
            ab.docker25_members([a], blob_manifest=lambda im: []),
            [a],
            notes=["it lists 0 layers, manifest.json 2"],
        ),
        "reordered": Shape(
            ab.docker25_members(
                [a], blob_manifest=lambda im: [x.descriptor() for x in reversed(im.layers)]
            ),
            [a],
            notes=["its layer 0 is"],
        ),
        "other-sizes": Shape(
            ab.docker25_members(
                [a],
                blob_manifest=lambda im: [
                    dict(x.descriptor(), size=x.size + 512) for x in im.layers
                ],
            ),
            [a],
            notes=["its layer 0 is 225792 bytes"],
        ),
        # 3, impossible: fail those images, copy the rest
        "contradictions": Shape(
            ab.docker25_members([a, bad, short]),
            [a],
            failed=[
                "bad:1: layer 0 (blobs/sha256/",
                "short:1: manifest.json lists 1 layers, its config",
            ],
        ),
        # 5: empty layers, a 0-byte layer.tar and the 32-byte gzip stream (twice each)
        "empty-file": Shape(ab.legacy_members([empty]), [empty]),
        "empty-gzip": Shape(ab.docker25_members([gz]), [gz], kept={0: gz.manifest()}),
    }


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Shape, Path]]:
    work = tmp_path_factory.mktemp("archives")
    return {
        name: (shape, Path(ab.write_archive(work / f"{name}.tar", shape.members)))
        for name, shape in _shapes(work).items()
    }


# -- independent readers ---------------------------------------------------------------------


def engine(sock: str, method: str, path: str, data: Path | None = None) -> str:
    cmd = ["curl", "-s", "--unix-socket", sock, "-X", method, f"http://x/v1.41{path}"]
    if data is not None:
        cmd += ["-H", "Content-Type: application/x-tar", "--data-binary", f"@{data}"]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120).stdout


def docker_load(sock: str, archive: Path, images: list[ab.Image]) -> None:
    """`docker load` the archive into the test engine: each image must be there with its
    config as the image id and its diff_ids as the layers (the engine checks each layer)."""
    out = engine(sock, "POST", "/images/load", archive)
    assert "Loaded image" in out and "errorDetail" not in out, out
    for image in images:
        info = json.loads(engine(sock, "GET", f"/images/{image.config_digest}/json"))
        assert info["Id"] == image.config_digest, info
        assert info["RootFS"]["Layers"] == image.diff_ids
        for tag in image.tags:
            assert tag in info["RepoTags"] or f"docker.io/library/{tag}" in info["RepoTags"]


def umoci_unpack(layout: Path, ref: str, tmp: Path) -> Path:
    if not os.access(UMOCI, os.X_OK):
        pytest.skip("umoci not installed (tools/setup.sh installs it)")
    bundle = tmp / f"bundle-{ref}"
    r = subprocess.run(
        [UMOCI, "unpack", "--rootless", "--image", f"{layout}:{ref}", str(bundle)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    return bundle / "rootfs"


def skopeo_round_trip(
    skopeo: Callable[..., subprocess.CompletedProcess[str]], source: str, tmp: Path, *flags: str
) -> None:
    """skopeo copies `source` to a docker-archive and back to an OCI layout: reading a
    docker-archive checks every layer against the config's diff_ids."""
    archive, layout = tmp / "skopeo.tar", tmp / "skopeo-layout"
    for path in (archive, layout):
        subprocess.run(["rm", "-rf", str(path)], check=True)
    r = skopeo("copy", *flags, source, f"docker-archive:{archive}:check/it:1")
    assert r.returncode == 0, r.stderr
    r = skopeo("copy", f"docker-archive:{archive}", f"oci:{layout}:1")
    assert r.returncode == 0, r.stderr


def whited_out(image: ab.Image) -> bool:
    """Whether layer 1's whiteout of etc/motd applies (the image has two real layers)."""
    empty = (ab.EMPTY_FILE_DIGEST, ab.EMPTY_GZIP_DIGEST)
    return len([x for x in image.layers if x.digest not in empty]) >= 2


def our_check(occystrap_cli, uri: str, *flags: str) -> None:
    r = occystrap_cli(*flags, "check", uri)
    assert r.returncode == 0 and "OK: 0 errors" in r.stdout, r.stdout + r.stderr


def copy(occystrap_cli, shape: Shape, archive: Path, dest: str, *flags: str) -> None:
    """Copy with -v: the images that can be copied are, the others fail with one line
    each naming the archive, the image and what disagrees; the notes say what was rebuilt."""
    r = occystrap_cli("-v", *flags, "process", f"tar://{archive}", dest)
    summary = f"Summary: {len(shape.images)}/{len(shape.images) + len(shape.failed)} images"
    assert summary in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    assert r.returncode == (1 if shape.failed else 0), r.stderr
    for fragment in shape.failed:
        lines = [x for x in r.stderr.splitlines() if fragment in x and not x.startswith("  ")]
        assert len(lines) == 1, r.stderr
        assert lines[0].startswith(f"occystrap: error: tar://{archive}: ")
        assert lines[0].count(f"tar://{archive}") == 1
    for fragment in shape.notes:
        assert any(
            x.startswith(f"note: tar://{archive}: ") and fragment in x
            for x in r.stderr.splitlines()
        ), r.stderr


SHAPES = [
    "legacy",
    "docker25",
    "manifests-null",
    "unindexed",
    "fewer-layers",
    "reordered",
    "other-sizes",
    "contradictions",
    "empty-file",
    "empty-gzip",
]


@pytest.mark.parametrize("name", SHAPES)
def test_source_archive_is_what_docker_load_reads(name, shapes, docker_engine):
    shape, archive = shapes[name]
    if shape.failed:
        out = engine(docker_engine, "POST", "/images/load", archive)
        assert "errorDetail" in out  # the engine refuses it too
        return
    docker_load(docker_engine, archive, shape.images)


@pytest.mark.parametrize("name", SHAPES)
def test_to_oci(name, shapes, occystrap_cli, skopeo, tmp_path):
    shape, archive = shapes[name]
    layout = tmp_path / "layout"
    copy(occystrap_cli, shape, archive, f"oci://{layout}")
    our_check(occystrap_cli, f"oci://{layout}")
    index = json.loads((layout / "index.json").read_text())
    assert len(index["manifests"]) == len(shape.images)
    written = {}
    for entry in index["manifests"]:
        manifest = (layout / "blobs" / "sha256" / entry["digest"][7:]).read_bytes()
        written[json.loads(manifest)["config"]["digest"]] = (entry, manifest)
    for n, image in enumerate(shape.images):
        entry, manifest = written[image.config_digest]
        if n in shape.kept:
            assert manifest == shape.kept[n]  # the original bytes, when they agree
        layers = json.loads(manifest)["layers"]
        assert [x["digest"] for x in layers] == [x.digest for x in image.layers]
        ref = (entry.get("annotations") or {}).get("org.opencontainers.image.ref.name")
        if ref is None:  # an image without a name: give it one for the other tools
            r = occystrap_cli("process", f"tar://{archive}", f"oci://{tmp_path / 'named'}:t")
            assert r.returncode == 0, r.stderr
            layout, ref = tmp_path / "named", "t"
        rootfs = umoci_unpack(layout, ref, tmp_path)
        assert (rootfs / "etc" / "os-release").is_file()
        assert (rootfs / "etc" / "motd").exists() != whited_out(image)
        skopeo_round_trip(skopeo, f"oci:{layout}:{ref}", tmp_path)


@pytest.mark.parametrize("name", SHAPES)
def test_to_tar_loads_into_docker(name, shapes, occystrap_cli, skopeo, docker_engine, tmp_path):
    shape, archive = shapes[name]
    out = tmp_path / "out.tar"
    copy(occystrap_cli, shape, archive, f"tar://{out}")
    our_check(occystrap_cli, f"tar://{out}")
    for image in shape.images:  # nothing left from loading the source
        engine(docker_engine, "DELETE", f"/images/{image.config_digest}?force=1")
    docker_load(docker_engine, out, shape.images)
    for n in range(len(shape.images)):  # skopeo picks the n-th image of a multi-image archive
        skopeo_round_trip(skopeo, f"docker-archive:{out}:@{n}", tmp_path)


@pytest.mark.parametrize("name", SHAPES)
def test_to_dir_expanded(name, shapes, occystrap_cli, tmp_path):
    shape, archive = shapes[name]
    for n, image in enumerate(shape.images):
        pick = f"#{image.tags[0]}" if len(shape.images) + len(shape.failed) > 1 else ""
        out = tmp_path / f"dir-{n}"
        r = occystrap_cli("process", f"tar://{archive}{pick}", f"dir://{out}?expand=true")
        assert r.returncode == 0, r.stderr
        our_check(occystrap_cli, f"dir://{out}")
        entry = json.loads((out / "manifest.json").read_text())[0]
        assert (
            json.loads((out / entry["Config"]).read_bytes())["rootfs"]["diff_ids"] == image.diff_ids
        )
        assert (out / "manifest" / "etc" / "os-release").is_file()
        assert (out / "manifest" / "etc" / "motd").exists() != whited_out(image)
        assert (out / "manifest" / "var" / "cache" / "old.txt").exists() != whited_out(image)


@pytest.mark.parametrize("name", SHAPES)
def test_to_registry(name, shapes, occystrap_cli, skopeo, registry, tmp_path):
    shape, archive = shapes[name]
    many = len(shape.images) + len(shape.failed) > 1
    prefix = f"{registry.host}/archives-{name}"
    dest = prefix if many else f"{prefix}/app:1"
    copy(occystrap_cli, shape, archive, f"registry://{dest}", "--insecure")
    for image in shape.images:
        ref = f"{prefix}/{image.tags[0]}" if many else dest
        r = skopeo("inspect", "--config", "--tls-verify=false", f"docker://{ref}")
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["rootfs"]["diff_ids"] == image.diff_ids
        our_check(occystrap_cli, f"registry://{ref}", "--insecure")
        skopeo_round_trip(skopeo, f"docker://{ref}", tmp_path, "--src-tls-verify=false")


@pytest.mark.parametrize("name", ["empty-file", "empty-gzip"])
@pytest.mark.parametrize(
    "flags",
    [
        ("--compression", "gzip"),
        ("--compression", "zstd"),
        ("-f", "normalize-timestamps"),
        ("-f", "exclude:pattern=*.bin"),
        ("-f", "search:pattern=etc/*"),
    ],
)
def test_empty_layers_through_filters_and_compression(
    name, flags, shapes, occystrap_cli, skopeo, tmp_path
):
    """Empty layers are layers: re-encoded, filtered, searched like any other."""
    shape, archive = shapes[name]
    layout = tmp_path / "layout"
    r = occystrap_cli("process", f"tar://{archive}", f"oci://{layout}:t", *flags)
    assert r.returncode == 0, r.stderr
    our_check(occystrap_cli, f"oci://{layout}")
    if "zstd" in flags:
        # umoci 0.4.7 (Debian's) reads no zstd layers, skopeo writes no zstd docker-archive:
        # skopeo checks the blobs, our check above the diff_ids
        r = skopeo("copy", f"oci:{layout}:t", f"oci:{tmp_path / 'copy'}:t")
        assert r.returncode == 0, r.stderr
        return
    umoci_unpack(layout, "t", tmp_path)
    skopeo_round_trip(skopeo, f"oci:{layout}:t", tmp_path)


def test_check_reads_empty_layers(shapes, occystrap_cli):
    for name in ("empty-file", "empty-gzip"):
        _, archive = shapes[name]
        our_check(occystrap_cli, f"tar://{archive}")


def test_check_reports_the_contradictions(shapes, occystrap_cli):
    _, archive = shapes["contradictions"]
    r = occystrap_cli("check", f"tar://{archive}")
    assert r.returncode == 1
    assert "FAILED: 2 errors" in r.stdout, r.stdout
    assert r.stdout.count(f"tar://{archive}") == 2


def test_docker_source_goes_through_the_same_reader(shapes, occystrap_cli, docker_engine, tmp_path):
    """What an engine exports (its own `docker save`) is read by the same rules: an image
    with empty layers, loaded from an archive, comes back out whole."""
    shape, archive = shapes["empty-file"]
    docker_load(docker_engine, archive, shape.images)
    out = tmp_path / "from-engine.tar"
    src = f"docker://empty:1?socket={docker_engine}"
    r = occystrap_cli("process", src, f"tar://{out}")
    assert r.returncode == 0, r.stderr
    our_check(occystrap_cli, f"tar://{out}")
    r = occystrap_cli("process", src, f"dir://{tmp_path / 'dir'}?expand=true")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "dir" / "manifest" / "etc" / "os-release").is_file()
    r = occystrap_cli(
        "process", f"docker://nope:1?socket={docker_engine}", f"tar://{tmp_path / 'x.tar'}"
    )
    assert r.returncode == 1
    assert r.stderr.count("docker://nope:1") == 1, r.stderr


# -- point 4: Docker's containerd image store ------------------------------------------------

PLATFORMS = [("linux", "amd64", None), ("linux", "arm64", "v8")]


@pytest.fixture(scope="module")
def containerd(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """`docker save` with the containerd image store, two platforms, each with its
    attestation manifest: `partial` holds only linux/amd64's blobs (`docker save --platform
    linux/amd64`), `whole` both."""
    work = tmp_path_factory.mktemp("containerd")
    images = [
        ab.make_image(
            work,
            20,
            (100 << 10, 20 << 10),
            compression="gzip",
            tags=["multi:1"],
            platform=p,
            empty={2: "gzip"},
        )
        for p in PLATFORMS
    ]
    partial = ab.containerd_members(images, "multi:1", present=lambda im: im.platform[1] == "amd64")
    whole = ab.containerd_members(images, "multi:1")
    return {
        "images": images,
        "index": ab.index_digest(whole),
        "partial": Path(ab.write_archive(work / "partial.tar", partial)),
        "whole": Path(ab.write_archive(work / "whole.tar", whole)),
    }


def test_containerd_archive_copies_the_platform_asked_for(
    containerd, occystrap_cli, skopeo, docker_engine, registry, tmp_path
):
    amd64 = containerd["images"][0]
    archive = f"tar://{containerd['partial']}"
    want = amd64.manifest()
    out = tmp_path / "out.tar"
    r = occystrap_cli("process", archive, f"tar://{out}")  # linux/amd64 is the default
    assert r.returncode == 0, r.stderr
    our_check(occystrap_cli, f"tar://{out}")
    docker_load(docker_engine, out, [amd64])
    layout = tmp_path / "layout"
    r = occystrap_cli("--platform", "linux/amd64", "process", archive, f"oci://{layout}")
    assert r.returncode == 0, r.stderr
    entry = json.loads((layout / "index.json").read_text())["manifests"][0]
    assert (layout / "blobs" / "sha256" / entry["digest"][7:]).read_bytes() == want
    umoci_unpack(layout, "1", tmp_path)
    skopeo_round_trip(skopeo, f"oci:{layout}:1", tmp_path)
    dest = f"{registry.host}/containerd/multi:1"
    r = occystrap_cli(
        "--insecure", "--platform", "linux/amd64", "process", archive, f"registry://{dest}"
    )
    assert r.returncode == 0, r.stderr
    r = skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{dest}")
    assert r.stdout.encode() == want
    r = occystrap_cli("process", archive, f"dir://{tmp_path / 'dir'}?expand=true")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "dir" / "manifest" / "etc" / "os-release").is_file()


@pytest.mark.parametrize(
    "flags, dest",
    [
        (("--platform", "linux/arm64"), "tar://{tmp}/out.tar"),
        (("--all-platforms",), "oci://{tmp}/layout"),
        ((), "registry://{registry}/containerd/whole:1"),  # a registry takes the whole index
    ],
)
def test_containerd_archive_names_the_platforms_it_lacks(
    containerd, occystrap_cli, registry, tmp_path, flags, dest
):
    r = occystrap_cli(
        "--insecure",
        *flags,
        "process",
        f"tar://{containerd['partial']}",
        dest.format(tmp=tmp_path, registry=registry.host),
    )
    assert r.returncode == 1
    (line,) = [x for x in r.stderr.splitlines() if x.startswith("occystrap: error:")]
    assert line.count(f"tar://{containerd['partial']}") == 1
    assert f"index {containerd['index']} lists linux/arm64/v8" in line
    assert "not in the archive" in line and "it has linux/amd64: pick one with --platform" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home"]


def test_containerd_archive_with_every_platform_copies_the_index(
    containerd, occystrap_cli, skopeo, registry, tmp_path
):
    archive = f"tar://{containerd['whole']}"
    layout = tmp_path / "layout"
    r = occystrap_cli("--all-platforms", "process", archive, f"oci://{layout}")
    assert r.returncode == 0, r.stderr
    entry = json.loads((layout / "index.json").read_text())["manifests"][0]
    assert entry["digest"] == containerd["index"]
    our_check(occystrap_cli, f"oci://{layout}", "--all-platforms")
    dest = f"{registry.host}/containerd/whole:1"
    r = occystrap_cli("--insecure", "process", archive, f"registry://{dest}")
    assert r.returncode == 0, r.stderr
    r = skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{dest}")
    assert "sha256:" + hashlib.sha256(r.stdout.encode()).hexdigest() == containerd["index"]
    for image in containerd["images"]:
        r = skopeo(
            "inspect",
            "--config",
            "--tls-verify=false",
            "--override-arch",
            image.platform[1],
            f"docker://{dest}",
        )
        assert json.loads(r.stdout)["rootfs"]["diff_ids"] == image.diff_ids


def test_containerd_archive_all_platforms_into_a_tarball(
    containerd, occystrap_cli, docker_engine, tmp_path
):
    """A tarball holds images, not an index: --all-platforms copies each platform the
    archive has as an image, and names each one it lacks among the failed images."""
    out = tmp_path / "out.tar"
    r = occystrap_cli(
        "--all-platforms", "process", f"tar://{containerd['partial']}", f"tar://{out}"
    )
    assert r.returncode == 1
    assert "Summary: 1/2 images" in r.stderr, r.stderr
    failed = r.stderr.split("Failed images:", 1)[1]
    assert "lists linux/arm64/v8" in failed and "not in the archive" in failed
    amd64, arm64 = containerd["images"]
    docker_load(docker_engine, out, [amd64])
    r = occystrap_cli(
        "--all-platforms",
        "process",
        f"tar://{containerd['whole']}",
        f"tar://{tmp_path / 'both.tar'}",
    )
    assert r.returncode == 0 and "Summary: 2/2 images" in r.stderr, r.stderr
    with tarfile.open(tmp_path / "both.tar") as tf:
        held = json.load(tf.extractfile("manifest.json"))
    assert sorted(x["Config"][13:] for x in held) == sorted(
        im.config_hex for im in (amd64, arm64)
    )  # and no attestation
