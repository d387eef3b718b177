"""Progress output: a tqdm bar where someone watches (a terminal, a notebook), plain lines in a log file."""

import io
import os
import sys
import types

import pytest
from tqdm.auto import tqdm

from butterfly_jax.run import progress


class _Clock:
  def __init__(self):
    self.now = 1000.0

  def __call__(self):
    return self.now


def test_plain_lines_come_at_the_interval_and_at_the_end():
  clock, out = _Clock(), io.StringIO()
  lines = progress.Lines(100, "train", "step", file=out, every_s=30, clock=clock)
  for step in range(100):
    clock.now += 1.0
    lines.update(1)
    lines.set_postfix(phase="trunk" if step < 50 else "children", loss=f"{2.0 - step / 100:.3f}")
  lines.close()
  lines.close()  # a second close writes nothing
  text = out.getvalue()
  assert "\r" not in text
  assert text.splitlines() == [
      "train 30/100 (30%) 1 step/s, ETA 1m10s; phase=trunk loss=1.720",
      "train 60/100 (60%) 1 step/s, ETA 40s; phase=children loss=1.420",
      "train 90/100 (90%) 1 step/s, ETA 10s; phase=children loss=1.120",
      "train 100/100 (100%) 1 step/s, took 1m40s; phase=children loss=1.010",
  ]


def test_a_resumed_run_counts_its_rate_from_the_steps_done_here():
  clock, out = _Clock(), io.StringIO()
  with progress.Lines(4000, "train", "step", initial=3000, file=out, every_s=30, clock=clock) as lines:
    clock.now += 7200.0
    lines.update(900)  # 0.125 step/s: the 3000 earlier steps ran in another process
  assert out.getvalue().splitlines() == ["train 3900/4000 (97%) 0.125 step/s, ETA 13m20s",
                                         "train 3900/4000 (97%) 0.125 step/s, took 2h00m"]
  slow = progress.Lines(10, "eval", "ex", file=io.StringIO(), clock=clock)
  clock.now += 50.0
  slow.n = 2
  assert slow.line() == "eval 2/10 (20%) 25 s/ex, ETA 3m20s"
  slow.n = 10
  clock.now += 1e-3
  assert slow.line(final=True) == "eval 10/10 (100%) 0.2 ex/s, took 50s"
  fast = progress.Lines(100000, "eval", "ex", file=io.StringIO(), clock=clock)
  clock.now += 10.0
  fast.n = 25345
  assert fast.line() == "eval 25345/100000 (25%) 2534 ex/s, ETA 29s"


def test_lines_refuse_a_nonpositive_interval():
  with pytest.raises(ValueError, match="every_s: 0 seconds; it must be > 0"):
    progress.Lines(10, "train", "step", every_s=0)


def test_a_terminal_or_a_notebook_gets_tqdm_and_a_file_gets_plain_lines(tmp_path, monkeypatch):
  master, replica = os.openpty()
  with open(replica, "w") as tty, open(tmp_path / "log.txt", "w") as log, open(master, "rb", buffering=0):
    assert progress.live(tty) and not progress.live(log) and not progress.live(object())
    monkeypatch.setattr(sys, "stderr", tty)
    bar = progress.bar(10, "train", "step")
    assert isinstance(bar, tqdm) and not bar.disable
    bar.close()
    monkeypatch.setattr(sys, "stderr", log)
    assert isinstance(progress.bar(10, "train", "step"), progress.Lines)
    off = progress.bar(10, "train", "step", enabled=False)  # log.progress=False: no output at all
    assert isinstance(off, tqdm) and off.disable
    monkeypatch.setitem(sys.modules, "ipykernel.zmqshell", types.ModuleType("ipykernel.zmqshell"))
    assert progress.live(log)  # a Jupyter kernel: its stderr is not a tty, but someone watches the bar
  assert (tmp_path / "log.txt").read_text() == ""
