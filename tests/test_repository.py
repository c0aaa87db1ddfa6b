"""The repository stands alone: what a user clones is all the tests, CI and
docs use. No tracked file points outside it (a sibling folder, a path of the
machine it was written on), and every relative link in the docs resolves to
a file of the repository."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.helpers import REPO_ROOT

# Names of things that live beside a checkout on a developer's machine, never in it.
OUTSIDE = re.compile(
    r"\.\./shared|\bshared/(fixtures|reference|hooks)\b|\bDESIGN\.md\b"
    r"|\bredis-semantics\.md\b|\breference/(whatsapp|peers)\.md\b"
)
MACHINE_PATHS = re.compile(r"(?<![\w.])/(work|root|home/\w+)/")
RELATIVE = re.compile(r"(?<![\w/.])((?:\.\./)+[\w.-][\w./-]*)")
MD_LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def tracked_text_files() -> list[Path]:
    try:
        out = subprocess.run(
            ["git", "ls-files", "-z"], cwd=REPO_ROOT, capture_output=True, check=True
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    paths = [REPO_ROOT / p for p in out.decode().split("\0") if p]
    return [p for p in paths if p.is_file() and p.name != "uv.lock" and _is_text(p)]


def _is_text(path: Path) -> bool:
    head = path.read_bytes()[:4096]
    return b"\0" not in head


def _lines(path: Path) -> list[tuple[int, str]]:
    text = path.read_text(encoding="utf-8", errors="replace")
    return list(enumerate(text.splitlines(), 1))


def test_no_tracked_file_points_outside_the_repository() -> None:
    found = []
    for path in tracked_text_files():
        rel = path.relative_to(REPO_ROOT)
        if rel == Path("tests/test_repository.py"):
            continue  # this file names the patterns
        for n, line in _lines(path):
            if OUTSIDE.search(line) or MACHINE_PATHS.search(line):
                found.append(f"{rel}:{n}: {line.strip()[:120]}")
            for target in RELATIVE.findall(line):
                resolved = (path.parent / target).resolve()
                if not resolved.is_relative_to(REPO_ROOT):
                    found.append(f"{rel}:{n}: {target} leaves the repository")
    assert not found, "\n".join(found)


def test_doc_links_resolve_inside_the_repository() -> None:
    broken = []
    for path in tracked_text_files():
        if path.suffix != ".md":
            continue
        for n, line in _lines(path):
            for target in MD_LINK.findall(line):
                if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
                    continue
                resolved = (path.parent / target).resolve()
                if not resolved.is_relative_to(REPO_ROOT) or not resolved.exists():
                    broken.append(f"{path.relative_to(REPO_ROOT)}:{n}: {target}")
    assert not broken, "\n".join(broken)


def test_the_fixtures_the_tests_read_are_tracked() -> None:
    tracked = {p.relative_to(REPO_ROOT) for p in tracked_text_files()}
    fixtures = [p.relative_to(REPO_ROOT) for p in (REPO_ROOT / "tests" / "fixtures").rglob("*")]
    files = [p for p in fixtures if (REPO_ROOT / p).is_file()]
    assert files, "tests/fixtures is empty"
    assert not [p for p in files if p not in tracked], "fixtures not in git"


PATH_REF = re.compile(r"(?<![\w/.-])((?:service|tests)/[\w/.-]*\w)")
TEST_REF = re.compile(r"(?<![\w/.-])((?:tests/[\w/]*/)?test_\w+\.py)(?:::(\w+))?")


def doc_files() -> list[Path]:
    return [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]


def test_docs_name_files_and_tests_that_exist() -> None:
    """Every ``service/…`` or ``tests/…`` path, and every ``test_x.py::test_name``,
    that the README and the docs mention is in the repository."""
    tests = list((REPO_ROOT / "tests").rglob("test_*.py"))
    wrong = []
    for doc in doc_files():
        for n, line in _lines(doc):
            where = f"{doc.relative_to(REPO_ROOT)}:{n}"
            for ref in PATH_REF.findall(line):
                if not (REPO_ROOT / ref.rstrip(".")).exists():
                    wrong.append(f"{where}: {ref} does not exist")
            for file, name in TEST_REF.findall(line):
                found = [t for t in tests if t.as_posix().endswith("/" + file)]
                if len(found) != 1:
                    wrong.append(f"{where}: {file} names {len(found)} test files")
                elif name and not re.search(rf"def {name}\(", found[0].read_text()):
                    wrong.append(f"{where}: {file} has no {name}")
    assert not wrong, "\n".join(wrong)
