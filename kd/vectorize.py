"""Runs trained together: one step, `jax.vmap`-ed over their stacked states.

Runs that differ only in `VARIED` (seed, peak learning rate, mixup alpha,
loss weights, temperatures: numbers that change no shape) and in `PER_RUN`
fields train as one group: their train states stacked on a leading run
axis, each run's numbers passed to the step as data (`kd.train.run_values`,
`kd.steps.vectorized`), the teacher shared. Each run still reads its own
batches (its seed's data order; runs of one data stream share its pipeline
and the device gets its batch once, and a live teacher runs once per
distinct batch: `shared_streams`) and writes its own folder (config.json,
metrics.jsonl, checkpoints, summary.json) as if trained alone, so a run of
a group equals its twin trained alone up to float rounding.

  python -m kd.main --config=configs/x.py --workdir=DIR --vectorize_seeds=0,1,2
      # DIR/seed=0, DIR/seed=1, DIR/seed=2, trained together
  python -m launch.sweep SPEC --workdir=ROOT --vectorize
      # every group of the spec's runs that can train together does

Pipelines train stage by stage: the first stages of all pipelines, grouped
(a stage shared by several, such as one teacher directory, trains once),
then the second stages, and so on. A group resumes from its runs' latest
common checkpoint (a run's later checkpoints are deleted). Not vectorized:
text datasets, `parallel='sharded'`, teachers split over devices
(`distill.teacher.model_shards > 1`). `summary.json`'s `train_seconds` is
the group's.
"""
import contextlib
import json
import os
import time
from typing import Any, NamedTuple

import jax
import ml_collections as mc
import numpy as np

from kd import checkpoint
from kd import config as kd_config
from kd import data
from kd import fields
from kd import loop
from kd import report
from kd import runs
from kd import train
from kd.data import select
from kd.logger import MetricLogger

# Fields runs of one group may differ in, passed to the step as data (see
# `kd.train.run_values`); '*' is any term name.
VARIED = ('seed', 'optimizer.lr', 'mixup_alpha', 'distill.ce_weight',
          'distill.terms.*.weight', 'distill.terms.*.kwargs.temperature')
# Fields each run of a group handles alone (logging, export, checkpoints).
PER_RUN = ('wandb', 'export', 'evaluate', 'keep_checkpoints')


def _matches(path: str, pattern: str) -> bool:
  parts, want = path.split('.'), pattern.split('.')
  if pattern in PER_RUN:
    return parts[0] == pattern
  return len(parts) == len(want) and all(w in ('*', p)
                                         for p, w in zip(parts, want))


def _shared(config) -> dict:
  """The fields every run of a group has in common: all but `VARIED` and
  `PER_RUN`, and whether mixup is on (its alpha may vary)."""
  flat = runs._flat(json.loads(json.dumps(config.to_dict())))  # pylint: disable=protected-access
  out = {k: v for k, v in flat.items()
         if not any(_matches(k, p) for p in VARIED + PER_RUN)}
  # A varied number must be set in every run (a term's temperature).
  out.update({f'{k} (set)': True for k in flat
              if any(_matches(k, p) for p in VARIED)})
  out['mixup'] = bool(config.mixup_alpha)
  return out


def _unsupported(c):
  """(field, why) of a run that trains only alone, else None."""
  for field, bad, why in (
      ('data.name', data.text.is_text(c.data.name),
       'text runs train one at a time'),
      ('parallel', c.parallel == 'sharded',
       "parallel='sharded' trains runs one at a time"),
      ('distill.teacher.model_shards', c.distill.teacher.model_shards > 1,
       'a teacher split over devices serves one run at a time')):
    if bad:
      return field, why
  return None


def group_key(config) -> str:
  """Runs of equal keys can train together (a run that trains only alone
  has a key of its own)."""
  if _unsupported(config):
    return f'alone {id(config)}'
  return json.dumps(_shared(config), sort_keys=True)


def check_group(configs) -> None:
  """Raises ValueError naming a field in which runs differ that they may
  not differ in to train together, or a kind of run that cannot."""
  for c in configs:
    if _unsupported(c):
      field, why = _unsupported(c)
      value = fields.get(c, field)
      raise ValueError(f'config.{field}={value!r}: {why}; train it '
                       'without vectorizing')
  first = _shared(configs[0])
  for c in configs[1:]:
    other = _shared(c)
    for key in sorted(first.keys() | other.keys()):
      if first.get(key) != other.get(key):
        what = ('mixup_alpha: 0 (off) in one run, > 0 in another' if
                key == 'mixup' else
                f'{key}: {first.get(key)!r} vs {other.get(key)!r}')
        raise ValueError(
            f'runs trained together may differ only in {", ".join(VARIED)} '
            f'(and {", ".join(PER_RUN)}); config.{what}. Train them in '
            'separate groups')


def group(items, key=lambda item: item):
  """`items` in lists of equal `group_key(key(item))`, in first-seen order."""
  groups = {}
  for item in items:
    groups.setdefault(group_key(key(item)), []).append(item)
  return list(groups.values())


def stack(trees):
  """Trees of equal structure as one, each leaf stacked on a new axis 0."""
  return jax.tree.map(lambda *xs: np.stack([np.asarray(x) for x in xs]),
                      *trees)


def _restore_common(configs, workdirs, states, names):
  """(managers, states): every run restored at the latest step all of them
  have a checkpoint of (their later checkpoints deleted), or from `states`."""
  mngrs = [checkpoint.manager(os.path.join(w, 'checkpoints'),
                              c.keep_checkpoints, c.to_dict())
           for c, w in zip(configs, workdirs)]
  step = max(set.intersection(*(set(m.all_steps()) for m in mngrs)),
             default=0)
  for m in mngrs:
    for later in [s for s in m.all_steps() if s > step]:
      m.delete(later)
  if not step:
    return mngrs, states
  print(f'[{names[0]} x{len(names)}] resuming from step {step}')
  restored = []
  for m, state in zip(mngrs, states):
    restored.append(m.restore(step, args=checkpoint.ocp.args.StandardRestore(
        jax.eval_shape(lambda s=state: s))))
  return mngrs, restored


def train_group(configs, workdirs, names) -> list[dict]:
  """Trains runs `configs` (with `check_group`) in `workdirs` together;
  returns their summaries (finished runs are reused, as `kd.train`
  does)."""
  for c in configs:
    kd_config.validate(c)
  if len(configs) > 1:
    check_group(configs)
  with contextlib.ExitStack() as stack_:
    done = [stack_.enter_context(runs.accepted(w, c, n))
            for c, w, n in zip(configs, workdirs, names)]
    todo = [i for i, d in enumerate(done) if d is None]
    if todo:
      pick = lambda xs: [xs[i] for i in todo]
      for i, s in zip(todo, _train(pick(configs), pick(workdirs),
                                   pick(names))):
        done[i] = s
    return done


def _train(configs, workdirs, names) -> list[dict]:
  if len(configs) == 1:
    return [train.train_and_evaluate(configs[0], workdirs[0], names[0])]
  name = f'{names[0]} x{len(configs)}'
  built = [train.build(c, w, n) for c, w, n in zip(configs, workdirs, names)]
  c0, b0 = configs[0], built[0]
  src = train.teacher_source(c0, workdirs[0], b0)
  loggers = [MetricLogger(w, c) for c, w in zip(configs, workdirs)]
  mngrs, states = _restore_common(configs, workdirs,
                                  [b.state for b in built], names)
  start = int(states[0].step)
  extend = src.extend_batch or (lambda batch: batch)
  stream_of, streams = shared_streams(configs, lambda c: map(
      extend, select.train_batches(c, b0.parallel, start)))
  train_step, eval_fn = train.compile_steps(
      c0, b0, src, stack([train.run_values(c) for c in configs]), stream_of)
  for c, w in zip(configs, workdirs):  # The runs are accepted.
    runs.write_json(os.path.join(w, 'config.json'), c.to_dict())
  sinks = [loop.Sink(n, lg, m, b.lr_schedule)
           for n, lg, m, b in zip(names, loggers, mngrs, built)]
  trained = loop.run_group(c0, name, b0.parallel, sinks, stack(states),
                           train_step, src.train_extra,
                           train.tester(c0, b0, src, eval_fn),
                           map(stack, streams), logged=train.TEST_ROW)
  return [train.finish(c, w, n, b, src, t, lg) for c, w, n, b, t, lg in
          zip(configs, workdirs, names, built, trained, loggers)]


def shared_streams(configs, make):
  """(stream_of, batches): run r reads distinct data stream stream_of[r]
  (`kd.data.select.stream_key`: the runs of a seed that differ only in loss settings
  share one), and `batches` yields a list of each stream's batch a step,
  from one iterator `make(c)` per stream."""
  keys = [select.stream_key(c) for c in configs]
  made = {}
  for k, c in zip(keys, configs):
    if k not in made:
      made[k] = make(c)
  stream_of = np.array([list(made).index(k) for k in keys], np.int32)
  return stream_of, map(list, zip(*made.values()))


def _stages(config, workdir: str) -> list[tuple]:
  """(name, run config, directory) of each stage of a pipeline in order
  (teacher and init_from stage names resolved), or of the one run."""
  if 'stages' not in config:
    return [('train', config, workdir)]
  dirs = kd_config.stage_dirs(config, workdir)
  out = []
  for n in config.stage_order:
    stage = mc.ConfigDict(config.stages[n].to_dict())
    if stage.distill.teacher.workdir in config.stages:
      stage.distill.teacher.workdir = dirs[stage.distill.teacher.workdir]
    if stage.get('init_from') in config.stages:
      stage.init_from = dirs[stage.init_from]
    out.append((n, stage, dirs[n]))
  return out


class Job(NamedTuple):
  """One run (or stage) to train, for the pipelines `users` (indices)."""
  users: list
  name: str
  config: Any
  workdir: str


def plan(configs, workdirs) -> list[list[list[Job]]]:
  """For each n (stage n of every pipeline; a single run is one stage), the
  groups of those runs that train together. A run directory shared by
  several pipelines (one teacher) is one job."""
  plans = [_stages(c, w) for c, w in zip(configs, workdirs)]
  waves = []
  for n in range(max(len(p) for p in plans)):
    jobs = {}
    for i, stages in enumerate(plans):
      if n < len(stages):
        name, c, d = stages[n]
        jobs.setdefault(os.path.realpath(d), Job([], name, c, d)).users.append(i)
    waves.append(group(list(jobs.values()), key=lambda job: job.config))
  return waves


def train_all(configs, workdirs, on_error=None) -> list[dict]:
  """Trains runs or pipelines (`configs`, in `workdirs`), each group of
  `plan` at once; returns their summaries (a pipeline's: `stage/key`, as
  `kd.main` writes).

  With `on_error(i, exception)`, a bad run does not stop the others: a run
  that cannot start, or that fails alone, is reported to `on_error` (its
  later stages skipped, its summary None), and a group that fails trains
  its runs again one at a time. Without it the first error is raised."""
  failed = {}

  def fail(users, e):
    if on_error is None:
      raise e
    for i in users:
      if i not in failed:
        failed[i] = e
        on_error(i, e)

  for i, c in enumerate(configs):
    try:
      kd_config.validate(c)
      train.preflight(c)
    except Exception as e:  # pylint: disable=broad-except
      fail([i], e)
  t0 = time.perf_counter()
  with contextlib.ExitStack() as locks:
    for i, (c, w) in enumerate(zip(configs, workdirs)):
      if i in failed:
        continue
      try:
        locks.enter_context(runs.lock(w))
        if 'stages' in c:
          runs.check_identity(w, c, kd_config.stage_dirs(c, w))
          runs.write_json(os.path.join(w, 'config.json'), c.to_dict())
      except Exception as e:  # pylint: disable=broad-except
        fail([i], e)
    ok = [i for i in range(len(configs)) if i not in failed]
    results = [{} for _ in configs]
    for wave in plan([configs[i] for i in ok], [workdirs[i] for i in ok]):
      for jobs in wave:
        for j in jobs:
          j.users[:] = [ok[u] for u in j.users]
        jobs = [j for j in jobs if set(j.users) - set(failed)]
        converted = [runs.summary(j.workdir) or {} for j in jobs]
        todo = [j for j, s in zip(jobs, converted) if not s.get('converted')]
        summaries = _train_jobs(todo, fail) if todo else {}
        for j, s in zip(jobs, converted):  # Weights from kd.convert: reused.
          for i in j.users:
            if id(j) in summaries or s.get('converted'):
              _merge(results[i], configs[i], j.name, summaries.get(id(j), s))
    for i, (c, w, r) in enumerate(zip(configs, workdirs, results)):
      if i in failed:
        results[i] = None
      elif 'stages' in c:  # What kd.main leaves in a pipeline's directory.
        r['wall_seconds'] = time.perf_counter() - t0
        runs.write_json(os.path.join(w, 'summary.json'), r)
        if jax.process_index() == 0:
          report.plot(w, c, r)
  return results


def _train_jobs(jobs, fail) -> dict:
  """{id(job): summary} of `jobs` trained together (`train_group`). A group
  that fails trains its jobs one at a time; a job that fails alone goes to
  `fail(its users, exception)`."""
  try:
    return dict(zip(map(id, jobs), train_group(
        [j.config for j in jobs], [j.workdir for j in jobs],
        [j.name for j in jobs])))
  except Exception as e:  # pylint: disable=broad-except
    if len(jobs) == 1:
      fail(jobs[0].users, e)
      return {}
    fail([], e)  # Raises unless errors are reported.
    print(f'[{jobs[0].name} x{len(jobs)}] failed ({type(e).__name__}: '
          f'{e}); training its runs one at a time', flush=True)
    out = {}
    for j in jobs:
      out.update(_train_jobs([j], fail))
    return out


def _merge(result: dict, config, stage: str, summary: dict) -> None:
  if 'stages' in config:
    result.update({f'{stage}/{k}': v for k, v in summary.items()})
  else:
    result.update(summary)


def with_seeds(config, workdir: str, seeds) -> tuple[list, list[str]]:
  """(configs, workdirs): `config` once per seed, in `workdir/seed=S`. In a
  pipeline every stage inside the workdir takes the seed; a stage kept
  elsewhere (`stage_dirs`, e.g. a shared teacher) keeps its own."""
  configs = []
  for seed in seeds:
    c = mc.ConfigDict(config.to_dict())
    if 'stages' in c:
      for n, stage in c.stages.items():
        if n not in c.get('stage_dirs', {}):
          stage.seed = int(seed)
    else:
      c.seed = int(seed)
    configs.append(c)
  return configs, [os.path.join(workdir, f'seed={s}') for s in seeds]
