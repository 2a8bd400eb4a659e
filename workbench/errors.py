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


def masked_url(url: str | None) -> str:
    """A storage URL fit to print: the password, if any, shown as ***
    (postgresql://ann:secret@db/studies -> postgresql://ann:***@db/studies). Every message and record that
    names a store goes through this."""
    if url is None:
        return ""
    parts = _credentials(str(url))
    return str(url) if parts is None else f"{parts[0]}***{parts[2]}"


def scrubbed(text: str, url: str | None) -> str:
    """`text` (another library's message about `url`) with the URL's password, if any, replaced by ***."""
    parts = _credentials(str(url)) if url else None
    if parts is None or not parts[1]:
        return text
    return text.replace(str(url), masked_url(url)).replace(parts[1], "***")
