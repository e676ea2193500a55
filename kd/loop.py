"""The training loop every kind of run shares: resume, log, test, checkpoint.

`run` drives a compiled step `train_step(state, *extra, batch)` (see
`kd.parallel.DataParallel.wrap`) over batches of `kd.data.select.train_batches`. The caller
builds the state and the step, so a variant with its own step (several
teachers, several students, a discriminator) reuses everything else.
"""
import itertools
import os
import signal
import time
from typing import Any, Callable, NamedTuple

import jax
from jax.experimental import multihost_utils
import numpy as np

from kd import checkpoint
from kd import runs
from kd.data import select
from kd.logger import MetricLogger, Progress


class NonFiniteLossError(FloatingPointError):
  pass


class _Preemption:
  """Turns SIGTERM or SIGINT (Ctrl-C) into the step at which to checkpoint
  and stop; a second Ctrl-C stops at once.

  Several processes (`jax.distributed` with its preemption service, on by
  default): JAX's own notifier catches SIGTERM on any process and every
  process stops at the same step (`reached_preemption_sync_point`), so all
  save the same checkpoint together; SIGINT is left alone there. One
  process: handlers of both signals.
  """
  EXIT_CODES = {'SIGTERM': 143, 'SIGINT': 130}  # 128 + the signal number.

  def __init__(self):
    self.requested = False
    self.signal = 'SIGTERM'  # The signal received (a sync point: SIGTERM).
    self._previous = {}
    self._sync = (jax.process_count() > 1 and
                  jax.config.jax_enable_preemption_service)

  def reached(self, step: int) -> bool:
    """Whether to save at `step` and stop; called at every step."""
    if self._sync:
      self.requested = multihost_utils.reached_preemption_sync_point(step)
    return self.requested

  def __enter__(self):
    # With the sync service, JAX's notifier holds SIGTERM: not taken over.
    for sig in (signal.SIGINT,) if self._sync else (signal.SIGTERM,
                                                      signal.SIGINT):
      try:
        self._previous[sig] = signal.signal(sig, self._handle)
      except ValueError:  # Not the main thread: leave signals alone.
        pass
    return self

  def _handle(self, signum, frame):
    del frame
    if signum == signal.SIGINT and (self._sync or self.requested):
      raise KeyboardInterrupt  # Asked again (or no way to sync): now.
    self.requested = True
    self.signal = signal.Signals(signum).name

  def __exit__(self, *exc):
    for sig, previous in self._previous.items():
      if previous is not None:  # None: not set from Python; nothing to put back.
        signal.signal(sig, previous)


def restore(config, workdir: str, state, name: str):
  """(checkpoint manager, state): the latest good checkpoint of `workdir`
  if there is one, else `state`."""
  mngr = checkpoint.manager(os.path.join(workdir, 'checkpoints'),
                            config.keep_checkpoints, config.to_dict())
  restored = checkpoint.restore_latest(mngr, jax.eval_shape(lambda: state))
  if restored is not None:
    print(f'[{name}] resuming from step {int(restored.step)}')
    return mngr, restored
  return mngr, state


class Best:
  """The best test accuracy of a run and its step, over its evaluations
  (those logged before a resume included). Ties keep the earliest."""

  def __init__(self, rows=()):
    self.accuracy, self.step = None, None
    for row in rows:
      self.update(row['step'], row)

  def update(self, step: int, stats: dict) -> None:
    acc = stats.get('test_accuracy')
    if acc is not None and (self.accuracy is None or acc > self.accuracy):
      self.accuracy, self.step = acc, step

  def summary(self) -> dict:
    if self.accuracy is None:
      return {}
    return {'best_test_accuracy': self.accuracy,
            'best_test_step': float(self.step)}


class Trained(NamedTuple):
  p_state: Any  # Replicated final state.
  seconds: float  # Training time, the final test excluded.
  final: dict  # `test(p_state)` at the last step.
  best: Best


class Sink(NamedTuple):
  """Where one run's results go."""
  name: str
  logger: MetricLogger
  mngr: Any  # Its checkpoint manager.
  lr_schedule: Callable | None = None


def run(config, name: str, parallel, mngr, logger: MetricLogger, state,
        train_step: Callable, extra: tuple, test: Callable, batches,
        lr_schedule: Callable | None = None, logged: tuple | None = None,
        later_steps: int = 0) -> Trained:
  """Trains `state` (host values, as `restore` returns it) to `config.steps`
  on `batches` (from `kd.data.select.train_batches(config, parallel,
  state.step)`), then tests it. The caller keeps `logger` open for its summary; it is closed
  here only on failure.

  `train_step` takes `config.steps_per_dispatch` = k batches stacked on a
  leading axis (`kd.steps.multi_step`), so everything below happens at
  multiples of k. Logs interval means of the step's metrics every
  `log_every` steps, writes `test(p_state)` (a dict; only its keys in
  `logged` if given) every `eval_every` steps and at the end, saves every
  `checkpoint_every` steps and at the end. SIGTERM (SIGINT, Ctrl-C) saves
  and exits with 143 (130); a non-finite loss stops the run and keeps the last good checkpoint.
  `later_steps`: steps of the stages after this one, for the ETA.
  """
  return _run(config, name, parallel, [Sink(name, logger, mngr, lr_schedule)],
              state, train_step, extra, test, batches, logged, later_steps,
              stacked=False)[0]


def run_group(config, name: str, parallel, sinks: list[Sink], state,
              train_step: Callable, extra: tuple, test: Callable, batches,
              logged: tuple | None = None) -> list[Trained]:
  """`run` for runs trained together (`kd.steps.vectorized`): `state`,
  each of `batches` and the step's metrics hold the runs on a leading axis,
  in the order of `sinks`, and `test` takes one run's replicated state.
  A non-finite loss in any run stops the group."""
  return _run(config, name, parallel, sinks, state, train_step, extra, test,
              batches, logged, 0, stacked=True)


def in_groups(batches, k: int):
  """Every `k` consecutive batches stacked on a new leading axis."""
  if k == 1:
    yield from batches
    return
  while len(group := list(itertools.islice(batches, k))) == k:
    yield jax.tree.map(lambda *xs: np.stack(xs), *group)


def _run(config, name, parallel, sinks, state, train_step, extra, test,
         batches, logged, later_steps, stacked: bool) -> list[Trained]:
  k = config.steps_per_dispatch
  start_step = int(np.max(state.step))
  if start_step % k:
    raise ValueError(
        f'[{name}] resuming from step {start_step}, which is not a multiple '
        f'of config.steps_per_dispatch={k}; resume with steps_per_dispatch '
        f'set to a divisor of {start_step} (e.g. 1)')
  part = ((lambda tree, r: jax.tree.map(lambda x: x[r], tree)) if stacked
          else (lambda tree, r: tree))
  bests = [Best(s.logger.drop_after(start_step)) for s in sinks]
  progress = Progress(name, config.steps, start_step, config.batch_size,
                      later_steps)
  p_state = parallel.replicate(state)
  last_saved, last_logged, pending = start_step, start_step, []
  # Compiled once: an optax schedule run eagerly compiles each of its ops.
  learning_rates = [s.lr_schedule and jax.jit(s.lr_schedule) for s in sinks]

  def run_states() -> list:
    """Each run's replicated state."""
    if not stacked:
      return [p_state]
    host = parallel.unreplicate(p_state)
    return [parallel.replicate(part(host, r)) for r in range(len(sinks))]

  def write_test(step, states) -> list[dict]:
    out = []
    for r, (sink, state_r) in enumerate(zip(sinks, states)):
      stats = test(state_r)
      row = {key: v for key, v in stats.items()
             if logged is None or key in logged}
      if step == start_step:  # The final test of a finished run, again.
        sink.logger.drop_at(step, row)
      sink.logger.write(step, row)
      bests[r].update(step, stats)
      out.append(stats)
    return out

  batches = parallel.prefetch(in_groups(batches, k),
                              lead=int(k > 1) + int(stacked))
  t_start = time.perf_counter()
  try:
    with _Preemption() as preemption:
      for step in range(start_step + k, config.steps + 1, k):
        batch = next(batches)
        if step == start_step + k:
          progress.compiling(step)
        p_state, metrics = train_step(p_state, *extra, batch)
        if step == start_step + k:
          jax.block_until_ready(metrics)
          progress.compiled(k)
        # Logged values are means of the metrics since the last log.
        pending.append(metrics)
        is_last = step == config.steps
        stop = preemption.reached(step)
        log_now = step % config.log_every == 0 or is_last
        save_now = step % config.checkpoint_every == 0 or is_last or stop
        if log_now or save_now:
          host = parallel.unreplicate(metrics)
          for r, sink in enumerate(sinks):
            values = part(host, r)
            if not all(np.isfinite(v) for v in values.values()):
              kept = (f'The last good checkpoint (step {last_saved}) is kept '
                      f'in {sink.mngr.directory}' if last_saved
                      else 'No checkpoint has been saved yet')
              raise NonFiniteLossError(
                  f'[{sink.name}] non-finite loss at step {step}: {values}. '
                  f'{kept}; lower the learning rate or check the data.')
        if log_now:
          rate = progress.rate(step)
          # Resumed between two logs: these means cover only the steps
          # after `resumed_at` (those before were in no logged row).
          mark = ({'resumed_at': start_step} if last_logged == start_step
                  and start_step % config.log_every else {})
          n, last_logged = step - last_logged, step
          host_sums = parallel.host_sum(pending)
          pending = []
          for r, sink in enumerate(sinks):
            means = {key: v / n for key, v in part(host_sums, r).items()}
            if learning_rates[r] is not None:
              means['learning_rate'] = learning_rates[r](step - 1)
            sink.logger.write(step, {**means, 'examples_per_sec': rate,
                                     **mark})
            if r == 0:
              progress.line(step, means, rate)
        if config.eval_every and step % config.eval_every == 0 and not is_last:
          write_test(step, run_states())
        if save_now:
          host_state = parallel.unreplicate(p_state)
          for r, sink in enumerate(sinks):
            checkpoint.save(sink.mngr, step, part(host_state, r))
          last_saved = step
        if stop and not is_last:
          print(f'[{name}] {preemption.signal}: saved step {step}; rerun '
                'the same command to resume')
          raise SystemExit(preemption.EXIT_CODES[preemption.signal])
  except BaseException:
    for sink in sinks:
      sink.logger.close()
    raise
  finally:
    # A pending async save must land even when the loop is interrupted.
    for sink in sinks:
      sink.mngr.wait_until_finished()
  for sink in sinks:
    sink.mngr.close()
  seconds = time.perf_counter() - t_start
  states = run_states()
  finals = write_test(config.steps, states)
  return [Trained(state_r, seconds, finals[r], bests[r])
          for r, state_r in enumerate(states)]


def train_variant(config, workdir: str, name: str, parallel, state,
                  train_step: Callable, extra: tuple, test: Callable) -> dict:
  """A whole run of a variant's own step: trains `state` with `run` (resuming
  from `workdir`'s checkpoints), then writes `summary.json` with the steps,
  training time and `test(p_state)`; returns the summary. A finished run is
  reused; `workdir` is locked, and must hold no run of another config."""
  if config.steps_per_dispatch != 1:
    raise ValueError(f'config.steps_per_dispatch={config.steps_per_dispatch}: '
                     "a variant's own step takes one batch per dispatch; set "
                     'it to 1')
  with runs.accepted(workdir, config, name) as done:
    if done is not None:
      return done
    mngr, state = restore(config, workdir, state, name)
    runs.write_json(os.path.join(workdir, 'config.json'), config.to_dict())
    logger = MetricLogger(workdir, config)
    trained = run(config, name, parallel, mngr, logger, state, train_step,
                  extra, test, select.train_batches(config, parallel,
                                                      int(state.step)))
    summary = {'steps': config.steps, 'train_seconds': trained.seconds,
               **trained.final}
    logger.summary(summary)
    logger.close()
    runs.write_json(os.path.join(workdir, 'summary.json'), summary)
    print_done(name, workdir)
  return summary


def print_done(name: str, workdir: str, exported=()) -> None:
  """Where a finished run's results are: the summary, checkpoints, exports."""
  if jax.process_index() == 0:
    print(f'[{name}] done: {os.path.join(workdir, "summary.json")}, '
          f'checkpoints in {os.path.join(workdir, "checkpoints")}'
          + ''.join(f', exported {f}' for f in exported))
