"""Progress bars draw on a terminal only: a log file or a pipe gets no bar redraws."""

from __future__ import annotations

import io
import sys

from art_wdat import WassersteinDistributionalAttack
from art_wdat.core.progress import progress_bar
from art_wdat.evaluation import evaluate


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_bars_draw_on_a_terminal_only(monkeypatch):
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert progress_bar(3, "x", verbose=True).disable
    monkeypatch.setattr(sys, "stderr", _Terminal())
    assert not progress_bar(3, "x", verbose=True).disable
    assert progress_bar(3, "x", verbose=False).disable


def test_verbose_attack_and_evaluation_write_no_bar_to_a_log(digits_clf, digits, capfd):
    _, _, x, y = digits
    x, y = x[:40], y[:40]
    WassersteinDistributionalAttack(digits_clf, eps=0.1, max_iter=3, num_random_init=2, verbose=True).generate(x, y)
    evaluate(digits_clf, x, y, [0.05, 0.1], attacks="wpgd,wpgd-budget", max_iter=2, verbose=True)
    err = capfd.readouterr().err
    assert "\r" not in err and "W-PGD" not in err and "evaluate" not in err
