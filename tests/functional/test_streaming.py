"""registry → registry streaming (issue 17): a big blob goes up while it comes down, against
the real registry behind two fault proxies (one throttles the source, the other records
what reaches the destination). The upload never commits bytes fetch has not verified."""

from __future__ import annotations

import random
import threading

import httpx

from tests.faultproxy import FaultProxy
from tools.imagebuilder import build_image, push_image

MB = 1_000_000


def _blob_status(url: str, name: str, digest: str) -> int:
    return httpx.head(f"{url}/v2/{name}/blobs/{digest}").status_code


def test_big_blob_uploads_while_it_downloads(occystrap_cli, registry, tmp_path):
    image = build_image(
        tmp_path / "build", seed=1701, layer_sizes=[24 * MB, 200_000], special_entries=False
    )
    push_image(registry.url, "stream/src", "1.0", image)
    big = max(image.layers, key=lambda la: la.size)
    assert big.size >= 16 * 2**20  # fetch.STREAM_MIN
    # the source at 16 MB/s: the big layer takes about 1.5 s to come down; a sampler notes
    # (bytes the source sent, bytes the destination received) as the copy goes
    samples: list[tuple[int, int]] = []
    done = threading.Event()
    with FaultProxy(registry.port, rate=16 * MB) as source, FaultProxy(registry.port) as dest:

        def sample() -> None:
            while not done.wait(0.02):
                samples.append((source.response_bytes, dest.request_bytes))

        sampler = threading.Thread(target=sample)
        sampler.start()
        try:
            r = occystrap_cli(
                "--insecure",
                "process",
                f"registry://{source.host}/stream/src:1.0",
                f"registry://{dest.host}/stream/dst:1.0",
            )
        finally:
            done.set()
            sampler.join()
        patches = [line for line in dest.request_lines if line.startswith("PATCH")]
    assert r.returncode == 0, r.stderr
    assert "1 blobs streamed" in r.stderr, r.stderr
    assert len(patches) == 1  # the whole blob in one PATCH whose body followed the download
    # 4 MB had reached the destination while the source still had 4 MB of the blob to send
    assert any(sent <= big.size - 4 * MB and up >= 4 * MB for sent, up in samples), samples[-5:]
    with open(big.path, "rb") as f:
        body = httpx.get(f"{registry.url}/v2/stream/dst/blobs/{big.digest}").content
        assert body == f.read()


def test_a_corrupt_download_never_commits(occystrap_cli, registry, tmp_path):
    """The registry serves a big blob whose bytes no longer match its digest: the PATCH
    that went up is abandoned (the session deleted) and no PUT commits the digest."""
    from tests.functional.test_errors import _registry_blob

    image = build_image(tmp_path / "build", seed=1702, layer_sizes=[20 * MB], special_entries=False)
    push_image(registry.url, "stream/corrupt", "1.0", image)
    layer = image.layers[0]
    blob = _registry_blob(registry, layer.digest)
    data = bytearray(blob.read_bytes())
    data[random.Random(1).randrange(len(data) - MB, len(data))] ^= 0xFF  # late in the blob
    blob.write_bytes(bytes(data))
    with FaultProxy(registry.port, rate=20 * MB) as source, FaultProxy(registry.port) as dest:
        r = occystrap_cli(
            "--insecure",
            "process",
            f"registry://{source.host}/stream/corrupt:1.0",
            f"registry://{dest.host}/stream/corrupt-dst:1.0",
        )
        lines = list(dest.request_lines)
    assert r.returncode == 1, r.stderr
    assert layer.digest in r.stderr
    assert any(line.startswith("PATCH") for line in lines), lines  # it was streaming
    quoted = layer.digest.replace(":", "%3A")
    commits = [line for line in lines if line.startswith("PUT") and quoted in line]
    assert commits == [], commits  # the layer's digest was never committed
    assert any(line.startswith("DELETE") for line in lines), lines  # the session tidied
    assert _blob_status(registry.url, "stream/corrupt-dst", layer.digest) == 404


def test_streams_of_several_images_at_once_finish(occystrap_cli, registry, tmp_path):
    """Blobs in flight wait on the write stage, which waits on uploads when it publishes: with
    one upload thread (-j 1) and three images in flight, two streaming and one small, and two
    more sharing a streamed base layer, every image still lands (it once hung here)."""
    images = {
        "b": build_image(tmp_path / "b", seed=11, layer_sizes=[20 * MB], special_entries=False),
        "c": build_image(tmp_path / "c", seed=12, layer_sizes=[20 * MB], special_entries=False),
        "a": build_image(tmp_path / "a", seed=13, layer_sizes=[200_000], special_entries=False),
    }
    for name, seed in (("d", 14), ("e", 15)):
        images[name] = build_image(
            tmp_path / name,
            seed=seed,
            layer_sizes=[20 * MB, 100_000],
            special_entries=False,
            shared_base_key="base",
        )
    assert images["d"].layers[0].digest == images["e"].layers[0].digest
    for name, image in images.items():
        push_image(registry.url, f"many/{name}", "1.0", image)
    with FaultProxy(registry.port, rate=8 * MB) as source, FaultProxy(registry.port) as dest:
        listing = tmp_path / "list.txt"
        listing.write_text("".join(f"registry://{source.host}/many/{n}:1.0\n" for n in images))
        r = occystrap_cli(
            "--insecure",
            "-j",
            "1",
            "-J",
            "3",
            "process",
            "--from-file",
            str(listing),
            f"registry://{dest.host}/out",
            timeout=90,
        )
    assert r.returncode == 0, r.stderr
    assert "blobs streamed" in r.stderr, r.stderr
    for name, image in images.items():
        for layer in image.layers:
            assert _blob_status(registry.url, f"out/many/{name}", layer.digest) == 200, name
