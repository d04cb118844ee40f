"""The checks behind `occystrap check`, on small layers made in memory."""

from __future__ import annotations

import gzip
import hashlib
import io
import tarfile

import pytest

from occystrap.commands.check import ERROR, INFO, WARNING, check_layer_stream, check_metadata
from occystrap.commands.search import matcher
from occystrap.mediatypes import DOCKER_LAYER_GZIP, OCI_LAYER, Descriptor


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _tar(*entries: tuple[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, kind in entries:
            info = tarfile.TarInfo(name)
            info.type = kind
            tar.addfile(info, io.BytesIO(b"") if kind == tarfile.REGTYPE else None)
    return buf.getvalue()


def _check(plain: bytes, *, gz: bool = True, diff_id: str | None = None, digest: str | None = None):
    blob = gzip.compress(plain) if gz else plain
    layer = Descriptor(DOCKER_LAYER_GZIP if gz else OCI_LAYER, digest or _sha(blob), len(blob))
    return check_layer_stream(io.BytesIO(blob), layer, diff_id or _sha(plain), False)


def _problems(found):
    return [(f.severity, f.check, f.message) for f in found if f.severity != INFO]


REG, DIR = tarfile.REGTYPE, tarfile.DIRTYPE


def test_good_layer_with_whiteouts():
    plain = _tar(
        ("etc", DIR),
        ("etc/.wh.motd", REG),
        ("var/cache", DIR),
        ("var/cache/.wh..wh..opq", REG),
        ("var/cache/new.txt", REG),
    )
    found = _check(plain)
    assert _problems(found) == []
    assert "1 whiteouts, 1 opaque markers" in found[-1].message


@pytest.mark.parametrize(
    "entries, severity, fragment",
    [
        ([("etc/.wh.", REG)], ERROR, "names nothing"),
        ([("etc/.wh..wh.plnk", REG)], ERROR, "unknown whiteout metadata"),
        ([("var/.wh..wh..opq", DIR)], WARNING, "not a regular file"),
        ([("etc/motd", REG), ("etc/.wh.motd", REG)], WARNING, "which the same layer adds"),
        ([("../escape", REG)], ERROR, "leaves the root"),
        ([("/abs", REG)], WARNING, "absolute path"),
    ],
)
def test_whiteout_and_path_problems(entries, severity, fragment):
    problems = _problems(_check(_tar(*entries)))
    assert len(problems) == 1, problems
    assert problems[0][0] == severity and fragment in problems[0][2]


def test_wrong_diff_id_and_digest():
    plain = _tar(("a", REG))
    assert [p[1] for p in _problems(_check(plain, diff_id=_sha(b"x")))] == ["diff_id"]
    assert [p[1] for p in _problems(_check(plain, digest=_sha(b"x")))] == ["digest"]


def test_not_a_tar_and_not_gzip():
    problems = _problems(_check(b"\x01" * 700, gz=False))
    assert "tar" in [p[1] for p in problems]
    problems = _problems(
        check_layer_stream(
            io.BytesIO(b"not gzip at all"),
            Descriptor(DOCKER_LAYER_GZIP, _sha(b"x"), 15),
            None,
            True,
        )
    )
    assert problems and all(p[0] == ERROR for p in problems)


def test_truncated_gzip():
    plain = _tar(("a", REG), ("b", REG))
    blob = gzip.compress(plain)[:-20]
    layer = Descriptor(DOCKER_LAYER_GZIP, _sha(blob), len(blob))
    problems = _problems(check_layer_stream(io.BytesIO(blob), layer, _sha(plain), False))
    assert problems and problems[0][0] == ERROR


def _config(n_layers: int, diff_ids: int, history: list[dict] | None):
    doc: dict = {
        "os": "linux",
        "architecture": "amd64",
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + "0" * 64] * diff_ids},
    }
    if history is not None:
        doc["history"] = history
    layers = [Descriptor(DOCKER_LAYER_GZIP, "sha256:" + "1" * 64, 1)] * n_layers
    return doc, layers


def test_metadata():
    assert _problems(check_metadata(*_config(2, 2, [{}, {"empty_layer": True}, {}]))) == []
    problems = _problems(check_metadata(*_config(2, 3, [{}, {}])))
    assert problems[0][:2] == (ERROR, "layer-count")
    problems = _problems(check_metadata(*_config(2, 2, [{}])))
    assert problems == [(WARNING, "history", "history has 1 non-empty entries for 2 layers")]
    assert [f.severity for f in check_metadata(*_config(1, 1, None))] == [INFO]
    assert _problems(check_metadata({"os": "linux"}, []))[0][:2] == (ERROR, "rootfs")


def test_search_matcher():
    glob = matcher("/etc/*.conf", regex=False)
    assert glob("etc/a.conf") and glob("etc/x/b.conf") and not glob("usr/etc/a.conf")
    assert matcher("etc/*.conf", regex=False)("etc/a.conf")
    rx = matcher(r"^/?usr/lib/.*\.so$", regex=True)
    assert rx("usr/lib/libc.so") and not rx("usr/lib/libc.so.6")
    assert matcher("^/etc/", regex=True)("etc/passwd")
