"""Deliveries over real HTTP: each answer DESIGN.md promises, end to end through the local DAM and Slack."""

from __future__ import annotations

import asyncio
import copy
import json
import uuid

import httpx

from receiver.app import INBOX
from receiver.sandbox_run import CHANNEL, Stack
from tests.conftest import SHARED_SECRET, deliver, eventually, fixture_json, signed, texts

SEED_ASSET_ID = "3db58e3c-fe98-4437-9637-df299f9d1b06"


def fresh(event: dict, **changes: object) -> dict:
    out = copy.deepcopy(event)
    out["webhook_delivery_id"] = str(uuid.uuid4())
    out.update(changes)
    return out


async def test_seed_asset_created_reaches_slack_with_metadata_and_security(stack: Stack, http: httpx.AsyncClient):
    response = await deliver(http, fixture_json("events/asset_created.json"))
    assert response.status_code == 200
    assert response.json() == {"status": "accepted"}
    messages = await eventually(lambda: stack.slack.messages_in(CHANNEL))
    shown = texts(messages[0])
    assert "spring-campaign-hero_2400x1200.jpg" in messages[0]["text"]
    for expected in ("dam.admin@example.com", "Hero banner for the spring campaign", "Usage rights",
                     "Marketing", "Web Team", "2400 × 1200", "Release", "Expiration"):
        assert expected in shown, expected
    assert messages[0]["metadata"]["event_type"] == "widen_bot_delivery"
    assert "a2b622ea-2780-48a6-b591-8a1cc3a34f4d" in messages[0]["metadata"]["event_payload"]["delivery_ids"]


async def test_seed_ping_says_which_configuration_and_who(stack: Stack, http: httpx.AsyncClient):
    response = await deliver(http, fixture_json("events/ping.json"))
    assert response.status_code == 200
    messages = await eventually(lambda: stack.slack.messages_in(CHANNEL))
    shown = texts(messages[0])
    assert "976cf9b0-95d0-4dbd-acb0-57fbdaef7b6f" in shown
    assert "dam.admin@example.com" in shown


async def test_duplicate_delivery_is_answered_200_and_posted_once(stack: Stack, http: httpx.AsyncClient):
    event = fixture_json("events/asset_created.json")
    answers = [await deliver(http, event) for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 200]
    assert [a.json()["status"] for a in answers] == ["accepted", "duplicate", "duplicate"]
    await eventually(lambda: stack.slack.messages_in(CHANNEL))
    await eventually(lambda: _inbox_idle(stack))
    assert len(stack.slack.messages_in(CHANNEL)) == 1


async def test_delivery_without_id_is_deduplicated_by_its_body(stack: Stack, http: httpx.AsyncClient):
    event = fixture_json("events/asset_created.json")
    del event["webhook_delivery_id"]
    first, second = await deliver(http, event), await deliver(http, event)
    assert (first.json()["status"], second.json()["status"]) == ("accepted", "duplicate")


async def _inbox_idle(stack: Stack) -> bool:
    stats = await stack.app[INBOX].stats()
    return stats.pending + stats.in_flight == 0


async def test_content_type_is_not_trusted(stack: Stack, http: httpx.AsyncClient):
    body = json.dumps(fresh(fixture_json("events/ping.json"))).encode()
    for content_type in ("text/plain", "application/x-www-form-urlencoded", ""):
        headers = signed(body) | {"Content-Type": content_type}
        body = json.dumps(fresh(fixture_json("events/ping.json"))).encode()
        headers = signed(body) | {"Content-Type": content_type}
        response = await http.post("/webhooks/widen", content=body, headers=headers)
        assert response.status_code == 200, content_type


async def test_signature_prefix_is_optional(stack: Stack, http: httpx.AsyncClient):
    body = json.dumps(fresh(fixture_json("events/ping.json"))).encode()
    bare = signed(body)["X-Widen-Signature"].removeprefix("sha256=")
    response = await http.post("/webhooks/widen", content=body, headers={"X-Widen-Signature": bare})
    assert response.status_code == 200


async def test_bad_signatures_are_401(http: httpx.AsyncClient):
    body = json.dumps(fresh(fixture_json("events/ping.json"))).encode()
    missing = await http.post("/webhooks/widen", content=body)
    wrong = await http.post("/webhooks/widen", content=body, headers=signed(body, "another-secret"))
    not_ascii = {"X-Widen-Signature": "sha256=zz\u00e9".encode("latin-1")}
    garbage = await http.post("/webhooks/widen", content=body, headers=not_ascii)
    tampered = await http.post("/webhooks/widen", content=body + b" ", headers=signed(body))
    assert [r.status_code for r in (missing, wrong, garbage, tampered)] == [401, 401, 401, 401]


async def test_not_json_is_400_and_not_an_object_is_400(http: httpx.AsyncClient):
    for body in (b"{not json", b"", b'{"a": 1,}', b"\xff\xfe\x00", b"[1, 2]", b'"text"', b"42", b"null"):
        response = await http.post("/webhooks/widen", content=body, headers=signed(body))
        assert response.status_code == 400, body
        assert "error" in response.json()


async def test_deep_nesting_is_400_not_500(http: httpx.AsyncClient):
    body = b"[" * 100_000 + b"]" * 100_000
    response = await http.post("/webhooks/widen", content=body[:200_000], headers=signed(body[:200_000]))
    assert response.status_code == 400
    nested = b'{"event_type": "ping", "webhook_configuration_id": "x", "deep": ' + b"[" * 50_000 + b"]" * 50_000 + b"}"
    response = await http.post("/webhooks/widen", content=nested, headers=signed(nested))
    assert response.status_code in (200, 400)


async def test_missing_or_mistyped_required_fields_are_422(http: httpx.AsyncClient):
    base = fixture_json("events/ping.json")
    cases = [
        {k: v for k, v in base.items() if k != "event_type"},
        {k: v for k, v in base.items() if k != "webhook_configuration_id"},
        base | {"event_type": 7},
        base | {"event_type": None},
        base | {"webhook_configuration_id": ["x"]},
        base | {"webhook_configuration_id": ""},
        base | {"event_type": {"nested": True}},
    ]
    for payload in cases:
        response = await deliver(http, payload)
        assert response.status_code == 422, payload
        assert "event_type" in response.json()["error"]


async def test_other_fields_of_the_wrong_type_are_still_accepted(stack: Stack, http: httpx.AsyncClient):
    payload = fresh(fixture_json("events/asset_created.json"), event_context="oops", asset_id=["x"],
                    date_created={"a": 1})
    response = await deliver(http, payload)
    assert response.status_code == 200


async def test_body_over_256_kib_is_413(http: httpx.AsyncClient):
    payload = fresh(fixture_json("events/ping.json"), padding="x" * (256 * 1024))
    body = json.dumps(payload).encode()
    response = await http.post("/webhooks/widen", content=body, headers=signed(body))
    assert response.status_code == 413

    async def chunks():  # no Content-Length: the limit holds while reading too
        for _ in range(40):
            yield b"x" * 10_000

    response = await http.post("/webhooks/widen", content=chunks(), headers={"X-Widen-Signature": "sha256=00"})
    assert response.status_code == 413


async def test_unknown_route_token_is_404(http: httpx.AsyncClient):
    body = json.dumps(fixture_json("events/ping.json")).encode()
    response = await http.post("/webhooks/widen/not-a-known-token", content=body, headers=signed(body))
    assert response.status_code == 404


async def test_shared_path_is_closed_without_a_secret(tmp_path):
    from receiver.sandbox_run import running_stack

    async with running_stack(tmp_path / "db.sqlite") as closed, httpx.AsyncClient(base_url=closed.base_url) as http:
        body = json.dumps(fixture_json("events/ping.json")).encode()
        response = await http.post("/webhooks/widen", content=body, headers=signed(body, SHARED_SECRET))
        assert response.status_code == 401
        assert "WIDEN_WEBHOOK_SECRET" in response.json()["error"]


async def test_allow_unsigned_accepts_unsigned_on_the_shared_path(tmp_path):
    from receiver.sandbox_run import running_stack

    async with running_stack(tmp_path / "db.sqlite", widen_allow_unsigned=True) as stack, httpx.AsyncClient(
        base_url=stack.base_url
    ) as http:
        response = await http.post("/webhooks/widen", json=fixture_json("events/ping.json"))
        assert response.status_code == 200
        await eventually(lambda: stack.slack.messages_in(CHANNEL))


async def test_unknown_event_type_is_stored_and_posted_generically(stack: Stack, http: httpx.AsyncClient):
    payload = fresh(fixture_json("events/ping.json"), event_type="asset_teleported", asset_id=SEED_ASSET_ID,
                    surprise={"nested": "<!here>"})
    response = await deliver(http, payload)
    assert response.status_code == 200
    messages = await eventually(lambda: stack.slack.messages_in(CHANNEL))
    shown = texts(messages[0])
    assert "asset_teleported" in shown or "Asset teleported" in shown
    assert "<!here>" not in shown


async def test_healthz(http: httpx.AsyncClient):
    response = await http.get("/healthz")
    assert response.status_code == 200


async def test_lone_surrogates_never_cost_a_5xx_nor_the_deliveries_stored_with_them(http: httpx.AsyncClient):
    # Valid JSON escapes that no UTF-8 store can hold: in an id the delivery is still taken (the id is
    # dropped), in a required field it is refused; the valid deliveries sent together are all stored.
    odd_id = json.dumps(fresh(fixture_json("events/ping.json"))).replace('"ping"', '"ping", "x": 1', 1)
    odd_id = odd_id.replace('"webhook_delivery_id": "', '"webhook_delivery_id": "\\ud800', 1).encode()
    odd_type = json.dumps(fresh(fixture_json("events/ping.json"))).replace('"ping"', '"\\udfff"').encode()
    valid = [json.dumps(fresh(fixture_json("events/ping.json"))).encode() for _ in range(20)]

    async def send(body: bytes) -> int:
        return (await http.post("/webhooks/widen", content=body, headers=signed(body))).status_code

    statuses = await asyncio.gather(send(odd_id), send(odd_type), *(send(b) for b in valid))
    assert statuses[0] == 200 and statuses[1] == 422
    assert statuses[2:] == [200] * 20


async def test_a_body_that_does_not_decode_is_400(http: httpx.AsyncClient):
    body = b"\x78\x9c not deflate at all"
    headers = signed(body) | {"Content-Encoding": "deflate"}
    response = await http.post("/webhooks/widen", content=body, headers=headers)
    assert response.status_code == 400


async def test_a_trickling_body_is_cut_off_with_408(stack: Stack, monkeypatch):
    import receiver.app

    monkeypatch.setattr(receiver.app, "BODY_SECONDS", 0.5)
    reader, writer = await asyncio.open_connection("127.0.0.1", int(stack.base_url.rsplit(":", 1)[1]))
    writer.write(b"POST /webhooks/widen HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{\"event_type\":")
    await writer.drain()
    status_line = await asyncio.wait_for(reader.readline(), 5)
    writer.close()
    assert b" 408 " in status_line


async def test_a_delivery_during_create_is_taken(stack: Stack, http: httpx.AsyncClient):
    # /widen create stores the URL before the DAM answers; the DAM may deliver before it does.
    await stack.app[INBOX].add_route("tok-being-created", "pending:tok-being-created", "route-secret", None)
    body = json.dumps(fresh(fixture_json("events/ping.json"))).encode()
    response = await http.post("/webhooks/widen/tok-being-created", content=body, headers=signed(body, "route-secret"))
    assert response.status_code == 200


async def test_delivery_urls_take_a_trailing_slash(stack: Stack, http: httpx.AsyncClient):
    # A DAM (or an admin editing the URL) may add one; the delivery is the same.
    await stack.app[INBOX].add_route("tok-slash", "pending:tok-slash", "route-secret", None)
    body = json.dumps(fresh(fixture_json("events/ping.json"))).encode()
    response = await http.post("/webhooks/widen/tok-slash/", content=body, headers=signed(body, "route-secret"))
    assert response.status_code == 200 and response.json() == {"status": "accepted"}
    body = json.dumps(fresh(fixture_json("events/ping.json"))).encode()
    response = await http.post("/webhooks/widen/", content=body, headers=signed(body))
    assert response.status_code == 200 and response.json() == {"status": "accepted"}


async def test_junk_to_slack_events_is_401_not_500(http: httpx.AsyncClient):
    cases = [
        (b"\xff\xfe not utf-8", {"X-Slack-Request-Timestamp": "1700000000", "X-Slack-Signature": "v0=00"}),
        (b"command=/widen", {"X-Slack-Request-Timestamp": "nan", "X-Slack-Signature": "v0=00"}),
        (b"command=/widen", {"X-Slack-Request-Timestamp": "1e400", "X-Slack-Signature": "v0=00"}),
        (b"command=/widen", {"X-Slack-Request-Timestamp": "9" * 400, "X-Slack-Signature": "v0=00"}),
        (b"command=/widen", {"X-Slack-Request-Timestamp": "1", "X-Slack-Signature": "v0=\u00e9".encode("latin-1")}),
        (b"command=/widen", {}),
    ]
    for body, headers in cases:
        response = await http.post("/slack/events", content=body,
                                   headers=headers | {"Content-Type": "application/x-www-form-urlencoded"})
        assert response.status_code == 401, (body, headers)
