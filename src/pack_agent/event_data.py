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


@data_model("pack.identified")
class PackIdentified(_Data):
    """The first valid pack code read on this vehicle (confirmed by repeated reads)."""

    pack_code: str = PackCode
    fields: PackFields


@data_model("pack.replaced")
class PackReplaced(_Data):
    """A different valid pack code on the same vehicle: the pack was swapped."""

    previous_code: str
    pack_code: str = PackCode
    fields: PackFields


@data_model("pack.code_invalid")
class PackCodeInvalid(_Data):
    """The BMS reported a code that is not a valid GB/T 34014 code."""

    raw: str = Field(description="The text as read, unchanged.")
    errors: list[str] = Field(description="Every problem, with its position and rule.")


@data_model("pack.health")
class PackHealth(_Data):
    """A periodic sample of the pack's fresh metrics (health.publish_interval_s)."""

    pack_code: str | None
    metrics: dict[str, float | int | bool] = Field(
        description="Metric name (soh, soc, capacity...) -> its value; only fresh readings."
    )


class Description(_Data):
    en: str
    zh: str


class Statistic(_Data):
    median: float
    min: float
    max: float


class Sample(_Data):
    time: str = Field(description="ISO 8601, UTC.")
    value: float


@data_model("scrap.condition_met")
class ScrapConditionMet(_Data):
    """A scrapping rule was met: the decision and its evidence (latched until a new pack)."""

    rule_id: str
    severity: Literal["advisory", "critical"]
    description: Description
    metric: str
    comparison: Literal["below"]
    threshold: float
    statistic: Statistic
    sample_count: int = Field(ge=1)
    first_reading_time: str
    last_reading_time: str
    samples: list[Sample]
    pack_code: str | None


class _NoticeData(_Data):
    notice_id: int = Field(description="Which notice text (the catalogue's id).")
    seq: int = Field(description="The notice's own sequence number on the CAN handshake.")
    severity: Literal["info", "advisory", "critical"]
    rule_id: str
    attempt: int = Field(ge=1, description="How many times it has been shown.")
    channel: str | None = Field(description='Where it was shown ("can": the head unit).')
    pack_code: str | None


@data_model("owner.notified")
class OwnerNotified(_NoticeData):
    """The owner notice was shown on the head unit (once per attempt)."""


@data_model("owner.acknowledged")
class OwnerAcknowledged(_NoticeData):
    """The owner answered the notice on the head unit: the proof that they were told."""

    response: Literal["seen", "dismissed", "service_booked"]
    acknowledged_at: str = Field(description="ISO 8601, UTC.")


@data_model("bms.silent")
class BmsSilent(_Data):
    """No mapped BMS frame for health.bms_timeout_s."""

    pack_code: str | None
    silent_for_s: float


@data_model("bms.recovered")
class BmsRecovered(_Data):
    """The BMS speaks again after bms.silent."""

    pack_code: str | None
