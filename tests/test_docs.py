"""The docs follow the code.

- docs/configuration.md names every setting of ``service.settings.Settings`` as
  ``BATCHER_<NAME>`` (and no other), with the model's defaults.
- docs/cli.md holds the current ``--help`` of every ``batcher`` command and
  sub-command, one fenced ``text`` block each.
- every ``service/...`` or ``tests/...`` path, ``service.`` module and
  ``test_file.py::test_name`` named in docs/*.md and README.md exists.

After changing the command line, rewrite the help blocks of docs/cli.md with:

    uv run python tests/test_docs.py
"""

from __future__ import annotations

import ast
import importlib
import os
import re
import subprocess
import sys
from functools import cache
from pathlib import Path

from service.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
CONFIG_DOC = ROOT / "docs" / "configuration.md"
CLI_DOC = ROOT / "docs" / "cli.md"
REGENERATE = "uv run python tests/test_docs.py"
HELP_COLUMNS = "100"

Command = tuple[str, ...]  # ("batcher", "dead", "list")

SETTING = re.compile(r"\bBATCHER_([A-Z][A-Z0-9_]*)\b")
HELP_BLOCK = re.compile(r"^```text\n(usage: batcher\b.*?)\n```$", re.MULTILINE | re.DOTALL)
SUBCOMMANDS = re.compile(r"\{([\w,-]+)\} \.\.\.")


# --- docs/configuration.md ------------------------------------------------------


def documented_settings() -> set[str]:
    return set(SETTING.findall(CONFIG_DOC.read_text(encoding="utf-8")))


def model_settings() -> set[str]:
    return {name.upper() for name in Settings.model_fields}


def table_defaults() -> dict[str, str]:
    """Setting name -> the default cell of its row in the settings table."""
    rows: dict[str, str] = {}
    for line in CONFIG_DOC.read_text(encoding="utf-8").splitlines():
        if not line.startswith("| `BATCHER_"):
            continue
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
        rows[cells[0].strip("`").removeprefix("BATCHER_")] = cells[2]
    return rows


def default_matches(cell: str, value: object) -> bool:
    text = cell.replace("`", "").strip()
    if value is None:
        return text == "unset"
    if isinstance(value, bool):
        return text == str(value).lower()
    if isinstance(value, int):
        return text.replace(" ", "") == str(value)
    return text == str(value)


def test_every_setting_is_in_the_configuration_doc() -> None:
    missing = sorted(model_settings() - documented_settings())
    assert not missing, (
        f"docs/configuration.md does not mention {', '.join('BATCHER_' + n for n in missing)}: "
        "add a row to its settings table (name, type, default, unit, constraints, meaning)"
    )


def test_the_configuration_doc_names_only_real_settings() -> None:
    unknown = sorted(documented_settings() - model_settings())
    assert not unknown, (
        f"docs/configuration.md mentions {', '.join('BATCHER_' + n for n in unknown)}, "
        "which service/settings.py does not define: remove or rename them"
    )


def test_the_settings_table_has_no_duplicate_rows() -> None:
    names = [
        line.split("|")[1].strip().strip("`")
        for line in CONFIG_DOC.read_text(encoding="utf-8").splitlines()
        if line.startswith("| `BATCHER_")
    ]
    twice = sorted({n for n in names if names.count(n) > 1})
    assert not twice, f"docs/configuration.md has more than one row for {', '.join(twice)}"


def test_the_settings_table_has_every_field_and_its_default() -> None:
    rows = table_defaults()
    fields = {name.upper(): info for name, info in Settings.model_fields.items()}
    assert set(rows) == set(fields), (
        "the settings table of docs/configuration.md must have exactly one row per "
        f"Settings field; missing: {sorted(set(fields) - set(rows))}, "
        f"extra: {sorted(set(rows) - set(fields))}"
    )
    wrong = {
        f"BATCHER_{name}": (rows[name], info.default)
        for name, info in fields.items()
        if not default_matches(rows[name], info.default)
    }
    assert not wrong, f"defaults in docs/configuration.md differ from the model: {wrong}"


# --- docs/cli.md ----------------------------------------------------------------


def normalise(text: str) -> str:
    return "\n".join(line.rstrip() for line in text.strip("\n").splitlines())


def help_text(command: Command) -> str:
    """``<command> --help`` as a user sees it in a 100-column terminal, without colour."""
    env = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "PYTHON_COLORS")}
    env.update(COLUMNS=HELP_COLUMNS, LINES="50", NO_COLOR="1")
    result = subprocess.run(
        [sys.executable, "-m", "service.cli", *command[1:], "--help"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, f"{' '.join(command)} --help failed:\n{result.stderr}"
    return normalise(result.stdout)


@cache
def command_tree() -> dict[Command, str]:
    """Every command and sub-command, found through the help itself, depth first."""
    found: dict[Command, str] = {}

    def visit(command: Command) -> None:
        text = help_text(command)
        found[command] = text
        usage = text.split("\n\n", 1)[0]
        if match := SUBCOMMANDS.search(usage):
            for name in match.group(1).split(","):
                visit((*command, name))

    visit(("batcher",))
    return found


def command_of(block: str) -> Command:
    """The command a help block belongs to: the usage words before ``[-h]``."""
    words = block.split("\n", 1)[0].split()[1:]
    return tuple(words[: words.index("[-h]")] if "[-h]" in words else words)


def documented_help() -> dict[Command, str]:
    text = CLI_DOC.read_text(encoding="utf-8")
    return {command_of(m.group(1)): normalise(m.group(1)) for m in HELP_BLOCK.finditer(text)}


def stale_message(what: str) -> str:
    return f"docs/cli.md is out of date ({what}). Regenerate its help blocks with: {REGENERATE}"


def test_the_cli_doc_has_one_help_block_per_command() -> None:
    documented, current = set(documented_help()), set(command_tree())
    missing = sorted(" ".join(c) for c in current - documented)
    gone = sorted(" ".join(c) for c in documented - current)
    assert not missing, stale_message(f"no help block for: {', '.join(missing)}")
    assert not gone, stale_message(f"help blocks of commands that no longer exist: {gone}")


def test_the_cli_doc_help_blocks_match_the_current_help() -> None:
    documented, current = documented_help(), command_tree()
    stale = [c for c in current if c in documented and documented[c] != current[c]]
    if stale:
        first = stale[0]
        raise AssertionError(
            stale_message(f"--help changed for: {', '.join(' '.join(c) for c in stale)}")
            + f"\n\n--- documented `{' '.join(first)} --help`\n{documented[first]}"
            + f"\n\n--- current\n{current[first]}"
        )


# --- paths, modules and tests named in the docs ------------------------------------

DOCS = (*sorted((ROOT / "docs").glob("*.md")), ROOT / "README.md")
TESTS = ROOT / "tests"
# `service/store/lua/*.lua`, `tests/web/`: a path that starts a word.
REPO_PATH = re.compile(r"(?<![\w./-])((?:service|tests)/[\w./*-]*)")
# `test_x.py`, `tests/web/test_x.py::test_y`, `test_x.py::TestClass::test_y`.
TEST_REF = re.compile(r"(?<![\w.-])((?:[\w.-]+/)*test_\w+\.py)((?:::\w+)*)")
# `service.store.embedded.RedisServer`: a module, then attributes.
MODULE_REF = re.compile(r"(?<![\w./-])(service(?:\.\w+)+)")


def doc_mentions(pattern: re.Pattern[str]) -> list[tuple[str, tuple[str, ...]]]:
    """(where, groups) of every match, where = "docs/x.md:<line>"."""
    found = []
    for doc in DOCS:
        for number, line in enumerate(doc.read_text(encoding="utf-8").splitlines(), 1):
            for match in pattern.finditer(line):
                found.append((f"{doc.relative_to(ROOT)}:{number}", match.groups()))
    return found


def resolve_test_file(ref: str) -> tuple[Path | None, str]:
    """The one file under tests/ that ``ref`` names, or None and why not."""
    if ref.startswith("tests/"):
        path = ROOT / ref
        return (path, "") if path.is_file() else (None, "no such file")
    candidates = sorted(
        p for p in TESTS.rglob(Path(ref).name) if p.relative_to(ROOT).as_posix().endswith(ref)
    )
    if len(candidates) == 1:
        return candidates[0], ""
    if not candidates:
        return None, "no such file under tests/"
    names = ", ".join(p.relative_to(ROOT).as_posix() for p in candidates)
    return None, f"ambiguous ({names}): write the full path"


@cache
def defined_tests(path: Path) -> frozenset[str]:
    """``test_x`` and ``TestClass::test_x`` of every test function of a file."""
    names: set[str] = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            names.add(node.name)
        elif isinstance(node, ast.ClassDef):
            names.add(node.name)
            names.update(
                f"{node.name}::{item.name}"
                for item in node.body
                if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef)
            )
    return frozenset(n for n in names if n.split("::")[-1].startswith(("test", "Test")))


def broken_test_ref(ref: str, names: str) -> str | None:
    path, why = resolve_test_file(ref)
    if path is None:
        return why
    name = names.removeprefix("::")
    if name and name not in defined_tests(path):
        return f"{path.relative_to(ROOT).as_posix()} has no test {name}"
    return None


def broken_module_ref(dotted: str) -> str | None:
    """Import the longest module prefix of ``dotted``, then look up the rest."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        module_name = ".".join(parts[:cut])
        try:
            obj = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name is not None and module_name.startswith(error.name):
                continue  # this prefix is not a module: try a shorter one
            raise
        for attribute in parts[cut:]:
            if not hasattr(obj, attribute):
                return f"{module_name} has no module or attribute {attribute}"
            obj = getattr(obj, attribute)
        return None
    return "no such module"


def test_the_docs_name_only_paths_that_exist() -> None:
    missing = [
        f"{where}: {path}"
        for where, (path,) in doc_mentions(REPO_PATH)
        if not any(ROOT.glob(path.rstrip("/.,:;")))
    ]
    assert not missing, "the docs name files or folders that do not exist:\n" + "\n".join(missing)


def test_the_docs_name_only_tests_that_exist() -> None:
    broken = [
        f"{where}: {ref}{names}: {why}"
        for where, (ref, names) in doc_mentions(TEST_REF)
        if (why := broken_test_ref(ref, names))
    ]
    assert not broken, "the docs name tests that do not exist:\n" + "\n".join(broken)


def test_the_docs_name_only_modules_that_exist() -> None:
    broken = [
        f"{where}: {dotted}: {why}"
        for where, (dotted,) in doc_mentions(MODULE_REF)
        if (why := broken_module_ref(dotted))
    ]
    assert not broken, "the docs name modules that do not exist:\n" + "\n".join(broken)


def test_the_doc_reference_checks_catch_a_wrong_name() -> None:
    assert broken_test_ref("tests/engine/test_listener.py", "::test_no_such_test")
    assert broken_test_ref("test_listener.py", "::test_no_such_test")
    assert broken_test_ref("test_keys.py", "::test_every_key_of_a_chat_shares_its_bucket_slot")
    assert broken_test_ref("tests/test_listener.py", "")
    assert broken_test_ref("test_listener.py", "::test_pubsub_kill_storm") is None
    assert "ambiguous" in resolve_test_file("__init__.py")[1]
    assert broken_module_ref("service.embedded.RedisServer")
    assert broken_module_ref("service.store.embedded.NoSuchThing")
    assert broken_module_ref("service.store.embedded.RedisServer") is None
    assert not any(ROOT.glob("service/lua/scan.lua"))


# --- regeneration -----------------------------------------------------------------


def regenerate_cli_doc() -> None:
    """Rewrite every help block of docs/cli.md in place; append sections for new
    commands (their explanation is left to write); name blocks of removed ones."""
    current = command_tree()
    text = CLI_DOC.read_text(encoding="utf-8")
    seen: set[Command] = set()

    def replace(match: re.Match[str]) -> str:
        command = command_of(match.group(1))
        if command not in current:
            return match.group(0)
        seen.add(command)
        return f"```text\n{current[command]}\n```"

    text = HELP_BLOCK.sub(replace, text)
    added = [c for c in current if c not in seen]
    for command in added:
        name = " ".join(command)
        text = text.rstrip("\n") + (
            f"\n\n## `{name}`\n\nTODO: say in a line or two what `{name}` does.\n\n"
            f"```text\n{current[command]}\n```\n"
        )
    CLI_DOC.write_text(text.rstrip("\n") + "\n", encoding="utf-8")
    print(f"{CLI_DOC.relative_to(ROOT)}: {len(seen)} help blocks rewritten")
    for command in added:
        print(f"  added a section for `{' '.join(command)}`: write its explanation")
    for command in sorted(set(documented_help()) - set(current)):
        print(f"  `{' '.join(command)}` no longer exists: delete its section by hand")


if __name__ == "__main__":
    regenerate_cli_doc()
