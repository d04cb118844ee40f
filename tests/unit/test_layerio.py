import gzip
import hashlib
import io
import random
import zlib

import pytest
import zstandard

from occystrap.layers.codec import decompress_file, decompressed_chunks
from occystrap.messages import LayerDesc
from occystrap.stages.verify import check_layer

DATA = random.Random(1).randbytes(3_000_000) + b"a" * 2_000_000


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize(
    "compressed, compression",
    [
        (gzip.compress(DATA), "gzip"),
        (gzip.compress(DATA[:1000]) + gzip.compress(DATA[1000:]) + b"\0" * 512, "gzip"),
        (zstandard.ZstdCompressor().compress(DATA), "zstd"),
        (DATA, "none"),
    ],
)
def test_decompressed_chunks(compressed, compression):
    assert b"".join(decompressed_chunks(io.BytesIO(compressed), compression)) == DATA


class _Withholding:
    """zlib's decompressobj behaving as ISA-L's may (python-isal issues 229, 248): it takes
    all its input at once, hands out at most max_length a call, and keeps the rest for later
    calls, with no unconsumed_tail to show for it."""

    def __init__(self, wbits):
        self._z = zlib.decompressobj(wbits)
        self._held = b""

    def decompress(self, data, max_length=0):
        self._held += self._z.decompress(data)
        n = max_length or len(self._held)
        out, self._held = self._held[:n], self._held[n:]
        return out

    @property
    def eof(self):
        return self._z.eof and not self._held

    @property
    def unconsumed_tail(self):
        return b""

    @property
    def unused_data(self):
        return self._z.unused_data


@pytest.mark.parametrize(
    "compressed",
    [
        gzip.compress(DATA),
        gzip.compress(DATA[:1000]) + gzip.compress(DATA[1000:]) + b"\0" * 512,
        gzip.compress(DATA[:-1000]) + gzip.compress(DATA[-1000:]),  # 2nd member in the tail
    ],
)
def test_gzip_output_held_past_the_input_is_collected(monkeypatch, compressed):
    """Output still held when the input has run out is asked for, not called truncated,
    and a member that follows it is not lost."""
    from isal import isal_zlib

    monkeypatch.setattr(isal_zlib, "decompressobj", _Withholding)
    assert b"".join(decompressed_chunks(io.BytesIO(compressed), "gzip")) == DATA


def test_truncated_gzip_is_an_error():
    with pytest.raises(ValueError, match="truncated"):
        b"".join(decompressed_chunks(io.BytesIO(gzip.compress(DATA)[:-100]), "gzip"))


def test_decompress_a_region_of_a_file(tmp_path):
    blob = gzip.compress(DATA)
    path = tmp_path / "archive"
    path.write_bytes(b"x" * 777 + blob + b"y" * 333)
    assert decompress_file(str(path), "gzip", 777, len(blob)) == (sha(DATA), len(DATA))


def layer(path, size, diff_id=None, fetched=None, offset=-1):
    return LayerDesc(
        image_id=0,
        index=0,
        digest=sha(b"c"),
        size=size,
        media_type="m",
        compression="gzip",
        path=str(path),
        diff_id=diff_id,
        fetched_size=size if fetched is None else fetched,
        offset=offset,
    )


def test_check_layer(tmp_path):
    blob = gzip.compress(DATA)
    path = tmp_path / "spool"
    path.write_bytes(blob)
    assert check_layer(layer(path, len(blob)), full=False) is None
    assert check_layer(layer(path, len(blob), diff_id=sha(DATA)), full=True) is None
    assert "diff_id" in check_layer(layer(path, len(blob), diff_id=sha(b"other")), full=True)
    assert "bytes, manifest says" in check_layer(layer(path, len(blob), fetched=5), full=False)
    path.write_bytes(blob[:-10])  # the spool lost its tail
    assert "spool file holds" in check_layer(layer(path, len(blob)), full=False)


@pytest.mark.parametrize(
    "compressed, compression",
    [
        (gzip.compress(DATA)[:20] + b"\xff" * 200 + gzip.compress(DATA)[220:], "gzip"),
        (b"\x28\xb5\x2f\xfd" + b"\xff" * 64, "zstd"),
    ],
)
def test_corrupt_streams_are_value_errors(compressed, compression):
    """Not a zlib or zstd exception that callers would not expect: a ValueError they report."""
    with pytest.raises(ValueError, match=f"corrupt {compression} stream"):
        b"".join(decompressed_chunks(io.BytesIO(compressed), compression))


@pytest.mark.parametrize("level", [None, 1, 9])
def test_layer_sink_gzip(tmp_path, level):
    """Without a level, ISA-L; with one, zlib at exactly that level. Both are plain gzip
    that the standard library reads, and the same input gives the same bytes."""
    import zlib

    from occystrap.layers.codec import LayerSink

    outs = []
    for n in range(2):
        sink = LayerSink(str(tmp_path / f"out{n}"), "gzip", level)
        for i in range(0, len(DATA), 1 << 20):
            sink.write(DATA[i : i + (1 << 20)])
        digest, size, diff_id = sink.close()
        blob = (tmp_path / f"out{n}").read_bytes()
        assert gzip.decompress(blob) == DATA and diff_id == sha(DATA)
        assert digest == sha(blob) and size == len(blob)
        outs.append(blob)
    assert outs[0] == outs[1]
    if level is not None:
        z = zlib.compressobj(level, zlib.DEFLATED, 31)
        assert (
            outs[0]
            == b"".join(z.compress(DATA[i : i + (1 << 20)]) for i in range(0, len(DATA), 1 << 20))
            + z.flush()
        )
