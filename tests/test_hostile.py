"""Hostile input at volume: every answer is a 4xx or a 200, the server stays healthy, and every valid
delivery mixed into the noise is posted exactly once."""

from __future__ import annotations

import copy
import json
import random
import uuid

import httpx

from bot.sandbox import count_announced
from receiver.app import INBOX
from receiver.sandbox_run import CHANNEL, Stack
from tests.conftest import SHARED_SECRET, eventually, fixture_json, signed

SEED_ASSET = "api/asset.3db58e3c-fe98-4437-9637-df299f9d1b06.json"


def hostile_requests(rng: random.Random) -> list[tuple[str, bytes, dict[str, str]]]:
    """(path, body, headers) of every kind of bad request, many of each."""
    base = fixture_json("events/asset_created.json")
    out: list[tuple[str, bytes, dict[str, str]]] = []

    def add(body: bytes, *, sign: bool = True, path: str = "/webhooks/widen", headers: dict | None = None) -> None:
        out.append((path, body, (signed(body) if sign else {}) | (headers or {})))

    for _ in range(200):  # random bytes, signed and not
        blob = rng.randbytes(rng.randint(0, 2048))
        add(blob, sign=rng.random() < 0.5)
    for depth in range(1, 101):  # deep nesting, arrays and objects
        add(b"[" * (depth * 100) + b"]" * (depth * 100))
        add(b'{"a":' * (depth * 50) + b"1" + b"}" * (depth * 50))
    for field in ("event_type", "webhook_configuration_id"):  # wrong types where types matter: 422
        for value in (None, 1, 1.5, True, [], ["x"], {}, {"k": "v"}, ""):
            for _ in range(5):
                add(json.dumps(base | {field: value, "webhook_delivery_id": str(uuid.uuid4())}).encode())
    for _ in range(100):  # NUL bytes and invalid UTF-8
        add(b'{"event_type": "asset_created\x00", "webhook_configuration_id": "\xff\xfe"}')
        add(rng.choice([b"\x00" * 64, b"\xc3\x28\xa0\xa1", b'{"event_type": "\xed\xa0\x80"}']))
    for _ in range(100):  # arrays, scalars and nothing instead of objects
        add(rng.choice([b"[]", b'[{"event_type": "ping"}]', b"null", b"true", b'"ping"', b"3", b""]))
    for _ in range(40):  # huge strings: over the limit (413) and just under it (accepted, posted)
        add(json.dumps(base | {"event_type": "x" * 300_000}).encode())
    for _ in range(100):  # wrong or missing signatures
        body = json.dumps(base | {"webhook_delivery_id": str(uuid.uuid4())}).encode()
        out.append(("/webhooks/widen", body, signed(body, "not-the-secret")))
        out.append(("/webhooks/widen", body, {"X-Widen-Signature": "sha256=" + "0" * 64}))
    for path in ("/webhooks/widen/../../etc/passwd", "/webhooks/widen/%2e%2e%2f", "/webhooks/widen/x" * 20,
                 "/webhooks/widen/" + "a" * 5000):
        for _ in range(5):
            add(json.dumps(base).encode(), path=path)
    return out


def valid_deliveries(stack: Stack, count: int) -> list[tuple[str, bytes]]:
    """Distinct assets in the local DAM, each with a signed asset_created, some with odd but allowed fields."""
    out = []
    for n in range(count):
        asset = copy.deepcopy(fixture_json(SEED_ASSET))
        asset["id"] = str(uuid.uuid4())
        asset["external_id"] = f"ext{n:04d}x"
        asset["filename"] = f"valid-{n}.jpg"
        asset["embeds"]["original"]["share"] = f"https://example.widen.net/s/{asset['external_id']}/valid-{n}"
        stack.dam.add_asset(asset)
        event = fixture_json("events/asset_created.json") | {"webhook_delivery_id": str(uuid.uuid4()),
                                                            "asset_id": asset["id"]}
        if n % 3 == 0:  # fields the bot only displays may be anything: accepted all the same
            event |= {"event_context": "odd", "date_created": 12, "extra": {"deep": ["<!channel>"] * 10}}
        out.append((asset["id"], json.dumps(event).encode()))
    return out


async def test_a_thousand_hostile_requests_mixed_with_valid_ones(stack: Stack, http: httpx.AsyncClient):
    rng = random.Random(20261203)
    hostile = hostile_requests(rng)
    assert len(hostile) >= 1000
    valid = valid_deliveries(stack, 40)
    traffic: list[tuple[str | None, str, bytes, dict[str, str]]] = [(None, *h) for h in hostile]
    for asset_id, body in valid:
        traffic.append((asset_id, "/webhooks/widen", body, signed(body)))
        traffic.append((asset_id, "/webhooks/widen", body, signed(body)))  # the DAM retries: a repeat
    rng.shuffle(traffic)

    statuses: dict[int, int] = {}
    for asset_id, path, body, headers in traffic:
        response = await http.post(path, content=body, headers=headers)
        statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
        assert response.status_code == 200 or 400 <= response.status_code < 500, (response.status_code, body[:80])
        if asset_id is not None:
            assert response.status_code == 200
    assert statuses.get(200, 0) >= 80 and statuses.get(400, 0) > 0 and statuses.get(401, 0) > 0
    assert statuses.get(413, 0) > 0 and statuses.get(422, 0) > 0

    assert (await http.get("/healthz")).status_code == 200

    async def all_done() -> bool:
        stats = await stack.app[INBOX].stats()
        return stats.pending + stats.in_flight == 0

    await eventually(all_done, timeout=60)
    stats = await stack.app[INBOX].stats()
    assert stats.parked == 0
    keys = {asset_id: f"ext{n:04d}x" for n, (asset_id, _) in enumerate(valid)}
    counts = count_announced(stack.slack.messages_in(CHANNEL), keys)
    assert sorted(set(counts.values())) == [1], {a: n for a, n in counts.items() if n != 1}
    raw = json.dumps(stack.slack.messages_in(CHANNEL))
    assert "<!channel>" not in raw
    assert SHARED_SECRET not in raw
