"""The ``data`` of each event type, as typed models: the contract with backends.

``Event.data`` stays a plain dict (the agent's stages build it; the store keeps
it as it is); these models describe it for the JSON Schemas in ``docs/schema``
(``pack-agent schema``) and let a backend parse it (``parse_data``). Pure.

Extensible on purpose: a module that adds an event type registers the model of
its data with ``@data_model("its.type")``. Models allow extra fields, because
adding a field is not a breaking change (see docs/mqtt-api.md, "Versioning").
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

_DATA_MODELS: dict[str, type[BaseModel]] = {}

M = TypeVar("M", bound=type[BaseModel])


def data_model(event_type: str) -> Callable[[M], M]:
    """Class decorator: ``model`` describes the data of ``event_type``."""

    def register(model: M) -> M:
        if _DATA_MODELS.get(event_type, model) is not model:
            raise ValueError(f"event type {event_type!r} already has a data model")
        _DATA_MODELS[event_type] = model
        return model

    return register


def data_models() -> dict[str, type[BaseModel]]:
    """Event type -> model of its data, sorted by type."""
    return dict(sorted(_DATA_MODELS.items()))


def parse_data(event_type: str, data: dict[str, Any]) -> BaseModel:
    """``data`` as the typed model of ``event_type`` (``KeyError`` for a type without one,
    ``pydantic.ValidationError`` for data that does not match it)."""
    return _DATA_MODELS[event_type].model_validate(data)


class _Data(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)


PackCode = Field(description="The pack's GB/T 34014 code, 24 characters (19 in cascade form).")


class PackFields(_Data):
    """The fields of a valid GB/T 34014 code."""

    code: str
    vendor: str = Field(description="Positions 1-3, the filed vendor code.")
    product_type: Literal["pack", "module", "cell"]
    battery_type: str = Field(description="Position 5: A-G or Z.")
    battery_chemistry: str
    battery_type_verified: bool = Field(
        description="False when the meaning of battery_type is not confirmed by a public source."
    )
    specification: str | None
    traceability: str | None
    production_date: str = Field(description="ISO 8601 date.")
    serial: str
    cascade: bool = Field(description="Second-life (cascade-use) form.")
    cascade_product_type: Literal["pack", "module", "cell"] | None


class _Identity(_Data):
    """What a pack event says about the code: valid or not, why, and warnings."""

    valid: bool = Field(
        default=True,
        description="False: the code is not a valid GB/T 34014 pack code (errors say why).",
    )
    errors: list[str] = Field(
        default_factory=list, description="Every problem, with its position and rule."
    )
    warnings: list[str] = Field(
        default_factory=list,
        description="True of a valid code but worth checking: a production date after the "
        "vehicle's trusted date.",
    )
    production_date_in_future: bool = Field(
        default=False,
        description="The code's production date is after the vehicle's date (its clock "
        "plausible): a forged or mis-coded label, or a wrong clock.",
    )


@data_model("pack.identified")
class PackIdentified(_Identity):
    """The first pack code of this vehicle: a valid one at once, an invalid one once it
    has been presented in pack_code.replaced_after_trips trips."""

    pack_code: str = Field(description="The code as presented (the raw text when not valid).")
    fields: PackFields | None = Field(description="The code's fields; null when not valid.")


@data_model("pack.replaced")
class PackReplaced(_Identity):
    """A different code (valid or not) presented in pack_code.replaced_after_trips trips in
    a row on the same vehicle, the known code never in between: the pack was replaced.
    Rules and notices start afresh for it (or resume, for a pack that comes back)."""

    previous_code: str
    pack_code: str = Field(description="The new code as presented (raw when not valid).")
    fields: PackFields | None = Field(description="The code's fields; null when not valid.")


@data_model("pack.code_invalid")
class PackCodeInvalid(_Identity):
    """The BMS presented a code that is not a valid GB/T 34014 pack code (a module or cell
    code included); reported each time it differs from the last invalid one."""

    raw: str = Field(description="The text as read, unchanged.")


class TrendForecast(_Data):
    """When the SOH trend crosses one capacity line, with its 95 % band."""

    rule_id: str
    threshold: float
    date: str | None = Field(description="ISO 8601 date; null when the trend never crosses.")
    earliest: str | None
    latest: str | None
    days: float | None = Field(description="Days from the sample's time to the forecast date.")


class Trend(_Data):
    """The SOH trend: a robust (Theil–Sen) fit over the pack's bounded history."""

    status: Literal["ok", "insufficient_history"]
    metric: str
    points: int = Field(description="History points behind the fit (daily, weekly, 4-weekly).")
    span_days: float
    level: float | None = None
    rate_per_year: float | None = Field(default=None, description="Percent per year (< 0: fade).")
    rate_per_year_band: list[float] | None = None
    rate_per_10000km: float | None = None
    rate_per_10000km_band: list[float] | None = None
    forecasts: list[TrendForecast] | None = None


class ClockRebased(_Data):
    """A clock step back that persisted and was adopted (docs/policy.md, "Time")."""

    by: Literal["rules", "events"] = Field(
        description="Who confirmed it: the rules' readings, or the agent's own time."
    )
    abandoned: str = Field(description="ISO 8601: the newest time of the line left behind.")
    start: str = Field(description="ISO 8601: the first time stamp of the adopted line.")


@data_model("pack.health")
class PackHealth(_Data):
    """A periodic sample of the pack's fresh metrics (health.publish_interval_s)."""

    pack_code: str | None
    metrics: dict[str, float | int | bool] = Field(
        description="Metric name (soh, soc, capacity...) -> its value; only fresh readings."
    )
    trend: Trend | None = None
    clock_rebased: ClockRebased | None = Field(
        default=None, description="Only in the first sample after a clock step was adopted."
    )


class Description(_Data):
    en: str
    zh: str


class Statistic(_Data):
    """What the rule judged: for windowed rules the median of daily medians (``of``)."""

    median: float | None = None
    min: float | None = None
    max: float | None = None
    of: str | None = None
    age_years: float | None = None


class Sample(_Data):
    time: str = Field(description="ISO 8601, UTC.")
    value: float
    n: int | None = Field(default=None, description="Readings behind a daily median.")


Kind = Literal[
    "consecutive", "capacity", "resistance", "usage", "age", "safety", "any", "all", "forecast"
]


class _Decision(_Data):
    rule_id: str
    kind: Kind
    severity: Literal["advisory", "critical"]
    description: Description
    pack_code: str | None


@data_model("scrap.condition_met")
class ScrapConditionMet(_Decision):
    """A scrapping rule was met: the decision and its evidence (latched until a new pack).
    Combinations (``any``/``all``) carry the evidence of their member rules in ``rules``."""

    metric: str | None = None
    comparison: Literal["below", "above", "at_least", "at_most"] | None = None
    threshold: float | None = None
    statistic: Statistic | None = None
    sample_count: int | None = Field(default=None, ge=1)
    first_reading_time: str | None = None
    last_reading_time: str | None = None
    condition_since: str | None = Field(default=None, description="When the condition began.")
    samples: list[Sample] | None = None
    combination: Literal["any", "all"] | None = None
    rules: list[dict[str, Any]] | None = None


@data_model("scrap.forecast")
class ScrapForecast(_Decision):
    """The SOH trend will cross a capacity line within ``within_days``: an early notice."""

    metric: str
    forecast_of: str = Field(description="The capacity rule whose line is forecast.")
    threshold: float
    within_days: float
    forecast_date: str
    earliest: str
    latest: str
    days_left: float
    rate_per_year: float
    sample_count: int
    first_reading_time: str
    last_reading_time: str
    condition_since: str


class _NoticeData(_Data):
    notice_id: int = Field(description="Which notice text (the catalogue's id).")
    seq: int = Field(description="The notice's own sequence number on the CAN handshake.")
    severity: Literal["info", "advisory", "critical"]
    rule_id: str
    attempt: int = Field(ge=0, description="How many times it has been shown.")
    channel: str | None = Field(
        description='Where: "can" (the head unit), "mqtt" (the copy for the app; the only '
        'one when [notice] channel = "none"), or, for an answer, "app" (given in the '
        "maker's app, sent by the backend as owner.answer)."
    )
    opened_at: str | None = Field(default=None, description="When the notice was opened.")
    pack_code: str | None


@data_model("owner.notified")
class OwnerNotified(_NoticeData):
    """The owner notice was sent (once per attempt and channel): on CAN the bus took the
    frames, for the app the notice was stored for the uplink. That it was on the screen
    is ``owner.notice_displayed``; that the owner read it, ``owner.acknowledged``."""

    retries: int = Field(default=0, description="Failed sends before this one succeeded.")


@data_model("owner.notice_displayed")
class OwnerNoticeDisplayed(_NoticeData):
    """The head unit reports the notice on its screen (``HU_AckResponse`` Displayed, with
    the attempt's challenge): the proof it was shown, not only sent. Once per attempt."""

    displayed_at: str = Field(description="ISO 8601, UTC.")


@data_model("owner.acknowledged")
class OwnerAcknowledged(_NoticeData):
    """The owner answered the notice on the head unit (``channel`` "can") or in the maker's
    app (``channel`` "app", the backend's ``owner.answer`` command): the proof that they
    were told. Either answer has the same effect."""

    response: Literal["seen", "dismissed", "service_booked"]
    acknowledged_at: str = Field(description="ISO 8601, UTC.")
    follow_up: Literal["repeat", "slow", "stop"] | None = Field(
        default=None, description="What the agent does next ([notice] after_*)."
    )


@data_model("owner.notice_failed")
class OwnerNoticeFailed(_NoticeData):
    """A notice could not be shown, or was never answered: visible, never silently lost."""

    reason: Literal["bus_error", "head_unit_silent", "attempts_exhausted"]
    error: str | None = None
    head_unit_last_heard: str | None = None


class NoticeTexts(_Data):
    title: str
    happened: str
    action: str
    now: str = Field(description="What to do at once (critical notices); may be empty.")


class ServiceOutlet(_Data):
    name: str
    phone: str


@data_model("owner.notice")
class OwnerNotice(_Data):
    """The notice itself, for the maker's app or after-sales system ([notice] mqtt_copy)."""

    notice_id: int
    name: str = Field(description="The catalogue entry's name.")
    seq: int
    severity: Literal["info", "advisory", "critical"]
    rule_id: str
    attempt: int
    service_outlet: ServiceOutlet
    procedure_url: str = Field(
        default="",
        description="[notice] procedure_url: the maker's published maintenance, replacement "
        "and recycling procedure (Art. 15(3)).",
    )
    emergency_phone: str = Field(default="", description="[notice] emergency_phone.")
    pack_ownership: Literal["owner", "swap_operator", "lease"] = "owner"
    within_days: float | None = Field(
        default=None, description="An early notice's horizon (its forecast rule's)."
    )
    texts: dict[str, NoticeTexts] = Field(description='Language ("zh", "en") -> texts.')


@data_model("bms.silent")
class BmsSilent(_Data):
    """No mapped BMS frame for health.bms_timeout_s."""

    pack_code: str | None
    silent_for_s: float | None = None
    source: str | None = Field(default=None, description='A polled source, e.g. "uds:soh".')
    detail: str | None = None


@data_model("bms.recovered")
class BmsRecovered(_Data):
    """The BMS speaks again after bms.silent."""

    pack_code: str | None
    source: str | None = None


@data_model("store.space_low")
class StoreSpaceLow(_Data):
    """The store's volume went under ``store.reserve_bytes`` free (once per episode):
    ``pack.health`` samples are refused until a quarter of the reserve more is free
    again; essential events and the agent's state are still written, into the reserve."""

    free_bytes: int | None = Field(description="Free bytes on the volume when measured.")
    reserve_bytes: int = Field(description="store.reserve_bytes.")
    wal_bytes: int = Field(description="The size of the store's -wal file.")
    refused_total: int = Field(description="pack.health samples refused so far in this run.")


@data_model("store.reset")
class StoreReset(_Data):
    """The store file could not be read at start; it was moved aside and a fresh store
    begun. This event is the fresh store's first (seq 1): seq starts again, the pack is
    identified again, and events not yet delivered from the old file are not sent."""

    moved_to: str = Field(description="Where the unreadable file is kept, for a post-mortem.")
    error: str = Field(description="What SQLite said about it.")


@data_model("command.applied")
class CommandApplied(_Data):
    """A backend command was applied (once: a repeated id is answered, not applied again)."""

    command_id: str = Field(description="The backend's id of the command.")
    command: Literal["notice.contact", "owner.answer", "report.now"]
    args: dict[str, Any] = Field(description="The command's checked arguments.")
    result: dict[str, Any] = Field(description="What it did; the same as in the response.")


@data_model("command.refused")
class CommandRefused(_Data):
    """A backend command was refused and changed nothing."""

    command_id: str | None = Field(description="Its id; null when it had no usable one.")
    command: str = Field(description="The command topic's last level, as received.")
    reason: str = Field(description="What is wrong, naming the field.")
