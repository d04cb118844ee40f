"""tar://, oci:// and dir:// as sources: round trips that end with digests compared against
the source, and archives that try to escape."""

from __future__ import annotations

import io
import json
import os
import subprocess
import tarfile

import pytest

from tests.conftest import _clean_env, _cli_command


def raw(skopeo, ref: str) -> bytes:
    r = skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{ref}")
    assert r.returncode == 0, r.stderr
    return r.stdout.encode()


def diff_ids(skopeo, ref: str) -> list[str]:
    r = skopeo("inspect", "--config", "--tls-verify=false", f"docker://{ref}")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)["rootfs"]["diff_ids"]


def ok(r) -> None:
    assert r.returncode == 0, r.stderr


def test_registry_tar_registry_is_byte_exact(
    occystrap_cli, registry, sample_images, tmp_path, skopeo
):
    s = sample_images["oci"]
    ok(occystrap_cli("--insecure", "process", s.uri, f"tar://{tmp_path / 'a.tar'}"))
    dest = f"{registry.host}/roundtrip/tar:1.0"
    ok(occystrap_cli("--insecure", "process", f"tar://{tmp_path / 'a.tar'}", f"registry://{dest}"))
    assert raw(skopeo, dest) == s.manifest


def test_legacy_tar_and_dir_keep_the_content(
    occystrap_cli, registry, sample_images, tmp_path, skopeo
):
    """v1.2 tarballs and dir:// hold uncompressed layers: the diff_ids survive the trip."""
    s = sample_images["docker"]
    want = [b.diff_id for b in s.built.layers]
    ok(occystrap_cli("--insecure", "process", s.uri, f"tar://{tmp_path / 'old.tar'}?format=v1.2"))
    ok(occystrap_cli("--insecure", "process", s.uri, f"dir://{tmp_path / 'dir'}"))
    for src, name in (
        (f"tar://{tmp_path / 'old.tar'}", "legacy"),
        (f"dir://{tmp_path / 'dir'}", "dir"),
    ):
        dest = f"{registry.host}/roundtrip/{name}:1.0"
        ok(
            occystrap_cli(
                "--insecure", "--compression", "gzip", "process", src, f"registry://{dest}"
            )
        )
        assert diff_ids(skopeo, dest) == want


def test_oci_layout_with_index_round_trip(occystrap_cli, registry, sample_images, tmp_path, skopeo):
    s = sample_images["index"]
    ok(
        occystrap_cli(
            "--insecure", "--all-platforms", "process", s.uri, f"oci://{tmp_path / 'layout'}"
        )
    )
    dest = f"{registry.host}/roundtrip/index:1.0"
    ok(
        occystrap_cli(
            "--insecure", "process", f"oci://{tmp_path / 'layout'}:1.0", f"registry://{dest}"
        )
    )
    assert raw(skopeo, dest) == s.manifest
    # a platform picked from the layout's index, into a tarball
    ok(
        occystrap_cli(
            "--platform",
            "linux/arm64",
            "process",
            f"oci://{tmp_path / 'layout'}",
            f"tar://{tmp_path / 'arm.tar'}",
        )
    )
    with tarfile.open(tmp_path / "arm.tar") as tf:
        index = json.load(tf.extractfile("index.json"))
    arm = next(i for i in s.built.images if i.platform[1] == "arm64")
    assert index["manifests"][0]["digest"] == arm.manifest_digest


def test_reads_skopeo_docker_archive(occystrap_cli, sample_images, tmp_path, skopeo):
    s = sample_images["docker"]
    archive = tmp_path / "skopeo.tar"
    r = skopeo(
        "copy",
        "--src-tls-verify=false",
        f"docker://{s.ref}",
        f"docker-archive:{archive}:example/app:2",
    )
    assert r.returncode == 0, r.stderr
    ok(occystrap_cli("process", f"tar://{archive}", f"oci://{tmp_path / 'layout'}"))
    index = json.loads((tmp_path / "layout" / "index.json").read_text())
    assert index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"] == "2"
    r = skopeo("inspect", "--config", f"oci:{tmp_path / 'layout'}:2")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["rootfs"]["diff_ids"] == [b.diff_id for b in s.built.layers]


def test_several_images_in_one_tarball(occystrap_cli, registry, sample_images, tmp_path, skopeo):
    from occystrap import pipeline
    from occystrap.config import Config
    from occystrap.reference import parse_location

    archive = tmp_path / "two.tar"
    result = pipeline.run(
        [parse_location(sample_images[k].uri, role="source") for k in ("docker", "zstd")],
        parse_location(f"tar://{archive}", role="destination"),
        Config(insecure=True),
    )
    assert len(result.done) == 2
    r = occystrap_cli("process", f"tar://{archive}", f"dir://{tmp_path / 'one-dir'}")
    assert r.returncode == 1 and "holds 2 images" in r.stderr
    # into a registry, every image keeps its name and tag below the destination prefix
    ok(
        occystrap_cli(
            "--insecure", "process", f"tar://{archive}", f"registry://{registry.host}/prefix"
        )
    )
    for key in ("docker", "zstd"):
        s = sample_images[key]
        assert raw(skopeo, f"{registry.host}/prefix/{s.name}:{s.tag}") == s.manifest
    z = sample_images["zstd"]
    dest = f"{registry.host}/many/zstd:1.0"
    ok(occystrap_cli("--insecure", "process", f"tar://{archive}#{z.ref}", f"registry://{dest}"))
    assert raw(skopeo, dest) == z.manifest
    ok(occystrap_cli("process", f"tar://{archive}", f"oci://{tmp_path / 'both'}"))
    index = json.loads((tmp_path / "both" / "index.json").read_text())
    assert len(index["manifests"]) == 2


def test_tar_from_a_pipe(registry, sample_images, tmp_path):
    s = sample_images["docker"]
    archive = tmp_path / "a.tar"
    env = _clean_env({"HOME": str(tmp_path)})
    subprocess.run(
        [*_cli_command(), "--insecure", "process", s.uri, f"tar://{archive}"],
        check=True,
        env=env,
        capture_output=True,
    )
    with open(archive, "rb") as f:
        r = subprocess.run(
            [*_cli_command(), "process", "tar:///dev/stdin", f"oci://{tmp_path / 'layout'}"],
            stdin=f,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert r.returncode == 0, r.stderr
    index = json.loads((tmp_path / "layout" / "index.json").read_text())
    assert index["manifests"][0]["digest"] == s.digest


def hostile_tar(path, member: tarfile.TarInfo, data: bytes = b"x") -> None:
    with tarfile.open(path, "w") as tf:
        if member.isfile():
            member.size = len(data)
            tf.addfile(member, io.BytesIO(data))
        else:
            tf.addfile(member)
        manifest = json.dumps(
            [{"Config": "c.json", "RepoTags": ["a:1"], "Layers": ["l/layer.tar"]}]
        ).encode()
        info = tarfile.TarInfo("manifest.json")
        info.size = len(manifest)
        tf.addfile(info, io.BytesIO(manifest))


def _member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    return info


@pytest.mark.parametrize(
    "member, fragment",
    [
        (_member("/etc/passwd"), "absolute path"),
        (_member("../../outside"), "escapes the archive"),
        (_member("l/layer.tar", tarfile.SYMTYPE, "../../../etc/shadow"), "escapes the archive"),
        (_member("l/layer.tar", tarfile.LNKTYPE, "../x"), "escapes the archive"),
    ],
)
def test_hostile_archives_are_refused(occystrap_cli, tmp_path, member, fragment):
    archive = tmp_path / "evil.tar"
    hostile_tar(archive, member)
    r = occystrap_cli("process", f"tar://{archive}", f"oci://{tmp_path / 'out'}")
    assert r.returncode == 1
    assert fragment in r.stderr and "Traceback" not in r.stderr
    assert sorted(os.listdir(tmp_path)) == ["evil.tar", "home"]


def test_corrupt_blob_in_oci_layout(occystrap_cli, sample_images, tmp_path):
    s = sample_images["oci"]
    layout = tmp_path / "layout"
    ok(occystrap_cli("--insecure", "process", s.uri, f"oci://{layout}"))
    blob = layout / "blobs" / "sha256" / s.built.layers[0].digest[7:]
    data = bytearray(blob.read_bytes())
    data[10] ^= 0xFF
    blob.write_bytes(bytes(data))
    r = occystrap_cli("process", f"oci://{layout}", f"tar://{tmp_path / 'out.tar'}")
    assert r.returncode == 1
    assert s.built.layers[0].digest in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "out.tar").exists()
