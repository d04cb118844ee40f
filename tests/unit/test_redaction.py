"""Secrets typed into URIs never reach an output: userinfo and query values are redacted."""

from __future__ import annotations

import pytest

from occystrap.errors import UsageError
from occystrap.redaction import redact_uri, redact_url
from occystrap.reference import parse_location


@pytest.mark.parametrize(
    "typed, shown",
    [
        ("quay://ns/app*?token=s3cret", "quay://ns/app*?token=REDACTED"),
        ("quay://ns?since=2024-01-01&token=s3cret", "quay://ns?since=2024-01-01&token=REDACTED"),
        (
            "registry://h:5000/a/b:1?insecure=true&os=linux",
            "registry://h:5000/a/b:1?insecure=true&os=linux",
        ),
        (
            "registry://h/a:1?X-Amz-Signature=abc&Password=p",
            "registry://h/a:1?X-Amz-Signature=REDACTED&Password=REDACTED",
        ),
        ("registry://user:pw@h/a:1", "registry://REDACTED@h/a:1"),
        ("registry:user:pw@h/a:1", "registry:REDACTED@h/a:1"),
        ("https://user:tok@quay.example/x?y=1", "https://REDACTED@quay.example/x?y=REDACTED"),
        ("registry://h/a@sha256:" + "0" * 64, "registry://h/a@sha256:" + "0" * 64),
        ("tar:///srv/a@b.tar#app:1", "tar:///srv/a@b.tar#app:1"),
        ("tar:///srv/a.tar?secret=1#app:1", "tar:///srv/a.tar?secret=REDACTED#app:1"),
        (
            "dir:///out?unique_names=true&expand=true&preserve_modes=true",
            "dir:///out?unique_names=true&expand=true&preserve_modes=true",
        ),
        ("oci:relative/layout:1.0", "oci:relative/layout:1.0"),
        ("/plain/path", "/plain/path"),
        ("registry://h/a:1?flag", "registry://h/a:1?flag"),
    ],
)
def test_redact_uri(typed: str, shown: str) -> None:
    assert redact_uri(typed) == shown


@pytest.mark.parametrize(
    "url, shown",
    [
        ("https://u:p@h:8443/v2/x?X-Signature=s#f", "https://h:8443/v2/x"),
        ("http://[::1]:5000/token?scope=x", "http://[::1]:5000/token"),
        ("http://h:notaport/x", "REDACTED"),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_location_keeps_options_but_shows_them_redacted() -> None:
    loc = parse_location("quay://ns/app*:1?token=s3cret&since=2024-01-01", role="source")
    assert loc.option("token") == "s3cret"
    assert str(loc) == loc.text == "quay://ns/app*:1?token=REDACTED&since=2024-01-01"


@pytest.mark.parametrize(
    "typed",
    [
        "registry://user:pw-s3cret@h/a:1",
        "registry://user:pw-s3cret@h/ns/*:1",
        "quay://user:pw-s3cret@ns/x",
        "ftp://user:pw-s3cret@h/x?token=tok-s3cret",
        "registry://h/Bad_Name:1?token=tok-s3cret",
    ],
)
def test_usage_errors_never_quote_secrets(typed: str) -> None:
    with pytest.raises(UsageError) as info:
        parse_location(typed, role="source")
    assert "s3cret" not in str(info.value)


def test_every_uri_option_read_is_either_safe_or_known_secret() -> None:
    """A new `?option=` must be decided on: shown as typed (SAFE_OPTIONS) or redacted."""
    import re
    from pathlib import Path

    from occystrap.redaction import SAFE_OPTIONS

    package = Path(__file__).resolve().parents[2] / "occystrap"
    source = "\n".join(p.read_text() for p in package.rglob("*.py"))
    read = set(re.findall(r"""\.option\(\s*["']([a-z_]+)["']""", source))
    assert read and read - SAFE_OPTIONS == {"token"}, read - SAFE_OPTIONS


def test_config_and_token_reprs_mask_their_secrets() -> None:
    """A Config or a cached bearer token printed (a log line, a report, a crash's message)
    shows no password and no token."""
    from occystrap.config import Config
    from occystrap.registry.tokens import _Token

    config = Config(password="pw-1", src_password="pw-2", dest_password="pw-3", username="u")
    shown = repr(config)
    assert not any(s in shown for s in ("pw-1", "pw-2", "pw-3"))
    assert "username='u'" in shown and "password='<redacted>'" in shown
    assert "src_password" in repr(Config())  # unset: None, nothing to mask
    assert "tok-4" not in repr(_Token("tok-4", 1.0, 2.0))
