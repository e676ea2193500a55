"""Expand a sweep spec into runs; run them locally or write cluster scripts.

  python -m launch.sweep launch/specs/mnist1d_baselines.py --workdir=ROOT \
      [--mode=local|slurm|tpu|wandb] [--parallel=N] [--dry_run] [--vectorize]

A spec is a Python file with
  NAME    the sweep's name (its W&B group; runs are ROOT/NAME/<run>)
  CONFIG  a config file, e.g. 'configs/mnist1d/train.py'
  ARGS    config arguments (the part after ':'), one run family each;
          '{root}' is replaced by ROOT/NAME (e.g. a shared teacher dir)
  GRID    optional {'config.field': [values]} crossed with ARGS
  SEEDS   seeds, appended to every argument as ',seed=S'
  TAGS    optional W&B tags
  PROGRAM optional module run as `python -m PROGRAM` (default 'kd.main'; an
          experiment variant such as 'experiments.multi_teacher.train')
Each run's folder is named after its arguments and overrides (the shared
folders, teacher_dir and any other '*_dir' argument, left out; a hash suffix where two runs' names would collide) and holds a
`sweep.json` describing it. Finished runs (a summary.json) are skipped;
unfinished ones resume from their checkpoints.

`--vectorize` (local mode): the unfinished runs train in this process,
every group of them that can train together in one step (`kd.vectorize`:
runs differing only in seed, learning rate, mixup alpha, loss weights and
temperatures; a shared teacher stage trains once). Each run still gets its
folder, sweep.json, metrics, checkpoints and summary; the output goes to
this process's stdout instead of each run's log.txt.

Local runs and SLURM tasks start with this interpreter (`sys.executable`:
cluster nodes share its file system); TPU-VM workers, other machines, and W&B
agents use their own `python` (activate kd's environment there). SIGTERM or
SIGINT (Ctrl-C) to a local sweep passes SIGTERM to its runs (they
checkpoint), waits for them and exits with 143 (130). A local sweep holds
ROOT/NAME/sweep.lock: a second one on the same folder is refused.
"""
import collections
import contextlib
import dataclasses
import fcntl
import hashlib
import importlib.util
import itertools
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
import traceback

from absl import app
from absl import flags
from absl import logging

from kd import fields
from kd import files
from kd import tables

MODES = ('local', 'slurm', 'tpu', 'wandb')
PROGRAM = 'kd.main'


@dataclasses.dataclass(frozen=True)
class Run:
  name: str
  arg: str  # Config argument, seed included.
  overrides: tuple[tuple[str, object], ...]
  workdir: str
  group: str
  tags: tuple[str, ...]
  program: str = PROGRAM

  def command(self, config: str, python: str = sys.executable) -> list[str]:
    return ([python, '-m', self.program,
             f'--config={config}:{self.arg}', f'--workdir={self.workdir}',
             f'--wandb_group={self.group}'] +
            ([f'--wandb_tags={",".join(self.tags)}'] if self.tags else []) +
            [f'--{k}={_flag_value(v)}' for k, v in self.overrides])

  @property
  def finished(self) -> bool:
    """A summary.json at the config's steps (of every stage): a summary
    left at another step count is a run to resume, as kd.tables counts it."""
    return (os.path.exists(os.path.join(self.workdir, 'summary.json')) and
            tables.unfinished_why(self.workdir) is None)


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
  if isinstance(module.ARGS, str):
    raise ValueError(
        f'sweep spec {path}: ARGS is the string {module.ARGS!r}; make it a '
        f'list of config arguments, one per run family: ARGS = '
        f'[{module.ARGS!r}]')
  return module


def expand(spec, root: str) -> list[Run]:
  """Every distinct (argument, grid point, seed) of the spec as a Run, each
  in a folder of its own: runs whose names collide (arguments that differ
  only in a shared folder, which names leave out) get a suffix hashed from their
  argument and overrides."""
  grid = getattr(spec, 'GRID', {})
  keys = sorted(grid)
  runs = {}
  for arg, values, seed in itertools.product(
      spec.ARGS, itertools.product(*(grid[k] for k in keys)), spec.SEEDS):
    run = make_run(spec, root, expand_arg(spec, root, arg),
                   tuple(zip(keys, values)), seed)
    runs.setdefault(_identity(run), run)  # A repeated argument: one run.
  names = collections.Counter(r.name for r in runs.values())
  return [r if names[r.name] == 1 else _renamed(r, r.name + '__' + hashlib.sha1(
      _identity(r).encode()).hexdigest()[:8]) for r in runs.values()]


def _identity(run: Run) -> str:
  return json.dumps([run.arg, [(k, _flag_value(v)) for k, v in run.overrides]])


def _renamed(run: Run, name: str) -> Run:
  return dataclasses.replace(
      run, name=name, workdir=os.path.join(os.path.dirname(run.workdir), name))


def find_run(spec, root: str, arg: str, overrides: tuple, seed) -> Run:
  """The run of `expand` for one expanded argument, grid point and seed
  (values as strings, as a W&B agent passes them)."""
  want = _identity(Run('', f'{arg},seed={seed}'.strip(','), overrides, '', '',
                       ()))
  for run in expand(spec, root):
    if _identity(run) == want:
      return run
  raise ValueError(f'the sweep spec has no run with arg={arg!r}, seed={seed}, '
                   f'{dict(overrides)}: was it changed after sweep.yaml was '
                   'written? Write sweep.yaml again (launch.sweep '
                   '--mode=wandb) and start a new W&B sweep')


def expand_arg(spec, root: str, arg: str) -> str:
  """A spec argument with '{root}' replaced and its shared folders
  normalised."""
  arg = arg.replace('{root}', os.path.join(root, spec.NAME))
  return ','.join(kv if not _shared_dir(kv) else
                  kv.split('=', 1)[0] + '=' + os.path.normpath(
                      kv.split('=', 1)[1]) for kv in arg.split(','))


def _shared_dir(kv: str) -> bool:
  """Whether `key=value` names a folder runs share (teacher_dir, *_dir)."""
  return kv.split('=', 1)[0].endswith('_dir')


def make_run(spec, root: str, arg: str, overrides: tuple, seed) -> Run:
  """The run of one expanded argument, grid point and seed; its folder is
  named after them (before `expand` makes names unique)."""
  shown = ','.join(kv for kv in arg.split(',') if not _shared_dir(kv))
  name = _slug('__'.join(
      [shown] + [f'{k.removeprefix("config.")}={_flag_value(v)}'
                 for k, v in overrides] + [f'seed={seed}']))
  return Run(name=name, arg=f'{arg},seed={seed}'.strip(','),
             overrides=overrides,
             workdir=os.path.join(root, spec.NAME, name), group=spec.NAME,
             tags=tuple(getattr(spec, 'TAGS', ())),
             program=getattr(spec, 'PROGRAM', PROGRAM))


def describe(run: Run) -> None:
  os.makedirs(run.workdir, exist_ok=True)
  args = dict(fields.pairs(run.arg))
  path = os.path.join(run.workdir, 'sweep.json')
  files.write_bytes(path, json.dumps(
      {'name': run.name, 'group': run.group, 'args': args,
       'overrides': {k: _flag_value(v) for k, v in run.overrides}}, indent=2))


def run_local(spec, runs: list[Run], parallel: int, dry_run: bool) -> int:
  """Runs the unfinished runs, `parallel` at a time; returns the number that
  failed. SIGTERM or SIGINT (Ctrl-C) is passed on to the runs as SIGTERM
  (they checkpoint and exit), which are waited for; then SystemExit(143, or
  130 for SIGINT). The runs have a session of their own, so a terminal's
  Ctrl-C reaches them only this way."""
  todo = [r for r in runs if not r.finished]
  print(f'{len(runs)} runs, {len(runs) - len(todo)} finished, '
        f'{len(todo)} to run ({parallel} at a time)')
  active, failed, stopped, signalled = {}, 0, [], set()

  def stop_all():
    for proc in set(active) - signalled:
      signalled.add(proc)
      proc.send_signal(signal.SIGTERM)

  def on_sigterm(signum, frame):
    del frame
    stopped.append(signum)
    stop_all()

  previous = {s: signal.signal(s, on_sigterm)
              for s in (signal.SIGTERM, signal.SIGINT)}
  try:
    for run in todo:
      cmd = run.command(spec.CONFIG)
      while len(active) >= parallel and not stopped:
        failed += _reap(active)
      if stopped:
        break
      print('$', shlex.join(cmd), flush=True)
      if dry_run:
        continue
      describe(run)
      with open(os.path.join(run.workdir, 'log.txt'), 'a') as log:
        active[subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)] = run
    while active:
      if stopped:  # Also a run started as the signal came.
        stop_all()
      failed += _reap(active)
  finally:
    for s, handler in previous.items():
      signal.signal(s, handler)
  if stopped:
    name = signal.Signals(stopped[0]).name
    print(f'{name}: runs stopped; the same command resumes them', flush=True)
    sys.exit(128 + stopped[0])
  return failed


class SweepLockedError(RuntimeError):
  pass


@contextlib.contextmanager
def lock(folder: str):
  """Holds `folder/sweep.lock` while a sweep runs there: a second sweep on
  the same folder is refused, naming the first's pid (its runs' own locks
  would fail them all). An OS lock (flock): it ends with its process,
  however that ends."""
  path = os.path.join(folder, 'sweep.lock')
  fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
  try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except BlockingIOError:
    pid = os.pread(fd, 32, 0).decode(errors='replace').strip() or '?'
    os.close(fd)
    raise SweepLockedError(
        f'{folder} is in use by another sweep (pid {pid}): wait for it to '
        f'finish, or stop it (kill -TERM {pid}: its runs checkpoint) and '
        'start this one again') from None
  try:
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)
    yield
  finally:
    os.close(fd)


def load_config(spec, run: Run):
  """The config `run.command(...)` trains, read as kd.main reads it."""
  # kd (and JAX) load only when a sweep trains here.
  from ml_collections import config_flags  # pylint: disable=import-outside-toplevel
  from kd import main  # pylint: disable=import-outside-toplevel
  argv = ['sweep', f'--config={spec.CONFIG}:{run.arg}'] + [
      f'--{k}={_flag_value(v)}' for k, v in run.overrides]
  values = flags.FlagValues()
  # The override flags (--config.x) are defined from the argv they parse.
  config_flags.DEFINE_config_file('config', None, 'Config file.',
                                  flag_values=values, lock_config=True,
                                  sys_argv=argv)
  values(argv)
  config = values.config
  main.apply_wandb_flags(config, run.group, list(run.tags))
  return config


def run_vectorized(spec, runs: list[Run], dry_run: bool) -> int:
  """`--vectorize`: the unfinished runs trained in groups in this process;
  returns the number that failed (a bad run is reported, the others
  train)."""
  if getattr(spec, 'PROGRAM', PROGRAM) != PROGRAM:
    raise ValueError(f'--vectorize trains {PROGRAM} runs; this spec runs '
                     f'{spec.PROGRAM}: leave --vectorize out')
  todo = [r for r in runs if not r.finished]
  print(f'{len(runs)} runs, {len(runs) - len(todo)} finished, {len(todo)} '
        'to train in vectorized groups', flush=True)
  if not todo:
    return 0
  from kd import vectorize  # pylint: disable=import-outside-toplevel
  logging.set_verbosity(logging.WARNING)  # As kd.main: orbax is chatty.
  loaded, bad = [], []
  for run in todo:
    try:
      loaded.append((run, load_config(spec, run)))
    except Exception as e:  # pylint: disable=broad-except
      bad.append((run, e))
  for run, e in bad:
    _failed(run, e, dry_run)
  todo, configs = [r for r, _ in loaded], [c for _, c in loaded]
  if not todo:
    return len(bad)
  root = os.path.dirname(todo[0].workdir)
  for wave in vectorize.plan(configs, [r.workdir for r in todo]):
    for jobs in wave:
      print(f'{jobs[0].name}: {len(jobs)} together: '
            + ', '.join(os.path.relpath(j.workdir, root) for j in jobs),
            flush=True)
  if dry_run:
    return len(bad)
  for run in todo:
    describe(run)
  failed = []

  def on_error(i, e):
    failed.append(i)
    _failed(todo[i], e, dry_run)

  vectorize.train_all(configs, [r.workdir for r in todo], on_error)
  for i, run in enumerate(todo):
    if i not in failed:
      print(f'done: {run.name}', flush=True)
  return len(bad) + len(failed)


def _failed(run: Run, e: Exception, dry_run: bool) -> None:
  """Reports a run of a vectorized sweep that failed, with its reason (the
  traceback in its log.txt)."""
  root = e
  while root.__cause__ or root.__context__:
    root = root.__cause__ or root.__context__
  reason = ' '.join(dict.fromkeys(f'{type(x).__name__}: {x}'.splitlines()[0]
                                  for x in (e, root)))
  if dry_run:
    print(f'FAILED: {run.name}: {reason}', flush=True)
    return
  describe(run)
  log = os.path.join(run.workdir, 'log.txt')
  with open(log, 'a') as f:
    traceback.print_exception(e, file=f)
  print(f'FAILED: {run.name}: {reason} (see {log})', flush=True)


def _reap(active: dict) -> int:
  """Waits a moment, forgets finished runs; returns how many failed."""
  time.sleep(0.2)
  failed = 0
  for proc, run in list(active.items()):
    if proc.poll() is not None:
      del active[proc]
      ok = proc.returncode == 0
      failed += not ok
      print(f'{"done" if ok else "FAILED"}: {run.name}'
            + ('' if ok else f' (see {run.workdir}/log.txt)'), flush=True)
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
    remote = f'cd ~/kd && {shlex.join(r.command(spec.CONFIG, "python"))}'
    out.append('gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone="$ZONE" '
               f'--worker=all --command={shlex.quote(remote)}')
  return '\n'.join(out) + '\n'


def wandb_yaml(spec, spec_path: str, root: str) -> str:
  """A W&B grid sweep over ARGS x GRID x SEEDS. Each run starts
  `launch.wandb_agent_run`, which gives it the folder, sweep.json and
  command of the same run in local mode (the seed goes into the config
  argument, where `get_config` reads it)."""
  params = {'arg': [expand_arg(spec, root, a) for a in spec.ARGS]}
  params.update({k: [_flag_value(x) for x in v]
                 for k, v in getattr(spec, 'GRID', {}).items()})
  lines = [f'name: {spec.NAME}', 'program: launch/wandb_agent_run.py',
           'method: grid', 'parameters:']
  for k, v in params.items():
    lines += [f'  {k}:', f'    values: [{", ".join(map(json.dumps, v))}]']
  lines += ['  seed:', f'    values: [{", ".join(map(str, spec.SEEDS))}]',
            'command:', '  - ${env}', '  - ${interpreter}', '  - -m',
            '  - launch.wandb_agent_run',
            f'  - {json.dumps("--spec=" + spec_path)}',
            f'  - {json.dumps("--root=" + root)}', '  - ${args}', '']
  return '\n'.join(lines)


def define_flags():
  flags.DEFINE_string('workdir', None, 'Root of all runs.')
  flags.DEFINE_enum('mode', 'local', list(MODES), 'What to do.')
  flags.DEFINE_integer('parallel', 1, 'Local runs at a time.')
  flags.DEFINE_bool('dry_run', False, 'Print commands only.')
  flags.DEFINE_bool('vectorize', False, 'Local mode: train the runs that can '
                    'train together in one step each (kd.vectorize).')
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
  folder = os.path.join(root, spec.NAME)
  os.makedirs(folder, exist_ok=True)
  if f.vectorize and f.mode != 'local':
    raise app.UsageError('--vectorize trains the runs here: use --mode=local')
  if f.mode == 'local':
    with contextlib.ExitStack() as held:
      if not f.dry_run:
        try:
          held.enter_context(lock(folder))
        except SweepLockedError as e:
          sys.exit(str(e))
      failed = (run_vectorized(spec, runs, f.dry_run) if f.vectorize else
                run_local(spec, runs, f.parallel, f.dry_run))
    sys.exit(1 if failed else 0)
  for run in runs:
    describe(run)
  text, file = {
      'slurm': lambda: (slurm_script(spec, runs, root, f.nodes,
                                     f.gpus_per_node), 'sweep.slurm'),
      'tpu': lambda: (tpu_script(spec, runs), 'sweep_tpu.sh'),
      'wandb': lambda: (wandb_yaml(spec, argv[1], root), 'sweep.yaml'),
  }[f.mode]()
  path = os.path.join(root, spec.NAME, file)
  with open(path, 'w') as f:
    f.write(text)
  print(f'wrote {path} ({len(runs)} runs)')


if __name__ == '__main__':
  define_flags()
  app.run(main)
