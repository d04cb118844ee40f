"""A hostile registry (tests/httpfaults.py in front of the real one, on loopback): bodies that
decode to a GiB, lies about encodings and lengths, listings that never end, rate limits that
pause, challenges that downgrade to plain HTTP, tokens that would split a header. Each run
ends with one line naming what and where (or, for a pause, says so), never an internal
error, never a secret, and in bounded time and memory."""

from __future__ import annotations

import json
import os
import time

import pytest

from tests.conftest import TEST_PASSWORD, TEST_USER
from tests.httpfaults import HTTPFaults, Rule
from tests.quaystandin import QuayStandIn
from tools.imagebuilder import build_image, push_image
from tools.testregistry import write_tls_files

FAST = {"OCCYSTRAP_BACKOFF_SCALE": "0.01"}
MANIFESTS = r"^/v2/.+/manifests/"
BLOBS = r"^/v2/.+/blobs/sha256:"
ALWAYS = 10**6


def one_error(stderr: str) -> str:
    lines = [ln for ln in stderr.splitlines() if ln.startswith("occystrap: error:")]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr and "internal error" not in stderr, stderr
    return lines[0]


@pytest.fixture(scope="module")
def two_images(registry, tmp_path_factory):
    """hbody/a:1.0 and hbody/b:1.0, for bulk runs (catalog glob)."""
    work = tmp_path_factory.mktemp("hostile")
    images = {}
    for i, name in enumerate(("a", "b")):
        image = build_image(work / name, seed=1500 + i, layer_sizes=[40_000], special_entries=False)
        push_image(registry.url, f"hbody/{name}", "1.0", image)
        images[name] = image
    return images


def run_copy(occystrap_cli, src: str, tmp_path, *extra: str, dest: str | None = None):
    stats = tmp_path / "stats.json"
    r = occystrap_cli(
        "--insecure",
        "--retries",
        "2",
        "--stats-file",
        str(stats),
        *extra,
        "process",
        src,
        dest or f"oci://{tmp_path / 'layout'}",
        env=FAST,
        timeout=120,
    )
    doc = json.loads(stats.read_text()) if stats.exists() else None
    return r, doc


# -- 3. decompression bombs and false encodings -------------------------------------------------


@pytest.mark.parametrize(
    "what, path, bulk",
    [
        ("manifest", MANIFESTS, False),
        ("config", None, False),  # the config's blob path, filled in below
        ("catalog", r"^/v2/_catalog", True),
        ("tags", r"^/v2/.+/tags/list", True),
    ],
)
def test_zstd_bomb_in_a_small_body_is_refused(
    occystrap_cli, registry, two_images, tmp_path, what, path, bulk
):
    """32 KiB that decode to 1 GiB: refused unread, memory stays near the floor."""
    if path is None:
        path = f"/blobs/{two_images['a'].config.digest}"
    with HTTPFaults(registry.port, [Rule("GET", path, "bomb", times=ALWAYS)]) as faults:
        src = (  # a tag glob: a literal tag reads no tag list
            f"registry://{faults.host}/hbody/*:1.*"
            if bulk
            else f"registry://{faults.host}/hbody/a:1.0"
        )
        r, stats = run_copy(occystrap_cli, src, tmp_path)
    assert r.returncode == 1
    line = one_error(r.stderr)
    assert "encoded (zstd) although identity was asked for; refused" in line, line
    assert stats is not None and stats["peak_pss_total"] < 400e6
    assert not (tmp_path / "layout").exists()


def test_encoded_token_answer_is_refused(occystrap_cli, registry, two_images, tmp_path):
    rules: list[Rule] = []
    with HTTPFaults(registry.port, rules) as faults:
        rules += [
            Rule(
                "GET",
                r"^/v2/",
                "status",
                status=401,
                times=ALWAYS,
                unless_header="Authorization",
                headers={
                    "WWW-Authenticate": f'Bearer realm="http://{faults.host}/token",service="s"'
                },
            ),
            Rule("GET", r"^/token", "bomb", times=ALWAYS),
        ]
        r, _ = run_copy(occystrap_cli, f"registry://{faults.host}/hbody/a:1.0", tmp_path)
    assert r.returncode == 1
    line = one_error(r.stderr)
    assert "token server 127.0.0.1" in line and "refused" in line


def test_encoded_error_body_keeps_the_status_message(occystrap_cli, registry, two_images, tmp_path):
    from tests.httpfaults import bomb

    rule = Rule(
        "GET",
        MANIFESTS,
        "body",
        status=400,
        times=ALWAYS,
        body=bomb("zstd", 2**30),
        headers={"Content-Encoding": "zstd"},
    )
    with HTTPFaults(registry.port, [rule]) as faults:
        r, stats = run_copy(occystrap_cli, f"registry://{faults.host}/hbody/a:1.0", tmp_path)
    assert r.returncode == 1
    assert "unexpected 400 Bad Request" in one_error(r.stderr)
    assert stats is not None and stats["peak_pss_total"] < 400e6


def test_quay_api_bomb_is_refused(occystrap_cli, registry, two_images, tmp_path):
    with (
        QuayStandIn(registry.port, "hbody", {"a": 1}, {"a": {"1.0": 1}}) as quay,
        HTTPFaults(
            quay.port, [Rule("GET", r"^/api/v1/repository", "bomb", times=ALWAYS)]
        ) as faults,
    ):
        r, _ = run_copy(
            occystrap_cli, "quay://hbody/*:1.0", tmp_path, "--quay-url", f"http://{faults.host}"
        )
    assert r.returncode == 1
    line = one_error(r.stderr)
    assert "/api/v1/repository" in line and "encoded (zstd)" in line


def test_bad_gzip_fails_one_image_of_a_bulk_run(occystrap_cli, registry, two_images, tmp_path):
    """A manifest that says gzip and is not: that image fails with one line, the other is
    copied (before, the resolve stage died and took the whole run with it)."""
    rule = Rule("GET", r"^/v2/hbody/a/manifests/", "bad_encoding", times=ALWAYS)
    with HTTPFaults(registry.port, [rule]) as faults:
        r, _ = run_copy(occystrap_cli, f"registry://{faults.host}/hbody/*:1.0", tmp_path)
    assert r.returncode == 1
    failures = [ln for ln in r.stderr.splitlines() if ln.startswith("occystrap: error:")]
    assert len(failures) == 1 and "hbody/a" in failures[0] and "gzip" in failures[0]
    assert "internal error" not in r.stderr and "Traceback" not in r.stderr
    assert "Summary: 1/2 images" in r.stderr


# -- 4. requests that never end ------------------------------------------------------------------


@pytest.mark.parametrize(
    "path, body, link, words",
    [
        (r"^/v2/_catalog", b'{"repositories": []}', "</v2/_catalog?n=1000>", "links back"),
        (
            r"^/v2/_catalog",
            b'{"repositories": []}',
            "</v2/_catalog?n=1000&last=x{n}>",
            "pages in a row with nothing on them",
        ),
        (
            r"^/v2/.+/tags/list",
            b'{"name": "x", "tags": []}',
            "</v2/hbody/a/tags/list?n=1000>",
            "links back",
        ),
    ],
)
def test_listings_that_never_end_are_refused(
    occystrap_cli, registry, two_images, tmp_path, path, body, link, words
):
    rule = Rule(
        "GET",
        path,
        "body",
        status=200,
        times=ALWAYS,
        body=body,
        headers={"Content-Type": "application/json", "Link": f'{link}; rel="next"'},
    )
    with HTTPFaults(registry.port, [rule]) as faults:
        started = time.monotonic()
        # a tag glob: a literal tag reads no tag list
        r, _ = run_copy(occystrap_cli, f"registry://{faults.host}/hbody/*:1.*", tmp_path)
    assert r.returncode == 1
    assert words in one_error(r.stderr)
    assert rule.fired <= 12 and time.monotonic() - started < 60


def test_quay_next_page_repeating_is_refused(occystrap_cli, registry, two_images, tmp_path):
    rule = Rule(
        "GET",
        r"^/api/v1/repository\?",
        "body",
        status=200,
        times=ALWAYS,
        body=b'{"repositories": [], "next_page": "same"}',
        headers={"Content-Type": "application/json"},
    )
    with (
        QuayStandIn(registry.port, "hbody", {"a": 1}, {"a": {"1.0": 1}}) as quay,
        HTTPFaults(quay.port, [rule]) as faults,
    ):
        r, _ = run_copy(
            occystrap_cli, "quay://hbody/*:1.0", tmp_path, "--quay-url", f"http://{faults.host}"
        )
    assert r.returncode == 1
    assert "links back" in one_error(r.stderr) and rule.fired == 2


def test_blob_longer_than_its_descriptor(occystrap_cli, registry, two_images, tmp_path):
    """Content-Length says 1000 bytes more than the manifest, then silence: the blob fails
    at once (no read past its size, no timeout, no Range retries)."""
    layer = two_images["a"].layers[0]
    rule = Rule("GET", f"/blobs/{layer.digest}", "overlong", extra=1000, times=ALWAYS)
    with HTTPFaults(registry.port, [rule]) as faults:
        started = time.monotonic()
        r, _ = run_copy(
            occystrap_cli, f"registry://{faults.host}/hbody/a:1.0", tmp_path, "--timeout", "30"
        )
        took = time.monotonic() - started
    assert r.returncode == 1
    line = one_error(r.stderr)
    assert (
        f"the registry announces {layer.size + 1000} bytes, the manifest says {layer.size}" in line
    )
    assert rule.fired == 1 and took < 20
    assert sorted(os.listdir(tmp_path)) == ["home", "stats.json"]


def test_rate_limit_pause_is_said_and_counted(occystrap_cli, registry, two_images, tmp_path):
    rule = Rule(
        "GET",
        MANIFESTS,
        "add_headers",
        headers={"RateLimit-Limit": "100;w=2", "RateLimit-Remaining": "0;w=2"},
    )
    with HTTPFaults(registry.port, [rule]) as faults:
        r, stats = run_copy(occystrap_cli, f"registry://{faults.host}/hbody/a:1.0", tmp_path)
    assert r.returncode == 0, r.stderr
    notes = [ln for ln in r.stderr.splitlines() if "waiting" in ln]
    assert notes == [
        f"occystrap: {faults.host}: waiting 2.0 s: the registry says its rate "
        "limit is nearly spent (RateLimit-Remaining)"
    ], r.stderr
    assert stats["requests"]["pauses"] == 1 and stats["requests"]["paused_seconds"] >= 2.0


# -- 5. credentials ----------------------------------------------------------------------------


def test_https_registry_with_plain_http_realm(occystrap_cli, registry, two_images, tmp_path):
    """The user's Basic credentials would go to the token server unencrypted: refused
    before any request is sent there."""
    (tmp_path / "tls").mkdir()
    ca, cert, key = write_tls_files(tmp_path / "tls")
    with HTTPFaults(registry.port, []) as token_server:
        realm = f"http://{token_server.host}/token"
        challenge = Rule(
            "GET",
            r"^/v2/",
            "status",
            status=401,
            times=ALWAYS,
            unless_header="Authorization",
            headers={"WWW-Authenticate": f'Bearer realm="{realm}",service="s"'},
        )
        with HTTPFaults(registry.port, [challenge], tls=(cert, key)) as hostile:
            r = occystrap_cli(
                "--ca-file",
                str(ca),
                "--username",
                TEST_USER,
                "--password",
                TEST_PASSWORD,
                "process",
                f"registry://{hostile.host}/hbody/a:1.0",
                f"oci://{tmp_path / 'layout'}",
                env=FAST,
            )
        assert token_server.seen == []
    assert r.returncode == 1
    line = one_error(r.stderr)
    assert f"token realm http://{token_server.host}/token is plain http; refused" in line
    assert TEST_PASSWORD not in r.stderr + r.stdout


@pytest.mark.parametrize(
    "answer, words",
    [
        (json.dumps({"token": "abc\r\nX-Injected: evil"}).encode(), "not a valid header value"),
        (b'{"token": "' + b"x" * (2 * 2**20) + b'"}', "the answer is larger than 1 MiB"),
    ],
)
def test_bad_token_answers(occystrap_cli, registry, two_images, tmp_path, answer, words):
    rules: list[Rule] = []
    with HTTPFaults(registry.port, rules) as faults:
        rules += [
            Rule(
                "GET",
                r"^/v2/",
                "status",
                status=401,
                times=ALWAYS,
                unless_header="Authorization",
                headers={
                    "WWW-Authenticate": f'Bearer realm="http://{faults.host}/token",service="s"'
                },
            ),
            Rule(
                "GET",
                r"^/token",
                "body",
                status=200,
                times=ALWAYS,
                body=answer,
                headers={"Content-Type": "application/json"},
            ),
        ]
        r, _ = run_copy(occystrap_cli, f"registry://{faults.host}/hbody/a:1.0", tmp_path)
        fetched = faults.requests_to(r"^/token")
    assert r.returncode == 1
    line = one_error(r.stderr)
    assert words in line and "X-Injected" not in r.stderr and "xxxx" not in r.stderr
    assert fetched == 1  # not retried as if the fault were transient
