"""Progress output that suits where it goes: a live tqdm bar in a terminal or a notebook; elsewhere (a SLURM
log, ``launch``'s per-run ``log.txt``, a pipe) a plain line every ``EVERY_S`` seconds and one at the end, so a
log file is a readable record of the run rather than thousands of carriage-return frames::

  train 1200/2808 (43%) 12.3 step/s, ETA 2m10s; phase=children loss=0.503
  train 2808/2808 (100%) 12.2 step/s, took 3m50s; phase=children loss=0.408

Both have the interface the runs use: ``update(n)``, ``set_postfix(**values)``, ``close()``, ``with``.
"""

import sys
import time

from tqdm.auto import tqdm  # the notebook front end in a notebook, the text one elsewhere

from butterfly_jax.config import PROGRESS_EVERY_S

EVERY_S = PROGRESS_EVERY_S  # seconds between plain lines (config.py owns the number: its field docs quote it)


def _in_notebook() -> bool:
  """Whether this process is a Jupyter kernel (JupyterLab, Colab, VS Code; JupyterLite): tqdm.auto's test."""
  return "ipykernel.zmqshell" in sys.modules or "IPython.utils._process_emscripten" in sys.modules


def live(file=None) -> bool:
  """Whether progress written to ``file`` (default ``sys.stderr``, where tqdm writes) is seen live: a terminal
  or a notebook. A file or a pipe is not."""
  if _in_notebook():
    return True
  file = sys.stderr if file is None else file
  try:
    return bool(file.isatty())
  except (AttributeError, ValueError, OSError):  # no isatty, or a closed file
    return False


def bar(total: int, desc: str, unit: str, initial: int = 0, enabled: bool = True):
  """A progress bar over ``total`` ``unit`` (``initial`` already done): tqdm where :func:`live`, else
  :class:`Lines` on ``sys.stderr``; nothing at all unless ``enabled``."""
  if not enabled:
    return tqdm(total=total, disable=True)
  if live():
    return tqdm(total=total, initial=initial, desc=desc, unit=unit, dynamic_ncols=True)
  return Lines(total, desc, unit, initial)


def duration(seconds: float) -> str:
  """``42s``, ``2m10s``, ``3h05m``."""
  s = int(round(seconds))
  if s < 60:
    return f"{s}s"
  if s < 3600:
    return f"{s // 60}m{s % 60:02d}s"
  return f"{s // 3600}h{s % 3600 // 60:02d}m"


def _number(x: float) -> str:
  """Three significant digits, without an exponent: ``0.125``, ``12.3``, ``2534``."""
  return f"{x:.0f}" if x >= 100 else f"{x:.3g}"


class Lines:
  """Progress as plain lines on ``file`` (default: ``sys.stderr`` when written): one at the first update
  ``every_s`` seconds after the previous line (or the start), and one at :meth:`close`."""

  def __init__(self, total: int, desc: str, unit: str, initial: int = 0, file=None, every_s: float = EVERY_S,
               clock=time.monotonic):
    if every_s <= 0:
      raise ValueError(f"every_s: {every_s} seconds; it must be > 0")
    self.total, self.desc, self.unit, self.initial, self.n = total, desc, unit, initial, initial
    self.file, self.every_s, self.clock = file, every_s, clock
    self.postfix = {}
    self.start = self.printed_at = clock()
    self.closed = False

  def update(self, n: int = 1) -> None:
    self.n += n
    if self.clock() - self.printed_at >= self.every_s:
      self._print()

  def set_postfix(self, **values) -> None:
    self.postfix = values

  def close(self) -> None:
    if not self.closed:
      self._print(final=True)
    self.closed = True

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()

  def line(self, final: bool = False) -> str:
    """The progress line as it stands (``final``: with the time taken instead of the time left)."""
    elapsed = self.clock() - self.start
    done = self.n - self.initial  # in this process: a resumed run's earlier steps took no time here
    rate = done / elapsed if done > 0 and elapsed > 0 else None
    parts = [f"{self.desc} {self.n}/{self.total}" + (f" ({100 * self.n // self.total}%)" if self.total else "")]
    if rate is not None:
      parts.append(f"{_number(rate)} {self.unit}/s" if rate >= 0.1 else f"{_number(1 / rate)} s/{self.unit}")
    if final:
      parts[-1] += f", took {duration(elapsed)}"
    elif rate is not None and self.total:
      parts[-1] += f", ETA {duration(max(self.total - self.n, 0) / rate)}"
    text = " ".join(parts)
    if self.postfix:
      text += "; " + " ".join(f"{k}={v}" for k, v in self.postfix.items())
    return text

  def _print(self, final: bool = False) -> None:
    file = sys.stderr if self.file is None else self.file
    print(self.line(final), file=file, flush=True)
    self.printed_at = self.clock()
