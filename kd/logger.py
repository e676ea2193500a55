"""Metrics to a JSON-lines file and (optionally) Weights & Biases, plus a
periodic progress line. Only process 0 writes anything."""
import json
import logging
import math
import os
import sys
import time
import warnings

import jax

from kd import files

log = logging.getLogger(__name__)

WANDB_MODES = ('offline', 'online', 'disabled')
# wandb lists the installed packages for each run (0.25-0.5 s): once a
# process is enough, for the runs trained together (kd.vectorize) share it.
_packages_listed = False


def _start_wandb(config, workdir: str, backend=None):
  """Returns a wandb run, or None. Logging never stops training.

  `backend` stands in for the `wandb` module (tests pass a recorder to see
  exactly what would be sent)."""
  mode = config.wandb.mode
  if mode not in WANDB_MODES:
    raise ValueError(f'config.wandb.mode={mode!r}; valid: {WANDB_MODES}')
  if mode == 'disabled':
    return None
  global _packages_listed
  try:
    if backend is None:
      import wandb as backend  # pylint: disable=import-outside-toplevel
    settings = backend.Settings(silent=True,
                                x_save_requirements=not _packages_listed)
    _packages_listed = True
    return backend.init(
        mode=mode, dir=workdir, config=config.to_dict(),
        project=config.wandb.project, group=config.wandb.group or None,
        tags=list(config.wandb.tags) or None,
        name=config.wandb.name or os.path.basename(workdir.rstrip('/')),
        # Runs trained together (kd.vectorize) log at once, each to its own.
        reinit='create_new', settings=settings)
  except Exception as e:  # pylint: disable=broad-except
    warnings.warn(f'wandb could not start ({type(e).__name__}: {e}); '
                  'training goes on with JSON-lines metrics only')
    return None


class MetricLogger:
  """Appends `{"step": s, ...}` lines to `metrics.jsonl` and logs to wandb."""

  def __init__(self, workdir: str, config, process_index: int | None = None,
               backend=None):
    process_index = (jax.process_index() if process_index is None
                     else process_index)
    self.active = process_index == 0
    self.path = os.path.join(workdir, 'metrics.jsonl')
    self._wandb = (_start_wandb(config, workdir, backend) if self.active
                   else None)

  def drop_after(self, step: int) -> list[dict]:
    """Forgets rows past `step`, the checkpoint a resumed run restarts from;
    returns the rows kept (none on other processes)."""
    return self._keep(lambda r: r['step'] <= step)

  def drop_at(self, step: int, keys) -> None:
    """Forgets the rows of `step` holding any of `keys`: a row about to be
    written again (the final test of a finished run resumed after its
    summary.json was lost), so that the file holds it once."""
    keys = set(keys)
    self._keep(lambda r: r['step'] != step or not keys & r.keys())

  def _keep(self, keep) -> list[dict]:
    if not (self.active and os.path.exists(self.path)):
      return []
    rows = [r for r in read_metrics(os.path.dirname(self.path)) if keep(r)]
    files.write_bytes(self.path, ''.join(json.dumps(r) + '\n' for r in rows))
    return rows

  def write(self, step: int, metrics: dict) -> None:
    if not self.active:
      return
    row = {'step': int(step), **{k: float(v) for k, v in metrics.items()}}
    with open(self.path, 'a') as f:
      f.write(json.dumps(row) + '\n')
    if self._wandb is not None:
      try:
        self._wandb.log(row, step=int(step))
      except Exception as e:  # pylint: disable=broad-except
        warnings.warn(f'wandb.log failed ({e}); disabling wandb for this run')
        self._wandb = None

  def summary(self, values: dict) -> None:
    if self._wandb is not None:
      try:
        self._wandb.summary.update(values)
      except Exception as e:  # pylint: disable=broad-except
        warnings.warn(f'wandb summary failed ({e})')

  def close(self) -> None:
    if self._wandb is not None:
      try:
        self._wandb.finish()
      except Exception as e:  # pylint: disable=broad-except
        warnings.warn(f'wandb.finish failed ({e})')
      self._wandb = None


def read_metrics(workdir: str) -> list[dict]:
  """The rows of `metrics.jsonl`. A last line cut short (a process killed
  while writing it) is dropped with a warning; a bad line before it is an
  error naming the file and line."""
  path = os.path.join(workdir, 'metrics.jsonl')
  if not os.path.exists(path):
    return []
  with open(path) as f:
    lines = [(i, line) for i, line in enumerate(f, 1) if line.strip()]
  rows = []
  for i, line in lines:
    try:
      rows.append(json.loads(line))
    except json.JSONDecodeError as e:
      if i != lines[-1][0]:
        raise ValueError(f'{path} line {i} is not JSON ({e}); delete that '
                         'line (or the file) and rerun') from e
      warnings.warn(f'{path}: dropping its last line, cut short: {line!r}')
  return rows


class Progress:
  """Prints `[name] step s/total loss .. ex/s ETA` lines, and a line before
  and after the first step compiles. The ETA counts this run's remaining
  steps and `later_steps` (later pipeline stages) at an exponential moving
  average of the time per step (weight `smoothing` on the newest interval),
  compilation excluded."""

  def __init__(self, name: str, total_steps: int, start_step: int,
               batch_size: int, later_steps: int = 0, stream=sys.stdout,
               smoothing: float = 0.3):
    self.name, self.total, self.batch_size = name, total_steps, batch_size
    self.later_steps, self.smoothing = later_steps, smoothing
    self.stream = stream if jax.process_index() == 0 else None
    self._t0, self._s0 = time.perf_counter(), start_step
    self.step_seconds = None  # The moving average.
    self._first = 0.0  # Seconds of the first step, compilation included.
    self._first_steps = 1  # Steps of the first dispatch.

  def _print(self, text: str) -> None:
    if self.stream is not None:
      print(f'[{self.name}] {text}', file=self.stream, flush=True)

  def compiling(self, step: int) -> None:
    self._print(f'compiling the step (step {step}/{self.total}) ...')
    self._t0 = time.perf_counter()

  def compiled(self, steps: int = 1) -> None:
    """After the first dispatch (of `steps` steps) has run (its outputs
    ready)."""
    now = time.perf_counter()
    self._first = now - self._t0
    self._print(f'compiled and ran the first step in '
                f'{duration(self._first, exact=True)}')
    self._t0, self._s0 = now, self._s0 + steps
    self._first_steps = steps

  def rate(self, step: int) -> float:
    """Examples per second since the last call (or compilation)."""
    now, steps = time.perf_counter(), step - self._s0
    if steps == 0:  # Only the first dispatch since compiling: count it.
      steps, self._t0 = self._first_steps, self._t0 - self._first
    seconds = max(now - self._t0, 1e-9)
    if steps > 0:
      per_step = seconds / steps
      self.step_seconds = per_step if self.step_seconds is None else (
          self.smoothing * per_step + (1 - self.smoothing) * self.step_seconds)
    self._t0, self._s0 = now, step
    return steps * self.batch_size / seconds

  def eta(self, step: int, rate: float) -> float:
    remaining = self.total - step + self.later_steps
    if self.step_seconds is not None:
      return remaining * self.step_seconds
    return remaining * self.batch_size / rate if rate > 0 else math.inf

  def line(self, step: int, metrics: dict, rate: float) -> None:
    shown = ' '.join(f'{k} {metrics[k]:.4f}' for k in ('loss', 'ce', 'accuracy')
                     if k in metrics)
    scope = ' (pipeline)' if self.later_steps else ''
    self._print(f'step {step}/{self.total} {shown} {rate:,.0f} ex/s '
                f'ETA{scope} {duration(self.eta(step, rate))}')


def duration(seconds: float, exact: bool = False) -> str:
  if not math.isfinite(seconds):
    return '?'
  if exact and seconds < 60:
    return f'{seconds:.1f}s'
  m, s = divmod(int(seconds), 60)
  return f'{m}m{s:02d}s' if m else f'{s}s'
