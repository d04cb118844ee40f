"""Shell completion is click's: the scripts README.md tells users to install, run as a
shell runs them (bash for real; zsh's and fish's scripts through the same protocol their
generated functions speak)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import _clean_env, _cli_command


def _complete(shell: str, words: str, cword: str) -> str:
    env = _clean_env(
        {"_OCCYSTRAP_COMPLETE": f"{shell}_complete", "COMP_WORDS": words, "COMP_CWORD": cword}
    )
    done = subprocess.run(
        _cli_command(), capture_output=True, text=True, env=env, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_scripts_are_generated(shell: str) -> None:
    env = _clean_env({"_OCCYSTRAP_COMPLETE": f"{shell}_source"})
    done = subprocess.run(
        _cli_command(), capture_output=True, text=True, env=env, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "_OCCYSTRAP_COMPLETE" in done.stdout and "occystrap" in done.stdout


def test_bash_completes_commands_options_and_choices(tmp_path: Path) -> None:
    bash = shutil.which("bash")
    assert bash is not None
    script = tmp_path / "complete.sh"
    script.write_text(
        'eval "$(_OCCYSTRAP_COMPLETE=bash_source occystrap)"\n'
        'for line in "occystrap pro" "occystrap --compr" "occystrap --compression "; do\n'
        '  read -r -a COMP_WORDS <<< "$line"\n'
        '  [[ $line == *" " ]] && COMP_WORDS+=("")\n'
        "  COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 ))\n"
        "  COMPREPLY=()\n"
        "  _occystrap_completion occystrap\n"
        '  echo "${COMPREPLY[*]}"\n'
        "done\n"
    )
    # the console script, as an installed occystrap is found by the generated function
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    done = subprocess.run(
        [bash, str(script)],
        capture_output=True,
        text=True,
        timeout=60,
        env=_clean_env({"PATH": path}),
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["process", "--compression --compression-level", "gzip zstd"]


def test_zsh_and_fish_protocols() -> None:
    assert "process" in _complete("zsh", "occystrap pro", "1").split("\n")
    assert _complete("fish", "occystrap --stats", "--stats").startswith("plain,--stats")
    assert "plain,--authfile" in _complete("fish", "occystrap --auth", "--auth")
