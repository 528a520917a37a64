"""Progress bars that stay readable in logs.

``from lexprobe.base.progress import tqdm`` is a drop-in for ``tqdm.auto.tqdm``: a live bar in a terminal, a widget in a
notebook, and when stderr is neither (CI, ``make run > log``) a :class:`LogBar` that writes whole lines, at most one
every :data:`LOG_INTERVAL` seconds plus one when the bar finishes, instead of a carriage-return redraw per update.
"""

from __future__ import annotations

import sys
from typing import Any

from tqdm.auto import tqdm as auto_tqdm
from tqdm.std import tqdm as std_tqdm

LOG_INTERVAL = 60.0  # seconds between progress lines in a log
# tqdm.auto picked its widget bar (importing tqdm.notebook only then): we run in a Jupyter kernel
IN_NOTEBOOK = "tqdm.notebook" in sys.modules and issubclass(auto_tqdm, sys.modules["tqdm.notebook"].tqdm)


class LogBar(std_tqdm):
    """A tqdm that prints plain lines: a line when work advanced and ``mininterval`` seconds passed since the last
    one, and a last line when the bar closes (unless ``leave=False``, as for inner loops, or nothing new happened).
    """

    leave: bool | None  # tqdm's (set in its __init__; None: leave only the bar at position 0)

    def __init__(self, *args: Any, mininterval: float = LOG_INTERVAL, **kwargs: Any) -> None:
        self._printed_n = kwargs.get("initial", 0)  # before super().__init__, which already calls display()
        super().__init__(*args, mininterval=mininterval, maxinterval=mininterval, **kwargs)
        self._last_line = getattr(self, "start_t", 0.0)  # a disabled bar has no clock

    def _line(self) -> None:
        self._last_line, self._printed_n = self._time(), self.n
        self.fp.write(f"{self}\n")
        self.fp.flush()

    def display(self, msg: str | None = None, pos: int | None = None) -> bool:
        if msg == "":  # tqdm clearing the bar: nothing to clear in a log
            return False
        if self.n != self._printed_n and self._time() - self._last_line >= self.mininterval:
            self._line()
        return True

    def close(self) -> None:
        final = not self.disable and self.leave is not False and self.n != self._printed_n
        self.leave = False  # tqdm's own close then only clears, which display() ignores
        super().close()
        if final:
            self.smoothing = 0  # the last line shows the overall rate
            self._line()


def tqdm(iterable: Any = None, *args: Any, **kwargs: Any) -> std_tqdm:
    """A progress bar suited to where stderr goes: terminal or notebook as tqdm.auto, else a :class:`LogBar`."""
    if IN_NOTEBOOK or sys.stderr.isatty():
        return auto_tqdm(iterable, *args, **kwargs)
    return LogBar(iterable, *args, **kwargs)
