"""The one error type the CLI turns into a one-line message and exit code 2."""


class WorkbenchError(ValueError):
    """Bad input from a user: a spec, an override, a preset name, a resolution, a file."""
