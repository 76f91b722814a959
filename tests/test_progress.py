"""Progress bars: redrawn at most every 30 s in logs (stderr not a terminal)."""
import io
import sys

from ibp_gnn import _progress


class _Tty(io.StringIO):
    def isatty(self):
        return True


def test_non_tty_log_gets_a_long_redraw_interval(monkeypatch):
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    bar = _progress.progress_bar(total=10, file=sys.stderr)
    assert bar.mininterval == _progress.NON_TTY_INTERVAL_S
    for _ in range(10):
        bar.update(1)
    bar.close()
    assert sys.stderr.getvalue().count("\r") <= 3  # first draw, final draw, close


def test_terminal_keeps_tqdm_default(monkeypatch):
    monkeypatch.setattr(sys, "stderr", _Tty())
    bar = _progress.progress_bar(total=10, file=sys.stderr)
    assert bar.mininterval < 1.0
    bar.close()


def test_caller_interval_wins_and_closed_stream_is_not_a_tty(monkeypatch):
    closed = io.StringIO()
    closed.close()
    assert not _progress._is_tty(closed)
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    bar = _progress.progress_bar(total=1, mininterval=0.5, file=sys.stderr)
    assert bar.mininterval == 0.5
    bar.close()
