"""Filter specs, member rules and the layer rewrite engine, on layers built here."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest

from occystrap.errors import UsageError
from occystrap.filters import FilterChain, parse_filter
from occystrap.filters.exclude import Exclude
from occystrap.filters.inspect import history
from occystrap.filters.layer import filter_layer
from occystrap.filters.normalize_timestamps import NormalizeTimestamps, rfc3339
from occystrap.filters.search import Search
from occystrap.layers.rewrite import rewrite_config


@pytest.mark.parametrize(
    "spec, expected",
    [
        ("normalize-timestamps", NormalizeTimestamps(0, False)),
        ("normalize_timestamps:ts=0", NormalizeTimestamps(0, False)),  # 0 is a number, not False
        (
            "Normalize-Timestamps:timestamp=1700000000,config=true",
            NormalizeTimestamps(1700000000, True),
        ),
        ("exclude:pattern=/tmp/*", Exclude(("tmp/*",))),
        ("exclude:pattern=a;b/*,./c", Exclude(("a", "b/*", "c"))),
        ("search:pattern=1", Search("1", False, False)),  # "1" is a glob, not True
        ("search:regex=a{1,3}$,script_friendly=yes", Search("a{1,3}$", True, True)),
        ("search:pattern=\\.so$,regex=true", Search("\\.so$", True, False)),
        ("search:pattern=*.so,script-friendly=true", Search("*.so", False, True)),
    ],
)
def test_parse_filter(spec, expected):
    assert parse_filter(spec) == expected


@pytest.mark.parametrize(
    "spec",
    [
        "normalize-timestamps:ts=-1",
        "normalize-timestamps:config=maybe",
        "normalize-timestamps:ts=1,timestamp=2",
        "exclude:pattern=",
        "exclude:pattern=a,pattern=b",
        "search",
        "search:pattern=a,regex=b",
        "inspect",
        "inspect:path=x",
        "exclude:nokey",
        "unknown:x=1",
    ],
)
def test_bad_specs(spec):
    with pytest.raises(UsageError):
        parse_filter(spec)


def test_chain_properties():
    chain = FilterChain.parse(["search:pattern=x", "inspect:file=/tmp/x"])
    assert chain and chain.reads_layers and not chain.rewrites
    assert [n for n, _ in chain.searches] == [0]
    assert FilterChain.parse(["exclude:pattern=x"]).rewrites
    assert not FilterChain()


@pytest.mark.parametrize(
    "path, patterns, dropped",
    [
        ("tmp/x", ("tmp",), True),  # a directory pattern takes its contents
        ("tmp", ("tmp/*",), False),  # ...but tmp/* keeps the directory itself
        ("tmp/a/b", ("tmp/*",), True),
        ("usr/lib/x.pyc", ("*.pyc",), True),  # * crosses /
        ("etc/.wh.motd", ("etc/motd",), True),  # the whiteout of an excluded path
        ("var/cache/.wh..wh..opq", ("var/cache/.wh.",), False),
        ("usr/lib64/x", ("usr/lib",), False),
        ("tmpfile", ("tmp",), False),
    ],
)
def test_exclude_matches(path, patterns, dropped):
    assert Exclude(patterns).matches(path) is dropped


def test_history_pairs_entries_with_layers():
    config = {
        "history": [
            {"created": "t0", "created_by": "FROM"},
            {"created": "t1", "created_by": "ENV", "empty_layer": True},
            {"created": "t2", "created_by": "RUN", "comment": "c"},
        ]
    }
    rows = history(
        config, [("sha256:a", 10), ("sha256:b", 20), ("sha256:c", 30)], "sha256:cfg", ["x:1"]
    )
    assert [r["CreatedBy"] for r in rows] == ["", "RUN", "ENV", "FROM"]
    assert [r.get("Layer") for r in rows] == ["sha256:c", "sha256:b", None, "sha256:a"]
    assert [r["Size"] for r in rows] == [30, 20, 0, 10]
    assert rows[0]["Id"] == "sha256:cfg" and rows[0]["Tags"] == ["x:1"]
    assert {r["Id"] for r in rows[1:]} == {"<missing>"}


def test_rewrite_config_sets_diff_ids_and_times():
    body = json.dumps(
        {
            "created": "2024-01-01T00:00:00Z",
            "rootfs": {"type": "layers", "diff_ids": ["sha256:old"]},
            "history": [{"created": "2024-01-01T00:00:00Z"}],
        }
    ).encode()
    out, digest = rewrite_config(
        body, ["sha256:new"], NormalizeTimestamps(86400, True).rewrite_config
    )
    doc = json.loads(out)
    assert doc["rootfs"]["diff_ids"] == ["sha256:new"]
    assert doc["created"] == doc["history"][0]["created"] == rfc3339(86400)
    assert digest == "sha256:" + hashlib.sha256(out).hexdigest()


# -- the layer engine ---------------------------------------------------------------------


def _tar(entries: list[tarfile.TarInfo], data: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info in entries:
            payload = data.get(info.name)
            if payload is not None:
                info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload) if payload is not None else None)
    return buf.getvalue()


def _entry(
    name: str,
    kind: bytes = tarfile.REGTYPE,
    link: str = "",
    mtime: float = 1e9,
    pax: dict[str, str] | None = None,
) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mtime = kind, link, mtime
    info.pax_headers = pax or {}
    return info


@pytest.fixture
def layer(tmp_path: Path) -> tuple[Path, str]:
    raw = _tar(
        [
            _entry("etc", tarfile.DIRTYPE),
            _entry(
                "etc/passwd",
                mtime=1e9 + 0.5,
                pax={"atime": "5", "ctime": "6", "SCHILY.xattr.user.x": "\udcff\x01"},
            ),
            _entry("bin/tool"),
            _entry("bin/alias", tarfile.LNKTYPE, link="bin/tool"),
            _entry("cache/a"),
        ],
        {"etc/passwd": b"root:x:0:0\n", "bin/tool": b"\x7fELF" * 100, "cache/a": b"a"},
    )
    path = tmp_path / "layer.tar.gz"
    path.write_bytes(gzip.compress(raw, mtime=0))
    return path, "sha256:" + hashlib.sha256(raw).hexdigest()


def _members(path: Path, compression: str) -> dict[str, tarfile.TarInfo]:
    data = path.read_bytes()
    if compression == "gzip":
        data = gzip.decompress(data)
    with tarfile.open(fileobj=io.BytesIO(data), encoding="utf-8") as tar:
        return {m.name: m for m in tar.getmembers()}


def test_normalize_rewrites_times_and_keeps_the_rest(layer, tmp_path):
    path, diff_id = layer
    out = tmp_path / "out.gz"
    chain = FilterChain((NormalizeTimestamps(42),))
    result = filter_layer(str(path), -1, 0, "gzip", chain, str(out), "gzip", None)
    assert result.input_diff_id == diff_id
    assert result.digest == "sha256:" + hashlib.sha256(out.read_bytes()).hexdigest()
    plain = gzip.decompress(out.read_bytes())
    assert result.diff_id == "sha256:" + hashlib.sha256(plain).hexdigest()
    assert result.plain_size == len(plain) and len(plain) % tarfile.RECORDSIZE == 0
    got = _members(out, "gzip")
    assert {m.mtime for m in got.values()} == {42}
    passwd = got["etc/passwd"]
    # the binary value survives (tarfile marks such a header hdrcharset=BINARY)
    assert passwd.pax_headers == {"SCHILY.xattr.user.x": "\udcff\x01", "hdrcharset": "BINARY"}
    assert got["bin/alias"].islnk() and got["bin/alias"].linkname == "bin/tool"
    again = tmp_path / "again.gz"
    assert (
        filter_layer(str(path), -1, 0, "gzip", chain, str(again), "gzip", None).digest
        == result.digest
    )


def test_a_kept_hard_link_to_an_excluded_file_takes_its_data(tmp_path):
    """exclude drops bin/tool but not its links: the first link becomes the file, the
    second links to the first. Nothing is left in the scratch space."""
    raw = _tar(
        [
            _entry("bin/tool"),
            _entry("bin/alias", tarfile.LNKTYPE, link="bin/tool"),
            _entry("bin/alias2", tarfile.LNKTYPE, link="bin/tool"),
            _entry("cache/a"),
            _entry("other", tarfile.LNKTYPE, link="cache/a"),
        ],
        {"bin/tool": b"\x7fELF" * 1000, "cache/a": b"a"},
    )
    path = tmp_path / "layer.tar"
    path.write_bytes(raw)
    out = tmp_path / "out.tar"
    chain = FilterChain((Exclude(("bin/tool", "cache", "other")),))
    filter_layer(str(path), -1, 0, "none", chain, str(out), "none", None)
    with tarfile.open(out) as tar:
        got = {m.name: m for m in tar.getmembers()}
        assert sorted(got) == ["bin/alias", "bin/alias2"]
        assert got["bin/alias"].isfile()
        assert tar.extractfile("bin/alias").read() == b"\x7fELF" * 1000  # type: ignore[union-attr]
        assert got["bin/alias2"].islnk() and got["bin/alias2"].linkname == "bin/alias"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["layer.tar", "out.tar"]  # no temp


def test_look_only_and_pass_through(layer, tmp_path):
    path, diff_id = layer
    chain = FilterChain((Search("bin/*"),))
    result = filter_layer(str(path), -1, 0, "gzip", chain, None, "gzip", None)
    assert [h.path for h in result.hits[0]] == ["bin/tool", "bin/alias"]
    assert result.input_diff_id == result.diff_id == diff_id and not result.digest
    out = tmp_path / "plain.tar"
    result = filter_layer(str(path), -1, 0, "gzip", chain, str(out), "none", None)
    assert out.read_bytes() == gzip.decompress(path.read_bytes())  # untouched bytes
    assert result.diff_id == diff_id


def test_a_region_of_a_bigger_file(layer, tmp_path):
    """tar:// written in place: the layer is a region of the archive being built."""
    path, diff_id = layer
    blob = path.read_bytes()
    big = tmp_path / "big"
    big.write_bytes(b"x" * 1000 + blob + b"y" * 1000)
    result = filter_layer(
        str(big), 1000, len(blob), "gzip", FilterChain((Search("*"),)), None, "gzip", None
    )
    assert result.input_diff_id == diff_id and len(result.hits[0]) == 5


def test_not_a_tar_is_an_error(tmp_path):
    path = tmp_path / "bad.gz"
    path.write_bytes(gzip.compress(b"not a tar" * 100))
    with pytest.raises(tarfile.TarError):
        filter_layer(
            str(path),
            -1,
            0,
            "gzip",
            FilterChain((NormalizeTimestamps(),)),
            str(tmp_path / "out"),
            "gzip",
            None,
        )


@pytest.mark.parametrize("fmt", ["gnu", "posix"])
def test_sparse_files_become_regular_files_with_their_data(tmp_path, fmt):
    """GNU tar's sparse members (old GNU, and PAX 1.0) come out as regular files holding
    the same bytes."""
    import shutil
    import subprocess

    if shutil.which("tar") is None:
        pytest.skip("GNU tar is not installed")
    src = tmp_path / "src"
    src.mkdir()
    with open(src / "holes", "wb") as f:
        f.seek(1 << 20)
        f.write(b"data after a hole")
        f.seek(3 << 20)
        f.write(b"and the end")
    layer = tmp_path / "layer.tar"
    subprocess.run(
        ["tar", f"--format={fmt}", "--sparse", "-cf", str(layer), "-C", str(src), "holes"],
        check=True,
    )
    assert any(m.issparse() for m in tarfile.open(layer).getmembers())
    out = tmp_path / "out.tar"
    filter_layer(
        str(layer), -1, 0, "none", FilterChain((NormalizeTimestamps(),)), str(out), "none", None
    )
    with tarfile.open(out) as tar:
        member = tar.getmember("holes")
        assert member.isfile() and not member.issparse()
        assert tar.extractfile(member).read() == (src / "holes").read_bytes()  # type: ignore[union-attr]


def test_a_bad_header_in_the_middle_is_an_error_not_the_end(tmp_path):
    """tarfile alone would stop at the bad header and call the rest the end of the archive:
    the rewritten layer would silently lose every member after it."""
    raw = bytearray(
        _tar(
            [_entry(n, mtime=10**9) for n in "abc"],  # plain ustar headers
            {"a": b"1", "b": b"2", "c": b"3"},
        )
    )
    raw[1024 + 148 : 1024 + 156] = b"0000000\0"  # b's header checksum
    path = tmp_path / "bad.tar"
    path.write_bytes(bytes(raw))
    for chain, out in (
        (FilterChain((NormalizeTimestamps(),)), str(tmp_path / "out")),
        (FilterChain((Search("*"),)), None),
    ):
        with pytest.raises(tarfile.TarError, match="bad tar header at offset 1024"):
            filter_layer(str(path), -1, 0, "none", chain, out, "none", None)


def test_search_reports_names_that_are_not_utf8(tmp_path):
    info = tarfile.TarInfo("caf\udce9")  # b"caf\xe9", Latin-1
    raw = _tar([info], {info.name: b"x"})
    path = tmp_path / "latin.tar"
    path.write_bytes(raw)
    result = filter_layer(
        str(path), -1, 0, "none", FilterChain((Search("caf*"),)), None, "none", None
    )
    assert [h.path for h in result.hits[0]] == ["caf\\xe9"]
    from occystrap.messages import SearchHits, decode, encode

    hits = SearchHits(
        image_id=0, top=0, position=0, name="n", tag="t", index=0, layer="l", hits=result.hits[0]
    )
    assert decode(encode(hits)) == hits  # it can travel


def test_a_rewritten_layer_loses_what_described_the_old_blob():
    from occystrap.layers.rewrite import NewDescriptor, rewrite_manifest

    oci = "application/vnd.oci.image.manifest.v1+json"
    body = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": oci,
            "config": {"digest": "sha256:c", "size": 1, "mediaType": "x"},
            "layers": [
                {
                    "digest": "sha256:old",
                    "size": 1,
                    "mediaType": "m",
                    "annotations": {
                        "io.github.containers.zstd-chunked.manifest-position": "1:2:3:4"
                    },
                    "urls": ["https://example.invalid/blob"],
                },
                {
                    "digest": "sha256:same",
                    "size": 2,
                    "mediaType": "m",
                    "annotations": {"keep": "me"},
                },
            ],
        }
    ).encode()
    out, _, _ = rewrite_manifest(
        body,
        oci,
        [NewDescriptor("sha256:new", 5, "m"), NewDescriptor("sha256:same", 2, "m")],
        None,
        NewDescriptor("sha256:c2", 9, "x"),
    )
    doc = json.loads(out)
    assert doc["layers"][0] == {"digest": "sha256:new", "size": 5, "mediaType": "m"}
    assert doc["layers"][1]["annotations"] == {"keep": "me"}
    assert doc["config"]["digest"] == "sha256:c2" and doc["config"]["size"] == 9
