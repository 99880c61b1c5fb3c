"""Validation rules that sit on plain dataclasses without importing pydantic.

The configuration is a tree of stdlib dataclasses (``config.py``) so the daemon
runs without pydantic in memory (about 8 MiB on a gateway). pydantic still
checks every file: ``configcheck.py`` validates the dataclasses, and the
markers here tell it what their annotations cannot say (a pattern with a
message, one value or a list, a secret). They import ``pydantic_core`` only when
pydantic asks them for a schema, which happens in the validating process alone.
Bounds use ``annotated_types`` (Gt, Ge, Le, MinLen), which pydantic reads as is.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any


class Check:
    """After the type check: ``predicate(value)`` must hold, else ``message``."""

    __slots__ = ("message", "predicate")

    def __init__(self, predicate: Callable[[Any], bool], message: str) -> None:
        self.predicate = predicate
        self.message = message

    def _validate(self, value: Any) -> Any:
        if not self.predicate(value):
            raise ValueError(self.message)
        return value

    def __get_pydantic_core_schema__(self, source: Any, handler: Any) -> Any:
        from pydantic_core import core_schema

        return core_schema.no_info_after_validator_function(self._validate, handler(source))


def matches(pattern: str, message: str) -> Check:
    """A text that must match ``pattern`` as a whole."""
    regex = re.compile(pattern)
    return Check(lambda v: regex.fullmatch(v) is not None, message)


class OneOrMany:
    """A list of integers that also takes a single one (``invalid_raw = 255``)."""

    __slots__ = ()

    def __get_pydantic_core_schema__(self, source: Any, handler: Any) -> Any:
        from pydantic_core import core_schema

        return core_schema.no_info_before_validator_function(
            lambda v: [v] if isinstance(v, int) else v, handler(source)
        )


class Secret:
    """A password: its value never shows in a repr, a log line or a traceback."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def get_secret_value(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __reduce__(self) -> tuple[Any, ...]:
        return (Secret, (self._value,))

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: Any) -> Any:
        from pydantic_core import core_schema

        return core_schema.no_info_after_validator_function(cls, core_schema.str_schema())


class Tagged:
    """A union picked by a tag (``kind``): one clear error for an unknown kind instead
    of one per member. ``tag_of`` reads the tag of raw data or of a built value."""

    __slots__ = ("members", "tag_of")

    def __init__(self, members: dict[str, type], tag_of: Callable[[Any], str]) -> None:
        self.members = members
        self.tag_of = tag_of

    def __get_pydantic_core_schema__(self, source: Any, handler: Any) -> Any:
        from typing import Annotated, Union

        from pydantic import Discriminator, Tag

        tagged = tuple(Annotated[t, Tag(tag)] for tag, t in self.members.items())
        return handler.generate_schema(
            Annotated[Union[tagged], Discriminator(self.tag_of)]  # noqa: UP007
        )
