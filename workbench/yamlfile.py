"""YAML files read as a hostile or careless user might write them: one reader for every file the workbench
takes (spec, study, search space, architecture list, ladder).

`yaml.safe_load` runs no code, but it trusts the file's size: a 300-byte file of nested aliases
(`a: &a [x, x]`, `b: &b [*a, *a]`, ...) expands into gigabytes once it is printed or stored, and a mistyped
key given twice silently keeps the last one. So a file here is read whole (at most `MAX_FILE_BYTES`),
decoded as UTF-8 with the offset of a bad byte named, parsed into a node graph, and refused when that graph
would expand to more than `MAX_NODES` values or `MAX_CHARS` characters through aliases (a 10 KB file of
aliases to 10,000-character strings is 800 MB written out), when it nests deeper than `MAX_DEPTH`, when a
mapping repeats a key, or when one string is longer than `MAX_STRING`. Every refusal is a `WorkbenchError`
naming the file, the line where it can, and the limit.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import yaml

from workbench.errors import WorkbenchError, first_line, os_error_line
from workbench.fileio import shown

MAX_FILE_BYTES = 256 << 10  # 256 KiB: the biggest shipped study is under 4 KB
MAX_NODES = 100_000  # values after alias expansion
MAX_DEPTH = 64  # nesting of lists and mappings
MAX_STRING = 10_000  # characters in one string (a study's description included)
MAX_CHARS = 1 << 20  # characters of every string after alias expansion: the biggest shipped file has 4,000


class _Loader(yaml.SafeLoader):
    """SafeLoader that refuses a key repeated in one mapping (merge keys `<<` excepted: they are overrides)."""

    def construct_mapping(self, node, deep=False):
        seen: dict[tuple[str, str], int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge" or not isinstance(key_node, yaml.ScalarNode):
                continue
            ident = (key_node.tag, key_node.value)
            if ident in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {shown(key_node.value, 60)} appears twice in one mapping (first on line "
                                f"{seen[ident] + 1}); each key may appear once", key_node.start_mark)
            seen[ident] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def _expanded_size(root: yaml.Node) -> tuple[int, int]:
    """(values, characters) the node graph holds once every alias is written out (shared nodes count each time
    they are used), refusing cycles, deep nesting and expansions past MAX_NODES values or MAX_CHARS characters;
    linear in the graph, however large the expansion."""
    sizes: dict[int, tuple[int, int]] = {}
    active: set[int] = set()

    def too_big(node: yaml.Node, values: int, chars: int) -> None:
        if values > MAX_NODES:
            raise _Refused(f"it expands to more than {MAX_NODES:,} values through aliases (&anchor / *alias); "
                           "write the values out or use fewer aliases", node)
        if chars > MAX_CHARS:
            raise _Refused(f"its strings expand to more than {MAX_CHARS:,} characters through aliases (&anchor / "
                           "*alias); write the values out or use fewer aliases", node)

    def size(node: yaml.Node, depth: int) -> tuple[int, int]:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if depth > MAX_DEPTH:
            raise _Refused(f"it nests more than {MAX_DEPTH} levels deep", node)
        if isinstance(node, yaml.ScalarNode):
            if len(node.value) > MAX_STRING:
                raise _Refused(f"a string of {len(node.value):,} characters; at most {MAX_STRING:,} are accepted",
                               node)
            sizes[key] = (1, len(node.value))
            return sizes[key]
        if key in active:
            raise _Refused("an alias refers to the value that contains it (a recursive alias)", node)
        active.add(key)
        children = [n for pair in node.value for n in pair] if isinstance(node, yaml.MappingNode) else node.value
        values, chars = 1, 0
        for child in children:
            v, c = size(child, depth + 1)
            values, chars = values + v, chars + c
            too_big(node, values, chars)
        active.discard(key)
        sizes[key] = (values, chars)
        return sizes[key]

    return size(root, 0)


class _Refused(Exception):
    def __init__(self, why: str, node: yaml.Node):
        super().__init__(why)
        self.why, self.line = why, node.start_mark.line + 1


def read_text(path: str | Path, kind: str, max_bytes: int = MAX_FILE_BYTES) -> str:
    """A text file read whole as UTF-8; too big, unreadable or not UTF-8 is one line naming `kind` and path."""
    p = Path(path)
    try:
        if not stat.S_ISREG(os.stat(p).st_mode):  # a FIFO or device would block or never end
            raise WorkbenchError(f"{kind} file {str(p)!r} is not a regular file")
        with open(p, "rb") as f:
            data = f.read(max_bytes + 1)
    except OSError as e:
        raise WorkbenchError(f"{kind} file {os_error_line(e, p)}") from None
    if len(data) > max_bytes:
        raise WorkbenchError(f"{kind} file {str(p)!r} is larger than {max_bytes // 1024:,} KB; files of this kind "
                             "are a few KB")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise WorkbenchError(f"{kind} file {str(p)!r} is not UTF-8 text (byte 0x{data[e.start]:02x} at offset "
                             f"{e.start}); save it as UTF-8") from None


def parse_yaml(text: str, kind: str, path: str | Path) -> Any:
    """The YAML document in `text`, with the limits above; errors name `kind`, the path and the line."""
    where = f"{kind} file {str(path)!r}"
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _expanded_size(node)
        return loader.construct_document(node)
    except _Refused as e:
        raise WorkbenchError(f"{where} refused (line {e.line}): {e.why}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" (line {mark.line + 1})" if mark is not None else ""
        problem = first_line(getattr(e, "problem", None) or e, 200)
        raise WorkbenchError(f"{where} is not valid YAML{at}: {problem}") from None
    except RecursionError:
        raise WorkbenchError(f"{where} refused: it nests more than {MAX_DEPTH} levels deep") from None
    finally:
        loader.dispose()


def load_yaml(path: str | Path, kind: str) -> tuple[Any, str]:
    """(the parsed document, its text) of a YAML (or JSON) file, read and parsed within the limits above."""
    text = read_text(path, kind)
    return parse_yaml(text, kind, path), text
