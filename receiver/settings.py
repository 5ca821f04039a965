"""Settings from the environment or a `.env` file (names and defaults: DESIGN.md)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AnyHttpUrl, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", case_sensitive=False)

    slack_bot_token: SecretStr | None = None
    slack_signing_secret: SecretStr | None = None
    slack_app_token: SecretStr | None = None
    slack_api_url: AnyHttpUrl = AnyHttpUrl("https://slack.com/api/")
    slack_channel: str | None = None

    widen_api_token: SecretStr | None = None
    widen_api_url: AnyHttpUrl = AnyHttpUrl("https://api.widencollective.com/v2")
    widen_webhook_secret: SecretStr | None = None
    widen_allow_unsigned: bool = False
    widen_signature_header: str = "X-Widen-Signature"
    # e.g. https://acme.widen.net/asset/{asset_id}; else the asset's share link
    widen_asset_url_template: str | None = None

    public_base_url: AnyHttpUrl | None = None
    admin_user_ids: Annotated[list[str], NoDecode] = Field(default_factory=list)
    database_url: str = "sqlite:///var/widen-bot.db"
    host: str = "0.0.0.0"
    port: int = Field(default=3000, ge=0, le=65535)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    log_format: Literal["text", "json"] = "text"

    # Flag "Expires in N days" when the expiration date is within this window.
    expiry_warning_days: int = Field(default=30, ge=0)
    # Dead letters: park a delivery after this many failed attempts or this age.
    max_attempts: int = Field(default=10, ge=1)
    max_age_hours: float = Field(default=24.0, gt=0)
    # Digests: more than DIGEST_THRESHOLD asset events within DIGEST_WINDOW_SECONDS become one digest.
    digest_threshold: int = Field(default=10, ge=1)
    digest_window_seconds: float = Field(default=10.0, ge=0)
    # Posted deliveries are kept this long (they answer a redelivery as a duplicate), then deleted; parked
    # and unposted ones are kept whatever their age.
    retention_days: float = Field(default=30.0, gt=0)
    # Requests per second the bot allows itself against the DAM (its limit is 50 per account).
    widen_rate_limit: float = Field(default=48.0, gt=0, le=1000)
    # Seconds /readyz keeps a result before checking again.
    ready_cache_seconds: float = Field(default=10.0, ge=0)
    # Seconds SIGTERM waits for in-flight work.
    shutdown_timeout: float = Field(default=10.0, ge=0)
    # Seconds `/widen ping` waits for the ping delivery before saying none arrived.
    ping_timeout_seconds: float = Field(default=60.0, gt=0)

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("log_format", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @field_validator("admin_user_ids", mode="before")
    @classmethod
    def _split_ids(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("admin_user_ids")
    @classmethod
    def _user_ids(cls, value: list[str]) -> list[str]:
        odd = [v for v in value if not re.fullmatch(r"[UW][A-Z0-9]{2,}", v)]
        if odd:
            raise ValueError(f"must be Slack member IDs like U0123456789 (not names): {', '.join(odd)}")
        return value

    @field_validator("slack_channel")
    @classmethod
    def _channel_id(cls, value: str | None) -> str | None:
        if value and not re.fullmatch(r"[CGD][A-Z0-9]{2,}", value):
            raise ValueError("must be a channel ID like C0123456789 (channel details, at the bottom), not a name")
        return value or None

    @field_validator("database_url")
    @classmethod
    def _sqlite_only(cls, value: str) -> str:
        if not value.startswith("sqlite:///") or value == "sqlite:///":
            raise ValueError("must be sqlite:///relative/path or sqlite:////absolute/path")
        return value

    @field_validator("slack_bot_token", "slack_signing_secret", "slack_app_token", "widen_api_token",
                     "widen_webhook_secret", mode="before")
    @classmethod
    def _strip_secret(cls, value: object) -> object:
        # A secret mounted from a file often ends in a newline; no token or secret has whitespace round it.
        return value.strip() if isinstance(value, str) else value

    @field_validator("slack_bot_token")
    @classmethod
    def _bot_token_shape(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().startswith("xoxb-"):
            raise ValueError("must be a bot token starting with xoxb-")
        return value

    @field_validator("slack_app_token")
    @classmethod
    def _app_token_shape(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value():
            return None
        if value is not None and not value.get_secret_value().startswith("xapp-"):
            raise ValueError("must be an app-level token starting with xapp-")
        return value

    @model_validator(mode="after")
    def _empty_secrets_are_unset(self) -> Settings:
        for name in ("widen_webhook_secret", "slack_signing_secret", "widen_api_token"):
            value = getattr(self, name)
            if value is not None and not value.get_secret_value():
                setattr(self, name, None)
        return self

    @property
    def database_path(self) -> Path:
        return Path(self.database_url.removeprefix("sqlite:///"))

    @property
    def socket_mode(self) -> bool:
        return self.slack_app_token is not None

    def problems_for_serve(self) -> list[str]:
        """What `serve` needs that is missing: one line per variable."""
        problems = []
        required = {
            "SLACK_BOT_TOKEN": self.slack_bot_token,
            "SLACK_CHANNEL": self.slack_channel,
            "WIDEN_API_TOKEN": self.widen_api_token,
        }
        for name, value in required.items():
            if not value:
                problems.append(f"{name}: required for serve")
        if not self.socket_mode and not self.slack_signing_secret:
            problems.append("SLACK_SIGNING_SECRET: required for serve in HTTP mode "
                            "(or set SLACK_APP_TOKEN for Socket Mode)")
        return problems
