"""quay:// sources against a stand-in for Quay's REST API v1 (tests/quaystandin.py: Quay cannot
run here; the stand-in follows its documented repository and tag endpoints, pagination and
timestamps), with the images themselves served by the real test registry behind it."""

from __future__ import annotations

import datetime
import json

import pytest

from tests.quaystandin import QuayStandIn
from tools.imagebuilder import build_image, push_image


def ts(day: str) -> int:
    return int(datetime.datetime.fromisoformat(day).replace(tzinfo=datetime.UTC).timestamp())


@pytest.fixture(scope="module")
def quay(registry, tmp_path_factory):
    work = tmp_path_factory.mktemp("quay")
    tags = {
        "app-a": {"latest": ts("2024-06-01")},
        "app-b": {"latest": ts("2023-03-01")},
        "app-c": {"v1": ts("2024-06-01")},
        "other": {"latest": ts("2024-06-01")},
        "app-d": {"latest": ts("2024-06-01")},
    }
    for i, (name, versions) in enumerate(sorted(tags.items())):
        image = build_image(work / name, seed=600 + i, layer_sizes=[20_000], special_entries=False)
        for tag in versions:
            push_image(registry.url, f"qns/{name}", tag, image)
    repos = {
        "app-a": ts("2024-06-02"),
        "app-b": ts("2023-03-02"),
        "app-c": ts("2024-06-02"),
        "other": ts("2024-06-02"),
        "app-d": ts("2022-01-01"),
    }
    with QuayStandIn(registry.port, "qns", repos, tags, token="quay-token") as standin:
        yield standin


def names_in(layout) -> list[str]:
    index = json.loads((layout / "index.json").read_text())
    return sorted(
        m["annotations"]["io.containerd.image.name"].split("/", 1)[1] for m in index["manifests"]
    )


def test_namespace_glob_and_tag(occystrap_cli, quay, tmp_path):
    r = occystrap_cli(
        "--quay-url",
        quay.url,
        "process",
        "quay://qns/app-*?token=quay-token",
        f"oci://{tmp_path / 'layout'}",
    )
    assert r.returncode == 0, r.stderr
    # app-c has no `latest`; `other` does not match the glob
    assert names_in(tmp_path / "layout") == [
        "qns/app-a:latest",
        "qns/app-b:latest",
        "qns/app-d:latest",
    ]


def test_since_drops_old_repositories_and_tags(occystrap_cli, quay, tmp_path):
    r = occystrap_cli(
        "--quay-url",
        quay.url,
        "process",
        "quay://qns?since=2024-01-01&token=quay-token",
        f"oci://{tmp_path / 'layout'}",
    )
    assert r.returncode == 0, r.stderr
    assert names_in(tmp_path / "layout") == ["qns/app-a:latest", "qns/other:latest"]


def test_token_falls_back_to_password_and_is_never_shown(occystrap_cli, quay, tmp_path):
    r = occystrap_cli(
        "--quay-url", quay.url, "process", "quay://qns/app-a:latest", f"oci://{tmp_path / 'layout'}"
    )
    assert r.returncode == 1 and "check the token" in r.stderr
    r = occystrap_cli(
        "--quay-url",
        quay.url,
        "--password",
        "wrong-token-xyz",
        "process",
        "quay://qns/app-a",
        f"oci://{tmp_path / 'layout'}",
    )
    assert r.returncode == 1 and "wrong-token-xyz" not in r.stderr
    r = occystrap_cli(
        "--quay-url",
        quay.url,
        "process",
        "quay://qns/app-a?token=quay-token",
        f"oci://{tmp_path / 'layout'}",
    )
    assert r.returncode == 0, r.stderr


QUAY_REPOS = {
    "app-a": ts("2024-06-02"),
    "app-b": ts("2023-03-02"),
    "app-c": ts("2024-06-02"),
    "other": ts("2024-06-02"),
    "app-d": ts("2022-01-01"),
}
QUAY_TAGS = {
    "app-a": {"latest": ts("2024-06-01")},
    "app-b": {"latest": ts("2023-03-01")},
    "app-c": {"v1": ts("2024-06-01")},
    "other": {"latest": ts("2024-06-01")},
    "app-d": {"latest": ts("2024-06-01")},
}


def test_api_goes_through_the_rate_limit_and_retries_429(occystrap_cli, quay, registry, tmp_path):
    """The Quay API shares the registry client: its requests wait for --rate-limit's
    bucket with the image pulls, and a 429 is retried after its Retry-After."""
    with QuayStandIn(registry.port, "qns", QUAY_REPOS, QUAY_TAGS, throttle=1) as standin:
        r = occystrap_cli(
            "--quay-url",
            standin.url,
            "--rate-limit",
            "5",
            "--stats-file",
            tmp_path / "stats.json",
            "process",
            "quay://qns/app-*",
            f"oci://{tmp_path / 'layout'}",
            timeout=300,
        )
        times = sorted(standin.request_times)
        statuses = list(standin.api_statuses)
    assert r.returncode == 0, r.stderr
    assert names_in(tmp_path / "layout") == [
        "qns/app-a:latest",
        "qns/app-b:latest",
        "qns/app-d:latest",
    ]
    assert statuses[0] == 429 and statuses[1:] == [200] * (len(statuses) - 1)
    stats = json.loads((tmp_path / "stats.json").read_text())
    assert stats["requests"]["throttled"] >= 1 and stats["requests"]["retries"] >= 1
    assert stats["requests"]["by_host"][standin.host] >= len(statuses)
    # one bucket per host for API and registry requests alike: 5/s after a burst of 5
    assert len(times) > 15
    assert times[-1] - times[0] >= (len(times) - 5) / 5 * 0.9
    assert max(sum(1 for t in times if s <= t < s + 1.0) for s in times) <= 5 + 5 + 2


def test_api_uses_the_tls_options(occystrap_cli, quay, registry, tmp_path):
    """--ca-file and --no-tls-verify reach the API calls (quay.io serves HTTPS)."""
    with QuayStandIn(registry.port, "qns", QUAY_REPOS, QUAY_TAGS, tls_dir=tmp_path) as standin:
        source = "quay://qns/app-a"
        r = occystrap_cli(
            "--quay-url", standin.url, "process", source, f"oci://{tmp_path / 'refused'}"
        )
        assert r.returncode == 1 and "certificate" in r.stderr.lower(), r.stderr
        assert "Traceback" not in r.stderr
        for flags in (["--ca-file", standin.ca_file], ["--no-tls-verify"]):
            out = tmp_path / f"layout{len(flags)}"
            r = occystrap_cli("--quay-url", standin.url, *flags, "process", source, f"oci://{out}")
            assert r.returncode == 0, r.stderr
            assert names_in(out) == ["qns/app-a:latest"]
