"""A real daemon on its own thread for tests (the store belongs to the thread that built it)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from pack_agent.config import AgentConfig
from pack_agent.runtime.daemon import Daemon


class RunningDaemon:
    def __init__(self, cfg: AgentConfig, **kwargs: Any) -> None:
        self.events: list = []
        self.daemon: Daemon | None = None
        self.error: BaseException | None = None
        ready = threading.Event()

        def main() -> None:
            try:
                self.daemon = Daemon(cfg, on_event=self.events.append, **kwargs)
            except BaseException as exc:
                self.error = exc
                return
            finally:
                ready.set()
            self.daemon.run()

        self.thread = threading.Thread(target=main, daemon=True)
        self.thread.start()
        assert ready.wait(15)
        if self.error is not None:
            raise self.error
        assert self.daemon is not None

    def wait_for(self, pred: Callable[[RunningDaemon], bool], timeout: float = 8.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if pred(self):
                return
            time.sleep(0.02)
        raise AssertionError(f"timed out; events: {[(e.type, e.data) for e in self.events]}")

    def types(self) -> list[str]:
        return [e.type for e in self.events]

    def stop(self) -> None:
        assert self.daemon is not None
        self.daemon.stop_event.set()
        self.thread.join(10)
        assert not self.thread.is_alive()
