import pytest

from occystrap.errors import UsageError
from occystrap.reference import normalized_name, parse_image_ref, parse_location

D = "sha256:" + "a" * 64


@pytest.mark.parametrize(
    "text, host, name, tag, digest",
    [
        ("127.0.0.1:5000/library/app:1.0", "127.0.0.1:5000", "library/app", "1.0", None),
        ("ghcr.io/org/app", "ghcr.io", "org/app", "latest", None),
        (f"ghcr.io/org/app@{D}", "ghcr.io", "org/app", None, D),
        (f"ghcr.io/org/app:v1@{D}", "ghcr.io", "org/app", "v1", D),
        ("docker.io/busybox", "registry-1.docker.io", "library/busybox", "latest", None),
        ("index.docker.io/library/busybox:1", "registry-1.docker.io", "library/busybox", "1", None),
        ("docker.io/grafana/grafana:10", "registry-1.docker.io", "grafana/grafana", "10", None),
        ("localhost:5000/a/b/c:x_y.z-1", "localhost:5000", "a/b/c", "x_y.z-1", None),
        ("[::1]:5000/app:1", "[::1]:5000", "app", "1", None),
    ],
)
def test_parse_image_ref(text, host, name, tag, digest):
    ref = parse_image_ref(text)
    assert (ref.host, ref.name, ref.tag, ref.digest) == (host, name, tag, digest)


@pytest.mark.parametrize(
    "text",
    [
        "app",  # no host
        "ghcr.io/Org/app",  # upper case
        "ghcr.io/org/app@sha256:abcd",  # short digest
        "ghcr.io/org/app:bad/tag",  # tag must not hold '/'... parsed as name -> invalid
        "user:pw@ghcr.io/org/app",
        "ghcr.io/org/app:" + "x" * 200,
        "ghcr.io/../etc",
    ],
)
def test_parse_image_ref_rejects(text):
    with pytest.raises(UsageError):
        parse_image_ref(text)


def test_reference_prefers_digest():
    assert parse_image_ref(f"h.io/a:v1@{D}").reference == D
    assert parse_image_ref("h.io/a").reference == "latest"


def test_repo_tag():
    assert (
        parse_image_ref("127.0.0.1:5000/library/app:1.0").repo_tag
        == "127.0.0.1:5000/library/app:1.0"
    )
    assert parse_image_ref("docker.io/busybox:1").repo_tag == "busybox:1"
    assert parse_image_ref(f"h.io/a@{D}").repo_tag is None


@pytest.mark.parametrize(
    "text, scheme, path, tag, options",
    [
        ("tar:///tmp/x.tar", "tar", "/tmp/x.tar", None, {}),
        ("tar://x.tar?format=v1.2", "tar", "x.tar", None, {"format": "v1.2"}),
        ("file:///tmp/x.tar", "tar", "/tmp/x.tar", None, {}),
        ("tar:/tmp/x.tar", "tar", "/tmp/x.tar", None, {}),
        ("dir:///out?unique_names=true", "dir", "/out", None, {"unique_names": True}),
        ("directory://out", "dir", "out", None, {}),
        ("oci:///srv/layout", "oci", "/srv/layout", None, {}),
        ("oci:///srv/layout:v1", "oci", "/srv/layout", "v1", {}),
        ("tar://localhost/tmp/x.tar", "tar", "/tmp/x.tar", None, {}),
    ],
)
def test_parse_destination(text, scheme, path, tag, options):
    loc = parse_location(text, role="destination")
    assert (loc.scheme, loc.path, loc.tag, loc.options) == (scheme, path, tag, options)


def test_registry_destination_keeps_source_tag_unless_given():
    assert parse_location("registry://h.io/a", role="destination").ref.tag is None
    assert parse_location("registry://h.io/a:v2", role="destination").ref.tag == "v2"
    assert parse_location("registry://h.io/a", role="source").ref.tag == "latest"


def test_parse_source_options():
    loc = parse_location("registry://h.io/a:1?insecure=true&arch=arm64&variant=8", role="source")
    assert loc.ref.name == "a"
    assert loc.options == {"insecure": True, "arch": "arm64", "variant": 8}


@pytest.mark.parametrize(
    "text, role, option",
    [
        ("registry://h.io/a:1?retries=5", "source", "retries"),
        ("oci:///srv/x?media_type=oci", "destination", "media_type"),
        ("tar:///srv/x.tar?fromat=v1.2", "destination", "fromat"),
        ("dir:///srv/x?expnad=true", "destination", "expnad"),
        ("registry://h.io/a?media_types=oci", "destination", "media_types"),
        ("tar:///srv/x.tar?referrers=true", "source", "referrers"),
    ],
)
def test_unknown_options_are_usage_errors(text, role, option):
    """A misspelt option is said, not silently ignored (a `?media_type=oci` typo would
    write the Docker-typed layout the user tried to avoid)."""
    with pytest.raises(UsageError, match=rf"unknown option \?{option}= for a"):
        parse_location(text, role=role)


def test_every_option_read_is_known():
    """Every `option("…")` the code reads is listed for some kind of URI."""
    import pathlib
    import re

    from occystrap.reference import URI_OPTIONS

    known = set().union(*URI_OPTIONS.values())
    root = pathlib.Path(__file__).resolve().parents[2] / "occystrap"
    read = {
        m
        for path in root.rglob("*.py")
        for m in re.findall(r'option\("([a-z_]+)"', path.read_text())
    }
    assert read <= known, read - known


@pytest.mark.parametrize(
    "text, role, fragment",
    [
        ("ftp://x/y", "source", "unknown source"),
        (f"registry://h.io/a@{D}", "destination", "takes a tag, not a digest"),
        ("/tmp/x.tar", "destination", "not a URI"),
        ("tar://", "destination", "missing path"),
    ],
)
def test_parse_location_errors(text, role, fragment):
    with pytest.raises(UsageError, match=fragment):
        parse_location(text, role=role)


@pytest.mark.parametrize(
    ("name", "full"),
    [
        ("busybox:1.36", "docker.io/library/busybox:1.36"),
        ("app:1", "docker.io/library/app:1"),
        ("org/app:1", "docker.io/org/app:1"),
        ("docker.io/busybox:1.36", "docker.io/library/busybox:1.36"),
        ("docker.io/library/busybox:1.36", "docker.io/library/busybox:1.36"),
        ("registry-1.docker.io/org/app:1", "docker.io/org/app:1"),
        ("index.docker.io/app:1", "docker.io/library/app:1"),
        ("127.0.0.1:5000/library/app:1", "127.0.0.1:5000/library/app:1"),
        ("ghcr.io/org/app:1", "ghcr.io/org/app:1"),
        ("localhost/app:1", "localhost/app:1"),
        ("Host/app:1", "Host/app:1"),
        ("quay.io/app:1", "quay.io/app:1"),
    ],
)
def test_normalized_name_as_docker_gives_it(name: str, full: str) -> None:
    assert normalized_name(name) == full
    assert normalized_name(full) == full  # already full: unchanged
