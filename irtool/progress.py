"""A one-line progress display on stderr for steps that take more than a
moment: silent for quick steps and when stderr is not a terminal."""
import sys
import threading
import time


class Progress:
    DELAY = 0.5        # seconds before anything is shown

    def __init__(self, label, stream=None):
        self.label = label
        self.stream = stream or sys.stderr
        self._done = threading.Event()
        self._thread = None
        self._shown = False

    def __enter__(self):
        self.start = time.perf_counter()
        if getattr(self.stream, "isatty", lambda: False)():
            self._thread = threading.Thread(target=self._spin, daemon=True)
            self._thread.start()
        return self

    def _spin(self):
        frames = "|/-\\"
        i = 0
        while not self._done.wait(0.1 if self._shown else self.DELAY):
            self._shown = True
            elapsed = time.perf_counter() - self.start
            self.stream.write(f"\r{frames[i % 4]} {self.label} ... {elapsed:.1f}s")
            self.stream.flush()
            i += 1

    def __exit__(self, exc_type, exc, tb):
        self._done.set()
        if self._thread is not None:
            self._thread.join()
            if self._shown:
                elapsed = time.perf_counter() - self.start
                status = "done" if exc_type is None else "failed"
                self.stream.write(f"\r{self.label} ... {status} in {elapsed:.1f}s\n")
                self.stream.flush()
        return False
