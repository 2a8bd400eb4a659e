"""Open a study store for reading only: the dashboard and `report` must never create, write or lock it.

A study may be running against the same file. `Store(create=False)` already skips table creation, but its
connections may write (Optuna's version bookkeeping on a blank file) and the engine keeps pooled connections
open. Here a SQLite file is opened through SQLite's own read-only mode (`mode=ro`: a write is impossible, a
missing file is never created) and every connection is closed after each use (NullPool), so the reader holds
no lock and no snapshot between reads. Under the store's WAL journal a reader never blocks the writer.
PostgreSQL sessions are made read-only with `default_transaction_read_only`; other back ends are only read.

A finished store on a read-only medium (a read-only mount, a folder of someone else's, a full disk) is read as
an immutable file (`store.sqlite_reader_uri`): reading never writes, locks or needs free space; what cannot be
read says the real cause (read-only file system, unwritable folder) in one line.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from workbench.engine.store import (
    Store,
    check_storage_url,
    default_storage_url,
    driver_url,
    sqlite_path,
    sqlite_reader_uri,
    unwritable_reason,
)
from workbench.errors import WorkbenchError, first_line, masked_url, scrubbed

OPTUNA_TABLES = {"studies", "trials", "trial_user_attributes", "version_info"}


class StoreProblem(WorkbenchError):
    """Why a store cannot be shown; `kind` is missing | empty | corrupt | bad-url."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


def _readonly_sqlite_url(path: Path) -> str:
    # SQLite URI filenames need %-escapes for '?', '#' and '%' in the path (sqlite_reader_uri makes them).
    return f"sqlite:///{sqlite_reader_uri(path)}&uri=true"


def _cause(path: Path, e: Exception) -> str:
    """SQLite's message, with the real cause where the folder is why (EROFS, unwritable)."""
    why = unwritable_reason(path.resolve().parent)
    return f"{e}; the store {why}" if why else str(e)


def _damage(path: Path, e: sqlite3.DatabaseError) -> str:
    """Why a file cannot be read: a SQLite store damaged after it was written, or a file that never was one."""
    with open(path, "rb") as f:
        was_sqlite = f.read(16) == b"SQLite format 3\x00"
    if was_sqlite:  # the header survived, the pages did not: truncated or overwritten by another program
        return (f"the study store {str(path)!r} is no longer a readable database ({_cause(path, e)}): truncated or "
                "overwritten? restore it from a copy (sqlite3 FILE .recover salvages what is left)")
    return f"the study store {str(path)!r} is not a readable SQLite file ({_cause(path, e)})"


def inspect_sqlite(path: Path) -> None:
    """Raise StoreProblem unless `path` is a readable SQLite file holding Optuna's tables."""
    if not path.exists():
        raise StoreProblem("missing", f"no study store at {str(path)!r} yet: run `workbench ablate` first, "
                                      "or pass --storage")
    if not path.is_file():
        raise StoreProblem("bad-url", f"the study store {str(path)!r} is not a file")
    try:
        con = sqlite3.connect(sqlite_reader_uri(path), uri=True, timeout=5)
        try:
            tables = {row[0] for row in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        finally:
            con.close()
    except WorkbenchError as e:
        raise StoreProblem("unreadable", str(e)) from None
    except sqlite3.DatabaseError as e:
        raise StoreProblem("corrupt", _damage(path, e)) from None
    if not tables:
        raise StoreProblem("empty", f"the study store {str(path)!r} is empty: no study has been recorded yet")
    if not OPTUNA_TABLES <= tables:
        raise StoreProblem("corrupt", f"{str(path)!r} is a SQLite file but not a study store (no Optuna tables)")


class ReadOnlyStore(Store):
    """A `Store` whose connections cannot write; the reading methods (records, load_study, ...) are Store's."""

    def __init__(self, url: str | None = None):  # noqa: D107 - Store's constructor would open for writing
        import optuna
        import sqlalchemy as sa

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.url = url or default_storage_url()
        try:
            check_storage_url(self.url)
            parsed = sa.engine.make_url(driver_url(self.url))  # check_storage_url: the driver is installed
        except WorkbenchError as e:
            raise StoreProblem("bad-url", str(e)) from None
        backend = parsed.get_backend_name()
        engine_url, connect_args = driver_url(self.url), {}
        if backend == "sqlite":
            path = sqlite_path(self.url)
            if path is None:
                raise StoreProblem("bad-url", f"--storage {masked_url(self.url)!r}: an in-memory SQLite store "
                                              f"holds nothing "
                                              "another process could show; give a file, e.g. sqlite:///studies.db")
            inspect_sqlite(path)
            engine_url = _readonly_sqlite_url(path)
            connect_args = {"timeout": 5}
        elif backend == "postgresql":
            connect_args = {"options": "-c default_transaction_read_only=on"}
        try:
            self.storage = optuna.storages.RDBStorage(
                engine_url, skip_table_creation=True,
                engine_kwargs={"poolclass": sa.pool.NullPool, "connect_args": connect_args})
        except Exception as e:  # noqa: BLE001 - driver, schema-version and I/O errors all mean "cannot read it"
            from workbench.engine.store import _root_cause

            raise StoreProblem("corrupt", f"cannot read the study store {masked_url(self.url)!r}: "
                                          f"{scrubbed(first_line(_root_cause(e)), self.url)}") from None
        self.engine = self.storage.engine

    def change_marker(self) -> tuple:
        """A cheap value that changes whenever a trial is added, updated, reports an epoch or finishes."""
        import sqlalchemy as sa

        query = sa.text("SELECT (SELECT count(*) FROM trials), (SELECT count(*) FROM trials WHERE state != 'RUNNING'),"
                        " (SELECT max(trial_user_attribute_id) FROM trial_user_attributes),"
                        " (SELECT count(*) FROM trial_user_attributes),"
                        " (SELECT max(trial_intermediate_value_id) FROM trial_intermediate_values),"
                        " (SELECT count(*) FROM studies)")
        with self.engine.connect() as conn:
            return tuple(conn.execute(query).one())


def read_chart_data(url: str | None, studies: list[str] | None = None):
    """`chart_data.collect` on the store at `url` opened read-only; any failure to read is a StoreProblem
    (or the WorkbenchError that names what is missing, e.g. an unknown study)."""
    from workbench.dashboard.chart_data import collect

    store = ReadOnlyStore(url)
    try:
        return collect(store, studies)
    except WorkbenchError:
        raise
    except Exception as e:  # noqa: BLE001 - a malformed file fails in SQLite or Optuna, mid-read
        raise StoreProblem("corrupt", f"cannot read the study store {masked_url(store.url)!r}: "
                                      f"{scrubbed(first_line(e), store.url)}") from None
