"""WidenClient against the local DAM over real HTTP on loopback."""

from __future__ import annotations

import asyncio
import gc
import json
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from aiohttp import web

from widen.client import (
    ASSET_EXPAND,
    BadRequest,
    NotFound,
    RateLimited,
    Unauthorized,
    Unavailable,
    WidenClient,
    WidenError,
)
from widen.limiter import RateLimiter
from widen.models import Asset
from widen.sandbox import Configuration, DamSandbox

FIXTURES = Path(__file__).resolve().parent / "fixtures"
FIXTURE_ASSET_ID = "3db58e3c-fe98-4437-9637-df299f9d1b06"
TOKEN = "sandbox-dam-token"
HOOK_URL = "http://127.0.0.1:9/hook"  # never reached in these tests


@pytest.fixture
async def client(sandbox: DamSandbox) -> AsyncIterator[WidenClient]:
    async with WidenClient(sandbox.base_url, TOKEN, max_attempts=3, max_wait=0.1) as widen:
        yield widen


def asset_calls(dam: DamSandbox) -> list[tuple[str, str, int]]:
    return [call for call in dam.calls if call[1].startswith("/v2/assets/")]


# ---- assets ---------------------------------------------------------------------------------------


async def test_get_asset_returns_fixture_with_expand(sandbox: DamSandbox, client: WidenClient) -> None:
    asset = await client.get_asset(FIXTURE_ASSET_ID)

    expected = Asset.model_validate(json.loads((FIXTURES / f"api/asset.{FIXTURE_ASSET_ID}.json").read_text()))
    assert asset.filename == expected.filename == "spring-campaign-hero_2400x1200.jpg"
    assert asset.security == expected.security
    assert asset.metadata == expected.metadata
    assert asset.thumbnails and asset.thumbnails["160px"].url == expected.thumbnails["160px"].url  # type: ignore[index]
    request = sandbox.requests[-1]
    assert (request.method, request.path, request.status) == ("GET", f"/v2/assets/{FIXTURE_ASSET_ID}", 200)
    assert request.query["expand"] == [ASSET_EXPAND]


@pytest.mark.parametrize("suffix", ["", "/"])
async def test_base_url_with_or_without_trailing_slash(sandbox: DamSandbox, suffix: str) -> None:
    async with WidenClient(sandbox.base_url + suffix, TOKEN) as widen:
        assert (await widen.get_asset(FIXTURE_ASSET_ID)).id == FIXTURE_ASSET_ID
    assert sandbox.calls[-1] == ("GET", f"/v2/assets/{FIXTURE_ASSET_ID}", 200)


@pytest.mark.parametrize("suffix", ["", "/"])
async def test_base_url_with_a_longer_path_prefix(unused_tcp_port: int, suffix: str) -> None:
    """A DAM behind a gateway that mounts the API under a path: every request goes under it."""
    dam = DamSandbox(token=TOKEN)
    gateway = web.Application()
    gateway.add_subapp("/dam/api", dam.app)  # the local DAM's /v2/... answers at /dam/api/v2/...
    runner = web.AppRunner(gateway, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", unused_tcp_port).start()
    try:
        async with WidenClient(f"http://127.0.0.1:{unused_tcp_port}/dam/api/v2{suffix}", TOKEN) as widen:
            assert (await widen.get_asset(FIXTURE_ASSET_ID)).id == FIXTURE_ASSET_ID
            webhook_id = await widen.create_webhook("asset_created", HOOK_URL)
            assert (await widen.list_webhooks())[1] == 1
            await widen.edit_webhook(webhook_id, delivery_enabled=False)
            with pytest.raises(NotFound):
                await widen.get_webhook("a/b")
    finally:
        await runner.cleanup()
    assert dam.calls == [
        ("GET", f"/dam/api/v2/assets/{FIXTURE_ASSET_ID}", 200),
        ("POST", "/dam/api/v2/webhooks/configurations", 201),
        ("GET", "/dam/api/v2/webhooks/configurations", 200),
        ("PUT", f"/dam/api/v2/webhooks/configurations/{webhook_id}", 204),
        ("GET", "/dam/api/v2/webhooks/configurations/a%2Fb", 404),
    ]
    assert dam.requests[0].query["expand"] == [ASSET_EXPAND]
    assert dam.requests[2].query == {"limit": ["10"], "offset": ["0"]}


def test_client_made_outside_a_running_loop(unused_tcp_port: int) -> None:
    """The HTTP session opens on the first call, inside the loop that makes it (aiohttp refuses, or in
    older versions warns about, a session made outside one); a client never used has nothing to close."""
    widen = WidenClient(f"http://127.0.0.1:{unused_tcp_port}/v2", TOKEN)
    unused = WidenClient(f"http://127.0.0.1:{unused_tcp_port}/v2", TOKEN)

    async def use() -> str:
        await unused.aclose()
        dam = DamSandbox(token=TOKEN)
        await dam.start(port=unused_tcp_port)
        try:
            return (await widen.get_asset(FIXTURE_ASSET_ID)).id
        finally:
            await widen.aclose()
            await dam.stop()

    assert asyncio.run(use()) == FIXTURE_ASSET_ID


async def test_not_found(sandbox: DamSandbox) -> None:
    outcomes: list[tuple[str, str]] = []
    async with WidenClient(sandbox.base_url, TOKEN, on_call=lambda *o: outcomes.append(o)) as widen:
        with pytest.raises(NotFound) as caught:
            await widen.get_asset("no-such-asset")
    assert caught.value.status == 404
    assert "Asset not found" in str(caught.value)
    assert outcomes == [("get_asset", "not_found")]
    assert len(asset_calls(sandbox)) == 1  # a 404 is not retried


@pytest.mark.parametrize(
    "bad_id",
    ["../webhooks/configurations", "../../v2/webhooks/configurations", "x?limit=1", "a#b", "..", ".", ""],
)
async def test_path_like_ids_stay_one_segment(sandbox: DamSandbox, client: WidenClient, bad_id: str) -> None:
    with pytest.raises(NotFound):
        await client.get_asset(bad_id)
    with pytest.raises(NotFound):
        await client.get_webhook(bad_id)
    with pytest.raises(NotFound):
        await client.ping_webhook(bad_id)
    for _method, path, status in sandbox.calls:
        assert status == 404
        assert path.startswith(("/v2/assets/", "/v2/webhooks/configurations/"))
        assert path not in ("/v2/webhooks/configurations", "/v2/webhooks/configurations/")
    assert not sandbox.deliveries


# Each id, and the one path segment the DAM must receive for it: quoted once by the client, never
# re-quoted, decoded or normalised (".." resolved, "//" merged) on the way.
ODD_IDS = [
    ("a/b", "a%2Fb"),
    ("50%", "50%25"),
    ("%2e%2e", "%252e%252e"),
    ("..%2F..", "..%252F.."),
    ("x?limit=1", "x%3Flimit%3D1"),
    ("a#b", "a%23b"),
    ("sp ace", "sp%20ace"),
    ("a+b&c=d;e", "a%2Bb%26c%3Dd%3Be"),
    ("é/ü ∆", "%C3%A9%2F%C3%BC%20%E2%88%86"),
    ("a/../b", "a%2F..%2Fb"),
    ("../webhooks/configurations", "..%2Fwebhooks%2Fconfigurations"),
    ("...", "..."),
    ("/", "%2F"),
    ("x//", "x%2F%2F"),
]


@pytest.mark.parametrize(("odd_id", "segment"), ODD_IDS)
async def test_odd_ids_reach_exactly_their_own_asset_and_configuration(
    sandbox: DamSandbox, client: WidenClient, odd_id: str, segment: str
) -> None:
    sandbox.add_asset(sandbox.samples[0] | {"id": odd_id})
    sandbox.configurations[odd_id] = Configuration(id=odd_id, event_type="asset_created", delivery_url=HOOK_URL)

    assert (await client.get_asset(odd_id)).id == odd_id
    assert (await client.get_webhook(odd_id)).id == odd_id
    await client.edit_webhook(odd_id, delivery_enabled=False)
    assert sandbox.configurations[odd_id].delivery_enabled is False
    await client.ping_webhook(odd_id)
    assert sandbox.configurations[odd_id].last_pinged_date is not None
    await client.delete_webhook(odd_id)
    assert odd_id not in sandbox.configurations

    assert sandbox.calls == [
        ("GET", f"/v2/assets/{segment}", 200),
        ("GET", f"/v2/webhooks/configurations/{segment}", 200),
        ("PUT", f"/v2/webhooks/configurations/{segment}", 204),
        ("GET", f"/v2/webhooks/configurations/{segment}/ping", 204),
        ("DELETE", f"/v2/webhooks/configurations/{segment}", 204),
    ]
    assert sandbox.requests[0].query["expand"] == [ASSET_EXPAND]


async def test_single_flight_shares_one_request(sandbox: DamSandbox, client: WidenClient) -> None:
    sandbox.latency = 0.1  # keep the first request in flight while the others arrive
    assets = await asyncio.gather(*(client.get_asset(FIXTURE_ASSET_ID) for _ in range(10)))

    assert {a.id for a in assets} == {FIXTURE_ASSET_ID}
    assert len(asset_calls(sandbox)) == 1
    # Done requests are forgotten: the next call asks again.
    await client.get_asset(FIXTURE_ASSET_ID)
    assert len(asset_calls(sandbox)) == 2


async def test_single_flight_shares_errors(sandbox: DamSandbox, client: WidenClient) -> None:
    sandbox.latency = 0.1
    results = await asyncio.gather(*(client.get_asset("missing") for _ in range(5)), return_exceptions=True)
    assert all(isinstance(r, NotFound) for r in results)
    assert len(asset_calls(sandbox)) == 1


async def test_single_flight_survives_one_waiter_cancelled(sandbox: DamSandbox, client: WidenClient) -> None:
    sandbox.latency = 0.2
    first = asyncio.create_task(client.get_asset(FIXTURE_ASSET_ID))
    second = asyncio.create_task(client.get_asset(FIXTURE_ASSET_ID))
    await asyncio.sleep(0.05)
    first.cancel()
    assert (await second).id == FIXTURE_ASSET_ID
    assert len(asset_calls(sandbox)) == 1


# ---- webhook configurations --------------------------------------------------------------------


@pytest.mark.parametrize("shape", ["guide", "openapi"])
async def test_webhook_lifecycle_in_both_shapes(shape: str) -> None:
    dam = DamSandbox(token=TOKEN, response_shape=shape)  # type: ignore[arg-type]
    await dam.start()
    try:
        async with WidenClient(dam.base_url, TOKEN) as widen:
            webhook_id = await widen.create_webhook("asset_created", HOOK_URL, secret_key="s3cret")
            assert webhook_id in dam.configurations

            config = await widen.get_webhook(webhook_id)
            assert config.id == webhook_id
            assert config.event_type == "asset_created"
            assert config.signing_enabled is True
            assert config.delivery_enabled is True
            assert config.created_date is not None

            await widen.edit_webhook(webhook_id, delivery_enabled=False)
            assert (await widen.get_webhook(webhook_id)).delivery_enabled is False

            await widen.ping_webhook(webhook_id)
            assert (await widen.get_webhook(webhook_id)).last_pinged_date is not None

            await widen.delete_webhook(webhook_id)
            with pytest.raises(NotFound):
                await widen.get_webhook(webhook_id)
    finally:
        await dam.stop()


async def test_secret_key_is_never_shown(sandbox: DamSandbox, client: WidenClient) -> None:
    webhook_id = await client.create_webhook("asset_created", HOOK_URL, secret_key="top-secret-key")
    config = await client.get_webhook(webhook_id)
    assert "top-secret-key" not in config.model_dump_json()
    configs, _ = await client.list_webhooks()
    assert "top-secret-key" not in configs[0].model_dump_json()


async def test_paging_past_ten_configurations(sandbox: DamSandbox, client: WidenClient) -> None:
    created = [await client.create_webhook("asset_tags_updated", f"{HOOK_URL}/{n}") for n in range(23)]

    page, total = await client.list_webhooks(limit=50)  # clamped to the API's maximum of 10
    assert (len(page), total) == (10, 23)
    page, total = await client.list_webhooks(limit=10, offset=20)
    assert [c.id for c in page] == created[20:]

    sandbox.requests.clear()
    configs = await client.all_webhooks()
    assert [c.id for c in configs] == created
    assert [(r.query["limit"], r.query["offset"]) for r in sandbox.requests] == [
        (["10"], ["0"]),
        (["10"], ["10"]),
        (["10"], ["20"]),
    ]


@pytest.mark.parametrize("count", [23, 20])
async def test_all_webhooks_without_a_total_pages_until_a_short_page(
    sandbox: DamSandbox, client: WidenClient, count: int
) -> None:
    sandbox.list_reports_total = False
    created = [await client.create_webhook("asset_tags_updated", f"{HOOK_URL}/{n}") for n in range(count)]
    assert [c.id for c in await client.all_webhooks()] == created


async def test_all_webhooks_when_there_are_none(client: WidenClient) -> None:
    assert await client.all_webhooks() == []


async def test_bad_request_carries_the_dam_message(sandbox: DamSandbox, client: WidenClient) -> None:
    with pytest.raises(BadRequest) as caught:
        await client.create_webhook("asset_renamed", HOOK_URL)
    assert caught.value.status == 400
    assert "event_type must be one of" in str(caught.value)
    assert len(sandbox.calls) == 1  # a 4xx is not retried


async def test_check(sandbox: DamSandbox, client: WidenClient) -> None:
    await client.check()
    sandbox.token = "revoked"
    with pytest.raises(Unauthorized):
        await client.check()


# ---- failures and retries ------------------------------------------------------------------------


async def test_unauthorized_is_not_retried(sandbox: DamSandbox) -> None:
    async with WidenClient(sandbox.base_url, "wrong-token") as widen:
        with pytest.raises(Unauthorized) as caught:
            await widen.get_asset(FIXTURE_ASSET_ID)
    assert caught.value.status == 401
    assert len(sandbox.calls) == 1


async def test_token_never_in_exception_text(sandbox: DamSandbox) -> None:
    token = "widen-token-4f1c9b7e"
    async with WidenClient(sandbox.base_url, token, max_attempts=1) as widen:
        with pytest.raises(Unauthorized) as caught:
            await widen.get_asset(FIXTURE_ASSET_ID)
    assert token not in str(caught.value) and token not in repr(caught.value)


@asynccontextmanager
async def odd_dam(port: int, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> AsyncIterator[str]:
    """A server answering every request with `handler`; yields its base URL."""
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}/v2"
    finally:
        await runner.cleanup()


async def test_token_echoed_by_server_is_scrubbed(unused_tcp_port: int) -> None:
    async def echo(request: web.Request) -> web.Response:
        said = request.headers.get("Authorization", "")
        return web.json_response({"error_message": f"rejected {said}"}, status=400)

    token = "widen-token-echoed-77"
    async with odd_dam(unused_tcp_port, echo) as base, WidenClient(base, token) as widen:
        with pytest.raises(BadRequest) as caught:
            await widen.get_webhook("x")
    assert "rejected Bearer ***" in str(caught.value)
    assert token not in str(caught.value)


async def test_retry_on_503_then_success(sandbox: DamSandbox) -> None:
    reasons: list[str] = []
    sandbox.fail_next(2, 503, "/assets")
    async with WidenClient(sandbox.base_url, TOKEN, max_wait=0.1, on_retry=reasons.append) as widen:
        asset = await widen.get_asset(FIXTURE_ASSET_ID)
    assert asset.id == FIXTURE_ASSET_ID
    assert reasons == ["5xx", "5xx"]
    assert [status for _, _, status in sandbox.calls] == [503, 503, 200]


async def test_unavailable_after_persistent_503(sandbox: DamSandbox) -> None:
    outcomes: list[tuple[str, str]] = []
    sandbox.fail_next(100, 503)
    async with WidenClient(
        sandbox.base_url, TOKEN, max_attempts=3, max_wait=0.05, on_call=lambda *o: outcomes.append(o)
    ) as widen:
        with pytest.raises(Unavailable) as caught:
            await widen.list_webhooks()
    assert caught.value.status == 503
    assert len(sandbox.calls) == 3
    assert outcomes == [("list_webhooks", "unavailable")]


async def test_429_waits_until_ratelimit_reset(sandbox: DamSandbox) -> None:
    reasons: list[str] = []
    sandbox.fail_next(1, 429, reset_after=0.8)
    async with WidenClient(sandbox.base_url, TOKEN, max_wait=5, on_retry=reasons.append) as widen:
        started = time.monotonic()
        await widen.get_asset(FIXTURE_ASSET_ID)
        elapsed = time.monotonic() - started
    # The fallback backoff would retry after 0.2-0.4 s; the server asked for 0.8 s.
    assert 0.75 <= elapsed < 2.0
    assert reasons == ["429"]
    assert [status for _, _, status in sandbox.calls] == [429, 200]


async def test_429_wait_is_capped_by_max_wait(sandbox: DamSandbox) -> None:
    sandbox.fail_next(1, 429, reset_after=60)
    async with WidenClient(sandbox.base_url, TOKEN, max_wait=0.2) as widen:
        started = time.monotonic()
        await widen.get_asset(FIXTURE_ASSET_ID)
    assert time.monotonic() - started < 1.5


async def test_rate_limited_after_retries(sandbox: DamSandbox) -> None:
    sandbox.fail_next(10, 429, reset_after=0.05)
    async with WidenClient(sandbox.base_url, TOKEN, max_attempts=2) as widen:
        with pytest.raises(RateLimited) as caught:
            await widen.get_asset(FIXTURE_ASSET_ID)
    assert caught.value.status == 429
    assert 0 <= caught.value.retry_after <= 0.5
    assert len(sandbox.calls) == 2


async def test_429_pauses_every_caller_of_the_client(sandbox: DamSandbox) -> None:
    limited = asyncio.Event()
    sandbox.fail_next(1, 429, "/assets", reset_after=0.6)
    async with WidenClient(sandbox.base_url, TOKEN, max_wait=5, on_retry=lambda _: limited.set()) as widen:
        first = asyncio.create_task(widen.get_asset(FIXTURE_ASSET_ID))
        await limited.wait()
        started = time.monotonic()
        await widen.check()  # another caller, another endpoint: still held until the reset
        assert time.monotonic() - started >= 0.4
        await first


async def test_network_error_is_unavailable() -> None:
    with socket.socket() as probe:  # a port where nothing listens
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    reasons: list[str] = []
    async with WidenClient(
        f"http://127.0.0.1:{port}/v2", TOKEN, max_attempts=2, max_wait=0.05, on_retry=reasons.append
    ) as widen:
        with pytest.raises(Unavailable) as caught:
            await widen.get_asset(FIXTURE_ASSET_ID)
    assert caught.value.status is None
    assert reasons == ["network"]


async def test_timeout_is_unavailable(sandbox: DamSandbox) -> None:
    sandbox.latency = 0.5
    async with WidenClient(sandbox.base_url, TOKEN, timeout=0.1, max_attempts=2, max_wait=0.05) as widen:
        with pytest.raises(Unavailable, match="timed out"):
            await widen.get_asset(FIXTURE_ASSET_ID)


async def test_unexpected_answer_is_a_widen_error(unused_tcp_port: int) -> None:
    async def not_json(request: web.Request) -> web.Response:
        return web.Response(text="<html>maintenance</html>")

    async with odd_dam(unused_tcp_port, not_json) as base, WidenClient(base, TOKEN) as widen:
        with pytest.raises(WidenError, match="not JSON"):
            await widen.get_asset("a")


# ---- pacing ----------------------------------------------------------------------------------------


async def test_limiter_keeps_under_the_rate() -> None:
    limiter = RateLimiter(100)
    started = time.monotonic()
    await asyncio.gather(*(limiter.acquire() for _ in range(60)))
    # 60 acquisitions at 100/s with a burst of 5 need at least 0.55 s.
    assert time.monotonic() - started >= 0.5


async def test_limiter_pause_holds_callers() -> None:
    limiter = RateLimiter(100)
    limiter.pause(0.3)
    started = time.monotonic()
    await limiter.acquire()
    assert time.monotonic() - started >= 0.28


async def test_client_stays_under_its_rate_limit(sandbox: DamSandbox) -> None:
    retries: list[str] = []
    # The local DAM answers in this process and loop: a full garbage collection (~50 ms once the whole
    # suite is imported) would hold its first answers back and bunch them with the next ones, which the
    # window count below would take for the client's burst.
    gc.collect()
    gc.disable()
    try:
        async with WidenClient(sandbox.base_url, TOKEN, rate_limit=40, on_retry=retries.append) as widen:
            started = time.monotonic()
            await asyncio.gather(*(widen.check() for _ in range(50)))
            elapsed = time.monotonic() - started
    finally:
        gc.enable()

    assert elapsed >= (50 - 2) / 40 - 0.05  # burst of 2, then 40/s
    assert retries == []
    assert all(status == 200 for _, _, status in sandbox.calls)
    times = [r.at for r in sandbox.requests]
    busiest = max(sum(1 for t in times if start <= t < start + 1.0) for start in times)
    assert busiest <= 40 + 2


# ---- a DAM that misbehaves ---------------------------------------------------------------------------


async def test_the_token_never_goes_to_a_proxy_as_its_credentials(unused_tcp_port: int, monkeypatch) -> None:
    # An egress proxy (here a plain one, logging what it is sent) must never be handed the DAM's token
    # as Proxy-Authorization.
    seen: list[dict[str, str]] = []

    async def proxy(request: web.Request) -> web.Response:
        seen.append(dict(request.headers))
        return web.json_response({"items": [], "total_count": 0})

    async with odd_dam(unused_tcp_port, proxy) as proxy_url:
        monkeypatch.setenv("HTTP_PROXY", proxy_url.removesuffix("/v2"))
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        async with WidenClient("http://dam.invalid/v2", "proxy-secret-token") as widen:
            await widen.check()
    assert len(seen) == 1
    assert not any("proxy-secret-token" in value for key, value in seen[0].items() if key.lower().startswith("proxy"))


async def test_all_proxy_is_honoured_and_no_proxy_still_bypasses_it(unused_tcp_port: int, monkeypatch) -> None:
    proxied: list[str] = []

    async def proxy(request: web.Request) -> web.Response:
        proxied.append(str(request.url))
        return web.json_response({"items": [], "total_count": 0})

    for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    async with odd_dam(unused_tcp_port, proxy) as proxy_url:
        monkeypatch.setenv("ALL_PROXY", proxy_url.removesuffix("/v2"))
        async with WidenClient("http://dam.invalid/v2", TOKEN) as widen:
            await widen.check()
        assert len(proxied) == 1 and "dam.invalid" in proxied[0]
        with socket.socket() as probe:  # a port where nothing listens
            probe.bind(("127.0.0.1", 0))
            closed = probe.getsockname()[1]
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        async with WidenClient(f"http://127.0.0.1:{closed}/v2", TOKEN, max_attempts=1) as widen:
            with pytest.raises(Unavailable):  # straight to the DAM, which is not there
                await widen.check()
        assert len(proxied) == 1


async def test_a_token_echoed_across_the_cut_is_still_scrubbed(unused_tcp_port: int) -> None:
    token = "t0ken-" + "x" * 40

    async def echo(request: web.Request) -> web.Response:
        return web.json_response({"error_message": "y" * 180 + " " + request.headers["Authorization"]}, status=400)

    async with odd_dam(unused_tcp_port, echo) as base, WidenClient(base, token) as widen:
        with pytest.raises(BadRequest) as caught:
            await widen.get_webhook("x")
    assert "t0ken-xxxx" not in str(caught.value) and "xxxxxxxxxx" not in str(caught.value)


async def test_creating_a_configuration_is_not_retried_once_the_dam_may_have_done_it(unused_tcp_port: int) -> None:
    posts: list[str] = []

    async def commits_then_fails(request: web.Request) -> web.Response:
        posts.append(await request.text())
        return web.json_response({"error": "upstream timeout"}, status=503)

    async with odd_dam(unused_tcp_port, commits_then_fails) as base, \
            WidenClient(base, TOKEN, max_wait=0.05) as widen:
        with pytest.raises(Unavailable):
            await widen.create_webhook("asset_created", HOOK_URL)
        assert len(posts) == 1  # a retry could have made a second configuration
        with pytest.raises(Unavailable):
            await widen.get_webhook("x")  # reading is retried as before
    assert len(posts) == 1 + 5


async def test_creating_a_configuration_is_retried_after_a_429(sandbox: DamSandbox) -> None:
    sandbox.fail_next(1, 429, "/webhooks/configurations", reset_after=0.1)
    async with WidenClient(sandbox.base_url, TOKEN) as widen:
        created = await widen.create_webhook("asset_created", HOOK_URL)
    assert [c.id for c in sandbox.configurations.values()] == [created]


async def test_a_429_whose_reset_time_has_passed_still_waits_a_little(unused_tcp_port: int) -> None:
    # The DAM's clock may be behind ours: its reset time then looks past, which must not mean "no wait".
    answers: list[float] = []

    async def limited_once(request: web.Request) -> web.Response:
        answers.append(time.monotonic())
        if len(answers) == 1:
            return web.json_response({}, status=429, headers={"X-Ratelimit-Reset": "2000-01-01T00:00:00Z"})
        return web.json_response({"items": [], "total_count": 0})

    async with odd_dam(unused_tcp_port, limited_once) as base, WidenClient(base, TOKEN) as widen:
        await widen.check()
    assert len(answers) == 2 and 0.09 <= answers[1] - answers[0] < 0.9


async def test_odd_error_bodies_and_ids_are_typed_errors(unused_tcp_port: int) -> None:
    async def deep(request: web.Request) -> web.Response:
        return web.Response(body=b"[" * 100_000 + b"]" * 100_000, status=503, content_type="application/json")

    async with odd_dam(unused_tcp_port, deep) as base, WidenClient(base, TOKEN, max_wait=0.01) as widen:
        with pytest.raises(Unavailable):  # retried as any 503, then reported
            await widen.get_webhook("x")
        with pytest.raises(NotFound):  # a lone surrogate (a JSON escape no real id has)
            await widen.get_asset("\ud83d")


async def test_a_runaway_answer_is_refused_not_read_into_memory(unused_tcp_port: int) -> None:
    async def endless(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        for _ in range(200):  # 12.5 MiB, no Content-Length
            await response.write(b" " * 65536)
        return response

    async with odd_dam(unused_tcp_port, endless) as base, WidenClient(base, TOKEN) as widen:
        with pytest.raises(WidenError, match="over"):
            await widen.get_asset("a")


async def test_long_header_lines_from_a_cdn_are_fine(unused_tcp_port: int) -> None:
    async def big_cookie(request: web.Request) -> web.Response:
        return web.json_response({"items": [], "total_count": 0}, headers={"Set-Cookie": "c=" + "x" * 9000})

    async with odd_dam(unused_tcp_port, big_cookie) as base, WidenClient(base, TOKEN) as widen:
        await widen.check()
