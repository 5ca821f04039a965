"""The local DAM: its API over raw HTTP, and the webhooks it really delivers."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web

from widen.models import Asset, WebhookConfiguration, WebhookEvent
from widen.sandbox import DamSandbox, load_sample_assets, resolve_relative_dates

FIXTURES = Path(__file__).resolve().parent / "fixtures"
FIXTURE_ASSET_ID = "3db58e3c-fe98-4437-9637-df299f9d1b06"
TOKEN = "sandbox-dam-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@dataclass
class Receiver:
    """A little webhook endpoint: records every delivery; answers `statuses` in turn, then 200."""

    url: str = ""
    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)

    def bodies(self) -> list[dict[str, Any]]:
        return [json.loads(raw) for _, raw in self.received]


@pytest.fixture
async def receiver(unused_tcp_port: int) -> AsyncIterator[Receiver]:
    rec = Receiver(url=f"http://127.0.0.1:{unused_tcp_port}/hook")

    async def hook(request: web.Request) -> web.Response:
        rec.received.append((dict(request.headers), await request.read()))
        return web.Response(status=rec.statuses.pop(0) if rec.statuses else 200)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", unused_tcp_port).start()
    yield rec
    await runner.cleanup()


@pytest.fixture
async def http(sandbox: DamSandbox) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=sandbox.base_url + "/", headers=AUTH) as raw:
        yield raw


async def create(http: httpx.AsyncClient, url: str, event_type: str = "asset_created", **extra: Any) -> str:
    response = await http.post(
        "webhooks/configurations", json={"event_type": event_type, "delivery_url": url, **extra}
    )
    assert response.status_code == 201, response.text
    return str(response.json()["webhook_configuration_id"])


def expected_signature(secret: str, raw: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()


# ---- API -----------------------------------------------------------------------------------------


async def test_asset_answers_fixture_and_honours_expand(http: httpx.AsyncClient) -> None:
    fixture = json.loads((FIXTURES / f"api/asset.{FIXTURE_ASSET_ID}.json").read_text())
    expand = "asset_properties,embeds,file_properties,metadata,security,status,thumbnails"

    full = (await http.get(f"assets/{FIXTURE_ASSET_ID}", params={"expand": expand})).json()
    assert {k: v for k, v in full.items() if k != "expanded"} == fixture

    bare = (await http.get(f"assets/{FIXTURE_ASSET_ID}")).json()
    assert bare["filename"] == fixture["filename"]
    assert bare["security"] is None and bare["metadata"] is None

    missing = await http.get("assets/nope")
    assert missing.status_code == 404 and missing.json()["error_message"]


async def test_auth_and_revoked_token(sandbox: DamSandbox, http: httpx.AsyncClient) -> None:
    async with httpx.AsyncClient(base_url=sandbox.base_url + "/") as anonymous:
        assert (await anonymous.get("webhooks/configurations")).status_code == 401
    assert (await http.get("webhooks/configurations")).status_code == 200
    sandbox.token = "rotated"
    assert (await http.get("webhooks/configurations")).status_code == 401


@pytest.mark.parametrize(
    ("shape", "id_key", "flag"),
    [("guide", "webhook_configuration_id", "true"), ("openapi", "id", True)],
)
async def test_response_shapes(shape: str, id_key: str, flag: object) -> None:
    dam = DamSandbox(token=TOKEN, response_shape=shape)  # type: ignore[arg-type]
    await dam.start()
    try:
        async with httpx.AsyncClient(base_url=dam.base_url + "/", headers=AUTH) as http:
            body = {"event_type": "asset_created", "delivery_url": "http://127.0.0.1:9/x", "secret_key": "k"}
            created = await http.post("webhooks/configurations", json=body)
            assert created.status_code == 201 and list(created.json()) == [id_key]
            config_id = created.json()[id_key]

            shown = (await http.get(f"webhooks/configurations/{config_id}")).json()
            assert shown["signing_enabled"] == flag and shown["delivery_enabled"] == flag
            assert "secret_key" not in shown
            assert WebhookConfiguration.model_validate(shown).signing_enabled is True

            listed = (await http.get("webhooks/configurations")).json()
            assert listed["items"] == [shown]
    finally:
        await dam.stop()


async def test_list_pages_and_limits(http: httpx.AsyncClient) -> None:
    ids = [await create(http, f"http://127.0.0.1:9/{n}") for n in range(12)]

    page = (await http.get("webhooks/configurations", params={"limit": 10, "offset": 10})).json()
    assert (page["total_count"], page["offset"], page["limit"]) == (12, 10, 10)
    assert [item["webhook_configuration_id"] for item in page["items"]] == ids[10:]
    for params in ({"limit": 11}, {"limit": 0}, {"offset": -1}, {"limit": "ten"}):
        assert (await http.get("webhooks/configurations", params=params)).status_code == 400


async def test_create_and_edit_validation(http: httpx.AsyncClient) -> None:
    bad_bodies: list[Any] = [
        {"event_type": "asset_renamed", "delivery_url": "http://127.0.0.1:9/x"},
        {"event_type": "asset_created"},
        {"event_type": "asset_created", "delivery_url": "ftp://example.com"},
        ["not", "an", "object"],
    ]
    for body in bad_bodies:
        assert (await http.post("webhooks/configurations", json=body)).status_code == 400
    not_json = await http.post("webhooks/configurations", content=b'{"event_type": "asset_created",}')
    assert not_json.status_code == 400

    config_id = await create(http, "http://127.0.0.1:9/x")
    path = f"webhooks/configurations/{config_id}"
    assert (await http.put(path, json={"colour": "blue"})).status_code == 400
    assert (await http.put(path, json={"event_type": "nope"})).status_code == 400
    assert (await http.put(path, json={"delivery_enabled": "false"})).status_code == 204
    assert (await http.get(path)).json()["delivery_enabled"] == "false"
    assert (await http.delete(path)).status_code == 204
    assert (await http.delete(path)).status_code == 404


async def test_rate_limit_when_hammered(sandbox: DamSandbox, http: httpx.AsyncClient) -> None:
    answers = await asyncio.gather(*(http.get("webhooks/configurations") for _ in range(70)))

    ok = [a for a in answers if a.status_code == 200]
    limited = [a for a in answers if a.status_code == 429]
    assert 50 <= len(ok) < 70 and len(ok) + len(limited) == 70
    assert ok[0].headers["X-Ratelimit-Limit"] == "50/second"
    assert int(ok[0].headers["X-Ratelimit-Remaining"]) < 50
    reset = datetime.fromisoformat(limited[0].headers["X-Ratelimit-Reset"])
    assert datetime.now(UTC) - timedelta(seconds=0.1) < reset <= datetime.now(UTC) + timedelta(seconds=1.1)
    assert limited[0].headers["X-Ratelimit-Limit"] == "50/second"


async def test_fail_next_matches_prefix(sandbox: DamSandbox, http: httpx.AsyncClient) -> None:
    sandbox.fail_next(1, 503, "/assets")
    assert (await http.get("webhooks/configurations")).status_code == 200
    assert (await http.get(f"assets/{FIXTURE_ASSET_ID}")).status_code == 503
    assert (await http.get(f"assets/{FIXTURE_ASSET_ID}")).status_code == 200
    assert [c[2] for c in sandbox.calls] == [200, 503, 200]


# ---- deliveries ------------------------------------------------------------------------------------


async def test_upload_delivers_signed_asset_created(
    sandbox: DamSandbox, http: httpx.AsyncClient, receiver: Receiver
) -> None:
    config_id = await create(http, receiver.url, secret_key="hook-secret")

    asset_id = await sandbox.upload(username="editor@example.com")
    await sandbox.wait_deliveries_idle()

    [(headers, raw)] = receiver.received
    assert hmac.compare_digest(headers["X-Widen-Signature"], expected_signature("hook-secret", raw))
    body = json.loads(raw)
    fixture = json.loads((FIXTURES / "events/asset_created.json").read_text())
    assert set(body) == set(fixture)
    event = WebhookEvent.model_validate(body)
    assert (event.webhook_configuration_id, event.event_type, event.asset_id) == (
        config_id,
        "asset_created",
        asset_id,
    )
    assert event.username == "editor@example.com"
    assert sandbox.deliveries[-1]["status"] == 200
    # The uploaded asset is a real, fetchable asset.
    assert (await http.get(f"assets/{asset_id}")).json()["id"] == asset_id
    assert (await http.get(f"webhooks/configurations/{config_id}")).json()["last_delivered_date"]


async def test_signature_header_is_configurable(receiver: Receiver) -> None:
    dam = DamSandbox(token=TOKEN, signature_header="X-Hub-Signature-256")
    await dam.start()
    try:
        async with httpx.AsyncClient(base_url=dam.base_url + "/", headers=AUTH) as http:
            await create(http, receiver.url, event_type="asset_tags_updated", secret_key="k2")
        await dam.emit("asset_tags_updated", FIXTURE_ASSET_ID)
        await dam.wait_deliveries_idle()
    finally:
        await dam.stop()
    [(headers, raw)] = receiver.received
    assert headers["X-Hub-Signature-256"] == expected_signature("k2", raw)
    assert "X-Widen-Signature" not in headers


async def test_unsigned_configuration_sends_no_signature(
    sandbox: DamSandbox, http: httpx.AsyncClient, receiver: Receiver
) -> None:
    await create(http, receiver.url)
    await sandbox.upload()
    await sandbox.wait_deliveries_idle()
    [(headers, _)] = receiver.received
    assert "X-Widen-Signature" not in headers


async def test_ping_delivers_a_ping_event(
    sandbox: DamSandbox, http: httpx.AsyncClient, receiver: Receiver
) -> None:
    config_id = await create(http, receiver.url, secret_key="s")
    answer = await http.get(f"webhooks/configurations/{config_id}/ping")
    assert answer.status_code == 204
    await sandbox.wait_deliveries_idle()

    [(headers, raw)] = receiver.received
    body = json.loads(raw)
    assert set(body) == set(json.loads((FIXTURES / "events/ping.json").read_text()))
    assert (body["event_type"], body["webhook_configuration_id"]) == ("ping", config_id)
    assert headers["X-Widen-Signature"] == expected_signature("s", raw)
    assert (await http.get(f"webhooks/configurations/{config_id}")).json()["last_pinged_date"]


async def test_disabled_configuration_does_not_deliver(
    sandbox: DamSandbox, http: httpx.AsyncClient, receiver: Receiver
) -> None:
    config_id = await create(http, receiver.url)
    await http.put(f"webhooks/configurations/{config_id}", json={"delivery_enabled": False})

    await sandbox.upload()
    assert (await http.get(f"webhooks/configurations/{config_id}/ping")).status_code == 204
    await sandbox.wait_deliveries_idle()

    assert receiver.received == []
    assert [(d["event_type"], d["error"]) for d in sandbox.deliveries] == [
        ("asset_created", "delivery disabled"),
        ("ping", "delivery disabled"),
    ]


async def test_only_matching_event_types_deliver(
    sandbox: DamSandbox, http: httpx.AsyncClient, receiver: Receiver
) -> None:
    await create(http, receiver.url, event_type="asset_deleted")
    asset_id = await sandbox.upload()
    await sandbox.wait_deliveries_idle()
    assert receiver.received == []

    await sandbox.delete_asset(asset_id)
    await sandbox.wait_deliveries_idle()
    assert [b["event_type"] for b in receiver.bodies()] == ["asset_deleted"]
    assert (await http.get(f"assets/{asset_id}")).status_code == 404
    with pytest.raises(ValueError):
        await sandbox.emit("asset_renamed", asset_id)


async def test_duplicate_deliveries(http: httpx.AsyncClient, sandbox: DamSandbox, receiver: Receiver) -> None:
    sandbox.duplicate_deliveries = True
    await create(http, receiver.url)
    await sandbox.upload()
    await sandbox.wait_deliveries_idle()
    first, second = receiver.bodies()
    assert first == second  # same delivery id: what a retrying DAM sends


async def test_delivery_retries_5xx_then_records_final_status(
    sandbox: DamSandbox, http: httpx.AsyncClient, receiver: Receiver
) -> None:
    assert await sandbox.emit("asset_version_added", FIXTURE_ASSET_ID) == []  # no configuration yet
    await create(http, receiver.url, event_type="asset_version_added")
    receiver.statuses = [503, 502]
    [task] = await sandbox.emit("asset_version_added", FIXTURE_ASSET_ID)
    record = await task
    assert (record["status"], record["attempts"]) == (200, 3)
    assert len(receiver.received) == 3

    receiver.statuses = [400]
    [task] = await sandbox.emit("asset_version_added", FIXTURE_ASSET_ID)
    record = await task
    assert (record["status"], record["attempts"]) == (400, 1)  # a 4xx is final


async def test_delivery_to_dead_url_records_error(sandbox: DamSandbox, http: httpx.AsyncClient) -> None:
    await create(http, "http://127.0.0.1:9/nobody-listens")
    await sandbox.upload()
    await sandbox.wait_deliveries_idle()
    [record] = sandbox.deliveries
    assert record["status"] is None and record["error"] and record["attempts"] == sandbox.delivery_attempts


# ---- sample assets -------------------------------------------------------------------------------


def test_samples_are_valid_and_varied() -> None:
    samples = load_sample_assets()
    assets = [Asset.model_validate(s) for s in samples]
    now = datetime.now(UTC)

    assert samples[0] == json.loads((FIXTURES / f"api/asset.{FIXTURE_ASSET_ID}.json").read_text())
    assert len({a.id for a in assets}) == len(assets) >= 5
    videos = [a for a in assets if a.file_properties and a.file_properties.video_properties]
    assert videos and videos[0].file_properties.video_properties.duration  # type: ignore[union-attr]
    assert any(a.file_properties and a.file_properties.format == "PDF" for a in assets)
    assert any(a.security and a.security.asset_groups == [] for a in assets)
    assert any(a.security and a.security.release_date and a.security.release_date > now for a in assets)
    soon = now + timedelta(days=30)
    assert any(
        a.security and a.security.expiration_date and now < a.security.expiration_date < soon for a in assets
    )
    for sample in samples:
        for thumb in (sample.get("thumbnails") or {}).values():
            assert thumb["url"].startswith("https://example.widen.net/")
            assert not thumb["valid_until"].startswith(("+", "-"))


def test_relative_dates_resolve() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    raw = {
        "security": {"release_date": "+10d", "expiration_date": "-2h"},
        "note": "+10d",
        "created_date": "now",
    }
    assert resolve_relative_dates(raw, now) == {
        "security": {"release_date": "2026-01-11T00:00:00Z", "expiration_date": "2025-12-31T22:00:00Z"},
        "note": "+10d",
        "created_date": "2026-01-01T00:00:00Z",
    }


async def test_uploads_are_distinct_assets_cycling_the_samples(sandbox: DamSandbox) -> None:
    count = len(sandbox.samples)
    ids = [await sandbox.upload() for _ in range(count + 1)]
    assert len(set(ids)) == count + 1
    first, wrapped = sandbox.assets[ids[0]], sandbox.assets[ids[-1]]
    assert first["filename"] == wrapped["filename"] == sandbox.samples[0]["filename"]
    assert first["external_id"] != wrapped["external_id"]
    assert first["external_id"] in first["thumbnails"]["160px"]["url"]
