"""The durable record: an Optuna RDB storage (a SQLite file by default, any SQLAlchemy URL otherwise).

Every attempt at a work item is one Optuna trial whose user attributes hold the whole story: study, variant,
seed, run configuration, spec, counts, metrics, history, hardware, versions, git revision, and the error of
a failed attempt. Readers (`results`, the dashboard) need nothing but this storage.

SQLite and several writers: the file is switched to WAL (readers never block the writer) and every
connection waits up to `SQLITE_TIMEOUT_S` for a lock instead of failing with "database is locked".

A store that becomes unreachable (a PostgreSQL server restarted, a network blip) is retried: every read and
write of a running study, claims included, tries again for up to `$WORKBENCH_STORE_RETRY_S` seconds (60 by
default), saying so once on stderr, before it stops with one line; nothing recorded before is lost.
A store that cannot be retried is said in one line of its own: a full disk (`DiskFull`: "no space left on
PATH (N MB free)"), a file that is no longer a readable database (`StoreUnreadable`: truncated or
overwritten), a read-only file or folder.
"""

from __future__ import annotations

import functools
import math
import os
import sqlite3
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from workbench.errors import (
    DiskFull,
    WorkbenchError,
    first_line,
    is_no_space,
    masked_url,
    no_space_line,
    os_error_line,
    scrubbed,
)

SQLITE_TIMEOUT_S = 120
DEFAULT_DB = "studies.db"
STORE_RETRY_S = 60.0  # default of $WORKBENCH_STORE_RETRY_S


def store_retry_s() -> float:
    try:
        return max(0.0, float(os.environ.get("WORKBENCH_STORE_RETRY_S", STORE_RETRY_S)))
    except ValueError:
        return STORE_RETRY_S


class StoreUnreadable(WorkbenchError):
    """The store's file is no longer a database SQLite can read (truncated, overwritten): nothing more is
    written to it."""


def _root_cause(exc: BaseException) -> BaseException:
    """Optuna wraps the database's error in StorageInternalError ("invalid data in the commit"): the cause."""
    import optuna

    while isinstance(exc, optuna.exceptions.StorageInternalError) and (exc.__cause__ or exc.__context__):
        exc = exc.__cause__ or exc.__context__
    return exc


def store_problem(exc: BaseException, url: str) -> WorkbenchError | None:
    """The one-line error for a store failure that retrying cannot mend, or None (transient, or not the
    store's): a full disk, an unreadable (damaged) file, a read-only file or folder."""
    import sqlalchemy as sa

    cause = _root_cause(exc)
    dbapi = getattr(cause, "orig", None) or cause
    text = str(dbapi).lower()
    path = sqlite_path(url)
    where = str(path) if path is not None else masked_url(url)
    if is_no_space(cause) or (path is not None and "disk i/o error" in text and _nearly_full(path)):
        return DiskFull(f"study store {where}: {no_space_line(path.parent if path else where)}; what was recorded "
                        "stays; free some space and run the same command again (--retry-failed re-runs trials "
                        "that failed for lack of it)")
    if not isinstance(cause, sa.exc.DBAPIError) and not isinstance(dbapi, sqlite3.Error):
        return None
    if any(k in text for k in ("file is not a database", "malformed", "disk image", "not a database")):
        return StoreUnreadable(f"the study store {where} is no longer a readable database ({first_line(dbapi)}): "
                               "truncated or overwritten? Nothing more is written to it; restore it from a copy "
                               "(sqlite3 FILE .recover salvages what is left)")
    if "readonly" in text or "read-only" in text:
        return WorkbenchError(f"study store {where} cannot be written ({first_line(dbapi)}): a read-only file or "
                              "folder; give --storage a writable place")
    if "unable to open database file" in text and path is not None:
        return WorkbenchError(f"study store {where} cannot be opened: its folder is missing, unreadable or "
                              "unwritable")
    return None


def _nearly_full(path: Path) -> bool:
    from workbench.errors import free_mb

    free = free_mb(path.parent)
    return free is not None and free < 1.0


def transient(exc: BaseException | None) -> bool:
    """A lost or refused connection (worth trying again), not bad data or a bad query."""
    import optuna
    import sqlalchemy as sa

    if exc is not None and (is_no_space(exc) or store_problem(exc, "sqlite://") is not None):
        return False
    if isinstance(exc, (sa.exc.OperationalError, sa.exc.InterfaceError, sa.exc.DisconnectionError)):
        return True
    if isinstance(exc, sa.exc.DBAPIError) and exc.connection_invalidated:
        return True
    if isinstance(exc, optuna.exceptions.StorageInternalError):
        return transient(exc.__cause__ or exc.__context__)
    return False


def retried(method):
    """Run a store or claims method; while the store is unreachable, try again for `store_retry_s()`."""
    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        deadline, delay, said = time.monotonic() + store_retry_s(), 0.5, False
        while True:
            try:
                return method(self, *args, **kwargs)
            except Exception as e:  # noqa: BLE001 - only transient errors are retried; the rest re-raised
                if not transient(e):
                    problem = store_problem(e, getattr(self, "url", None) or str(self.engine.url))
                    if problem is not None:
                        raise problem from None
                    raise
                url = masked_url(getattr(self, "url", None) or str(self.engine.url))
                why = scrubbed(first_line(e.__cause__ or e), getattr(self, "url", None))
                if time.monotonic() >= deadline:
                    raise WorkbenchError(f"the study store {url} is unreachable (for {store_retry_s():.0f} s, "
                                         f"$WORKBENCH_STORE_RETRY_S): {why}; what was recorded stays; run the same "
                                         "command again when it is back") from None
                if not said:
                    print(f"workbench: the study store {url} is unreachable ({why}); retrying for up to "
                          f"{store_retry_s():.0f} s", file=sys.stderr, flush=True)
                    said = True
                time.sleep(delay)
                delay = min(2 * delay, 5.0)
    return wrapper


def workspace_dir() -> Path:
    """Where studies keep their store and run folders: $WORKBENCH_WORKSPACE or ./workspace."""
    return Path(os.environ.get("WORKBENCH_WORKSPACE", "workspace"))


def default_storage_url() -> str:
    return f"sqlite:///{(workspace_dir() / DEFAULT_DB).resolve()}"


def sqlite_path(url: str) -> Path | None:
    if not url.startswith("sqlite:///"):
        return None
    path = url[len("sqlite:///"):]
    return None if path in ("", ":memory:") else Path(path)


def unwritable_reason(folder: Path) -> str | None:
    """Why SQLite could not create its shared-memory file (-shm) beside a store in `folder`, or None: a read-only
    file system (a finished store on a read-only mount, a CD, a snapshot), a folder this user cannot write, or a
    full disk (under 1 MB free)."""
    try:
        if os.statvfs(folder).f_flag & os.ST_RDONLY:
            return "is on a read-only file system"
    except OSError:
        return None
    if not os.access(folder, os.W_OK):
        return "is in a folder you cannot write"
    if _nearly_full(folder / "x"):
        return "is on a full disk"
    return None


def sqlite_reader_uri(path: Path) -> str:
    """The SQLite URI filename that reads the store at `path` and never writes, locks or needs free space.

    Where its folder can be written: `mode=ro` (WAL: readers see a running study's last commits). Where it
    cannot (read-only medium, someone else's folder, full disk) SQLite cannot make the -shm file a WAL reader
    needs: `immutable=1` reads the file as it is, which is the whole store once its write-ahead log (-wal) has
    been folded in (as the last writer closing does). Where a -wal and its -shm are there (a writer of another
    user's at work), `mode=ro` (SQLite reads them without writing); a non-empty -wal without its -shm cannot be
    read there, and says so in one line."""
    from urllib.parse import quote

    base = f"file:{quote(str(path.resolve()), safe='/')}"
    why = unwritable_reason(path.resolve().parent)
    if why is None:
        return f"{base}?mode=ro"
    wal, shm = Path(f"{path}-wal"), Path(f"{path}-shm")
    if wal.is_file() and shm.is_file():
        # A writer is (or was) at work: SQLite reads a WAL store it cannot write when both files are there, and
        # sees the writer's commits (an immutable read of a file being written could tear).
        return f"{base}?mode=ro"
    if wal.is_file() and wal.stat().st_size > 0:
        raise WorkbenchError(f"study store {str(path)!r} {why}, and its write-ahead log {wal.name} holds recent "
                             f"trials that SQLite can only read with its {shm.name} beside it; copy the store's "
                             "files to a writable folder and read it there")
    return f"{base}?immutable=1"


def driver_url(url: str) -> str:
    """The URL SQLAlchemy opens: a plain postgresql:// (SQLAlchemy's psycopg2 by default) uses psycopg 3, the
    driver of the `postgres` extra, unless psycopg2 is what is installed."""
    scheme, sep, rest = url.partition("://")
    if sep and scheme in ("postgresql", "postgres"):
        import importlib.util

        driver = "psycopg2" if importlib.util.find_spec("psycopg") is None and \
            importlib.util.find_spec("psycopg2") is not None else "psycopg"
        return f"postgresql+{driver}://{rest}"
    return url


def check_driver(url: str) -> None:
    """The URL's database driver must be importable; a missing one is one line that says how to get it."""
    import sqlalchemy as sa

    try:
        sa.engine.make_url(driver_url(url)).get_dialect().import_dbapi()
    except (sa.exc.NoSuchModuleError, ImportError) as e:
        hint = (' (pip install -e ".[postgres]" installs psycopg)' if url.startswith("postgres") else "")
        raise WorkbenchError(f"--storage {masked_url(url)!r}: no database driver for it: {first_line(e)}{hint}") \
            from None


def check_storage_url(url: str) -> None:
    """Reject an unusable URL before anything is written: bad scheme, missing driver, bad SQLite folder."""
    import sqlalchemy as sa

    try:
        parsed = sa.engine.make_url(url)
    except (sa.exc.ArgumentError, ValueError):  # ValueError: a port that is not a number (garbage://::)
        raise WorkbenchError(f"--storage {masked_url(url)!r}: not a SQLAlchemy URL, e.g. sqlite:///studies.db or "
                             "postgresql://user:pass@host/db") from None
    path = sqlite_path(url)
    if parsed.get_backend_name() == "sqlite" and path is not None and not path.parent.is_dir() \
            and path.parent != workspace_dir().resolve():
        raise WorkbenchError(f"--storage {masked_url(url)!r}: folder {str(path.parent)!r} does not exist")
    check_driver(url)


@dataclass
class TrialRecord:
    """One Optuna trial as the study tools read it."""

    number: int
    state: str  # COMPLETE | FAIL | RUNNING | PRUNED | WAITING
    values: list[float] | None
    attrs: dict[str, Any]
    intermediate: dict[int, float]
    started: float | None
    finished: float | None


class Store:
    def __init__(self, url: str | None = None, *, create: bool = True):
        import optuna
        import sqlalchemy as sa

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.url = url or default_storage_url()
        check_storage_url(self.url)
        path = sqlite_path(self.url)
        if path is not None:
            if not create and not path.is_file():
                raise WorkbenchError(f"no study store at {str(path)!r}; run `workbench ablate` first or pass "
                                     "--storage")
            if create:
                try:
                    path.parent.mkdir(parents=True, exist_ok=True)
                except OSError as e:
                    raise WorkbenchError(f"study store folder {os_error_line(e)}") from None
                _enable_wal(path)
        kwargs: dict[str, Any] = {}
        if self.url.startswith("sqlite"):
            kwargs = {"connect_args": {"timeout": SQLITE_TIMEOUT_S}}
        self.storage = _open_rdb(driver_url(self.url), kwargs, create)
        self.engine: sa.Engine = self.storage.engine

    # --- studies ------------------------------------------------------------------------------------
    @retried
    def study_names(self) -> list[str]:
        return [s.study_name for s in self.storage.get_all_studies()]

    def open_study(self, name: str, directions: list[str]):
        """The Optuna study `name`, created with `directions` the first time; directions must then agree."""
        import optuna

        study = optuna.create_study(storage=self.storage, study_name=name, directions=directions,
                                    load_if_exists=True)
        have = [d.name.lower()[:3] for d in study.directions]
        want = [d[:3] for d in directions]
        if have != want:
            raise WorkbenchError(f"study {name!r} in {masked_url(self.url)} was created with objectives directions "
                                 f"{have}; this study file asks for {want}. Use another study name or storage")
        return study

    def load_study(self, name: str):
        import optuna

        try:
            return optuna.load_study(study_name=name, storage=self.storage)
        except KeyError:
            names = self.study_names()
            raise WorkbenchError(f"study {name!r} is not in {masked_url(self.url)} (it holds: "
                                 f"{', '.join(names) or 'no studies'}); run `workbench ablate --study {name}` first"
                                 ) from None

    # --- trials -------------------------------------------------------------------------------------
    @retried
    def start_trial(self, study_id: int, attrs: dict) -> tuple[int, int]:
        """A RUNNING trial carrying `attrs`, created in one statement; returns (trial_id, number)."""
        from optuna.trial import FrozenTrial, TrialState

        template = FrozenTrial(number=0, state=TrialState.RUNNING, value=None, values=None,
                               datetime_start=datetime.now(), datetime_complete=None, params={}, distributions={},
                               user_attrs=attrs, system_attrs={}, intermediate_values={}, trial_id=0)
        trial_id = self.storage.create_new_trial(study_id, template_trial=template)
        return trial_id, self.storage.get_trial_number_from_id(trial_id)

    @retried
    def report(self, trial_id: int, step: int, value: float) -> bool:
        """Record an epoch's value; False when the trial was already finished by someone else (another
        process took the work over while this one was paused or cut off)."""
        from optuna.exceptions import UpdateFinishedTrialError

        try:
            if math.isfinite(value):
                self.storage.set_trial_intermediate_value(trial_id, step, value)
            return True
        except UpdateFinishedTrialError:
            return False

    @retried
    def set_attrs(self, trial_id: int, attrs: dict) -> None:
        for k, v in attrs.items():
            self.storage.set_trial_user_attr(trial_id, k, v)

    @retried
    def finish(self, trial_id: int, state: str, attrs: dict, values: list[float] | None = None) -> bool:
        """Write attrs, then the final state; False when the trial was already finished by someone else."""
        from optuna.trial import TrialState

        try:
            self.set_attrs(trial_id, attrs)
            return self.storage.set_trial_state_values(trial_id, TrialState[state], values)
        except RuntimeError:  # Optuna: "Trial#N has already finished and can not be updated."
            return False

    @retried
    def records(self, study_name: str) -> list[TrialRecord]:
        study = self.load_study(study_name)
        out = []
        for t in study.get_trials(deepcopy=False):
            out.append(TrialRecord(t.number, t.state.name, list(t.values) if t.values else None,
                                   dict(t.user_attrs), dict(t.intermediate_values),
                                   t.datetime_start.timestamp() if t.datetime_start else None,
                                   t.datetime_complete.timestamp() if t.datetime_complete else None))
        return out


def _enable_wal(path: Path) -> None:
    """WAL is a property of the file: set once, every later connection (Optuna's too) uses it.

    Switching the journal mode needs the file to itself, and SQLite does not always wait on its busy handler
    for that: two processes opening a new store at the same moment (one creating Optuna's tables) see
    "database is locked" at once. A locked file is not a bad one, so wait for it up to `SQLITE_TIMEOUT_S`."""
    deadline, delay = time.monotonic() + SQLITE_TIMEOUT_S, 0.05
    while True:
        con = None
        try:
            con = sqlite3.connect(path, timeout=SQLITE_TIMEOUT_S)
            mode = con.execute("PRAGMA journal_mode").fetchone()
            if mode and str(mode[0]).lower() == "wal":
                return
            con.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) and "busy" not in str(e):
                problem = store_problem(e, f"sqlite:///{path}")
                raise problem or WorkbenchError(f"study store {str(path)!r} is not a usable SQLite file: {e}") \
                    from None
            if time.monotonic() >= deadline:
                raise WorkbenchError(f"study store {str(path)!r} stayed locked by another process for "
                                     f"{SQLITE_TIMEOUT_S} s; is a stuck workbench holding it?") from None
        except sqlite3.DatabaseError as e:
            raise WorkbenchError(f"study store {str(path)!r} is not a usable SQLite file: {e}") from None
        finally:
            if con is not None:
                con.close()
        time.sleep(delay)
        delay = min(2 * delay, 1.0)


def _open_rdb(url: str, engine_kwargs: dict, create: bool):
    """Optuna's RDBStorage; two processes creating the tables at once may collide, so retry briefly."""
    import optuna
    import sqlalchemy as sa

    last: Exception | None = None
    for attempt in range(5):
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, skip_table_creation=not create)
        except (sa.exc.OperationalError, sa.exc.IntegrityError, optuna.exceptions.StorageInternalError) as e:
            # Racing creators: a table another process just made, a lock, or alembic's version row
            # inserted twice (IntegrityError on alembic_version). All settle on a retry.
            last = e
            if not isinstance(e, sa.exc.IntegrityError) and "already exists" not in str(e) \
                    and "locked" not in str(e):
                break
            time.sleep(0.5 + attempt)
        except (sa.exc.DatabaseError, sa.exc.ArgumentError, ImportError, RuntimeError, ValueError) as e:
            last = e
            break
    problem = store_problem(last, url) if last is not None else None
    if problem is not None:
        raise problem
    why = scrubbed(first_line(_root_cause(last)), url) if last else "unknown error"
    raise WorkbenchError(f"cannot open the study store {masked_url(url)!r}: {scrubbed(why, url)}")
