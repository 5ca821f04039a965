"""The durable inbox: accept, deduplicate, claim, finish, retry, park.

One SQLite database in WAL mode, one writing connection, used right on the event loop's thread: every
write is one short, indexed transaction, and handing it to a thread costs more under load (GIL
handovers, a wake-up of the loop) than the write itself. What does wait is the disk, so that part is
done apart: transactions commit with `synchronous=NORMAL` (into the OS's cache, and SQLite still syncs
before every checkpoint), then the WAL file is fdatasync'ed on a thread before anyone is told the write
happened. That is the durability of `synchronous=FULL`, without the event loop waiting for the disk:
while one batch is being synced, the loop takes the next requests. Deliveries arriving together are
written in one transaction (group commit), so a 200 means the delivery is on disk and survives kill -9
and power loss alike. Aggregates (`stats`, for /metrics and /widen status) run on a thread with their
own read-only connection, which WAL lets read while the loop writes.

States: pending -> claimed -> posting -> posted, or pending again (retry later), or parked (dead letter,
kept until an admin retries it). `claimed` is bookkeeping, written without fsync: losing it only makes
a row pending again. `posting` is written durably just before the Slack call: a row left `posting` by a
crash may or may not have reached Slack, so at start it goes back to pending marked `maybe_posted`, and
the worker checks the channel before posting it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
log = logging.getLogger(__name__)

# Sync rounds between checkpoints: under a flood about SQLite's own threshold of 1000 WAL pages.
CHECKPOINT_EVERY = 32

SCHEMA = """
CREATE TABLE IF NOT EXISTS deliveries (
    row_id          INTEGER PRIMARY KEY AUTOINCREMENT,
    dedup_key       TEXT NOT NULL UNIQUE,
    delivery_id     TEXT NOT NULL,
    configuration_id TEXT NOT NULL,
    event_type      TEXT NOT NULL,
    asset_id        TEXT,
    route           TEXT,
    body            BLOB NOT NULL,
    received_at     REAL NOT NULL,
    state           TEXT NOT NULL DEFAULT 'pending',
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL DEFAULT 0,
    maybe_posted    INTEGER NOT NULL DEFAULT 0,
    last_error      TEXT,
    channel         TEXT,
    message_ts      TEXT,
    finished_at     REAL
);
CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries (state, next_attempt_at);
CREATE INDEX IF NOT EXISTS deliveries_config ON deliveries (configuration_id);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS routes (
    token            TEXT PRIMARY KEY,
    configuration_id TEXT NOT NULL UNIQUE,
    secret           TEXT NOT NULL,
    created_by       TEXT,
    created_at       REAL NOT NULL
);
"""

# The configuration id of a route whose configuration is being created.
PENDING = "pending:"

DELIVERY_COLUMNS = (
    "row_id, delivery_id, configuration_id, event_type, asset_id, body, received_at, attempts, maybe_posted"
)


@dataclass(frozen=True)
class Delivery:
    row_id: int
    delivery_id: str
    configuration_id: str
    event_type: str
    asset_id: str | None
    body: bytes
    received_at: float
    attempts: int
    maybe_posted: bool


@dataclass(frozen=True)
class NewDelivery:
    body: bytes
    delivery_id: str | None
    configuration_id: str
    event_type: str
    asset_id: str | None
    route: str | None = None

    @property
    def dedup_key(self) -> str:
        if self.delivery_id:
            return "id:" + self.delivery_id
        return "sha256:" + hashlib.sha256(self.body).hexdigest()


@dataclass(frozen=True)
class Route:
    token: str
    configuration_id: str
    secret: str

    @property
    def pending(self) -> bool:
        """Made by /widen create, whose DAM call has not answered yet (it may deliver meanwhile)."""
        return self.configuration_id.startswith(PENDING)


@dataclass(frozen=True)
class InboxStats:
    pending: int
    in_flight: int
    parked: int
    posted: int
    oldest_pending_age: float | None
    last_errors: list[tuple[str, str, str]]  # (delivery id, event type, error)


@dataclass(frozen=True)
class ConfigurationStats:
    received: int
    last_received: float | None
    failures: int


class Inbox:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._conn: sqlite3.Connection | None = None
        self._reader: sqlite3.Connection | None = None
        # Group commit: deliveries wait in `_waiting` while the disk syncs the previous round, then go
        # in one transaction; other writes, committed at once, wait in `_unsynced` for the next sync.
        self._waiting: list[tuple[NewDelivery, asyncio.Future[bool]]] = []
        self._unsynced: list[asyncio.Future[None]] = []
        self._round_running = False  # a sync is in flight (at most one: the next one covers all since)
        self._kick_scheduled = False
        self._idle = asyncio.Event()
        self._idle.set()
        # fdatasync of the WAL, one at a time, off the event loop.
        self._syncer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inbox-sync")
        self._wal_fd: int | None = None
        # Checkpoints (copying the WAL into the database, and syncing both) on the syncing thread too.
        self._checkpoint_conn: sqlite3.Connection | None = None
        self._rounds_since_checkpoint = 0
        # Woken whenever new work is committed, so the worker need not poll.
        self.new_work = asyncio.Event()
        self.inbox_id = ""

    # ---- life ----------------------------------------------------------------------------------

    async def open(self) -> None:
        # The file itself, not a symlink to it: SQLite keeps its WAL next to the target, and so must we.
        try:
            self.path = self.path.resolve()
        except RuntimeError as exc:  # a symlink loop: unreachable, as an OSError says
            raise OSError(f"{self.path}: {exc}") from exc
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")  # plus our own WAL sync: see the module's docstring
        conn.execute("PRAGMA busy_timeout=5000")
        # Not on the loop: a checkpoint writes and syncs the database; `_checkpoint` does it on a thread.
        conn.execute("PRAGMA wal_autocheckpoint=0")
        conn.executescript(SCHEMA)
        # A random name for this store, so messages posted from another store are never mistaken
        # for ours when the channel's history is checked after a crash.
        conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('inbox_id', lower(hex(randomblob(8))))")
        self.inbox_id = conn.execute("SELECT value FROM meta WHERE key='inbox_id'").fetchone()[0]
        _migrate(conn)
        self._conn = conn
        self._reader = self._connect_reader()
        self._checkpoint_conn = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False)
        self._checkpoint_conn.execute("PRAGMA synchronous=FULL")
        self._checkpoint_conn.execute("PRAGMA busy_timeout=5000")
        # The WAL file stays while a connection is open (a checkpoint truncates it, never replaces it).
        self._wal_fd = os.open(f"{self.path}-wal", os.O_RDONLY)

    def _connect_reader(self) -> sqlite3.Connection:
        # As a URI, escaped: a `?`, `#` or `%` in the path must not read as a URI's query or escape.
        return sqlite3.connect(f"{self.path.as_uri()}?mode=ro", uri=True, isolation_level=None,
                               check_same_thread=False)

    async def close(self) -> None:
        await self._idle.wait()  # every accepted delivery answered, every write synced
        self._syncer.shutdown(wait=True)
        if self._checkpoint_conn is not None:
            self._checkpoint_conn.close()
            self._checkpoint_conn = None
        if self._wal_fd is not None:
            os.close(self._wal_fd)
            self._wal_fd = None
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        if self._conn is not None:
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._conn.close()
            self._conn = None

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError("inbox is not open")
        return self._conn

    def _transaction(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run `work` in one write transaction (synchronously: nothing else can interleave)."""
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = work(conn)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return result

    async def _to_disk(self) -> None:
        """Returns once everything committed so far is on disk."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._unsynced.append(future)
        self._kick_soon()
        await future

    async def _write(self, sql: str, params: tuple[Any, ...] = ()) -> int:
        count = self._transaction(lambda conn: conn.execute(sql, params).rowcount)
        await self._to_disk()
        return count

    async def _write_many(self, sql: str, params: list[tuple[Any, ...]]) -> None:
        self._transaction(lambda conn: conn.executemany(sql, params))
        await self._to_disk()

    def _one(self, sql: str, params: tuple[Any, ...] = ()) -> tuple[Any, ...] | None:
        """An indexed read of what is committed; WAL never makes it wait for the writer."""
        if self._reader is None:
            raise RuntimeError("inbox is not open")
        return self._reader.execute(sql, params).fetchone()

    # ---- accepting (group commit) ---------------------------------------------------------------

    async def accept(self, delivery: NewDelivery) -> bool:
        """Store a delivery durably. True if new, False if it was already stored."""
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._waiting.append((delivery, future))
        self._kick_soon()
        return await future

    def _kick_soon(self) -> None:
        # Soon, not now: every request the loop reads in this pass joins the same transaction.
        if not self._round_running and not self._kick_scheduled:
            self._kick_scheduled = True
            asyncio.get_running_loop().call_soon(self._kick)

    def _kick(self) -> None:
        """Start a round, unless one is running: commit the waiting deliveries, then sync the WAL once
        for them and for every write committed since the last sync. What arrives meanwhile waits for the
        next round, so a flood makes bigger transactions, not more of them, and one sync at a time."""
        self._kick_scheduled = False
        if self._round_running:
            return
        batch, self._waiting = self._waiting, []
        writes, self._unsynced = self._unsynced, []
        results: list[bool] = []
        if batch:
            try:
                results = self._transaction(partial(_insert_batch, batch=[d for d, _ in batch]))
            except Exception as exc:  # the disk failed: every waiter learns it, none is told 200
                _settle(batch, exc)
                batch = []
        if not batch and not writes:
            self._idle.set()
            return
        self._round_running = True
        self._idle.clear()
        synced = asyncio.get_running_loop().run_in_executor(self._syncer, self._sync)
        synced.add_done_callback(partial(self._round_done, batch, results, writes))

    def _sync(self) -> None:
        if self._wal_fd is not None:
            os.fdatasync(self._wal_fd)

    def _round_done(self, batch: list[tuple[NewDelivery, asyncio.Future[bool]]], results: list[bool],
                    writes: list[asyncio.Future[None]], synced: asyncio.Future[None]) -> None:
        exc = synced.exception()
        if exc is not None:
            _settle(batch, exc)
            _settle([(None, w) for w in writes], exc)
        else:
            for (_, future), is_new in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(is_new)
            for write in writes:
                if not write.done():
                    write.set_result(None)
            if any(results):
                self.new_work.set()
        self._round_running = False
        self._rounds_since_checkpoint += 1
        if self._rounds_since_checkpoint >= CHECKPOINT_EVERY:
            # Between rounds, so that no write lands during it: then the next write starts the WAL over
            # and it stays short. Those who were waiting for this round have their answer already.
            self._rounds_since_checkpoint = 0
            self._round_running = True
            checkpointed = asyncio.get_running_loop().run_in_executor(self._syncer, self._checkpoint)
            checkpointed.add_done_callback(self._checkpoint_done)
            return
        self._kick()  # what gathered during this sync

    def _checkpoint(self) -> None:
        if self._checkpoint_conn is not None:
            self._checkpoint_conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

    def _checkpoint_done(self, done: asyncio.Future[None]) -> None:
        if done.exception() is not None:  # the WAL only grows meanwhile; the next one tries again
            log.warning("checkpoint failed: %s", done.exception())
        self._round_running = False
        self._kick()

    # ---- the worker's side ----------------------------------------------------------------------

    async def recover(self) -> int:
        """After a crash: rows left claimed go back to pending, marked as possibly posted."""
        posting = await self._write("UPDATE deliveries SET state='pending', maybe_posted=1 WHERE state='posting'")
        claimed = await self._write("UPDATE deliveries SET state='pending' WHERE state='claimed'")
        return posting + claimed

    async def claim(self, limit: int) -> list[Delivery]:
        # Bookkeeping only, so without fsync (see the module's docstring).
        rows = self._transaction(lambda conn: _claim_rows(conn, limit))  # no sync: bookkeeping only
        return [
            Delivery(r[0], r[1], r[2], r[3], r[4], bytes(r[5]), r[6], r[7] + 1, bool(r[8])) for r in rows
        ]

    async def next_due_in(self) -> float | None:
        """Seconds until the next pending delivery is due (0 if one is due now), None if none."""
        row = self._one("SELECT MIN(next_attempt_at) FROM deliveries WHERE state='pending'")
        if row is None or row[0] is None:
            return None
        return max(0.0, row[0] - time.time())

    async def mark_posting(self, row_ids: Iterable[int]) -> None:
        """Durably note that these rows are about to be posted (see `recover`)."""
        await self._write_many("UPDATE deliveries SET state='posting' WHERE row_id=?", [(i,) for i in row_ids])

    async def finish(self, row_ids: Iterable[int], *, channel: str | None, ts: str | None) -> None:
        # A posted row keeps its posting time in next_attempt_at too: its index finds the old ones to forget.
        now = time.time()
        await self._write_many(
            "UPDATE deliveries SET state='posted', channel=?, message_ts=?, finished_at=?, next_attempt_at=?, "
            "last_error=NULL WHERE row_id=?",
            [(channel, ts, now, now, i) for i in row_ids],
        )

    async def retry_later(self, row_id: int, error: str, delay: float, *, maybe_posted: bool = False) -> None:
        """Pending again in `delay` s. `maybe_posted`: a post may have reached Slack (its answer was lost),
        so the channel is checked before posting again."""
        await self._write(
            "UPDATE deliveries SET state='pending', last_error=?, next_attempt_at=?, maybe_posted=maybe_posted OR ? "
            "WHERE row_id=?",
            (error[:500], time.time() + delay, maybe_posted, row_id),
        )

    async def release(self, row_ids: Iterable[int]) -> None:
        """Give unfinished rows back (shutdown): they are picked up at the next start."""
        ids = [(i,) for i in row_ids]
        await self._write_many(
            "UPDATE deliveries SET state='pending', attempts=MAX(attempts-1, 0) WHERE row_id=? AND state='claimed'",
            ids,
        )
        # A post cut short may have reached Slack: check before posting again.
        await self._write_many(
            "UPDATE deliveries SET state='pending', maybe_posted=1 WHERE row_id=? AND state='posting'",
            ids,
        )

    async def park(self, row_id: int, error: str, *, maybe_posted: bool = False) -> None:
        await self._write("UPDATE deliveries SET state='parked', last_error=?, maybe_posted=maybe_posted OR ? "
                          "WHERE row_id=?", (error[:500], maybe_posted, row_id))

    async def unpark(self, delivery_id: str | None) -> int:
        """Put parked deliveries back (one by delivery id, or all when None). Returns how many."""
        sql = "UPDATE deliveries SET state='pending', attempts=0, next_attempt_at=0 WHERE state='parked'"
        if delivery_id is not None:
            count = await self._write(sql + " AND delivery_id=?", (delivery_id,))
        else:  # in batches, so that many parked rows never hold the event loop for long
            count = 0
            while batch := await self._write(
                sql + " AND row_id IN (SELECT row_id FROM deliveries WHERE state='parked' LIMIT 500)"
            ):
                count += batch
        if count:
            self.new_work.set()
        return count

    async def forget_posted(self, before: float, limit: int = 500) -> int:
        """Delete up to `limit` deliveries posted before `before` (a Unix time). Posted rows keep that time
        in `next_attempt_at` (see `finish`), whose index finds them without a scan."""
        return await self._write(
            "DELETE FROM deliveries WHERE row_id IN (SELECT row_id FROM deliveries "
            "WHERE state='posted' AND next_attempt_at<? ORDER BY next_attempt_at LIMIT ?)",
            (before, limit),
        )

    # ---- reading --------------------------------------------------------------------------------

    async def stats(self) -> InboxStats:
        return await asyncio.to_thread(self._stats_sync)

    def _stats_sync(self) -> InboxStats:
        # Its own connection: this runs on a thread, and may take a while on a big table.
        with contextlib.closing(self._connect_reader()) as reader:
            return self._stats_from(reader)

    def _stats_from(self, reader: sqlite3.Connection) -> InboxStats:
        counts = dict(reader.execute("SELECT state, COUNT(*) FROM deliveries GROUP BY state").fetchall())
        oldest = reader.execute(
            "SELECT MIN(received_at) FROM deliveries WHERE state IN ('pending', 'claimed', 'posting')"
        ).fetchone()[0]
        errors = reader.execute(
            "SELECT delivery_id, event_type, last_error FROM deliveries WHERE last_error IS NOT NULL "
            "AND state IN ('pending', 'parked') ORDER BY row_id DESC LIMIT 5"
        ).fetchall()
        return InboxStats(
            pending=counts.get("pending", 0),
            in_flight=counts.get("claimed", 0) + counts.get("posting", 0),
            parked=counts.get("parked", 0),
            posted=counts.get("posted", 0),
            oldest_pending_age=None if oldest is None else max(0.0, time.time() - oldest),
            last_errors=[tuple(e) for e in errors],
        )

    async def configuration_stats(self, configuration_id: str) -> ConfigurationStats:
        # On a thread, like `stats`: a configuration with many deliveries takes a while to count.
        return await asyncio.to_thread(self._configuration_stats_sync, configuration_id)

    def _configuration_stats_sync(self, configuration_id: str) -> ConfigurationStats:
        with contextlib.closing(self._connect_reader()) as reader:
            row = reader.execute(
                "SELECT COUNT(*), MAX(received_at), SUM(state='parked' OR last_error IS NOT NULL) "
                "FROM deliveries WHERE configuration_id=?",
                (configuration_id,),
            ).fetchone()
        return ConfigurationStats(received=row[0], last_received=row[1], failures=row[2] or 0)

    async def writable(self) -> bool:
        # A real committed write, as a delivery needs: a no-op statement would pass on a full disk.
        try:
            await self._write("INSERT OR REPLACE INTO meta (key, value) VALUES ('ready_probe', ?)",
                              (str(time.time()),))
            return True
        except sqlite3.Error:
            return False

    # ---- routes: delivery URLs made by /widen create --------------------------------------------

    async def add_route(self, token: str, configuration_id: str, secret: str, created_by: str | None) -> None:
        await self._write(
            "INSERT OR REPLACE INTO routes (token, configuration_id, secret, created_by, created_at) "
            "VALUES (?, ?, ?, ?, ?)",
            (token, configuration_id, secret, created_by, time.time()),
        )

    async def route(self, token: str) -> Route | None:
        row = self._one("SELECT token, configuration_id, secret FROM routes WHERE token=?", (token,))
        return None if row is None else Route(*row)

    async def route_of(self, configuration_id: str) -> Route | None:
        """The delivery URL token and secret the bot made for this configuration, if it made one."""
        row = self._one("SELECT token, configuration_id, secret FROM routes WHERE configuration_id=?",
                        (configuration_id,))
        return None if row is None else Route(*row)

    async def forget_route(self, configuration_id: str) -> int:
        return await self._write("DELETE FROM routes WHERE configuration_id=?", (configuration_id,))

    async def pending_routes(self, made_before: float) -> list[Route]:
        """Routes still waiting for the DAM to confirm their configuration, made before `made_before`."""
        if self._reader is None:
            raise RuntimeError("inbox is not open")
        rows = self._reader.execute(
            "SELECT token, configuration_id, secret FROM routes WHERE substr(configuration_id, 1, ?)=? "
            "AND created_at<?",
            (len(PENDING), PENDING, made_before),
        ).fetchall()
        return [Route(*row) for row in rows]

    async def confirm_route(self, token: str, configuration_id: str) -> int:
        """The DAM made this route's configuration after all: from now on the route takes only its deliveries."""
        return await self._write("UPDATE routes SET configuration_id=? WHERE token=?", (configuration_id, token))


def _settle(batch: Iterable[tuple[Any, asyncio.Future[Any]]], exc: BaseException) -> None:
    for _, future in batch:
        if not future.done():
            future.set_exception(exc)


# ---- statements of the bigger transactions ------------------------------------------------------------


def _migrate(conn: sqlite3.Connection) -> None:
    """Bring a store written by an older version up to date, once (a meta key records it)."""
    with conn:
        conn.execute("BEGIN IMMEDIATE")
        if conn.execute("SELECT 1 FROM meta WHERE key='migrated:posted_at'").fetchone() is None:
            # Earlier versions left a posted row's last attempt time in next_attempt_at, which retention now
            # reads as its posting time: a delivery put back from the dead letters would be forgotten early.
            conn.execute("UPDATE deliveries SET next_attempt_at=finished_at "
                         "WHERE state='posted' AND finished_at>next_attempt_at")
            conn.execute("INSERT INTO meta (key, value) VALUES ('migrated:posted_at', ?)", (str(time.time()),))


def _insert_batch(conn: sqlite3.Connection, batch: list[NewDelivery]) -> list[bool]:
    """Insert what is new; True per delivery that was. A key already stored (or earlier in the batch) is
    skipped by the unique index. One statement per row: a statement of many rows that may abort keeps a
    statement journal, which for a batch of random index pages spills to a temporary file."""
    now = time.time()
    results = []
    for d in batch:
        key = d.dedup_key
        cursor = conn.execute(
            "INSERT INTO deliveries (dedup_key, delivery_id, configuration_id, event_type, asset_id, route, body,"
            " received_at, next_attempt_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (dedup_key) DO NOTHING",
            (key, d.delivery_id or key, d.configuration_id, d.event_type, d.asset_id, d.route, d.body, now, now),
        )
        results.append(cursor.rowcount == 1)
    return results


def _claim_rows(conn: sqlite3.Connection, limit: int) -> list[tuple[Any, ...]]:
    rows = conn.execute(
        # Longest due first (a new row is due from its arrival): the order of the index, so no sort however
        # long the queue.
        f"SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE state='pending' AND next_attempt_at<=? "
        "ORDER BY next_attempt_at, row_id LIMIT ?",
        (time.time(), limit),
    ).fetchall()
    conn.executemany(
        "UPDATE deliveries SET state='claimed', attempts=attempts+1 WHERE row_id=?", [(r[0],) for r in rows]
    )
    return rows
