"""The per-image part of `--stats text` (stats/imagetable.py): rows for a few images, a
summary with the slowest and every failed image for many."""

from __future__ import annotations

from occystrap.stats.imagetable import MAX_ROWS, image_lines


def _images(n: int, failed: tuple[int, ...] = ()) -> list[dict[str, object]]:
    return [
        {
            "result": "failed" if i in failed else "done",
            "seconds": float(i),
            "bytes": 1_000_000,
            "layers": 2,
            "skipped_layers": 0,
            "source": f"registry://r/app-{i}:1",
        }
        for i in range(n)
    ]


def test_one_image_has_no_table() -> None:
    assert image_lines(_images(1)) == []


def test_a_few_images_get_a_row_each() -> None:
    lines = image_lines(_images(MAX_ROWS))
    assert len(lines) == MAX_ROWS + 2  # a blank line and the header
    assert lines[-1].endswith("registry://r/app-19:1")


def test_many_images_are_summarised_with_the_slowest_and_the_failed() -> None:
    lines = image_lines(_images(1000, failed=(3, 7)))
    assert len(lines) < 20
    text = "\n".join(lines)
    assert "images: 1000 (998 done, 2 failed)" in text
    assert "median 499.50" in text and "max 999.00" in text
    for i in (999, 998, 997, 996, 995, 3, 7):  # the 5 slowest, then the failed
        assert f"registry://r/app-{i}:1" in text
    assert "registry://r/app-500:1" not in text
    assert lines[-1].startswith("(993 more")
