"""Retention: posted deliveries are forgotten after RETENTION_DAYS; parked and unposted ones never are.

Through the real server over HTTP with the local DAM and the local Slack: deliveries are posted for real,
then made to look old in the store, and the server is started again as after a long time.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import httpx

from receiver.app import INBOX
from receiver.retention import forget_old_posts
from receiver.sandbox_run import CHANNEL, running_stack
from tests.conftest import SHARED_SECRET, deliver, eventually
from tests.test_operations import asset_event

DAY = 86400
SETTINGS = {"widen_webhook_secret": SHARED_SECRET, "slack_channel_rate": 50.0}


def states(database: Path) -> dict[str, str]:
    with sqlite3.connect(database) as conn:
        return dict(conn.execute("SELECT delivery_id, state FROM deliveries").fetchall())


def age(database: Path, delivery_ids: list[str], days: float) -> None:
    """Make these deliveries look as if received, and last tried, `days` ago."""
    then = time.time() - days * DAY
    with sqlite3.connect(database) as conn:
        conn.executemany("UPDATE deliveries SET received_at=?, next_attempt_at=? WHERE delivery_id=?",
                         [(then, then, i) for i in delivery_ids])


async def test_old_posted_deliveries_are_forgotten_at_start_and_a_redelivery_is_then_new(tmp_path: Path):
    database = tmp_path / "bot.db"
    events = [asset_event() for _ in range(3)]
    ids = [e["webhook_delivery_id"] for e in events]
    async with running_stack(database, **SETTINGS) as stack, httpx.AsyncClient(base_url=stack.base_url) as http:
        for event in events:
            assert (await deliver(http, event)).status_code == 200
        await eventually(lambda: len(stack.slack.messages_in(CHANNEL)) == 3)
        await eventually(lambda: set(states(database).values()) == {"posted"})
    age(database, ids[:2], days=31)  # two are older than the default 30 days
    # A parked one and an unposted one, as old: an admin has not looked yet, or it was never posted.
    with sqlite3.connect(database) as conn:
        conn.execute("UPDATE deliveries SET state='parked' WHERE delivery_id=?", (ids[1],))

    async with running_stack(database, **SETTINGS) as stack, httpx.AsyncClient(base_url=stack.base_url) as http:
        await eventually(lambda: ids[0] not in states(database))
        assert states(database) == {ids[1]: "parked", ids[2]: "posted"}
        # The DAM sending the forgotten one again is taken as new (it is long past any retry) and posted.
        answer = await deliver(http, events[0])
        assert answer.status_code == 200 and answer.json() == {"status": "accepted"}
        await eventually(lambda: len(stack.slack.messages_in(CHANNEL)) == 1)


async def test_forgetting_keeps_recent_posted_and_every_unposted_delivery(tmp_path: Path):
    database = tmp_path / "bot.db"
    async with running_stack(database, **SETTINGS, retention_days=2) as stack, \
            httpx.AsyncClient(base_url=stack.base_url) as http:
        stack.dam.fail_next(1000, 503, "/assets")  # nothing gets posted: it stays unposted
        pending = asset_event()
        assert (await deliver(http, pending)).status_code == 200
        age(database, [pending["webhook_delivery_id"]], days=10)
        # 1,200 posted ones, three days old: more than one batch of deletes.
        with sqlite3.connect(database) as conn:
            then = time.time() - 3 * DAY
            conn.executemany(
                "INSERT INTO deliveries (dedup_key, delivery_id, configuration_id, event_type, body, received_at,"
                " state, next_attempt_at) VALUES (?, ?, 'c', 'asset_created', x'7b7d', ?, 'posted', ?)",
                [(f"id:old-{n}", f"old-{n}", then, then) for n in range(1200)],
            )
            conn.execute(
                "INSERT INTO deliveries (dedup_key, delivery_id, configuration_id, event_type, body, received_at,"
                " state, next_attempt_at) VALUES ('id:recent', 'recent', 'c', 'asset_created', x'7b7d', ?,"
                " 'posted', ?)", (time.time() - DAY, time.time() - DAY),
            )
        assert await forget_old_posts(stack.app[INBOX], retention_days=2) == 1200
        left = states(database)
        assert left == {pending["webhook_delivery_id"]: left[pending["webhook_delivery_id"]], "recent": "posted"}
        assert left[pending["webhook_delivery_id"]] != "posted"


async def test_a_delivery_posted_late_is_kept_from_when_it_was_posted(tmp_path: Path):
    # Parked, put back by an admin much later, then posted: its age counts from the post, not the receipt.
    database = tmp_path / "bot.db"
    async with running_stack(database, **SETTINGS, max_attempts=1) as stack, \
            httpx.AsyncClient(base_url=stack.base_url) as http:
        stack.dam.fail_next(5, 503, "/assets")
        late = asset_event()
        assert (await deliver(http, late)).status_code == 200
        await eventually(lambda: states(database).get(late["webhook_delivery_id"]) == "parked")
        with sqlite3.connect(database) as conn:  # it was received, and parked, long ago
            conn.execute("UPDATE deliveries SET received_at=? WHERE delivery_id=?",
                         (time.time() - 40 * DAY, late["webhook_delivery_id"]))
        assert await stack.app[INBOX].unpark(None) == 1
        await eventually(lambda: states(database).get(late["webhook_delivery_id"]) == "posted")
        assert await forget_old_posts(stack.app[INBOX], retention_days=30) == 0
        assert states(database) == {late["webhook_delivery_id"]: "posted"}


async def test_a_store_from_before_posting_times_keeps_its_recent_posts_once_upgraded(tmp_path: Path):
    # A store written by an older version: a posted row's next_attempt_at still holds its last attempt
    # (long ago, for one parked then put back), not its posting time. Upgrading must not forget it early.
    database = tmp_path / "bot.db"
    event = asset_event()
    async with running_stack(database, **SETTINGS) as stack, httpx.AsyncClient(base_url=stack.base_url) as http:
        assert (await deliver(http, event)).status_code == 200
        await eventually(lambda: states(database).get(event["webhook_delivery_id"]) == "posted")
    with sqlite3.connect(database) as conn:
        conn.execute("UPDATE deliveries SET next_attempt_at=? WHERE delivery_id=?",
                     (time.time() - 40 * DAY, event["webhook_delivery_id"]))
        conn.execute("DELETE FROM meta WHERE key LIKE 'migrated:%'")
    conn.close()

    async with running_stack(database, **SETTINGS) as stack:
        assert await forget_old_posts(stack.app[INBOX], retention_days=30) == 0
        assert states(database) == {event["webhook_delivery_id"]: "posted"}
        with sqlite3.connect(database) as conn:
            assert conn.execute("SELECT count(*) FROM meta WHERE key='migrated:posted_at'").fetchone() == (1,)
        conn.close()
