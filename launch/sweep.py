"""Expand a sweep spec into runs; run them locally or write cluster scripts.

  python -m launch.sweep launch/specs/mnist1d_baselines.py --workdir=ROOT \
      [--mode=local|slurm|tpu|wandb] [--parallel=N] [--dry_run]

A spec is a Python file with
  NAME    the sweep's name (its W&B group; runs are ROOT/NAME/<run>)
  CONFIG  a config file, e.g. 'configs/mnist1d/train.py'
  ARGS    config arguments (the part after ':'), one run family each;
          '{root}' is replaced by ROOT/NAME (e.g. a shared teacher dir)
  GRID    optional {'config.field': [values]} crossed with ARGS
  SEEDS   seeds, appended to every argument as ',seed=S'
  TAGS    optional W&B tags
Each run's folder is named after its arguments and overrides and holds a
`sweep.json` describing it. Finished runs (a summary.json) are skipped;
unfinished ones resume from their checkpoints.
"""
import dataclasses
import importlib.util
import itertools
import json
import os
import re
import shlex
import subprocess
import sys
import time

from absl import app
from absl import flags

MODES = ('local', 'slurm', 'tpu', 'wandb')


@dataclasses.dataclass(frozen=True)
class Run:
  name: str
  arg: str  # Config argument, seed included.
  overrides: tuple[tuple[str, object], ...]
  workdir: str
  group: str
  tags: tuple[str, ...]

  def command(self, config: str) -> list[str]:
    return (['python', '-m', 'kd.main',
             f'--config={config}:{self.arg}', f'--workdir={self.workdir}',
             f'--wandb_group={self.group}'] +
            ([f'--wandb_tags={",".join(self.tags)}'] if self.tags else []) +
            [f'--{k}={_flag_value(v)}' for k, v in self.overrides])

  @property
  def finished(self) -> bool:
    return os.path.exists(os.path.join(self.workdir, 'summary.json'))


def _flag_value(v) -> str:
  return str(tuple(v)) if isinstance(v, (list, tuple)) else str(v)


def _slug(text: str) -> str:
  return re.sub(r'[^A-Za-z0-9_.=-]+', '_', text).strip('_')


def load_spec(path: str):
  spec = importlib.util.spec_from_file_location('sweep_spec', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  for field in ('NAME', 'CONFIG', 'ARGS', 'SEEDS'):
    if not hasattr(module, field):
      raise ValueError(f'sweep spec {path} has no {field}; see launch/sweep.py')
  return module


def expand(spec, root: str) -> list[Run]:
  """Every (argument, grid point, seed) of the spec as a Run."""
  base = os.path.join(root, spec.NAME)
  grid = getattr(spec, 'GRID', {})
  keys = sorted(grid)
  runs = []
  for arg, values, seed in itertools.product(
      spec.ARGS, itertools.product(*(grid[k] for k in keys)), spec.SEEDS):
    arg = arg.replace('{root}', base)
    arg = ','.join(kv if not kv.startswith('teacher_dir=') else
                   'teacher_dir=' + os.path.normpath(kv.split('=', 1)[1])
                   for kv in arg.split(','))
    overrides = tuple(zip(keys, values))
    shown = ','.join(kv for kv in arg.split(',') if not kv.startswith(
        'teacher_dir='))
    name = _slug('__'.join(
        [shown] + [f'{k.removeprefix("config.")}={_flag_value(v)}'
                   for k, v in overrides] + [f'seed={seed}']))
    runs.append(Run(name=name, arg=f'{arg},seed={seed}'.strip(','),
                    overrides=overrides, workdir=os.path.join(base, name),
                    group=spec.NAME, tags=tuple(getattr(spec, 'TAGS', ()))))
  return runs


def _describe(run: Run) -> None:
  os.makedirs(run.workdir, exist_ok=True)
  args = dict(kv.split('=', 1) for kv in run.arg.split(',') if kv)
  path = os.path.join(run.workdir, 'sweep.json')
  with open(path + '.tmp', 'w') as f:  # Atomic, as kd.runs.write_json.
    json.dump({'name': run.name, 'group': run.group, 'args': args,
               'overrides': {k: _flag_value(v) for k, v in run.overrides}},
              f, indent=2)
  os.replace(path + '.tmp', path)


def run_local(spec, runs: list[Run], parallel: int, dry_run: bool) -> int:
  todo = [r for r in runs if not r.finished]
  print(f'{len(runs)} runs, {len(runs) - len(todo)} finished, '
        f'{len(todo)} to run ({parallel} at a time)')
  failed, active = 0, []
  for run in todo:
    cmd = run.command(spec.CONFIG)
    print('$', shlex.join(cmd), flush=True)
    if dry_run:
      continue
    _describe(run)
    log = open(os.path.join(run.workdir, 'log.txt'), 'a')
    active.append((run, subprocess.Popen(cmd, stdout=log,
                                         stderr=subprocess.STDOUT), log))
    while len(active) >= parallel or (run is todo[-1] and active):
      for item in list(active):
        if item[1].poll() is not None:
          active.remove(item)
          item[2].close()
          ok = item[1].returncode == 0
          failed += not ok
          print(f'{"done" if ok else "FAILED"}: {item[0].name}'
                + ('' if ok else f' (see {item[0].workdir}/log.txt)'), flush=True)
      time.sleep(0.2)
  return failed


def slurm_script(spec, runs: list[Run], root: str, nodes: int = 1,
                 gpus_per_node: int = 1) -> str:
  """A SLURM array job, one run per task; every task of a multi-node run
  starts under srun, and `jax.distributed.initialize()` finds its peers."""
  lines = [shlex.join(r.command(spec.CONFIG)) for r in runs]
  commands = os.path.join(root, spec.NAME, 'commands.txt')
  with open(commands, 'w') as f:
    f.write('\n'.join(lines) + '\n')
  return '\n'.join([
      '#!/bin/bash',
      f'#SBATCH --job-name={spec.NAME}',
      f'#SBATCH --array=1-{len(runs)}',
      f'#SBATCH --nodes={nodes}',
      '#SBATCH --ntasks-per-node=1',
      f'#SBATCH --gpus-per-node={gpus_per_node}',
      f'#SBATCH --output={os.path.join(root, spec.NAME)}/slurm-%A_%a.out',
      'set -euo pipefail',
      f'cmd=$(sed -n "${{SLURM_ARRAY_TASK_ID}}p" {commands})',
      'srun bash -c "$cmd"',
      ''])


def tpu_script(spec, runs: list[Run]) -> str:
  """Runs one after another on every worker of a TPU VM pod slice."""
  out = ['#!/bin/bash', 'set -euo pipefail',
         ': "${TPU_NAME:?set TPU_NAME}" "${ZONE:?set ZONE}"']
  for r in runs:
    remote = f'cd ~/kd && {shlex.join(r.command(spec.CONFIG))}'
    out.append('gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone="$ZONE" '
               f'--worker=all --command={shlex.quote(remote)}')
  return '\n'.join(out) + '\n'


def wandb_yaml(spec, root: str) -> str:
  """A W&B sweep whose parameters are config fields (grid over GRID and
  seeds; ARGS beyond the first need one sweep each)."""
  params = {k: {'values': list(v)} for k, v in getattr(spec, 'GRID', {}).items()}
  arg = spec.ARGS[0].replace('{root}', os.path.join(root, spec.NAME))
  lines = [f'name: {spec.NAME}', 'program: kd/main.py', 'method: grid',
           'parameters:']
  for k, v in params.items():
    lines.append(f'  {k}:')
    lines.append('    values: [' + ', '.join(json.dumps(_flag_value(x))
                                           for x in v['values']) + ']')
  lines.append('  seed:')
  lines.append(f'    values: [{", ".join(str(s) for s in spec.SEEDS)}]')
  lines += ['command:', '  - ${env}', '  - python', '  - -m', '  - kd.main',
            f'  - --config={spec.CONFIG}:{arg}',
            f'  - --workdir={os.path.join(root, spec.NAME, "wandb_${seed}")}',
            f'  - --wandb_group={spec.NAME}', '  - ${args}', '']
  return '\n'.join(lines)


def define_flags():
  flags.DEFINE_string('workdir', None, 'Root of all runs.')
  flags.DEFINE_enum('mode', 'local', list(MODES), 'What to do.')
  flags.DEFINE_integer('parallel', 1, 'Local runs at a time.')
  flags.DEFINE_bool('dry_run', False, 'Print commands only.')
  flags.DEFINE_integer('nodes', 1, 'SLURM: nodes per run.')
  flags.DEFINE_integer('gpus_per_node', 1, 'SLURM: GPUs per node.')
  flags.mark_flag_as_required('workdir')


def main(argv):
  if len(argv) != 2:
    raise app.UsageError('usage: python -m launch.sweep SPEC --workdir=ROOT')
  f = flags.FLAGS
  spec = load_spec(argv[1])
  root = os.path.abspath(f.workdir)
  runs = expand(spec, root)
  os.makedirs(os.path.join(root, spec.NAME), exist_ok=True)
  if f.mode == 'local':
    sys.exit(1 if run_local(spec, runs, f.parallel, f.dry_run) else 0)
  for run in runs:
    _describe(run)
  text, file = {
      'slurm': lambda: (slurm_script(spec, runs, root, f.nodes,
                                     f.gpus_per_node), 'sweep.slurm'),
      'tpu': lambda: (tpu_script(spec, runs), 'sweep_tpu.sh'),
      'wandb': lambda: (wandb_yaml(spec, root), 'sweep.yaml'),
  }[f.mode]()
  path = os.path.join(root, spec.NAME, file)
  with open(path, 'w') as f:
    f.write(text)
  print(f'wrote {path} ({len(runs)} runs)')


if __name__ == '__main__':
  define_flags()
  app.run(main)
