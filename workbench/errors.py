"""The one error type the CLI turns into a one-line message and exit code 2, the one way to shorten another
library's exception to a line, and the one way an operating-system error (permission, missing, not a folder,
no space, read-only file system) is said: the path and the cause in plain words."""

import errno
import os
import re
import shutil


class WorkbenchError(ValueError):
    """Bad input from a user: a spec, an override, a preset name, a resolution, a file."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) or SIGTERM: the command stops, says what it leaves in one line, and exits 128 + signal."""

    def __init__(self, signum: int, line: str = "interrupted"):
        super().__init__(line)
        self.signum, self.line = signum, line

    def said(self, line: str) -> "Interrupted":
        """The same interrupt, with the line that says what the run leaves behind."""
        return Interrupted(self.signum, line)


_LAST_SIGNAL: list[int | None] = [None]


def interrupt_of(exc: BaseException) -> "Interrupted":
    """The Interrupted a KeyboardInterrupt stands for: Ray's core re-raises a signal handler's exception as a plain
    KeyboardInterrupt when it arrives inside a blocking call, losing which signal it was; the handler noted it."""
    import signal

    if isinstance(exc, Interrupted):
        return exc
    return Interrupted(_LAST_SIGNAL[0] or signal.SIGINT)


def install_interrupt_handlers() -> None:
    """SIGINT and SIGTERM (a scheduler, `kill`, a container stopping) both end a command the same way: running
    trials are given back, one line says what is left, exit 128 + the signal. Installed by the CLI, and again
    once Ray has started: its core worker installs a SIGTERM handler of its own that dumps a native stack and
    aborts (exit 134)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return

    def stop(signum, frame):  # noqa: ARG001 - signal handler signature
        _LAST_SIGNAL[0] = signum
        raise Interrupted(signum)

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, stop)


def first_line(exc: BaseException | str, limit: int = 300) -> str:
    """The first non-empty line of an exception's message (its type name when it has none), at most `limit`
    characters: what a one-line error may quote of another library's multi-line message."""
    text = str(exc).strip()
    if text:
        return text.splitlines()[0][:limit]
    return type(exc).__name__ if isinstance(exc, BaseException) else ""


MAX_ERROR = 1000  # characters of an error line: the messages quote values cut short; this is the backstop


def one_line(message: str, limit: int = MAX_ERROR) -> str:
    """`message` as one line of at most `limit` characters, whatever it quotes: a line break (a file name holding
    one, a library's message) is written as \\n, and an overlong message is cut with its length said."""
    text = str(message).replace("\r", "\\r").replace("\n", "\\n")
    return text if len(text) <= limit else text[:limit] + f"... ({len(text):,} characters)"


def _credentials(url: str) -> tuple[str, str, str] | None:
    """(text before the password, the password, text after it) of a URL with user:password@, else None."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return None
    # user:password ends at the last '@' (an unencoded password may hold '@' or '/').
    at = rest.rfind("@")
    if at < 0:
        return None
    user, colon, password = rest[:at].partition(":")
    if not colon:
        return None
    return f"{scheme}://{user}:", password, rest[at:]


def has_password(url: str | None) -> bool:
    """The URL carries a password (user:password@host)."""
    parts = _credentials(str(url)) if url else None
    return parts is not None and bool(parts[1])


def masked_url(url: str | None) -> str:
    """A storage URL fit to print: the password, if any, shown as ***
    (postgresql://ann:secret@db/studies -> postgresql://ann:***@db/studies). Every message and record that
    names a store goes through this."""
    if url is None:
        return ""
    parts = _credentials(str(url))
    return str(url) if parts is None else f"{parts[0]}***{parts[2]}"


def scrubbed(text: str, url: str | None) -> str:
    """`text` (another library's message about `url`) with the URL's password FIELD replaced by ***: the URL
    itself, and `USER:PASSWORD@` or `password=PASSWORD` wherever the library wrote them (as given, %-encoded
    or decoded). The password's characters elsewhere are left alone: a password `p` must not turn
    'psycopg.OperationalError' into '***sycopg...'."""
    from urllib.parse import quote, unquote

    parts = _credentials(str(url)) if url else None
    if parts is None or not parts[1]:
        return text
    text = text.replace(str(url), masked_url(url))
    user = parts[0].partition("://")[2][:-1]
    for pw in {parts[1], unquote(parts[1]), quote(unquote(parts[1]), safe="")}:
        text = text.replace(f"{user}:{pw}@", f"{user}:***@")
        text = re.sub(r"(\bpassword\s*=\s*)(['\"]?)" + re.escape(pw) + r"\2(?=[\s'\"&;,)]|$)", r"\1\2***\2", text)
    return text


_OS_CAUSES = {
    errno.EACCES: "permission denied", errno.EPERM: "permission denied",
    errno.ENOENT: "does not exist", errno.ENOTDIR: "a part of the path is not a folder",
    errno.EISDIR: "is a folder, not a file", errno.EROFS: "is on a read-only file system",
    errno.EDQUOT: "disk quota exceeded", errno.ENAMETOOLONG: "the name is too long",
    errno.ELOOP: "too many symbolic links", errno.EEXIST: "already exists",
}


class DiskFull(WorkbenchError):
    """No space left where the workbench writes: a store, a run folder, an output. Stops a study cleanly."""


def free_mb(path) -> float | None:
    """Free space (MB) on the file system holding `path` (or its nearest existing parent)."""
    p = os.path.abspath(str(path))
    while p and not os.path.exists(p):
        parent = os.path.dirname(p)
        if parent == p:
            break
        p = parent
    try:
        return shutil.disk_usage(p).free / 2**20
    except OSError:
        return None


def no_space_line(path) -> str:
    free = free_mb(path)
    return f"no space left on {path}" + (f" ({free:.1f} MB free)" if free is not None else "")


def os_error_line(exc: OSError, path=None) -> str:
    """`'PATH': cause` for an OSError; `path` is used when the error carries no file name (a failed write)."""
    target = exc.filename if exc.filename is not None else path
    if exc.errno == errno.ENOSPC:
        return no_space_line(target if target is not None else ".")
    cause = _OS_CAUSES.get(exc.errno) or (exc.strerror or first_line(exc)).lower()
    return f"{str(target)!r}: {cause}" if target is not None else cause


def is_no_space(exc: BaseException) -> bool:
    """True for a full disk, however a library phrased it (errno 28, SQLite's "database or disk is full",
    PyTorch's stream writer)."""
    seen = 0
    while exc is not None and seen < 8:
        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
            return True
        text = str(exc).lower()
        if "no space left" in text or "database or disk is full" in text:
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False
