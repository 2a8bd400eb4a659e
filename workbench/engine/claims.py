"""Who runs which trial: one row per (study, item) in a small table beside Optuna's, claimed atomically.

Optuna has no "create this trial unless someone already has" operation, so two processes planning the same
study would both start the same variant and seed. Here a claim is an INSERT on a primary key (exactly one
writer wins on SQLite and PostgreSQL alike) or a compare-and-swap UPDATE that takes over the row of an owner
that is dead (same host, its process is gone) or silent (no heartbeat for `stale_after_s`). A row is never
deleted: `done` and `failed` stay, so a process that planned from an old snapshot cannot claim a finished
item again.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass

import sqlalchemy as sa

from workbench.engine.store import retried

METADATA = sa.MetaData()
CLAIMS = sa.Table(
    "workbench_claims", METADATA,
    sa.Column("study", sa.String(512), primary_key=True),
    sa.Column("item", sa.String(128), primary_key=True),
    sa.Column("state", sa.String(16), nullable=False),  # running | done | failed
    sa.Column("owner", sa.String(256), nullable=False),
    sa.Column("trial_id", sa.Integer, nullable=True),  # the Optuna trial recording this attempt
    sa.Column("heartbeat", sa.Float, nullable=False),
)


def process_start(pid: int) -> str:
    """The kernel's start time of `pid` (field 22 of /proc/PID/stat), so a reused pid is not mistaken."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return "?"


def this_owner() -> str:
    pid = os.getpid()
    return f"{socket.gethostname()}|{pid}|{process_start(pid)}"


def owner_is_dead(owner: str) -> bool:
    """True only when we can tell for sure: the owner ran on this host and that process is gone."""
    host, _, rest = owner.partition("|")
    pid_text, _, started = rest.partition("|")
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    # A killed process its parent has not reaped yet (a zombie) still answers kill(pid, 0), but it is dead.
    return (started != "?" and process_start(pid) != started) or _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except (OSError, IndexError):
        return False


@dataclass(frozen=True)
class Claim:
    item: str
    state: str
    owner: str
    trial_id: int | None
    heartbeat: float


class Claims:
    def __init__(self, engine: sa.Engine, study: str, stale_after_s: float = 120.0):
        self.engine = engine
        self.study = study
        self.stale_after_s = stale_after_s
        self.owner = this_owner()
        try:
            METADATA.create_all(engine, checkfirst=True)
        except sa.exc.OperationalError as e:  # another process created it between the check and the CREATE
            if "already exists" not in str(e):
                raise

    @retried
    def all(self) -> dict[str, Claim]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(CLAIMS).where(CLAIMS.c.study == self.study)).all()
        return {r.item: Claim(r.item, r.state, r.owner, r.trial_id, r.heartbeat) for r in rows}

    def is_abandoned(self, claim: Claim) -> bool:
        return claim.state == "running" and (owner_is_dead(claim.owner)
                                             or time.time() - claim.heartbeat > self.stale_after_s)

    @retried
    def try_claim(self, item: str, retry_failed: bool = False) -> tuple[bool, Claim | None]:
        """(claimed, the row we took over or None). Exactly one concurrent caller gets True."""
        now = time.time()
        try:
            with self.engine.begin() as conn:
                conn.execute(sa.insert(CLAIMS).values(study=self.study, item=item, state="running",
                                                      owner=self.owner, trial_id=None, heartbeat=now))
            return True, None
        except sa.exc.IntegrityError:
            pass
        with self.engine.connect() as conn:
            r = conn.execute(sa.select(CLAIMS).where(CLAIMS.c.study == self.study, CLAIMS.c.item == item)).one()
        old = Claim(r.item, r.state, r.owner, r.trial_id, r.heartbeat)
        takeable = self.is_abandoned(old) or (retry_failed and old.state == "failed")
        if not takeable:
            return False, old
        with self.engine.begin() as conn:
            # Compare-and-swap on everything we read: if anyone changed the row since, we lose.
            n = conn.execute(sa.update(CLAIMS).where(
                CLAIMS.c.study == self.study, CLAIMS.c.item == item, CLAIMS.c.state == old.state,
                CLAIMS.c.owner == old.owner, CLAIMS.c.heartbeat == old.heartbeat,
            ).values(state="running", owner=self.owner, trial_id=None, heartbeat=now)).rowcount
        return n == 1, old

    def attach_trial(self, item: str, trial_id: int) -> None:
        self._update(item, trial_id=trial_id, heartbeat=time.time())

    def finish(self, item: str, state: str) -> None:
        self._update(item, state=state, heartbeat=time.time())

    @retried
    def beat(self, items: list[str]) -> set[str]:
        """Renew our claims on `items`; returns those that are no longer ours: another process took them over
        (this one was paused, or cut off from the store, past `stale_after_s`)."""
        if not items:
            return set()
        with self.engine.begin() as conn:
            conn.execute(sa.update(CLAIMS).where(
                CLAIMS.c.study == self.study, CLAIMS.c.item.in_(items), CLAIMS.c.owner == self.owner,
                CLAIMS.c.state == "running").values(heartbeat=time.time()))
            rows = conn.execute(sa.select(CLAIMS.c.item, CLAIMS.c.owner).where(
                CLAIMS.c.study == self.study, CLAIMS.c.item.in_(items))).all()
        return {r.item for r in rows if r.owner != self.owner}

    @retried
    def _update(self, item: str, **values) -> None:
        with self.engine.begin() as conn:
            conn.execute(sa.update(CLAIMS).where(CLAIMS.c.study == self.study, CLAIMS.c.item == item,
                                                 CLAIMS.c.owner == self.owner).values(**values))

    def release(self, item: str) -> None:
        """Give a running claim back: a zero heartbeat makes it abandoned, so anyone may take it over."""
        self._update(item, heartbeat=0.0)


class ClaimCheck:
    """A worker's look at its own claim: is the item still ours and running? Used before a trial trains and before
    each epoch's files are written, so a trial whose claim another process took over (its driver was paused or cut
    off past the stale limit) stops without writing beside the new owner. Reads one row; never writes."""

    def __init__(self, url: str, study: str, item: str, owner: str):
        self.url, self.study, self.item, self.owner = url, study, item, owner
        self._engine: sa.Engine | None = None

    def __call__(self) -> bool:
        try:
            if self._engine is None:
                from sqlalchemy.pool import NullPool

                self._engine = sa.create_engine(self.url, poolclass=NullPool)
            with self._engine.connect() as conn:
                row = conn.execute(sa.select(CLAIMS.c.owner, CLAIMS.c.state).where(
                    CLAIMS.c.study == self.study, CLAIMS.c.item == self.item)).first()
        except Exception:  # noqa: BLE001 - an unreachable store is the driver's to report; the trial goes on
            return True
        return row is None or (row.owner == self.owner and row.state == "running")

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None
