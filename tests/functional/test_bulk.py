"""Bulk mirrors: 32 images sharing a base layer, discovered from the real registry's catalog,
copied to another registry, one OCI layout and one tarball; dedup, re-runs, shards, failure
isolation and --from-file."""

from __future__ import annotations

import json
import tarfile

import pytest

from occystrap.registry.client import RegistryClient
from tests.faultproxy import FaultProxy
from tests.functional.test_errors import _registry_blob
from tools.imagebuilder import build_image, push_image
from tools.testregistry import TestRegistry

COUNT = 32
BASE = 400_000


@pytest.fixture(scope="module")
def bulk(registry, tmp_path_factory):
    """bulk/app-NN:1.0 (NN < 32) sharing one base layer, and bulk/broken:1.0 whose only
    layer is corrupt in the registry's storage."""
    work = tmp_path_factory.mktemp("bulk")
    images = {}
    for i in range(COUNT):
        image = build_image(
            work / f"b{i}",
            seed=5000 + i,
            layer_sizes=[BASE, 20_000],
            special_entries=False,
            shared_base_key="bulk-base",
        )
        push_image(registry.url, f"bulk/app-{i:02d}", "1.0", image)
        images[f"bulk/app-{i:02d}"] = image
    # A seed no other test uses: this layer is corrupted in the worker's shared registry
    # storage, and any image with the same first layer would read the corrupt bytes.
    broken = build_image(work / "broken", seed=990077, layer_sizes=[30_000], special_entries=False)
    push_image(registry.url, "bulk/broken", "1.0", broken)
    blob = _registry_blob(registry, broken.layers[0].digest)
    data = bytearray(blob.read_bytes())
    data[100] ^= 0xFF
    blob.write_bytes(bytes(data))
    assert len({img.layers[0].digest for img in images.values()}) == 1  # one shared base
    return images


@pytest.fixture
def mirror():
    with TestRegistry() as reg:
        yield reg


def test_mirror_to_registry_dedups_and_reruns_cheaply(
    occystrap_cli, registry, mirror, bulk, tmp_path
):
    dest = f"registry://{mirror.host}/mirror"
    with FaultProxy(registry.port) as wire:  # counts what the source registry sends
        src = f"registry://{wire.host}/bulk/app-*:1.0"
        r = occystrap_cli("--insecure", "-J", "6", "-j", "4", "process", src, dest, timeout=300)
        downloaded = wire.response_bytes
    assert r.returncode == 0, r.stderr
    assert f"Summary: {COUNT}/{COUNT} images" in r.stderr
    client = RegistryClient(mirror.host, insecure=True)
    for name, image in bulk.items():
        got = client.get_manifest(f"mirror/{name}", "1.0", [image.manifest_media_type])
        assert got.body == image.manifest
    # the shared base crossed the wire once (in-flight dedup), not 32 times
    own = sum(img.layers[1].size for img in bulk.values())
    base = next(iter(bulk.values())).layers[0].size
    assert own + base <= downloaded < own + 2 * base + 2_000_000  # + manifests, configs

    with FaultProxy(registry.port) as wire:
        r = occystrap_cli(
            "--insecure", "process", f"registry://{wire.host}/bulk/app-*:1.0", dest, timeout=120
        )
        assert wire.response_bytes < 1_000_000  # manifests and catalog only
    assert r.returncode == 0, r.stderr
    assert f"{COUNT} already up to date" in r.stderr


def _requests_at(occystrap_cli, mirror, *args, timeout=120):
    """Run occystrap with `args`, in which `{dest}` stands for the `mirror` registry seen
    through a proxy: (the result, every request line the mirror received)."""
    with FaultProxy(mirror.port) as wire:
        r = occystrap_cli(*(a.replace("{dest}", wire.host) for a in args), timeout=timeout)
        return r, list(wire.request_lines)


def test_a_mirror_asks_once_per_blob(occystrap_cli, registry, mirror, bulk):
    """Requests at the destination: the shared base is HEADed once in the run and mounted
    into every other repository; a new image's config is uploaded without a HEAD (none of
    its layers was there); a re-tag, whose layers are all there, HEADs its config and
    uploads nothing."""
    names = [f"bulk/app-0{i}" for i in range(10)]
    base = bulk[names[0]].layers[0].digest
    configs = {bulk[n].config.digest for n in names}
    r, lines = _requests_at(
        occystrap_cli,
        mirror,
        "--insecure",
        "-J",
        "1",
        "process",
        f"registry://{registry.host}/bulk/app-0*:1.0",
        "registry://{dest}/mirror",
    )
    assert r.returncode == 0, r.stderr
    heads = [line.rpartition("/")[2] for line in lines if line.startswith("HEAD ")]
    assert heads.count(base) == 1, lines
    assert not configs & set(heads), lines
    hexes = base.partition(":")[2]  # the query's colon may be percent-encoded
    mounts = [line for line in lines if line.startswith("POST ") and "mount=" in line]
    assert len(mounts) == len(names) - 1 and all(hexes in m for m in mounts), lines
    assert sum(line.startswith("PUT ") and hexes in line for line in lines) == 1, lines

    one = names[0]
    r, lines = _requests_at(
        occystrap_cli,
        mirror,
        "--insecure",
        "process",
        f"registry://{registry.host}/{one}:1.0",
        f"registry://{{dest}}/mirror/{one}:again",
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    assert f"HEAD /v2/mirror/{one}/blobs/{bulk[one].config.digest}" in lines
    assert not [line for line in lines if line.startswith("POST ")], lines
    client = RegistryClient(mirror.host, insecure=True)
    got = client.get_manifest(f"mirror/{one}", "again", [bulk[one].manifest_media_type])
    assert got.body == bulk[one].manifest


def test_a_repository_that_holds_the_blobs_already(occystrap_cli, registry, mirror, bulk):
    """A repository of the destination holds an image's layers under another tag: its base,
    which the run sends to the repository before it, is mounted (no HEAD, no bytes); its
    own layer and its config are HEADed there and found; nothing of it is uploaded."""
    held = "bulk/app-01"
    r = occystrap_cli(
        "--insecure",
        "process",
        f"registry://{registry.host}/{held}:1.0",
        f"registry://{mirror.host}/mirror/{held}:old",
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    r, lines = _requests_at(
        occystrap_cli,
        mirror,
        "--insecure",
        "-J",
        "1",
        "process",
        f"registry://{registry.host}/bulk/app-0[01]:1.0",
        "registry://{dest}/mirror",
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    image = bulk[held]
    mine = [line for line in lines if f"/v2/mirror/{held}/" in line]
    assert f"HEAD /v2/mirror/{held}/blobs/{image.config.digest}" in mine, mine
    assert f"HEAD /v2/mirror/{held}/blobs/{image.layers[1].digest}" in mine, mine
    assert f"HEAD /v2/mirror/{held}/blobs/{image.layers[0].digest}" not in mine, mine
    assert not [line for line in mine if line.startswith("PUT ") and "/blobs/" in line], mine
    client = RegistryClient(mirror.host, insecure=True)
    got = client.get_manifest(f"mirror/{held}", "1.0", [image.manifest_media_type])
    assert got.body == image.manifest


def test_bulk_into_one_layout_and_one_tarball(occystrap_cli, registry, bulk, tmp_path):
    src = f"registry://{registry.host}/bulk/app-*"
    for dest in (f"oci://{tmp_path / 'layout'}", f"tar://{tmp_path / 'all.tar'}"):
        r = occystrap_cli("--insecure", "-J", "4", "process", f"{src}:1.0", dest, timeout=300)
        assert r.returncode == 0, r.stderr
    index = json.loads((tmp_path / "layout" / "index.json").read_text())
    assert len(index["manifests"]) == COUNT
    blobs = list((tmp_path / "layout" / "blobs" / "sha256").iterdir())
    assert len(blobs) == 4 * COUNT + 1 - COUNT  # manifest, config, own layer each + one base
    with tarfile.open(tmp_path / "all.tar") as tf:
        names = tf.getnames()
        manifest = json.load(tf.extractfile("manifest.json"))
    assert len(manifest) == COUNT
    base = next(iter(bulk.values())).layers[0].digest
    assert names.count(f"blobs/sha256/{base[7:]}") == 1


def test_one_broken_image_fails_alone(occystrap_cli, registry, bulk, tmp_path):
    r = occystrap_cli(
        "--insecure",
        "process",
        f"registry://{registry.host}/bulk/*:1.0",
        f"oci://{tmp_path / 'layout'}",
        timeout=300,
    )
    assert r.returncode == 1
    assert f"{COUNT}/{COUNT + 1} images" in r.stderr and "1 failed" in r.stderr
    # the failed image is named by itself, not by the pattern that found it
    failures = r.stderr.split("Failed images:", 1)[1]
    assert f"  registry://{registry.host}/bulk/broken:1.0: " in failures
    index = json.loads((tmp_path / "layout" / "index.json").read_text())
    assert len(index["manifests"]) == COUNT

    r = occystrap_cli(
        "--insecure",
        "-J",
        "1",
        "process",
        "--fail-fast",
        f"registry://{registry.host}/bulk/*:1.0",
        f"oci://{tmp_path / 'ff'}",
        timeout=300,
    )
    assert r.returncode == 1 and "--fail-fast" in r.stderr


def test_shards_cover_the_list_once(occystrap_cli, registry, bulk, tmp_path):
    seen = []
    for k in range(3):
        layout = tmp_path / f"shard{k}"
        r = occystrap_cli(
            "--insecure",
            "process",
            "--shard",
            f"{k}/3",
            f"registry://{registry.host}/bulk/app-*:1.0",
            f"oci://{layout}",
            timeout=300,
        )
        assert r.returncode == 0, r.stderr
        index = json.loads((layout / "index.json").read_text())
        seen += [m["annotations"]["io.containerd.image.name"] for m in index["manifests"]]
    assert len(seen) == COUNT and len(set(seen)) == COUNT


def test_from_file_list_and_spec(occystrap_cli, registry, mirror, bulk, tmp_path):
    listing = tmp_path / "images.txt"
    listing.write_text(
        f"# two images\nregistry://{registry.host}/bulk/app-00:1.0\n\n"
        f"registry://{registry.host}/bulk/app-01:1.0  # and another\n"
    )
    r = occystrap_cli(
        "--insecure", "process", "--from-file", str(listing), f"registry://{mirror.host}/listed"
    )
    assert r.returncode == 0, r.stderr
    client = RegistryClient(mirror.host, insecure=True)
    assert client.head_manifest("listed/bulk/app-01", "1.0", ["*/*"]) is not None

    spec = tmp_path / "spec.json"
    spec.write_text(
        json.dumps(
            {
                "mirrors": [
                    {
                        "source": f"registry://{registry.host}/bulk/app-02",
                        "destination": f"registry://{mirror.host}/spec",
                        "tags": ["1.0"],
                    }
                ]
            }
        )
    )
    r = occystrap_cli("--insecure", "process", "--from-file", str(spec))
    assert r.returncode == 0, r.stderr
    assert client.head_manifest("spec/bulk/app-02", "1.0", ["*/*"]) is not None

    spec_yaml = tmp_path / "spec.yaml"
    spec_yaml.write_text(
        f"# a YAML spec\nmirrors:\n  - source: registry://{registry.host}/"
        f"bulk/app-03:1.0\n    destination: registry://{mirror.host}/yaml\n"
    )
    r = occystrap_cli("--insecure", "process", "--from-file", str(spec_yaml))
    assert r.returncode == 0, r.stderr
    assert client.head_manifest("yaml/bulk/app-03", "1.0", ["*/*"]) is not None
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("mirrors:\n  - source: registry://h.io/a:1\n    colour: blue\n")
    r = occystrap_cli("process", "--from-file", str(bad_yaml), "oci://x")
    assert r.returncode == 2 and "colour" in r.stderr

    bad = tmp_path / "bad.txt"
    bad.write_text("registry://h.io/ok:1\n\nftp://nope\n")
    r = occystrap_cli("process", "--from-file", str(bad), "oci://x")
    assert r.returncode == 2 and "line 3" in r.stderr
    broken_json = tmp_path / "bad.json"
    broken_json.write_text('{"mirrors": [\n  {"source": "registry://h.io/a:1",}\n]}')
    r = occystrap_cli("process", "--from-file", str(broken_json), "oci://x")
    assert r.returncode == 2 and "line 2" in r.stderr


def test_rate_limit_spaces_requests(occystrap_cli, registry, bulk, tmp_path):
    with FaultProxy(registry.port) as wire:
        r = occystrap_cli(
            "--insecure",
            "--rate-limit",
            "20",
            "-J",
            "4",
            "process",
            f"registry://{wire.host}/bulk/app-0*:1.0",
            f"oci://{tmp_path / 'l'}",
            timeout=300,
        )
        times = sorted(wire.request_times)
    assert r.returncode == 0, r.stderr
    # every stage process shares one bucket: 20/s after a burst of 20, whatever -J and -j
    # (10 images, a literal tag: no tag lists, some 30 requests)
    assert len(times) > 30
    assert times[-1] - times[0] >= (len(times) - 20) / 20 * 0.9
    window = max(sum(1 for t in times if s <= t < s + 1.0) for s in times)
    assert window <= 20 + 20 + 2


def test_an_empty_share_is_success_and_flags_are_checked_first(
    occystrap_cli, registry, sample_images, tmp_path
):
    """A shard that gets no image has done its part (exit 0, and says so); a --stats-file
    in a missing directory and a user without a password are said before anything moves."""
    s = sample_images["docker"]
    empty = next(
        k
        for k in range(8)
        if occystrap_cli(
            "--insecure", "process", "--shard", f"{k}/8", s.uri, f"oci://{tmp_path / f'probe{k}'}"
        ).stderr.find("0/0")
        >= 0
    )
    r = occystrap_cli(
        "--insecure", "process", "--shard", f"{empty}/8", s.uri, f"oci://{tmp_path / 'empty'}"
    )
    assert r.returncode == 0, r.stderr
    assert f"shard {empty}/8: none of the images falls to this share" in r.stderr
    r = occystrap_cli(
        "--insecure",
        "--stats-file",
        str(tmp_path / "no" / "such" / "s.json"),
        "process",
        s.uri,
        f"oci://{tmp_path / 'x'}",
    )
    assert r.returncode == 2 and "is not a writable directory" in r.stderr
    assert not (tmp_path / "x").exists()
    r = occystrap_cli(
        "--insecure", "--dest-username", "someone", "process", s.uri, f"oci://{tmp_path / 'y'}"
    )
    assert r.returncode == 2 and "--dest-username without --dest-password" in r.stderr


@pytest.fixture(scope="module")
def sparse(registry, tmp_path_factory):
    """sparse/a:1.0 and sparse/b:2.0: a literal tag that one repository lacks."""
    work = tmp_path_factory.mktemp("sparse")
    for name, tag, seed in (("sparse/a", "1.0", 7100), ("sparse/b", "2.0", 7101)):
        image = build_image(work / name, seed=seed, layer_sizes=[20_000], special_entries=False)
        push_image(registry.url, name, tag, image)


def test_a_literal_tag_skips_repositories_without_it(
    occystrap_cli, registry, mirror, sparse, tmp_path
):
    """`sparse/*:1.0` reads no tag list (each repository is tried at 1.0): the one without
    the tag is skipped quietly, as when its tag list was read; a pattern whose repositories
    all lack it fails as before."""
    dest = f"registry://{mirror.host}/sparse-mirror"
    r = occystrap_cli("--insecure", "process", f"registry://{registry.host}/sparse/*:1.0", dest)
    assert r.returncode == 0, r.stderr
    assert "Summary: 1/1 images" in r.stderr and "sparse/b" not in r.stderr
    client = RegistryClient(mirror.host, insecure=True)
    assert client.list_tags("sparse-mirror/sparse/a") == ["1.0"]
    r = occystrap_cli("--insecure", "process", f"registry://{registry.host}/sparse/b*:1.0", dest)
    assert r.returncode == 1
    assert "no repository and tag on" in r.stderr and "Traceback" not in r.stderr
    # A glob tag still reads the tag lists.
    r = occystrap_cli("--insecure", "process", f"registry://{registry.host}/sparse/*:2.*", dest)
    assert r.returncode == 0, r.stderr
    assert client.list_tags("sparse-mirror/sparse/b") == ["2.0"]


def test_a_literal_tag_in_shards(occystrap_cli, registry, mirror, sparse, tmp_path):
    """With --shard, a share whose repositories all lack the tag is not a failure: another
    share may hold the only repository that has it."""
    import hashlib

    from occystrap.reference import ImageRef

    def share(name: str, n: int) -> int:  # resolve's Resolver.shard, on str(ImageRef)
        ref = str(ImageRef(registry.host, name, tag="1.0"))
        return int(hashlib.sha256(ref.encode()).hexdigest()[:12], 16) % n

    n = next(n for n in range(2, 50) if share("sparse/a", n) != share("sparse/b", n))
    dest = f"registry://{mirror.host}/sparse-shards"
    src = f"registry://{registry.host}/sparse/*:1.0"
    only_b = occystrap_cli(
        "--insecure", "process", "--shard", f"{share('sparse/b', n)}/{n}", src, dest
    )
    assert only_b.returncode == 0, only_b.stderr
    only_a = occystrap_cli(
        "--insecure", "process", "--shard", f"{share('sparse/a', n)}/{n}", src, dest
    )
    assert only_a.returncode == 0, only_a.stderr
    client = RegistryClient(mirror.host, insecure=True)
    assert client.list_tags("sparse-shards/sparse/a") == ["1.0"]
