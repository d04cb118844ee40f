"""Bulk mirror benchmark: the bulk set (30 images of ~20 MB sharing a 50 MB base) registry →
a fresh registry, ours against ``skopeo sync``, then the re-run with nothing to copy.

Kept as a shortcut: it is ``python -m bench --images bulk --workflows bulk,bulk-noop`` (see
bench/harness.py, which builds the set and measures it like every other workflow).

    .venv/bin/python -m bench.bulk [--runs 3] [any other python -m bench option]
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.harness import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(
        main(
            [
                "--images",
                "bulk",
                "--workflows",
                "bulk,bulk-noop",
                "--tools",
                "occystrap,skopeo",
                *sys.argv[1:],
            ]
        )
    )
