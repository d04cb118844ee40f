"""Property-based tests (hypothesis) for the parsers that face untrusted input."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from occystrap.errors import UsageError
from occystrap.reference import DIGEST_RE, parse_image_ref, parse_location
from occystrap.registry.auth import parse_challenges
from occystrap.registry.ratelimit import pause_for
from occystrap.registry.urls import CONTENT_RANGE_RE as _CONTENT_RANGE_RE

component = st.from_regex(r"[a-z0-9]{1,8}(?:[._-][a-z0-9]{1,8}){0,2}", fullmatch=True)
name = st.lists(component, min_size=1, max_size=4).map("/".join)
tag = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,20}", fullmatch=True)
digest = st.from_regex(r"sha256:[a-f0-9]{64}", fullmatch=True)
host = st.sampled_from(["127.0.0.1:5000", "ghcr.io", "registry.example.com", "[::1]:5000"])


@given(host, name, st.one_of(st.none(), tag), st.one_of(st.none(), digest))
def test_references_round_trip(h, n, t, d):
    text = f"{h}/{n}" + (f":{t}" if t else "") + (f"@{d}" if d else "")
    ref = parse_image_ref(text)
    assert (ref.host, ref.name, ref.digest) == (h, n, d)
    assert ref.tag == (t or (None if d else "latest"))
    assert parse_image_ref(str(ref)) == ref


@given(st.text(max_size=80))
@settings(max_examples=300)
def test_any_text_parses_or_is_a_usage_error(text):
    """Never a crash, and nothing that is not a clean digest gets through as one."""
    for role in ("source", "destination"):
        try:
            loc = parse_location(text, role=role)
        except UsageError:
            continue
        if loc.ref is not None and loc.ref.digest is not None:
            assert DIGEST_RE.match(loc.ref.digest)
        if loc.ref is not None:
            assert ".." not in loc.ref.name.split("/")


token = st.from_regex(r"[a-z][a-z0-9_-]{0,10}", fullmatch=True)  # names differ ignoring case
value = st.text(alphabet=st.characters(codec="ascii", exclude_categories=("Cc",)), max_size=30)


@given(st.dictionaries(token, value, min_size=1, max_size=5), st.randoms())
def test_challenge_parameters_survive_any_order_and_quoting(params, rnd):
    items = list(params.items())
    rnd.shuffle(items)

    def quote(v: str) -> str:
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'

    quoted = ", ".join(f"{k.upper() if rnd.random() < 0.5 else k}={quote(v)}" for k, v in items)
    challenges = parse_challenges(f"Bearer {quoted}")
    assert len(challenges) == 1 and challenges[0].scheme == "bearer"
    assert challenges[0].params == {k.lower(): v for k, v in params.items()}


@given(st.text(max_size=200))
def test_challenge_parsing_never_crashes(text):
    for challenge in parse_challenges(text):
        assert challenge.scheme == challenge.scheme.lower()


@given(st.integers(0, 2**62), st.integers(0, 2**62))
def test_content_range(start, length):
    end = start + length
    match = _CONTENT_RANGE_RE.match(f"bytes {start}-{end}/{end + 1}")
    assert match and int(match.group(1)) == start


@given(st.integers(-5, 10**6), st.integers(-5, 10**6), st.floats(0, 10**6))
def test_pause_is_bounded(limit, remaining, window):
    pause = pause_for(f"{limit};w={window}", f"{remaining};w={window}")
    assert 0.0 <= pause <= 60.0
    if limit > 0 and remaining > limit / 10:
        assert pause == 0.0
