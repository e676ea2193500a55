"""Entry point: `python -m kd.main --config=configs/x.py[:arg] --workdir=DIR`.

A config is one run, or a pipeline (`stage_order` + `stages`) whose stages run
in order, each in `DIR/<stage>`; a stage's `distill.teacher.workdir` and
`init_from` may name an earlier stage. Re-running with the same workdir resumes
(and reuses finished stages); a workdir holding a run of another config is
refused unless `--overwrite` deletes that run first (see `kd.runs`).
"""
import json
import os
import time

from absl import app
from absl import flags
from absl import logging
import jax
from ml_collections import config_flags

from kd import distributed
from kd import report
from kd import runs
from kd import train



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
  flags.mark_flags_as_required(['config', 'workdir'])


def _runs(config) -> list:
  return list(config.stages.values()) if 'stages' in config else [config]


def apply_wandb_flags(config, group: str | None, tags: list | None) -> None:
  for run in _runs(config):
    with run.unlocked():
      if group:
        run.wandb.group = group
      if tags:
        run.wandb.tags = tuple(run.wandb.tags) + tuple(tags)


def stage_dirs(config, workdir: str) -> dict:
  return {name: config.get('stage_dirs', {}).get(name) or
          os.path.join(workdir, name) for name in config.stages}


def overwrite(config, workdir: str) -> None:
  """Deletes the run in `workdir`: with a pipeline, its own files and those
  of every stage directory inside `workdir` (a stage kept elsewhere through
  `stage_dirs`, such as a shared teacher, is left alone)."""
  dirs = [workdir]
  if 'stages' in config:
    root = os.path.abspath(workdir) + os.sep
    dirs += [d for d in stage_dirs(config, workdir).values()
             if os.path.abspath(d).startswith(root)]
  for d in dirs:
    for path in runs.clear(d):
      print(f'--overwrite: deleted {path}')


def run_pipeline(config, workdir: str) -> dict:
  """Runs every stage; returns the merged `stage/key` summary. `workdir` is
  locked meanwhile and must hold no pipeline of another config."""
  unknown = set(config.stage_order) - set(config.stages)
  if unknown:
    raise ValueError(f'stage_order names {sorted(unknown)}; the stages are '
                     f'{sorted(config.stages)}')
  with runs.lock(workdir):
    runs.check_identity(workdir, config)
    runs.write_json(os.path.join(workdir, 'config.json'), config.to_dict())
    return _run_stages(config, workdir)


def _run_stages(config, workdir: str) -> dict:
  t0 = time.perf_counter()
  summary = {}
  dirs = stage_dirs(config, workdir)
  for name in config.stage_order:
    stage = config.stages[name]
    with stage.unlocked():
      if stage.distill.teacher.workdir in config.stages:
        stage.distill.teacher.workdir = dirs[stage.distill.teacher.workdir]
      if stage.get('init_from') in config.stages:
        stage.init_from = dirs[stage.init_from]
    result = train.train_and_evaluate(stage, dirs[name], name)
    summary.update({f'{name}/{k}': v for k, v in result.items()})
  summary['wall_seconds'] = time.perf_counter() - t0
  runs.write_json(os.path.join(workdir, 'summary.json'), summary)
  return summary


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)  # Orbax and TFDS are chatty at INFO.
  distributed.initialize()
  f = flags.FLAGS
  config, workdir = f.config, f.workdir
  apply_wandb_flags(config, f.wandb_group, f.wandb_tags)
  lead = jax.process_index() == 0
  with runs.lock(workdir):
    if f.overwrite:
      overwrite(config, workdir)
    if 'stages' in config:
      summary = run_pipeline(config, workdir)
      if lead:
        print(report.table(summary, list(config.stage_order)))
        print(f'plot: {report.plot(workdir, list(config.stage_order), summary)}')
    else:
      summary = train.train_and_evaluate(config, workdir)
      if lead:
        print(json.dumps(summary, indent=2, sort_keys=True))
  if lead:
    print(f'summary: {os.path.join(workdir, "summary.json")}')


def run_variant(train_fn) -> None:
  """`python -m experiments.<variant>.train --config=... --workdir=...`: the
  same flags for a variant with a trainer of its own, `train_fn(config,
  workdir) -> summary`."""

  def variant_main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    distributed.initialize()
    f = flags.FLAGS
    apply_wandb_flags(f.config, f.wandb_group, f.wandb_tags)
    with runs.lock(f.workdir):
      if f.overwrite:
        overwrite(f.config, f.workdir)
      summary = train_fn(f.config, f.workdir)
    if jax.process_index() == 0:
      print(json.dumps(summary, indent=2, sort_keys=True))

  define_flags()
  app.run(variant_main)


if __name__ == '__main__':
  define_flags()
  app.run(main)
