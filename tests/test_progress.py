"""Progress bars in logs: whole lines, few of them."""

from __future__ import annotations

import io

from lexprobe.base.progress import LogBar, tqdm


def test_not_a_terminal_gives_a_log_bar():
    assert isinstance(tqdm(range(2), file=io.StringIO()), LogBar)  # pytest captures stderr: not a TTY


def test_a_thousand_updates_make_one_line_per_outer_step():
    log = io.StringIO()
    for _ in tqdm(range(3), desc="seeds", file=log):
        for _ in tqdm(range(1000), desc="steps", leave=False, file=log):
            pass
    lines = log.getvalue().splitlines()
    assert "\r" not in log.getvalue()
    assert len(lines) == 1 and lines[0].startswith("seeds: 100%") and "3/3" in lines[0]


def test_slow_work_prints_a_line_per_interval_and_no_repeat_at_the_end():
    log = io.StringIO()
    bar = LogBar(total=4, desc="checkpoints", file=log, mininterval=60)
    now = [bar.start_t]
    bar._time = lambda: now[0]  # tqdm's own clock, so the test does not sleep
    for _ in range(4):
        now[0] += 40  # each checkpoint takes 40 s: a line every second checkpoint
        bar.update()
    bar.close()
    lines = log.getvalue().splitlines()
    assert [ln.split("|")[0] for ln in lines] == ["checkpoints:  50%", "checkpoints: 100%"]


def test_nothing_to_report_prints_nothing():
    log = io.StringIO()
    for _ in LogBar(range(0), desc="empty", file=log):
        pass
    assert log.getvalue() == ""
