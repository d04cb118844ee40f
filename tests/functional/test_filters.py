"""`process -f`: filters on real images from the test registry, output read back by skopeo
and by our own `check`.

The sample images carry what filters must get right: whiteouts and an opaque directory, a
hard link and symlinks, a long and a non-ASCII name, and a file with PAX atime/ctime and
extended attributes (a binary file capability and an SELinux label).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest
import zstandard

from tools.imagebuilder import (
    DOCKER_CONFIG,
    DOCKER_LAYER_GZIP,
    DOCKER_MANIFEST,
    FILE_CAPABILITY,
    Blob,
    BuiltImage,
    push_image,
    sha256_digest,
)

TS = 1234567890


def oci_image(layout: Path, ref: str | None = None) -> tuple[dict, dict, list[Path], str]:
    """(manifest, config, layer blob paths, manifest digest) of the one image (or `ref`)."""
    index = json.loads((layout / "index.json").read_text())
    entries = [
        m
        for m in index["manifests"]
        if ref is None or m.get("annotations", {}).get("org.opencontainers.image.ref.name") == ref
    ]
    assert len(entries) == 1, index
    digest = entries[0]["digest"]

    def blob(d: str) -> Path:
        return layout / "blobs" / "sha256" / d.split(":", 1)[1]

    manifest = json.loads(blob(digest).read_bytes())
    config = json.loads(blob(manifest["config"]["digest"]).read_bytes())
    return manifest, config, [blob(la["digest"]) for la in manifest["layers"]], digest


def plain(path: Path, media_type: str) -> bytes:
    data = path.read_bytes()
    if media_type.endswith("zstd"):
        return zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data)).read()
    if "gzip" in media_type:
        return gzip.decompress(data)
    return data


def members(data: bytes) -> list[tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:", encoding="utf-8") as tar:
        return tar.getmembers()


def check_ok(occystrap_cli, uri: str, *extra: str) -> None:
    r = occystrap_cli(*extra, "check", uri)
    assert r.returncode == 0, r.stdout + r.stderr


def test_normalize_timestamps_keeps_everything_but_times(
    occystrap_cli, sample_images, tmp_path, skopeo
):
    s = sample_images["docker"]
    out = tmp_path / "layout"
    r = occystrap_cli(
        "--insecure", "process", s.uri, f"oci://{out}", "-f", f"normalize-timestamps:ts={TS}"
    )
    assert r.returncode == 0, r.stderr
    assert "layers filtered: new manifest digest" in r.stderr
    manifest, config, layer_files, digest = oci_image(out)
    assert digest != s.digest
    source_config = json.loads(Path(s.built.config.path).read_bytes())
    assert config["created"] == source_config["created"]  # config=true not given
    assert config["history"] == source_config["history"]
    assert len(layer_files) == len(s.built.layers)
    seen: dict[str, tarfile.TarInfo] = {}
    for n, (entry, path) in enumerate(zip(manifest["layers"], layer_files, strict=True)):
        assert entry["mediaType"] == DOCKER_LAYER_GZIP  # the source's compression is kept
        data = plain(path, entry["mediaType"])
        assert config["rootfs"]["diff_ids"][n] == "sha256:" + hashlib.sha256(data).hexdigest()
        for m in members(data):
            assert m.mtime == TS, m.name
            assert not {"atime", "ctime", "mtime"} & set(m.pax_headers), m.name
            seen[m.name] = m
    busybox = seen["usr/bin/busybox"]
    caps = busybox.pax_headers["SCHILY.xattr.security.capability"]
    assert caps.encode("utf-8", "surrogateescape") == FILE_CAPABILITY
    assert busybox.pax_headers["SCHILY.xattr.security.selinux"] == "system_u:object_r:bin_t:s0"
    assert seen["usr/bin/ls"].islnk() and seen["usr/bin/ls"].linkname == "usr/bin/busybox"
    assert seen["usr/bin/sh"].issym() and seen["usr/bin/sh"].linkname == "busybox"
    assert "data/ünïcödé-名前.txt" in seen
    assert any(len(name) > 100 for name in seen)
    assert "etc/.wh.motd" in seen and "var/cache/.wh..wh..opq" in seen
    check_ok(occystrap_cli, f"oci://{out}")


def test_normalize_timestamps_is_reproducible(occystrap_cli, sample_images, tmp_path, skopeo):
    """Two runs over the same image give byte-identical output: same digests, and the same
    tarball bytes."""
    s = sample_images["docker"]
    digests = []
    for n, jobs in enumerate(("8", "1")):  # downloads finish in different orders
        out = tmp_path / f"run{n}.tar"
        r = occystrap_cli(
            "--insecure",
            "-j",
            jobs,
            "process",
            s.uri,
            f"tar://{out}",
            "-f",
            "normalize-timestamps:config=true",
        )
        assert r.returncode == 0, r.stderr
        info = json.loads(skopeo("inspect", f"docker-archive:{out}").stdout)  # diff_ids
        digests.append((info["Layers"], hashlib.sha256(out.read_bytes()).hexdigest()))
        cfg = json.loads(skopeo("inspect", "--config", f"docker-archive:{out}").stdout)
        assert cfg["created"] == "1970-01-01T00:00:00Z"
        assert {h["created"] for h in cfg["history"]} == {"1970-01-01T00:00:00Z"}
        check_ok(occystrap_cli, f"tar://{out}")
    assert digests[0] == digests[1]
    assert digests[0][0] != [la.diff_id for la in s.built.layers]


def test_exclude_drops_paths_their_whiteouts_and_links(
    occystrap_cli, sample_images, registry, tmp_path, skopeo
):
    """Registry → registry: a directory pattern takes its contents, a leading / is the same
    pattern, a whiteout for an excluded path goes too, and a hard link to an excluded file
    (usr/bin/ls → usr/bin/busybox) becomes a regular file holding its data."""
    s = sample_images["docker"]
    dest = f"{registry.host}/filtered/exclude:1"
    r = occystrap_cli(
        "--insecure",
        "process",
        s.uri,
        f"registry://{dest}",
        "-f",
        "exclude:pattern=/etc/motd;var/cache,usr/bin/busybox",
    )
    assert r.returncode == 0, r.stderr
    raw = json.loads(skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{dest}").stdout)
    assert len(raw["layers"]) == len(s.built.layers)
    check_ok(occystrap_cli, f"registry://{dest}", "--insecure")
    out = tmp_path / "copy"
    r = occystrap_cli("--insecure", "process", f"registry://{dest}", f"oci://{out}")
    assert r.returncode == 0, r.stderr
    manifest, config, layer_files, _ = oci_image(out)
    found: dict[str, tarfile.TarInfo] = {}
    for entry, path in zip(manifest["layers"], layer_files, strict=True):
        found |= {m.name: m for m in members(plain(path, entry["mediaType"]))}
    names = set(found)
    for gone in (
        "etc/motd",
        "etc/.wh.motd",
        "var/cache",
        "var/cache/old.txt",
        "var/cache/.wh..wh..opq",
        "var/cache/new.txt",
        "usr/bin/busybox",
    ):
        assert gone not in names, gone
    assert found["usr/bin/ls"].isfile() and found["usr/bin/ls"].size > 0
    for kept in ("etc/os-release", "var", "usr/bin/sh", "data/ünïcödé-名前.txt"):
        assert kept in names, kept


def test_search_reports_and_passes_layers_through(occystrap_cli, sample_images, tmp_path, skopeo):
    s = sample_images["docker"]
    out = tmp_path / "app.tar"
    r = occystrap_cli("--insecure", "process", s.uri, f"tar://{out}", "-f", "search:pattern=*.txt")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"Image: library/app:1.0\n  Layer: {s.built.layers[0].digest}\n")
    assert "    var/cache/new.txt (file, 33 bytes)" in r.stdout
    assert "data/ünïcödé-名前.txt" in r.stdout
    assert r.stdout.rstrip().endswith("Found 4 matches in 2 layers.")
    info = json.loads(skopeo("inspect", f"docker-archive:{out}").stdout)
    assert info["Layers"] == [la.diff_id for la in s.built.layers]  # unchanged
    with tarfile.open(out) as tar:
        names = json.load(tar.extractfile("manifest.json"))[0]["Layers"]  # type: ignore[arg-type]
    assert names == [f"blobs/sha256/{la.digest[7:]}" for la in s.built.layers]
    assert "new manifest digest" not in r.stderr

    r = occystrap_cli(
        "--insecure",
        "process",
        s.uri,
        f"oci://{tmp_path / 'layout'}",
        "-f",
        r"search:regex=busybox$|\.opq$,script_friendly=true",
    )
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == 2, r.stdout
    assert lines[0] == (f"library/app:1.0:{s.built.layers[0].digest}:usr/bin/busybox")
    assert lines[1].endswith(":var/cache/.wh..wh..opq")


def test_search_after_exclude_sees_the_rewritten_layer(occystrap_cli, sample_images, tmp_path):
    s = sample_images["docker"]
    r = occystrap_cli(
        "--insecure",
        "process",
        s.uri,
        f"oci://{tmp_path / 'layout'}",
        "-f",
        "exclude:pattern=*.txt",
        "-f",
        "search:pattern=*.txt",
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "Found 0 matches in 0 layers."


def test_an_inspect_report_that_cannot_be_written(occystrap_cli, sample_images, tmp_path):
    """A full disk under the report: the image says so and the run exits 1, but the copy,
    which is complete, is kept."""
    s = sample_images["docker"]
    out = tmp_path / "app.tar"
    r = occystrap_cli(
        "--insecure", "process", s.uri, f"tar://{out}", "-f", "inspect:file=/dev/full"
    )
    assert r.returncode == 1
    assert "copied, but the inspect report could not be written to /dev/full" in r.stderr
    assert out.exists()
    check_ok(occystrap_cli, f"tar://{out}")


def test_search_and_json_stats_do_not_share_stdout(occystrap_cli, tmp_path):
    r = occystrap_cli(
        "--stats",
        "json",
        "process",
        "registry://127.0.0.1:1/a:1",
        f"tar://{tmp_path / 'a.tar'}",
        "-f",
        "search:pattern=x",
    )
    assert r.returncode == 2 and "use --stats-file" in r.stderr


def test_inspect_appends_a_history_line_per_image(occystrap_cli, sample_images, tmp_path):
    s = sample_images["docker"]
    report = tmp_path / "history.jsonl"
    for n in range(2):
        r = occystrap_cli(
            "--insecure",
            "process",
            s.uri,
            f"oci://{tmp_path / f'l{n}'}",
            "-f",
            f"inspect:file={report}",
        )
        assert r.returncode == 0, r.stderr
    lines = [json.loads(line) for line in report.read_text().splitlines()]
    assert len(lines) == 2
    assert [line.pop("destination") for line in lines] == [
        f"oci://{tmp_path / f'l{n}'}:1.0" for n in range(2)
    ]
    assert lines[0] == lines[1]
    doc = lines[0]
    assert doc["name"] == f"{s.host}/library/app:1.0"
    assert doc["digest"] == s.digest  # nothing rewritten: the source's manifest
    assert doc["platform"] == "linux/amd64"
    rows = doc["layers"]
    assert len(rows) == len(s.built.layers) + 1  # one history entry made no layer
    assert rows[0]["Id"] == s.built.config.digest and rows[0]["Tags"] == [doc["name"]]
    assert {r["Id"] for r in rows[1:]} == {"<missing>"}
    layered = [r for r in rows if "Layer" in r][::-1]
    assert [r["Layer"] for r in layered] == [la.digest for la in s.built.layers]
    for row, layer in zip(layered, s.built.layers, strict=True):
        assert row["Size"] == len(plain(Path(layer.path), layer.media_type))
    assert rows[-1]["Size"] == 0 and "ENV" in rows[-1]["CreatedBy"]


def test_filters_on_zstd_and_recompression(occystrap_cli, sample_images, tmp_path):
    s = sample_images["zstd"]
    out = tmp_path / "layout"
    r = occystrap_cli(
        "--insecure", "process", s.uri, f"oci://{out}:kept", "-f", "normalize-timestamps"
    )
    assert r.returncode == 0, r.stderr
    manifest, _, _, _ = oci_image(out, "kept")
    assert {la["mediaType"] for la in manifest["layers"]} == {s.built.layers[0].media_type}
    r = occystrap_cli(
        "--insecure",
        "--compression",
        "gzip",
        "process",
        s.uri,
        f"oci://{out}:gzip",
        "-f",
        "normalize-timestamps",
    )
    assert r.returncode == 0, r.stderr
    manifest, config, files, _ = oci_image(out, "gzip")
    assert {la["mediaType"] for la in manifest["layers"]} == {
        "application/vnd.oci.image.layer.v1.tar+gzip"
    }
    for n, (entry, path) in enumerate(zip(manifest["layers"], files, strict=True)):
        data = plain(path, entry["mediaType"])
        assert config["rootfs"]["diff_ids"][n] == "sha256:" + hashlib.sha256(data).hexdigest()
    check_ok(occystrap_cli, f"oci://{out}:gzip")


def test_filters_on_a_whole_index(occystrap_cli, sample_images, tmp_path):
    s = sample_images["index"]
    out = tmp_path / "layout"
    r = occystrap_cli(
        "--insecure",
        "--all-platforms",
        "process",
        s.uri,
        f"oci://{out}",
        "-f",
        "normalize-timestamps",
        "-f",
        f"inspect:file={tmp_path / 'h'}",
        "-f",
        "search:pattern=etc/os-release,script_friendly=true",
    )
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    # each base layer once, under the index's name and tag (the platforms share theirs)
    assert len(lines) == len({im.layers[0].digest for im in s.built.images})
    assert all(
        line.startswith("library/multi:1.0:sha256:") and line.endswith(":etc/os-release")
        for line in lines
    ), lines
    index = json.loads((out / "index.json").read_text())
    top = index["manifests"][0]["digest"]
    assert top != s.digest
    check_ok(occystrap_cli, f"oci://{out}")
    lines = (tmp_path / "h").read_text().splitlines()
    assert len(lines) == len(s.built.images)


def test_dir_destination_gets_normalized_plain_layers(occystrap_cli, sample_images, tmp_path):
    s = sample_images["docker"]
    out = tmp_path / "dir"
    r = occystrap_cli(
        "--insecure",
        "process",
        s.uri,
        f"dir://{out}?expand=true",
        "-f",
        f"normalize-timestamps:ts={TS}",
        "-f",
        "exclude:pattern=data/layer-*",
    )
    assert r.returncode == 0, r.stderr
    manifest = json.loads((out / "manifest.json").read_text())[0]
    config = json.loads((out / manifest["Config"]).read_bytes())
    for n, name in enumerate(manifest["Layers"]):
        data = (out / name).read_bytes()
        assert config["rootfs"]["diff_ids"][n] == "sha256:" + hashlib.sha256(data).hexdigest()
        assert {m.mtime for m in members(data)} == {TS}
    rootfs = out / "manifest"
    assert (rootfs / "usr/bin/busybox").is_file()
    assert not (rootfs / "data/layer-01").exists()
    check_ok(occystrap_cli, f"dir://{out}")


@pytest.mark.parametrize(
    "spec, fragment",
    [
        ("frobnicate", "unknown filter 'frobnicate'"),
        ("exclude", "needs pattern=GLOB"),
        ("normalize-timestamps:ts=yesterday", "is not a whole number"),
        ("search:regex=(", "bad regular expression"),
        ("search:pattern=x,colour=red", "unknown option 'colour'"),
        ("inspect:file=/nonexistent/dir/x.jsonl", "cannot write /nonexistent/dir/x.jsonl"),
        ("normalize-timestamps", "gzip levels are 0-9 (filtered gzip layers stay gzip)"),
    ],
)
def test_bad_filter_specs_are_usage_errors(occystrap_cli, tmp_path, spec, fragment):
    r = occystrap_cli(
        "--compression-level",
        "12",
        "process",
        "registry://127.0.0.1:1/a:1",
        f"tar://{tmp_path / 'a.tar'}",
        "-f",
        spec,
    )
    assert r.returncode == 2, r.stderr
    assert fragment in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "a.tar").exists()


def test_a_layer_that_is_not_a_tar_fails_cleanly(occystrap_cli, registry, tmp_path):
    """A layer whose digests are right but whose content is not a tar stream: one clear
    line, exit 1, and no output that looks complete."""
    work = tmp_path / "work"
    work.mkdir()
    inner = b"this is not a tar archive" * 100
    blob = gzip.compress(inner, mtime=0)
    (work / "layer").write_bytes(blob)
    layer = Blob(
        sha256_digest(blob), len(blob), str(work / "layer"), DOCKER_LAYER_GZIP, sha256_digest(inner)
    )
    config_bytes = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [layer.diff_id]},
        }
    ).encode()
    (work / "config").write_bytes(config_bytes)
    config = Blob(
        sha256_digest(config_bytes), len(config_bytes), str(work / "config"), DOCKER_CONFIG
    )
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": DOCKER_MANIFEST,
            "config": config.descriptor(),
            "layers": [layer.descriptor()],
        }
    ).encode()
    push_image(
        registry.url,
        "filters/not-a-tar",
        "1",
        BuiltImage(manifest, DOCKER_MANIFEST, sha256_digest(manifest), config, [layer]),
    )
    out = tmp_path / "out.tar"
    r = occystrap_cli(
        "--insecure",
        "process",
        f"registry://{registry.host}/filters/not-a-tar:1",
        f"tar://{out}",
        "-f",
        "normalize-timestamps",
    )
    assert r.returncode == 1
    errors = [ln for ln in r.stderr.splitlines() if "error" in ln]
    assert len(errors) == 1 and "cannot filter" in errors[0], r.stderr
    assert "Traceback" not in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home", "work"]


def test_a_huge_member_is_streamed(occystrap_cli, registry, tmp_path):
    """A layer holding one 512 MiB file (of zeros, so it is small to fetch) is rewritten in
    bounded memory: the compress stage never holds a member, let alone a layer."""
    from tests.functional.test_faults import _gzip_bomb

    push_image(registry.url, "filters/huge", "1", _gzip_bomb(tmp_path))
    stats = tmp_path / "stats.json"
    out = tmp_path / "layout"
    r = occystrap_cli(
        "--insecure",
        "--stats-file",
        str(stats),
        "process",
        f"registry://{registry.host}/filters/huge:1",
        f"oci://{out}",
        "-f",
        "normalize-timestamps",
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    doc = json.loads(stats.read_text())
    compress = next(s for s in doc["stages"] if s["stage"] == "compress")
    assert compress["peak_rss"] < 120e6, compress
    assert doc["peak_pss_total"] < 150e6
    check_ok(occystrap_cli, f"oci://{out}")
