"""The one error type the CLI turns into a one-line message and exit code 2, and the one way to shorten
another library's exception to a line."""


class WorkbenchError(ValueError):
    """Bad input from a user: a spec, an override, a preset name, a resolution, a file."""


def first_line(exc: BaseException | str, limit: int = 300) -> str:
    """The first non-empty line of an exception's message (its type name when it has none), at most `limit`
    characters: what a one-line error may quote of another library's multi-line message."""
    text = str(exc).strip()
    if text:
        return text.splitlines()[0][:limit]
    return type(exc).__name__ if isinstance(exc, BaseException) else ""
