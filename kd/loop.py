"""The training loop every kind of run shares: resume, log, test, checkpoint.

`run` drives a compiled step `train_step(state, *extra, batch)` (see
`kd.parallel.DataParallel.wrap`) over the config's training data. The caller
builds the state and the step, so a variant with its own step (several
teachers, several students, a discriminator) reuses everything else.
"""
import os
import signal
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from kd import checkpoint
from kd import data
from kd import runs
from kd.logger import MetricLogger, Progress


class NonFiniteLossError(FloatingPointError):
  pass


class _Preemption:
  """Turns SIGTERM into a request to checkpoint and stop."""

  def __init__(self):
    self.requested = False
    self._previous = None

  def __enter__(self):
    try:
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    except ValueError:  # Not the main thread: leave signals alone.
      self._previous = None
    return self

  def _handle(self, signum, frame):
    del signum, frame
    self.requested = True

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)


def restore(config, workdir: str, state, name: str):
  """(checkpoint manager, state): the latest good checkpoint of `workdir`
  if there is one, else `state`."""
  mngr = checkpoint.manager(os.path.join(workdir, 'checkpoints'),
                            config.keep_checkpoints)
  restored = checkpoint.restore_latest(mngr, jax.eval_shape(lambda: state))
  if restored is not None:
    print(f'[{name}] resuming from step {int(restored.step)}')
    return mngr, restored
  return mngr, state


def run(config, name: str, parallel, mngr, logger: MetricLogger, state,
        train_step: Callable, extra: tuple, test: Callable,
        lr_schedule: Callable | None = None,
        extend_batch: Callable | None = None):
  """Trains `state` (host values, as `restore` returns it) to `config.steps`;
  returns (replicated final state, training seconds). The caller keeps
  `logger` open for its summary; it is closed here only on failure.

  Logs interval means of the step's metrics every `log_every` steps, writes
  `test(p_state)` (a dict) every `eval_every` steps, saves every
  `checkpoint_every` steps and at the end. SIGTERM saves and exits with 143;
  a non-finite loss stops the run and keeps the last good checkpoint.
  `extend_batch` adds host-side entries to each batch (cached teacher
  outputs).
  """
  d = config.data
  start_step = int(state.step)
  logger.drop_after(start_step)
  progress = Progress(name, config.steps, start_step, config.batch_size)
  batches = data.train_batches(
      d.name, batch_size=parallel.check_batch_size(config.batch_size),
      seed=config.seed, augment=d.augment, start_step=start_step,
      shuffle_buffer=d.shuffle_buffer, process_split=d.process_split,
      exclude_classes=tuple(d.exclude_classes), data_dir=d.data_dir or None,
      image_size=d.image_size or None, download=d.download)
  p_state = parallel.replicate(state)
  last_saved, sums = start_step, None
  t_start = time.perf_counter()
  try:
    with _Preemption() as preemption:
      for step in range(start_step + 1, config.steps + 1):
        batch = next(batches)
        if extend_batch is not None:
          batch = extend_batch(batch)
        batch = parallel.shard(batch)
        p_state, metrics = train_step(p_state, *extra, batch)
        # Sums stay on the device; logged values are means since last log.
        sums = metrics if sums is None else jax.tree.map(jnp.add, sums, metrics)
        is_last = step == config.steps
        log_now = step % config.log_every == 0 or is_last
        save_now = (step % config.checkpoint_every == 0 or is_last
                    or preemption.requested)
        if log_now or save_now:
          host = parallel.unreplicate(metrics)
          if not all(np.isfinite(v) for v in host.values()):
            kept = (f'The last good checkpoint (step {last_saved}) is kept '
                    f'in {mngr.directory}' if last_saved
                    else 'No checkpoint has been saved yet')
            raise NonFiniteLossError(
                f'[{name}] non-finite loss at step {step}: {host}. {kept}; '
                'lower the learning rate or check the data.')
        if log_now:
          rate, n = progress.rate(step)
          means = {k: v / n for k, v in parallel.unreplicate(sums).items()}
          sums = None
          if lr_schedule is not None:
            means['learning_rate'] = lr_schedule(step - 1)
          logger.write(step, {**means, 'examples_per_sec': rate})
          progress.line(step, means, rate)
        if config.eval_every and step % config.eval_every == 0 and not is_last:
          logger.write(step, test(p_state))
        if save_now:
          checkpoint.save(mngr, step, parallel.unreplicate(p_state))
          last_saved = step
        if preemption.requested and not is_last:
          print(f'[{name}] SIGTERM: saved step {step}; rerun to resume')
          raise SystemExit(143)
  except BaseException:
    logger.close()
    raise
  finally:
    # A pending async save must land even when the loop is interrupted.
    mngr.wait_until_finished()
  mngr.close()
  return p_state, time.perf_counter() - t_start


def fit(config, workdir: str, name: str, parallel, state, train_step: Callable,
        extra: tuple, test: Callable) -> dict:
  """A whole run of a variant's own step: trains `state` with `run` (resuming
  from `workdir`'s checkpoints), then writes `summary.json` with the steps,
  training time and `test(p_state)`; returns the summary. A finished run is
  reused; `workdir` is locked, and must hold no run of another config."""
  with runs.lock(workdir):
    runs.check_identity(workdir, config)
    done = runs.finished_summary(workdir, config.steps)
    if done is not None:
      print(f'[{name}] already finished in {workdir}; reusing its results')
      return done
    mngr, state = restore(config, workdir, state, name)
    runs.write_json(os.path.join(workdir, 'config.json'), config.to_dict())
    logger = MetricLogger(workdir, config)
    p_state, seconds = run(config, name, parallel, mngr, logger, state,
                           train_step, extra, test)
    summary = {'steps': config.steps, 'train_seconds': seconds,
               **test(p_state)}
    logger.write(config.steps, summary)
    logger.summary(summary)
    logger.close()
    runs.write_json(os.path.join(workdir, 'summary.json'), summary)
  return summary
