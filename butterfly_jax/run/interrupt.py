"""Stopping a run on a signal so that it resumes exactly: a scheduler's warning before its time limit (SLURM's
``--signal=B:USR1@SECONDS``), a pre-emption's SIGTERM.

:func:`install` makes the given signals stop requests. Only the processes that run runs call it: the command line
(:mod:`butterfly_jax.main`) and the launcher's tasks and workers (:mod:`butterfly_jax.launch.run_one`); importing the
package installs nothing, so a notebook or a program that calls :func:`butterfly_jax.run.experiment.run` keeps its
own signal handling. A run asks :func:`requested` after every training step: on a request it finishes the step,
writes a training-state checkpoint at that step boundary (the kind a resume reads) and raises :class:`Interrupted`;
in the evaluation, which ends the run and has no state to save, it raises at the next evaluation batch (the
training state is checkpointed where the training ended). The command then exits with :data:`EXIT_STATUS`, and the
same command resumes the run, bitwise as if it had not stopped. Signals after the first change nothing (a scheduler
may send SIGTERM after its warning); SIGKILL stops a run at once, and it resumes from its newest checkpoint as ever.
"""

import os
import signal

EXIT_STATUS = 75  # sysexits.h's EX_TEMPFAIL, "a temporary failure; the user is invited to retry"
DEFAULT_SIGNALS = ("USR1", "TERM")

_received = []  # the first stop signal received (its number), once one has arrived


class Interrupted(Exception):
  """A run stopped on a stop request (signal ``signum``), its training state checkpointed at ``phase`` step
  ``step`` in ``checkpoint`` (the folder it resumes from; None where a resume restarts the run, when it stopped
  before any checkpoint)."""

  def __init__(self, signum: int, phase: str | None, step: int | None, checkpoint, where: str):
    self.signum, self.phase, self.step, self.checkpoint = signum, phase, step, checkpoint
    saved = (f"training state at {phase} step {step} in {checkpoint}" if checkpoint is not None
             else "no training state to resume from (it starts again)")
    super().__init__(f"stopped by {name(signum)} {where}; {saved}; run the same command again to resume")


def name(signum: int) -> str:
  """``SIGUSR1`` for 10."""
  try:
    return signal.Signals(signum).name
  except ValueError:
    return f"signal {signum}"


def parse(names) -> tuple:
  """The signal numbers of ``names`` (``"USR1,TERM"`` or a sequence; ``SIGUSR1``, ``usr1`` and ``10`` alike; empty:
  none); a ValueError naming what is not a signal this process can handle (SIGKILL and SIGSTOP cannot be)."""
  if isinstance(names, str):
    names = names.split(",")
  out = []
  for text in (str(n).strip() for n in names):
    if not text:
      continue
    key = text.upper() if text.upper().startswith("SIG") else "SIG" + text.upper()
    try:
      signum = signal.Signals(int(text)) if text.isdigit() else signal.Signals[key]
    except (KeyError, ValueError):
      raise ValueError(f"{text!r} is not a signal; for example USR1, USR2, TERM, INT") from None
    if signum in (signal.SIGKILL, signal.SIGSTOP):
      raise ValueError(f"{signum.name} cannot be caught; for example USR1, USR2, TERM, INT")
    if signum not in out:
      out.append(signum)
  return tuple(out)


def _handle(signum, _frame) -> None:
  """The handler: records the first stop signal and says so on file descriptor 2 (``os.write``: a print here
  could re-enter a print the run is making)."""
  if _received:
    return
  _received.append(signum)
  message = (f"butterfly_jax: {name(signum)}: stopping at the next step boundary (a training-state checkpoint, "
             f"then exit status {EXIT_STATUS}: the same command resumes)\n")
  try:
    os.write(2, message.encode())
  except OSError:
    pass


def install(signums) -> dict:
  """Makes each of ``signums`` (numbers, or names for :func:`parse`) a stop request, forgetting an earlier request;
  returns the handlers it replaced (``{signum: handler}``, for :func:`restore`)."""
  if isinstance(signums, str) or any(isinstance(s, str) for s in signums):
    signums = parse(signums)
  clear()
  return {s: signal.signal(s, _handle) for s in signums}


def restore(previous: dict) -> None:
  """Puts back the handlers :func:`install` replaced."""
  for s, handler in previous.items():
    signal.signal(s, handler)


def requested() -> int | None:
  """The stop signal received (its number), or None: whether the run in this process should stop."""
  return _received[0] if _received else None


def clear() -> None:
  """Forgets a stop request (a test that goes on in the same process)."""
  _received.clear()
