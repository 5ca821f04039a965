"""`widen-bot check`: one line per check, non-zero exit naming what failed."""

from __future__ import annotations

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from receiver.settings import Settings
from widen.client import Unauthorized, WidenClient, WidenError


async def run_checks(settings: Settings) -> int:
    failed: list[str] = []

    problems = settings.problems_for_serve()
    if problems:
        for line in problems:
            print(f"FAIL settings: {line}")
        failed.append("settings")
    else:
        print("ok   settings")

    if settings.slack_bot_token:
        slack = AsyncWebClient(token=settings.slack_bot_token.get_secret_value(), base_url=str(settings.slack_api_url))
        try:
            auth = await slack.auth_test()
            print(f"ok   slack: auth.test as {auth.get('user_id')} in team {auth.get('team_id')}")
        except SlackApiError as exc:
            error = exc.response.data.get("error") if isinstance(exc.response.data, dict) else exc.response.status_code
            print(f"FAIL slack: auth.test answered {error}: check SLACK_BOT_TOKEN and SLACK_API_URL")
            failed.append("slack")
        except Exception as exc:
            print(f"FAIL slack: cannot reach {settings.slack_api_url} ({type(exc).__name__})")
            failed.append("slack")
        finally:
            if slack.session is not None:
                await slack.session.close()

    if settings.widen_api_token:
        async with WidenClient(str(settings.widen_api_url), settings.widen_api_token.get_secret_value(),
                               max_attempts=2, max_wait=2) as widen:
            try:
                await widen.check()
                print(f"ok   dam: {settings.widen_api_url} accepts WIDEN_API_TOKEN")
            except Unauthorized:
                print("FAIL dam: the DAM refused WIDEN_API_TOKEN")
                failed.append("dam")
            except WidenError as exc:
                print(f"FAIL dam: {exc}")
                failed.append("dam")

    if failed:
        print(f"check failed: {', '.join(failed)}")
        return 1
    print("all checks passed")
    return 0
