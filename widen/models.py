"""What the DAM sends and answers, as pydantic models.

The DAM's guide and its API description disagree in places (booleans as "true"/"false", `id` versus
`webhook_configuration_id`); the models accept both. Unknown fields are kept (`extra="allow"`), and every
field the bot only displays is optional, so a new or odd field in the DAM's answer never breaks a message.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictStr,
    ValidationError,
    ValidatorFunctionWrapHandler,
    field_validator,
    model_validator,
)

ASSET_EVENT_TYPES: tuple[str, ...] = (
    "asset_created",
    "asset_deleted",
    "asset_release_date_updated",
    "asset_expiration_date_updated",
    "asset_asset_groups_updated",
    "asset_categories_updated",
    "asset_tags_updated",
    "asset_version_added",
)
PING = "ping"


def _loose_bool(value: object) -> object:
    """The guide sends "true"/"false" where the API description says booleans."""
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in ("true", "1", "yes"):
            return True
        if lowered in ("false", "0", "no", ""):
            return False
    return value


def _lenient(model: type[BaseModel]) -> Any:
    """Parse a nested object if it has the right shape; anything else becomes None (never refused)."""

    def parse(value: object) -> object:
        if isinstance(value, model):
            return value
        if isinstance(value, dict):
            try:
                return model.model_validate(value)
            except ValueError:
                return None
        return None

    return BeforeValidator(parse)


LooseBool = Annotated[bool, BeforeValidator(_loose_bool)]


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)

    @model_validator(mode="wrap")
    @classmethod
    def _drop_what_does_not_fit(cls, data: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        """A field of an unexpected shape is dropped (shown as unknown), not the whole message. A field
        the model cannot do without still fails: dropping it makes it missing."""
        try:
            return handler(data)
        except ValidationError as exc:
            if not isinstance(data, dict):
                raise
            bad = {error["loc"][0] for error in exc.errors() if error["loc"]}
            if not bad:
                raise
            return handler({key: value for key, value in data.items() if key not in bad})


def _encodable(text: str) -> bool:
    """False for text with lone surrogates (valid JSON escapes, but no UTF-8 can store them)."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def _text_or_none(value: object) -> object:
    if isinstance(value, str):
        return value if _encodable(value) else None
    if value is None:
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return None


LooseStr = Annotated[str | None, BeforeValidator(_text_or_none)]


# ---- webhook deliveries -------------------------------------------------------------------------


class EventUser(_Open):
    id: LooseStr = None
    username: LooseStr = None


class EventContext(_Open):
    user: Annotated[EventUser | None, _lenient(EventUser)] = None


def _must_encode(value: str) -> str:
    if not _encodable(value):
        raise ValueError("must be valid Unicode text")
    return value


RequiredText = Annotated[StrictStr, Field(min_length=1, max_length=200), AfterValidator(_must_encode)]


class DeliveryHead(BaseModel):
    """What the receiver checks before storing a delivery (the whole body is stored as sent).

    `event_type` and `webhook_configuration_id` must be non-empty strings; the ids it files the delivery
    under are taken when they are strings. Kept small: it runs for every delivery, at full speed.
    """

    model_config = ConfigDict(extra="ignore")

    webhook_configuration_id: RequiredText
    event_type: RequiredText
    webhook_delivery_id: LooseStr = None
    asset_id: LooseStr = None


class WebhookEvent(_Open):
    """One delivery, as the worker reads it: the checks of `DeliveryHead`, the rest lenient."""

    webhook_configuration_id: RequiredText
    event_type: RequiredText
    webhook_delivery_id: LooseStr = None
    asset_id: LooseStr = None
    date_created: LooseStr = None
    event_context: Annotated[EventContext | None, _lenient(EventContext)] = None

    @property
    def username(self) -> str | None:
        if self.event_context and self.event_context.user:
            return self.event_context.user.username
        return None


# ---- assets --------------------------------------------------------------------------------------


class ImageProperties(_Open):
    width: int | None = None
    height: int | None = None
    aspect_ratio: float | None = None


class VideoProperties(_Open):
    width: int | None = None
    height: int | None = None
    duration: float | None = None  # seconds


class FileProperties(_Open):
    format: str | None = None
    format_type: str | None = None
    size_in_bytes: int | None = None
    size_in_kbytes: float | None = None
    image_properties: Annotated[ImageProperties | None, _lenient(ImageProperties)] = None
    video_properties: Annotated[VideoProperties | None, _lenient(VideoProperties)] = None


class Security(_Open):
    asset_groups: list[str] = Field(default_factory=list)
    release_date: datetime | None = None
    expiration_date: datetime | None = None


class Metadata(_Open):
    fields: dict[str, list[Any]] = Field(default_factory=dict)


class Thumbnail(_Open):
    url: str | None = None
    valid_until: str | None = None


class Embed(_Open):
    share: str | None = None
    url: str | None = None
    html: str | None = None


class Asset(_Open):
    id: str
    external_id: str | None = None
    filename: str | None = None
    created_date: datetime | None = None
    last_update_date: datetime | None = None
    file_upload_date: datetime | None = None
    deleted_date: datetime | None = None
    released_and_not_expired: bool | None = None
    current_version: bool | None = None
    version_id: str | None = None
    asset_properties: dict[str, Any] | None = None
    file_properties: FileProperties | None = None
    metadata: Metadata | None = None
    security: Security | None = None
    status: dict[str, Any] | None = None
    thumbnails: dict[str, Thumbnail] | None = None
    embeds: dict[str, Embed] | None = None
    links: dict[str, Any] | None = Field(default=None, alias="_links")

    @field_validator("metadata", mode="before")
    @classmethod
    def _metadata_values_as_lists(cls, value: object) -> object:
        # A field's value is a list in the API; tolerate a bare scalar.
        if isinstance(value, dict) and isinstance(value.get("fields"), dict):
            fields = {
                k: v if isinstance(v, list) else ([] if v is None else [v])
                for k, v in value["fields"].items()
            }
            return {**value, "fields": fields}
        return value


# ---- webhook configurations ----------------------------------------------------------------------


class CreatedBy(_Open):
    uuid: str | None = None


class WebhookConfiguration(_Open):
    webhook_configuration_id: str = Field(validation_alias=AliasChoices("webhook_configuration_id", "id"))
    event_type: str | None = None
    created_by_user: CreatedBy | None = None
    created_date: datetime | None = None
    last_delivered_date: datetime | None = None
    last_pinged_date: datetime | None = None
    signing_enabled: LooseBool | None = None
    delivery_enabled: LooseBool | None = None
    delivery_url: str | None = None

    @property
    def id(self) -> str:
        return self.webhook_configuration_id


class CreatedWebhook(_Open):
    """Create answers `{"id": ...}` (API description) or `{"webhook_configuration_id": ...}` (guide)."""

    id: str = Field(validation_alias=AliasChoices("id", "webhook_configuration_id"))
