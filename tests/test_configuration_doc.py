"""The examples of docs/configuration.md print what the code prints: each
``$ VAR=value batcher …`` block is run and its output compared, exit 2."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys

import pytest

from tests.helpers import REPO_ROOT

DOC = REPO_ROOT / "docs" / "configuration.md"
EXAMPLE = re.compile(r"^```text\n\$ (.+?)\n(.*?)\n```$", re.MULTILINE | re.DOTALL)


def examples() -> list[tuple[str, str]]:
    found = EXAMPLE.findall(DOC.read_text(encoding="utf-8"))
    assert found, "docs/configuration.md has no `$ batcher …` example"
    return found


@pytest.mark.parametrize(("command", "expected"), examples())
def test_configuration_errors_print_as_documented(
    command: str, expected: str, tmp_path: os.PathLike[str]
) -> None:
    words = shlex.split(command)
    env = {k: v for k, v in os.environ.items() if not k.startswith("BATCHER_")}
    while "=" in words[0]:
        name, value = words.pop(0).split("=", 1)
        env[name] = value
    assert words[0] == "batcher"
    r = subprocess.run(
        [sys.executable, "-m", "service.cli", *words[1:]], cwd=tmp_path, env=env,
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert r.returncode == 2
    assert r.stderr.strip() == expected.strip()
    assert not os.listdir(tmp_path)  # refused before anything started
