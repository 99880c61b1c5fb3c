"""Errors a user can act on: the CLI prints them as one clear message, never a traceback."""

from __future__ import annotations


class PackAgentError(Exception):
    """Base for every error meant for the person running pack-agent."""


class ConfigError(PackAgentError):
    """The configuration is wrong; each problem names its key."""

    def __init__(self, problems: list[str], source: str = "configuration") -> None:
        self.problems = list(problems)
        self.source = source
        super().__init__(self.render())

    def render(self) -> str:
        lines = [f"{self.source}: {len(self.problems)} problem(s)"]
        lines += [f"  - {p}" for p in self.problems]
        return "\n".join(lines)


class StoreError(PackAgentError):
    """The on-disk store cannot be opened or written."""


class BusError(PackAgentError):
    """A CAN bus cannot be opened or used."""
