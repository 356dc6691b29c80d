"""A clean stop on SIGINT/SIGTERM: the training loop checks the request, checkpoints and returns."""

from __future__ import annotations

import signal
import threading


class StopRequest:
    """SIGINT/SIGTERM ask the loop to checkpoint and return; a second signal acts as usual (kills)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.signal_name: str | None = None
        self.previous: dict = {}

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():  # signals can only be caught there
            self.previous = {number: signal.signal(number, self._handle) for number in self.SIGNALS}
        return self

    def _handle(self, number: int, frame) -> None:
        self.signal_name = signal.Signals(number).name
        self._restore()

    def _restore(self) -> None:
        for number, handler in self.previous.items():
            signal.signal(number, handler)
        self.previous = {}

    def __exit__(self, *exception) -> None:
        self._restore()
