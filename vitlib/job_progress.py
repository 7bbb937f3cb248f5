"""Progress lines for a batch of jobs: time elapsed, an estimate of the time left, and a heartbeat
while nothing else is said."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable


class JobClock:
    """Elapsed time and an estimate of what is left, and a heartbeat line whenever nothing has
    been said for `every` seconds."""

    def __init__(self, total: int, what: str, log, finished: Callable[[], int] | None, every: float = 30.0):
        self.total, self.what, self.finished, self.every = total, what, finished, every
        self.start = self.said = time.perf_counter()
        self.done = 0
        self._log = log

    def log(self, line: str) -> None:
        self.said = time.perf_counter()
        self._log(line)

    def status(self) -> str:
        elapsed = time.perf_counter() - self.start
        text = f"{_duration(elapsed)} elapsed"
        if 0 < self.done < self.total:
            text += f", about {_duration(elapsed / self.done * (self.total - self.done))} left"
        return text

    @contextlib.contextmanager
    def heartbeat(self, active: bool):
        stop = threading.Event()

        def beat():
            while not stop.wait(1.0):
                if time.perf_counter() - self.said >= self.every:
                    if self.finished is not None:
                        self.done = max(self.done, self.finished())
                    self.log(f"... {self.done}/{self.total} {self.what} done · {self.status()}")

        thread = threading.Thread(target=beat, daemon=True)
        if active:
            thread.start()
        try:
            yield
        finally:
            stop.set()


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"
