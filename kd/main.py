"""Entry point: `python -m kd.main --config=configs/x.py[:arg] --workdir=DIR`.

A config is one run (or a prune run, `kd.prune`), or a pipeline (`stage_order` + `stages`) whose stages run
in order, each in `DIR/<stage>`; a stage's `distill.teacher.workdir`,
`init_from`, `data.tokenizer_path` and the entries of `distill.teachers`
may name an earlier stage. Re-running
with the same workdir resumes (and reuses finished stages); a workdir holding
a run of another config is refused unless `--overwrite` deletes that run
first (see `kd.runs`).

`--vectorize_seeds=0,1,2,3` trains the config once per seed, in
`DIR/seed=S`, all seeds together in one step (`kd.vectorize`; in a pipeline
each stage inside DIR takes the seed, a stage kept elsewhere through
`stage_dirs`, such as a shared teacher, keeps its own).
"""
import json
import os
import sys
import time

from absl import app
from absl import flags
from absl import logging
import jax
from ml_collections import config_flags

from kd import cache
from kd import config as kd_config
from kd import data
from kd import distributed
from kd import fields
from kd import report
from kd import runs
from kd import train
from kd import vectorize
from kd.prune import run as prune_run



def define_flags():
  """Command-line flags; defined only when run as a program, so that other
  entry points importing this module keep their own."""
  config_flags.DEFINE_config_file(
      'config', None, 'Config file (ml_collections get_config).',
      lock_config=True)
  flags.DEFINE_string('workdir', None, 'Directory for all outputs.')
  flags.DEFINE_string('wandb_group', None,
                      'W&B group of every stage (sweeps set it).')
  flags.DEFINE_list('wandb_tags', None, 'W&B tags of every stage.')
  flags.DEFINE_bool('overwrite', False,
                    'Delete the run already in --workdir (checkpoints, '
                    'metrics, summary, config; every stage directory under '
                    'it) and start over.')
  flags.DEFINE_list('vectorize_seeds', None,
                    'Train the config once per seed, in WORKDIR/seed=S, '
                    'all together (kd.vectorize).')
  flags.register_validator(
      'vectorize_seeds', lambda seeds: all(
          s.strip().removeprefix('-').isdigit() for s in seeds or ()),
      '--vectorize_seeds takes whole-number seeds separated by commas, '
      'e.g. --vectorize_seeds=0,1,2')
  flags.mark_flags_as_required(['config', 'workdir'])


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, except that an override of a run's field on a
  pipeline config (`--config.parallel=mesh`) says which stages have it."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:  # As absl's own parser: one line, no traceback.
    sys.exit(f'FATAL Flags parsing error: {e}')
  except (AttributeError, KeyError):
    hint = pipeline_override_hint(argv)
    if hint is None:
      raise
    sys.exit(f'FATAL Flags parsing error: {hint}')


def pipeline_override_hint(argv: list[str]) -> str | None:
  """The error for `--config.FIELD=V` overrides of a pipeline config where
  FIELD belongs to its stages; None if there is none."""
  paths = [a for a in argv if a.startswith('--config=')]
  if not paths:
    return None
  config = flags.FLAGS['config'].parser.parse(paths[-1].split('=', 1)[1])
  if 'stages' not in config:
    return None
  for arg in argv:
    if not arg.startswith('--config.'):
      continue
    field, _, value = arg[len('--config.'):].partition('=')
    if field.split('.')[0] in config:
      continue
    having = [name for name in config.stage_order
              if fields.has(config.stages[name], field)]
    if not having:
      return (f'pipeline configs have no field {field!r}, nor does any of '
              f'their stages ({", ".join(config.stage_order)})')
    return (f'pipeline configs have no field {field!r}; it is set per stage: '
            + ', '.join(f'--config.stages.{name}.{field}={value}'
                        for name in having))
  return None


def _runs(config) -> list:
  return list(config.stages.values()) if 'stages' in config else [config]


def apply_wandb_flags(config, group: str | None, tags: list | None) -> None:
  for run in _runs(config):
    with run.unlocked():
      if group:
        run.wandb.group = group
      if tags:
        run.wandb.tags = tuple(run.wandb.tags) + tuple(tags)


def overwrite(config, workdir: str) -> None:
  """Deletes the run in `workdir`: with a pipeline, its own files and those
  of every stage directory inside `workdir` (a stage kept elsewhere through
  `stage_dirs`, such as a shared teacher, is left alone)."""
  dirs = [workdir]
  if 'stages' in config:
    root = os.path.abspath(workdir) + os.sep
    dirs += [d for d in kd_config.stage_dirs(config, workdir).values()
             if os.path.abspath(d).startswith(root)]
  for d in dirs:
    for path in runs.clear(d):
      print(f'--overwrite: deleted {path}')


def run_pipeline(config, workdir: str) -> dict:
  """Runs every stage; returns the merged `stage/key` summary. `workdir` is
  locked meanwhile and must hold no pipeline of another config."""
  kd_config.validate(config)  # Every stage, before the first runs.
  train.preflight(config)
  with runs.lock(workdir):
    runs.check_identity(workdir, config,
                        kd_config.stage_dirs(config, workdir))
    runs.write_json(os.path.join(workdir, 'config.json'), config.to_dict())
    return _run_stages(config, workdir)


def _run_stages(config, workdir: str) -> dict:
  t0 = time.perf_counter()
  summary = {}
  dirs = kd_config.stage_dirs(config, workdir)
  order = list(config.stage_order)
  # Under a W&B sweep agent the last stage (the student the sweep scores)
  # logs to the agent's run; earlier stages get runs of their own.
  agent_run = os.environ.pop('WANDB_RUN_ID', None)
  # Every stage finished before (a rerun after a kill while plotting): the
  # pipeline took the time its summary already holds, not this rerun's.
  before = (runs.summary(workdir) or {}) if all(
      runs.finished_summary(dirs[n], config.stages[n].steps) is not None
      for n in order) else {}
  for i, name in enumerate(order):
    if agent_run and i == len(order) - 1:
      os.environ['WANDB_RUN_ID'] = agent_run
    stage = config.stages[name]
    with stage.unlocked():
      if stage.distill.teacher.workdir in config.stages:
        stage.distill.teacher.workdir = dirs[stage.distill.teacher.workdir]
      if stage.get('init_from') in config.stages:
        stage.init_from = dirs[stage.init_from]
      if stage.prune.source in config.stages:
        stage.prune.source = dirs[stage.prune.source]
      if stage.distill.get('teachers'):  # Several teachers, each a stage.
        named = [t.strip() for t in stage.distill.teachers.split(',')]
        stage.distill.teachers = ','.join(dirs.get(t, t) for t in named)
      if stage.data.get('tokenizer_path') in config.stages:  # Its tokenizer.
        stage.data.tokenizer_path = dirs[stage.data.tokenizer_path]
    later = sum(config.stages[n].steps for n in order[i + 1:]
                if runs.finished_summary(dirs[n], config.stages[n].steps)
                is None)
    converted = runs.summary(dirs[name]) or {}
    if converted.get('converted'):  # Weights from kd.convert: nothing to train.
      print(f'[{name}] converted weights in {dirs[name]} '
            f'({converted.get("source")}); reusing them')
      result = converted
    elif prune_run.is_prune_run(stage):
      result = prune_run.run(stage, dirs[name], name)
    else:
      result = train.train_and_evaluate(stage, dirs[name], name, later)
    summary.update({f'{name}/{k}': v for k, v in result.items()})
  summary['wall_seconds'] = before.get('wall_seconds',
                                      time.perf_counter() - t0)
  runs.write_json(os.path.join(workdir, 'summary.json'), summary)
  return summary


INTERRUPTED = ('stopped by Ctrl-C outside the training steps (or by a '
               'second Ctrl-C); the work since the last checkpoint is lost. '
               'Rerun the same command to resume from that checkpoint.')


def one_line_errors(fn, name: str = 'kd.main'):
  """`fn(argv)`, with Ctrl-C and the run directory's errors as one line.
  Ctrl-C inside the training steps saves and exits (kd.loop); anywhere else
  nothing is left half written."""

  def run(argv):
    try:
      fn(argv)
    except KeyboardInterrupt:
      print(f'[{name}] {INTERRUPTED}', file=sys.stderr)
      raise SystemExit(130) from None
    except RUN_DIR_ERRORS as e:  # Their messages name the problem and fix.
      print(f'[{name}] {type(e).__name__}: {e}', file=sys.stderr)
      raise SystemExit(1) from None

  return run


# Errors about the config and the run directory, shown as their message:
# no traceback.
RUN_DIR_ERRORS = (kd_config.ConfigError, runs.RunDirError, runs.RunLockedError,
                  runs.ConfigMismatchError, runs.CorruptFileError,
                  data.corpus.CorpusError, cache.CacheMismatchError)


def _main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)  # Orbax and TFDS are chatty at INFO.
  distributed.initialize()
  f = flags.FLAGS
  config, workdir = f.config, f.workdir
  kd_config.validate(config)  # Before the workdir is touched.
  apply_wandb_flags(config, f.wandb_group, f.wandb_tags)
  lead = jax.process_index() == 0
  if f.vectorize_seeds:
    run_seeds(config, workdir, f.vectorize_seeds, f.overwrite)
    return
  with runs.lock(workdir):
    if f.overwrite:
      overwrite(config, workdir)
    if 'stages' in config:
      summary = run_pipeline(config, workdir)
      if lead:
        print(report.table(summary, list(config.stage_order)))
        print(f'plot: {report.plot(workdir, config, summary)}')
    else:
      summary = (prune_run.run(config, workdir)
                 if prune_run.is_prune_run(config) else
                 train.train_and_evaluate(config, workdir))
      if lead:
        print(json.dumps(summary, indent=2, sort_keys=True))
  if lead:
    print(f'summary: {os.path.join(workdir, "summary.json")}')


def run_seeds(config, workdir: str, seeds, overwrite_: bool) -> None:
  """`--vectorize_seeds`: `config` once per seed, trained together."""
  configs, dirs = vectorize.with_seeds(config, workdir, seeds)
  with runs.lock(workdir):
    if overwrite_:
      for c, d in zip(configs, dirs):
        overwrite(c, d)
    summaries = vectorize.train_all(configs, dirs)
  if jax.process_index() == 0:
    for d, s in zip(dirs, summaries):
      print(f'{os.path.join(d, "summary.json")}: {json.dumps(s, sort_keys=True)}')


def run_variant(train_fn) -> None:
  """`python -m experiments.<variant>.train --config=... --workdir=...`: the
  same flags for a variant with a trainer of its own, `train_fn(config,
  workdir) -> summary`."""

  def variant_main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    distributed.initialize()
    f = flags.FLAGS
    if f.vectorize_seeds:
      raise app.UsageError('--vectorize_seeds trains kd.main runs; a '
                           "variant's runs train one at a time")
    apply_wandb_flags(f.config, f.wandb_group, f.wandb_tags)
    with runs.lock(f.workdir):
      if f.overwrite:
        overwrite(f.config, f.workdir)
      summary = train_fn(f.config, f.workdir)
    if jax.process_index() == 0:
      print(json.dumps(summary, indent=2, sort_keys=True))

  define_flags()
  app.run(one_line_errors(variant_main, 'variant'))


main = one_line_errors(_main)

if __name__ == '__main__':
  define_flags()
  app.run(main, flags_parser=parse_flags)
