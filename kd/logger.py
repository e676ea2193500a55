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

log = logging.getLogger(__name__)

WANDB_MODES = ('offline', 'online', 'disabled')


def _start_wandb(config, workdir: str, backend=None):
  """Returns a wandb run, or None. Logging never stops training.

  `backend` stands in for the `wandb` module (tests pass a recorder to see
  exactly what would be sent)."""
  mode = config.wandb.mode
  if mode not in WANDB_MODES:
    raise ValueError(f'config.wandb.mode={mode!r}; valid: {WANDB_MODES}')
  if mode == 'disabled':
    return None
  try:
    if backend is None:
      import wandb as backend  # pylint: disable=import-outside-toplevel
    return backend.init(
        mode=mode, dir=workdir, config=config.to_dict(),
        project=config.wandb.project, group=config.wandb.group or None,
        tags=list(config.wandb.tags) or None,
        name=config.wandb.name or os.path.basename(workdir.rstrip('/')),
        reinit='finish_previous', settings=backend.Settings(silent=True))
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

  def drop_after(self, step: int) -> None:
    """Forgets rows past `step`, the checkpoint a resumed run restarts from."""
    if self.active and os.path.exists(self.path):
      rows = [r for r in read_metrics(os.path.dirname(self.path))
              if r['step'] <= step]
      with open(self.path + '.tmp', 'w') as f:
        f.writelines(json.dumps(r) + '\n' for r in rows)
      os.replace(self.path + '.tmp', self.path)

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
  """Prints `name step/total loss examples/s ETA` lines."""

  def __init__(self, name: str, total_steps: int, start_step: int,
               batch_size: int, stream=sys.stdout):
    self.name, self.total, self.batch_size = name, total_steps, batch_size
    self.stream = stream if jax.process_index() == 0 else None
    self._t0, self._s0 = time.perf_counter(), start_step

  def rate(self, step: int) -> tuple[float, int]:
    """Examples per second and number of steps since the last call."""
    now, steps = time.perf_counter(), step - self._s0
    rate = steps * self.batch_size / max(now - self._t0, 1e-9)
    self._t0, self._s0 = now, step
    return rate, steps

  def line(self, step: int, metrics: dict, rate: float) -> None:
    if self.stream is None:
      return
    eta = (self.total - step) * self.batch_size / rate if rate > 0 else math.inf
    shown = ' '.join(f'{k} {metrics[k]:.4f}' for k in ('loss', 'ce', 'accuracy')
                     if k in metrics)
    print(f'[{self.name}] step {step}/{self.total} {shown} '
          f'{rate:,.0f} ex/s ETA {_duration(eta)}', file=self.stream,
          flush=True)


def _duration(seconds: float) -> str:
  if not math.isfinite(seconds):
    return '?'
  m, s = divmod(int(seconds), 60)
  return f'{m}m{s:02d}s' if m else f'{s}s'
