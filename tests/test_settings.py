"""Settings: what `serve` says about missing and invalid ones, and the README's table and env file."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from receiver.cli import load_settings
from receiver.settings import Settings

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()
REQUIRED_FOR_SERVE = ["SLACK_BOT_TOKEN", "SLACK_CHANNEL", "WIDEN_API_TOKEN", "SLACK_SIGNING_SECRET"]
GOOD = {
    "SLACK_BOT_TOKEN": "xoxb-1-2-abc",
    "SLACK_SIGNING_SECRET": "0123456789abcdef",
    "SLACK_CHANNEL": "C0123",
    "WIDEN_API_TOKEN": "acme/0123456789",
}


def serve(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """`widen-bot serve` with only these variables, in an empty directory (so no .env is read)."""
    return subprocess.run(
        [sys.executable, "-m", "receiver.cli", "serve"],
        env={"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(REPO), **env},
        cwd=tmp_path, capture_output=True, text=True, timeout=30,
    )


def named(stderr: str) -> list[str]:
    return [line.split(":")[0] for line in stderr.strip().splitlines()]


def test_serve_without_settings_exits_2_naming_each_required_variable(tmp_path: Path):
    result = serve(tmp_path)
    assert result.returncode == 2
    assert sorted(named(result.stderr)) == sorted(REQUIRED_FOR_SERVE)
    assert "Traceback" not in result.stderr + result.stdout


@pytest.mark.parametrize(
    ("variable", "value"),
    [("PORT", "abc"), ("PORT", "70000"), ("DATABASE_URL", "postgres://x"), ("LOG_LEVEL", "LOUD"),
     ("LOG_FORMAT", "xml"), ("SLACK_API_URL", "not a url"), ("MAX_ATTEMPTS", "0"), ("WIDEN_ALLOW_UNSIGNED", "maybe"),
     ("SLACK_APP_TOKEN", "xoxb-not-an-app-token"), ("SLACK_CHANNEL", "#general"),
     ("ADMIN_USER_IDS", "U0123, jane.doe")],
)
def test_an_invalid_value_exits_2_naming_it(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                                            tmp_path: Path, variable: str, value: str):
    # In-process, as serve loads its settings (the process itself is tested above and below).
    monkeypatch.chdir(tmp_path)
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)
    for name, good in {**GOOD, variable: value}.items():
        monkeypatch.setenv(name, good)
    with pytest.raises(SystemExit) as exit_:
        load_settings(for_serve=True)
    assert exit_.value.code == 2
    assert named(capsys.readouterr().err) == [variable]


def test_serve_reports_every_problem_at_once_and_never_echoes_a_token(tmp_path: Path):
    result = serve(tmp_path, PORT="abc", DATABASE_URL="postgres://x", SLACK_BOT_TOKEN="xoxp-a-user-token-value")
    assert result.returncode == 2
    assert sorted(named(result.stderr)) == sorted(["PORT", "DATABASE_URL", "SLACK_BOT_TOKEN", "SLACK_CHANNEL",
                                                   "WIDEN_API_TOKEN", "SLACK_SIGNING_SECRET"])
    assert "SLACK_BOT_TOKEN: must be a bot token starting with xoxb-" in result.stderr
    assert "user-token-value" not in result.stderr


@pytest.mark.parametrize("store", ["file/under-a-file.db", "loop.db"])
def test_serve_that_cannot_open_its_store_says_so_in_one_line(tmp_path: Path, store: str):
    (tmp_path / "file").write_text("")
    (tmp_path / "loop.db").symlink_to(tmp_path / "loop.db")
    result = serve(tmp_path, **GOOD, DATABASE_URL=f"sqlite:///{tmp_path}/{store}", PORT="0", HOST="127.0.0.1")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot start" in lines[0] and "DATABASE_URL" in lines[0], result.stderr


def test_socket_mode_needs_no_signing_secret():
    settings = Settings.model_validate({**{k.lower(): v for k, v in GOOD.items()}, "slack_signing_secret": None,
                                        "slack_app_token": "xapp-1-A-2"})
    assert settings.socket_mode and settings.problems_for_serve() == []


def test_database_url_paths_relative_and_absolute():
    assert Settings.model_validate({"database_url": "sqlite:///var/bot.db"}).database_path == Path("var/bot.db")
    assert Settings.model_validate({"database_url": "sqlite:////data/bot.db"}).database_path == Path("/data/bot.db")
    for wrong in ("sqlite:///", "sqlite://relative", "postgres://x/y"):
        with pytest.raises(ValidationError):
            Settings.model_validate({"database_url": wrong})


def test_secrets_mounted_from_files_lose_their_trailing_newline():
    settings = Settings.model_validate({"slack_bot_token": "xoxb-1-2-abc\n", "widen_api_token": " acme/0123\r\n",
                                        "widen_webhook_secret": "shared\n", "slack_signing_secret": "0123\n"})
    assert settings.slack_bot_token is not None and settings.slack_bot_token.get_secret_value() == "xoxb-1-2-abc"
    assert settings.widen_api_token is not None and settings.widen_api_token.get_secret_value() == "acme/0123"
    assert settings.widen_webhook_secret is not None and settings.widen_webhook_secret.get_secret_value() == "shared"
    assert settings.slack_signing_secret is not None and settings.slack_signing_secret.get_secret_value() == "0123"


def test_empty_secrets_count_as_unset():
    settings = Settings.model_validate({"widen_webhook_secret": "", "slack_app_token": "", "widen_api_token": ""})
    assert settings.widen_webhook_secret is None and settings.slack_app_token is None
    assert settings.widen_api_token is None


# ---- the README -------------------------------------------------------------------------------------


def section(title: str) -> str:
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", README, re.S | re.M)
    assert match, f"README has no '## {title}' section"
    return match.group(1)


def documented_variables() -> set[str]:
    names: set[str] = set()
    for row in re.findall(r"^\| ([A-Z_, ]+) \|", section("Configuration"), re.M):
        names.update(name.strip() for name in row.split(","))
    return names


def test_readme_configuration_table_lists_every_setting_and_nothing_else():
    settings = {name.upper() for name in Settings.model_fields}
    assert documented_variables() == settings


def test_readme_deploy_env_file_is_valid_for_serve(tmp_path: Path):
    blocks = re.findall(r"```dotenv\n(.*?)```", section("Deploy"), re.S)
    assert len(blocks) == 1, "the Deploy section shows one env file (a ```dotenv block)"
    env_file = tmp_path / "widen-bot.env"
    env_file.write_text(blocks[0])
    variables = {line.split("=", 1)[0] for line in blocks[0].splitlines() if "=" in line and line[0] != "#"}
    assert variables <= documented_variables()
    settings = Settings(_env_file=env_file)  # type: ignore[call-arg]
    assert settings.problems_for_serve() == []
    assert str(settings.public_base_url).startswith("https://")


def test_readme_operations_names_every_endpoint():
    text = section("Operations")
    for endpoint in ("/healthz", "/readyz", "/metrics", "widen-bot check", "SIGTERM", "LOG_FORMAT"):
        assert endpoint in text
