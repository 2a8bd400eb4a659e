"""Files written whole, and named files found: two idioms every layer uses, with no torch import.

`atomic_write` writes to a temporary file in the same folder and renames it over the target, so a process
killed at any moment leaves the previous complete file or the new complete one, never a torn one.
`find_named_file` resolves a name such as `table6` or `mobilevit` to a YAML file in a list of folders, with
the same suffixes and the same near-match hint for study files and search spaces.
"""

from __future__ import annotations

import difflib
import os
import re
import tempfile
from pathlib import Path
from typing import IO, Callable, Iterable, Union

from workbench.errors import WorkbenchError

Content = Union[bytes, str, Callable[[IO], None]]
YAML_SUFFIXES = (".yaml", ".yml")
# A name that becomes one path component (a study's run folder, a results file, a search study): letters,
# digits, '-', '_', '.', starting with a letter or digit, at most 64 characters. No '/', no '..', no leading '.'.
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def shown(value, limit: int = 80) -> str:
    """`value` as an error may quote it: its repr (so a newline stays `\\n` and the line stays one), a container's
    type named, cut to about `limit` characters with a long string's length said. Built by reprlib, so a huge
    value is never written out in full first."""
    import reprlib

    r = reprlib.Repr()
    r.maxstring, r.maxother, r.maxlevel = limit, limit, 2
    r.maxlist = r.maxtuple = r.maxdict = r.maxset = 4
    text = r.repr(value)
    if not isinstance(value, (str, int, float, bool, type(None))):
        text = f"{type(value).__name__} {text}"
    if len(text) > limit:
        text = text[:limit] + "..."
    if isinstance(value, str) and len(value) > limit:
        text += f" ({len(value):,} characters)"
    return text


def check_name(name, what: str) -> str:
    """A user-given name that becomes part of a path: refused (one line) unless NAME_RE matches it, so no name
    can climb out of its folder ('../x'), start at the root ('/x'), or hide ('.x')."""
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise WorkbenchError(f"{what} {shown(name)}: a name may use letters, digits, '-', '_' and '.', start with a "
                             "letter or digit, and have at most 64 characters (it becomes a file or folder name)")
    return name


def check_file_name(name: str, what: str) -> str:
    """One path component made from a free-text name (a spec's name for a default output file): refused when it
    holds a separator, a NUL or a newline, or is '.', '..' or empty."""
    if not name or name in (".", "..") or any(c in name for c in "/\\\0\n\r") or len(name.encode()) > 200:
        raise WorkbenchError(f"{what} {shown(name)} cannot be a file name (a path separator, '..', a newline or too "
                             "long): give --out")
    return name


def atomic_write(path: str | Path, content: Content, mode: str = "wb") -> Path:
    """Write `content` (bytes, text, or a function that writes to the open file) to `path` atomically."""
    path = Path(path)
    if isinstance(content, str):
        mode = "w"
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, **({"encoding": "utf-8"} if "b" not in mode else {})) as f:
            if callable(content):
                content(f)
            else:
                f.write(content)
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(e, OSError) and e.filename is None:  # a failed write names no file: name the target
            raise OSError(e.errno, e.strerror, str(path)) from None
        raise
    return path


def write_all(folder: str | Path, files: dict[str, Content], what: str = "--out") -> list[Path]:
    """Write several files into `folder`, all or none: every temporary is written before any is renamed, so
    a full disk or a kill leaves the previous set. An OS error is one line naming the folder (`what`)."""
    from workbench.errors import os_error_line

    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise WorkbenchError(f"{what} {str(folder)!r} is a file, not a folder")
    temps: dict[str, str] = {}
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for name, content in files.items():
            fd, temps[name] = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=".tmp")
            with os.fdopen(fd, "w" if isinstance(content, str) else "wb",
                           **({"encoding": "utf-8"} if isinstance(content, str) else {})) as f:
                content(f) if callable(content) else f.write(content)
        for name, tmp in temps.items():
            os.replace(tmp, folder / name)
    except OSError as e:
        raise WorkbenchError(f"{what} {os_error_line(e, folder)}") from None
    finally:
        for tmp in temps.values():
            if os.path.exists(tmp):
                os.unlink(tmp)
    return [folder / name for name in files]


def unique_folders(folders: Iterable[Path]) -> list[Path]:
    """The folders that exist, each once (the repository's folder and the working directory's may be one)."""
    out: list[Path] = []
    for d in folders:
        if d.is_dir() and d.resolve() not in [u.resolve() for u in out]:
            out.append(d)
    return out


def names_in(folders: Iterable[Path], suffixes: tuple[str, ...] = YAML_SUFFIXES) -> list[str]:
    return sorted({p.stem for d in unique_folders(folders) for s in suffixes for p in d.glob(f"*{s}")})


def find_named_file(kind: str, name_or_path: str, folders: Iterable[Path],
                    suffixes: tuple[str, ...] = YAML_SUFFIXES) -> Path:
    """A path as given (it must exist), or NAME looked up as NAME.yaml/.yml in `folders`, in order.

    `kind` names the thing in errors ("study", "search space"); an unknown name suggests the nearest one.
    """
    folders = unique_folders(folders)
    p = Path(name_or_path)
    if p.is_dir():
        raise WorkbenchError(f"{kind} file {name_or_path!r} is a folder; give a {'/'.join(suffixes)} file or a name")
    if p.suffix in suffixes or os.sep in name_or_path or "/" in name_or_path or p.is_file():
        if not p.is_file():
            raise WorkbenchError(f"{kind} file {name_or_path!r} does not exist")
        return p
    for d in folders:
        for suffix in suffixes:
            if (d / f"{name_or_path}{suffix}").is_file():
                return d / f"{name_or_path}{suffix}"
    names = names_in(folders, suffixes)
    near = difflib.get_close_matches(name_or_path, names, n=1, cutoff=0.5)
    hint = f"did you mean {near[0]!r}? " if near else ""
    raise WorkbenchError(f"unknown {kind} {name_or_path!r}: {hint}accepted: {', '.join(names) or 'none found'}, "
                         f"or a path to a {suffixes[0]} file")
