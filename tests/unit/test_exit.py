"""The console script's exit (cli.main → os._exit after the exit handlers): the status, the
flushed output, and what happens when stdout is gone, as with Python's own exit."""

from __future__ import annotations

import subprocess
import sys

from occystrap import __version__

OURS = [sys.executable, "-m", "occystrap"]


def test_output_is_flushed_and_the_status_kept() -> None:
    done = subprocess.run([*OURS, "--version"], capture_output=True, text=True)
    assert done.returncode == 0
    assert done.stdout.strip().endswith(__version__)


def test_usage_error_exits_2_with_one_line() -> None:
    done = subprocess.run([*OURS, "process", "x"], capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr


def test_a_closed_stdout_is_no_traceback() -> None:
    # `occystrap --help | head -0`: the reader is gone before the text is flushed.
    proc = subprocess.Popen(
        [*OURS, "--help"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()
    err = proc.stderr.read()
    proc.wait()
    assert "Traceback" not in err


def test_exit_handlers_still_run() -> None:
    # What atexit holds (logging's flush, finalizers) runs before os._exit.
    code = (
        "import atexit, sys; from occystrap.cli import main; "
        "atexit.register(lambda: print('handler ran', file=sys.stderr)); "
        "sys.argv = ['occystrap', '--version']; main()"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0
    assert "handler ran" in done.stderr
