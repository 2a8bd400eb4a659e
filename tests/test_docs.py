"""The documentation stays true to the command: every `workbench ...` line in README.md's and docs/'s shell code
blocks parses with the CLI's own parser, every relative link points at a file that exists, the README stays a
short front door, and no path into the project machines' private data folder appears in user documents."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from workbench.cli import build_parser
from workbench.errors import WorkbenchError

REPO = Path(__file__).resolve().parents[1]
README_MAX_LINES = 160
SHELL_FENCES = ("bash", "sh", "shell", "console", "")  # ``` blocks in these languages (or none) hold commands
OPERATORS = {"&&", "||", "|", ";", "&"}
REDIRECTIONS = {">", ">>", "<", ">&", "&>", "<&", ">|", "&>>"}


def documents() -> list[Path]:
    return [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]


def shell_lines(path: Path) -> list[tuple[int, str]]:
    """(line number, command) of every line of the file's shell code blocks; a line ending in `\\` is joined with
    the next, under the first one's number."""
    out, fence, pending = [], None, None
    for number, line in enumerate(path.read_text().splitlines(), 1):
        stripped = line.strip()
        if stripped.startswith("```"):
            fence = stripped[3:].strip().lower() if fence is None else None
            continue
        if fence not in SHELL_FENCES:
            continue
        if pending is not None:
            start, text = pending
            text = f"{text} {stripped}"
        else:
            start, text = number, stripped
        if text.endswith("\\"):
            pending = (start, text[:-1].rstrip())
            continue
        pending = None
        if text and not text.startswith("#"):
            out.append((start, text))
    return out


def commands(line: str) -> list[list[str]]:
    """The simple commands of a shell line as argument lists: split on &&, ||, |, ; and &, without redirections
    (`> mine.yaml`, `2>&1`), leading VAR=value assignments or a trailing # comment."""
    line = re.sub(r"(?<=\s)\d+(?=[<>])", "", line)  # `2>&1`, `2> file`: the file descriptor goes with the redirection
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    tokens = list(lexer)
    out, current, skip = [], [], False
    for tok in tokens:
        if skip:
            skip = False
            continue
        if tok in OPERATORS:
            out.append(current)
            current = []
        elif tok in REDIRECTIONS:
            skip = True  # the redirection's target
        else:
            current.append(tok)
    out.append(current)
    cleaned = []
    for cmd in out:
        while cmd and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", cmd[0]):
            cmd = cmd[1:]
        if cmd:
            cleaned.append(cmd)
    return cleaned


def documented_workbench_commands() -> list[tuple[str, int, list[str] | str]]:
    """(file, line, argv) of every `workbench` command in the documents' shell code blocks; argv is the line itself
    (a str) when a line that runs `workbench` cannot be split as a shell would (an unclosed quote). Lines of plain
    ``` blocks that are not shell (a folder tree, prose) are left alone."""
    found = []
    for path in documents():
        name = path.relative_to(REPO).as_posix()
        for number, line in shell_lines(path):
            try:
                cmds = commands(line)
            except ValueError:
                if re.search(r"(^|&&|\|\||[|;])\s*workbench\s", line):
                    found.append((name, number, line))
                continue
            found += [(name, number, cmd) for cmd in cmds if cmd[0] == "workbench"]
    return found


def test_the_commands_are_found():
    found = documented_workbench_commands()
    files = {f for f, _, _ in found}
    assert len(found) >= 40, found
    assert "README.md" in files and len(files) >= 6, files
    assert commands("workbench spec v3-xxs --set layer4.depth=2 > mine.yaml && workbench count mine.yaml  # a c") == \
        [["workbench", "spec", "v3-xxs", "--set", "layer4.depth=2"], ["workbench", "count", "mine.yaml"]]
    assert commands("A=1 workbench models 2>&1 | tail -3") == [["workbench", "models"], ["tail", "-3"]]


def test_the_parser_refuses_what_a_doc_could_get_wrong():
    parser = build_parser()
    for argv in (["train", "--model", "v3-xxs", "--epochz", "2"], ["count"], ["scale", "--target-ms", "20"],
                 ["ablate", "--study", "table6", "--gpus-per-trial", "many"]):
        with pytest.raises(WorkbenchError):
            parser.parse_args(argv)


def test_every_documented_command_parses():
    parser = build_parser()
    bad = []
    for file, number, argv in documented_workbench_commands():
        if isinstance(argv, str):
            bad.append(f"{file}:{number}: {argv}\n    not a shell command line (an unclosed quote?)")
            continue
        try:
            parser.parse_args(argv[1:])
        except WorkbenchError as e:
            bad.append(f"{file}:{number}: {shlex.join(argv)}\n    {e}")
        except SystemExit as e:  # --help or --version: not a command to document as a step
            bad.append(f"{file}:{number}: {shlex.join(argv)}\n    exits ({e.code}) instead of running: "
                       "do not document --help or --version lines")
    assert not bad, "documented commands the CLI does not accept:\n" + "\n".join(bad)


def test_readme_is_a_short_front_door():
    lines = (REPO / "README.md").read_text().splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; at most {README_MAX_LINES}"


@pytest.mark.parametrize("path", documents(), ids=lambda p: p.relative_to(REPO).as_posix())
def test_no_private_data_paths(path):
    hits = [f"{path.relative_to(REPO).as_posix()}:{n}: {line.strip()}"
            for n, line in enumerate(path.read_text().splitlines(), 1) if "shared/" in line]
    assert not hits, "paths that exist only on the project's machines (use npz:PATH, --data-dir, imagefolder:PATH):\n" \
        + "\n".join(hits)


def anchors(path: Path) -> set[str]:
    """The #fragments GitHub gives a Markdown file's headings."""
    out, fence = set(), False
    for line in path.read_text().splitlines():
        if line.startswith("```"):
            fence = not fence
        elif not fence and line.startswith("#"):
            out.add(re.sub(r"[^\w\- ]", "", line.lstrip("#").strip().lower()).replace(" ", "-"))
    return out


@pytest.mark.parametrize("path", documents(), ids=lambda p: p.relative_to(REPO).as_posix())
def test_relative_links_point_at_files_and_headings(path):
    broken = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        for target in re.findall(r"\]\(([^)\s]+)\)", line):
            if re.match(r"[a-z]+:", target):
                continue
            file, _, fragment = target.partition("#")
            linked = path.parent / file if file else path
            if not linked.exists() or (fragment and linked.suffix == ".md" and fragment not in anchors(linked)):
                broken.append(f"{path.relative_to(REPO).as_posix()}:{n}: {target}")
    assert not broken, "links to files or headings that do not exist:\n" + "\n".join(broken)
