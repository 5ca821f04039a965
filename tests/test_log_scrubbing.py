"""Slack request bodies and response URLs never reach a log line (Bolt logs bodies it refuses)."""

from __future__ import annotations

import logging

import httpx

from receiver.logs import JsonFormatter, TextFormatter, scrub
from receiver.sandbox_run import running_stack


def test_bolts_refused_request_body_is_redacted():
    line = ("Invalid request signature detected (signature: v0=abc, timestamp: 1, body: token=gIkuvaNzQIHg97ATvDxqgjtO"
            "&command=%2Fwiden&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT0%2F1%2Fsecret)")
    assert "gIkuvaNzQIHg97ATvDxqgjtO" not in scrub(line)
    assert "hooks.slack.com" not in scrub(line)
    assert "Invalid request signature detected" in scrub(line)


async def test_a_badly_signed_slack_request_logs_no_body(tmp_path, caplog):
    formatters = (TextFormatter(), JsonFormatter())
    body = "token=verification-token-value&command=%2Fwiden&text=list&response_url=https%3A%2F%2Fhooks.slack.com%2Fx"
    # Bolt copies the root logger's level when the app is made: make it inside the DEBUG block.
    with caplog.at_level(logging.DEBUG):
        async with running_stack(tmp_path / "db.sqlite") as stack, httpx.AsyncClient(base_url=stack.base_url) as http:
            response = await http.post("/slack/events", content=body, headers={
                "X-Slack-Signature": "v0=00", "X-Slack-Request-Timestamp": "1",
                "Content-Type": "application/x-www-form-urlencoded"})
    assert response.status_code == 401
    lines = [f.format(record) for record in caplog.records for f in formatters]
    assert any("Invalid request signature" in line for line in lines), "the refusal is logged"
    for line in lines:
        assert "verification-token-value" not in line and "hooks.slack.com" not in line
