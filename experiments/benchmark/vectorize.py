"""Wall time of a whole sweep, its runs one after another vs vectorized.

  python -m experiments.benchmark.vectorize [--spec=launch/specs/mnist1d_hinton.py]
      [--steps=N] [--seeds=0,1,2,3,4] [--first_args=N | --arg=A [--arg=B]]
      [--rounds=1] [--workdir=DIR] [--out=DIR] [--tag=cpu]

Runs `python -m launch.sweep SPEC` (each run its own process, as a sweep
runs by default) and `python -m launch.sweep SPEC --vectorize` (the runs
that can, trained together: `kd.vectorize`) on the same spec, each in its
own root under --workdir, and prints both wall times and the speed-up. The
spec's shared teacher is trained once beforehand and copied into both roots,
so neither time includes it. `--steps` overrides every run's steps (the
spec's config must take a `steps=` argument); `--arg` replaces the spec's
ARGS (e.g. `--spec=launch/specs/mnist1d_baselines.py --arg=model=mlp`).
`--rounds=N` times both sweeps N times, taking turns (the order alternates
from round to round, each in fresh roots), so that load from other work on
the machine falls on both alike; the figures are the sums over rounds. CPU
seconds (user + system of the sweep's processes) change less with such load
than wall seconds.
Writes vectorize_<tag>.json and .md to --out.
"""
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time

from absl import app
from absl import flags
from absl import logging
import jax

from kd import runs
from launch import sweep

flags.DEFINE_string('spec', 'launch/specs/mnist1d_hinton.py', 'Sweep spec.')
flags.DEFINE_integer('steps', None, "Every run's steps (default: the spec's).")
flags.DEFINE_list('seeds', None, "Seeds (default: the spec's).")
flags.DEFINE_integer('first_args', None, "Only the spec's first N ARGS "
                     '(a short check).')
flags.DEFINE_multi_string('arg', None, "The runs' ARGS instead of the spec's.")
flags.DEFINE_integer('rounds', 1, 'Times each sweep is timed, taking turns.')
flags.DEFINE_string('workdir', None, 'Where the runs go (default: a '
                    'temporary directory, deleted after).')
flags.DEFINE_string('out', 'experiments/benchmark/results',
                    'Where the results go.')
flags.DEFINE_string('tag', 'cpu', 'Results file name: vectorize_<tag>.json.')
FLAGS = flags.FLAGS


def write_spec(path: str, spec_path: str, steps, seeds, first_args,
               args=None) -> None:
  """A spec file: `spec_path`'s, with `args` for its ARGS, `steps=` added
  to every argument, other seeds, and only its first `first_args`
  arguments, if given."""
  lines = ['import importlib.util as _u',
           f'_s = _u.spec_from_file_location("base", {os.path.abspath(spec_path)!r})',
           '_m = _u.module_from_spec(_s)', '_s.loader.exec_module(_m)',
           'globals().update({k: v for k, v in vars(_m).items() '
           'if k.isupper()})']
  if args:
    lines.append(f'ARGS = {list(args)!r}')
  if steps:
    lines.append(f'ARGS = [a + ",steps={steps}" for a in ARGS]')
  if first_args:
    lines.append(f'ARGS = ARGS[:{first_args}]')
  if seeds:
    lines.append(f'SEEDS = {[int(s) for s in seeds]!r}')
  with open(path, 'w') as f:
    f.write('\n'.join(lines) + '\n')


def teacher_jobs(spec, root: str):
  """The shared stages of the spec's runs (trained before timing)."""
  # kd.vectorize.plan finds the directories several runs share.
  from kd import vectorize  # pylint: disable=import-outside-toplevel
  todo = sweep.expand(spec, root)
  configs = [sweep.load_config(spec, r) for r in todo]
  waves = vectorize.plan(configs, [r.workdir for r in todo])
  return [j for wave in waves for jobs in wave for j in jobs
          if len(j.users) > 1]


def timed_sweep(spec_path: str, root: str, *extra) -> tuple[float, float]:
  """(wall seconds, CPU seconds: user + system of the sweep's processes)."""
  cmd = [sys.executable, '-m', 'launch.sweep', spec_path,
         f'--workdir={root}', *extra]
  print('$', ' '.join(cmd), flush=True)
  cpu = lambda: (lambda r: r.ru_utime + r.ru_stime)(
      resource.getrusage(resource.RUSAGE_CHILDREN))
  t0, c0 = time.perf_counter(), cpu()
  subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
  return time.perf_counter() - t0, cpu() - c0


def mean_accuracy(spec, root: str) -> float:
  accs = [runs.summary(r.workdir) for r in sweep.expand(spec, root)]
  values = [s[k] for s in accs for k in s if k.endswith('test_accuracy')
            and not k.endswith('best_test_accuracy') and 'teacher/' not in k]
  return sum(values) / len(values)


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)  # Orbax and TFDS are chatty.
  base = FLAGS.workdir or tempfile.mkdtemp(prefix='kd_vectorize_')
  os.makedirs(base, exist_ok=True)
  spec_path = os.path.join(base, 'spec.py')
  write_spec(spec_path, FLAGS.spec, FLAGS.steps, FLAGS.seeds,
             FLAGS.first_args, FLAGS.arg)
  spec = sweep.load_spec(spec_path)
  modes = ('sequential', 'vectorized')
  rounds = [{m: os.path.join(base, f'round{r}' if FLAGS.rounds > 1 else '', m)
             for m in modes} for r in range(FLAGS.rounds)]
  # The shared teacher: trained once (not timed), copied into every root.
  from kd import train  # pylint: disable=import-outside-toplevel
  first = rounds[0]['sequential']
  for job in teacher_jobs(spec, first):
    train.train_and_evaluate(job.config, job.workdir, job.name)
    for root in [r[m] for r in rounds for m in modes][1:]:
      other = os.path.join(root, os.path.relpath(job.workdir, first))
      if not os.path.exists(other):
        shutil.copytree(job.workdir, other)
  flag = {'sequential': (), 'vectorized': ('--vectorize',)}
  timed, cpu_timed = [], []
  for r, roots in enumerate(rounds):
    order = modes if r % 2 == 0 else modes[::-1]
    both = {m: timed_sweep(spec_path, roots[m], *flag[m]) for m in order}
    timed.append({m: both[m][0] for m in modes})
    cpu_timed.append({m: both[m][1] for m in modes})
    print(f'round {r + 1}/{FLAGS.rounds}: ' + ', '.join(
        f'{m} {timed[-1][m]:.1f} s ({cpu_timed[-1][m]:.1f} s CPU)'
        for m in modes) +
          f', speed-up {timed[-1]["sequential"] / timed[-1]["vectorized"]:.2f}x',
          flush=True)
  seconds = {m: sum(t[m] for t in timed) for m in modes}
  cpu_seconds = {m: sum(t[m] for t in cpu_timed) for m in modes}
  result = {
      'spec': FLAGS.spec, 'args': list(spec.ARGS),
      'runs': len(sweep.expand(spec, base)),
      'steps': FLAGS.steps or 'spec default', 'seeds': list(spec.SEEDS),
      'rounds': timed, 'seconds': seconds,
      'speedup': seconds['sequential'] / seconds['vectorized'],
      'cpu_rounds': cpu_timed, 'cpu_seconds': cpu_seconds,
      'cpu_speedup': cpu_seconds['sequential'] / cpu_seconds['vectorized'],
      'mean_test_accuracy': {m: mean_accuracy(spec, rounds[0][m])
                             for m in modes},
      'device': str(jax.devices()[0].device_kind),
      'cpu': platform.processor() or platform.machine(),
      'cores': os.cpu_count(), 'jax': jax.__version__,
  }
  print(json.dumps(result, indent=2))
  os.makedirs(FLAGS.out, exist_ok=True)
  path = os.path.join(FLAGS.out, f'vectorize_{FLAGS.tag}')
  runs.write_json(path + '.json', result)
  per_round = FLAGS.rounds > 1
  with open(path + '.md', 'w') as f:
    f.write(f'{result["runs"]} runs of {FLAGS.spec} (steps: '
            f'{result["steps"]}), {result["device"]}, {result["cores"]} '
            f'cores, jax {result["jax"]}'
            + (f', {FLAGS.rounds} rounds taking turns' if per_round else '')
            + '\n\n| sweep | wall seconds | '
            + ''.join(f'round {r + 1} | ' for r in range(len(timed))
                      if per_round)
            + 'CPU seconds | mean test accuracy |\n|---|---|'
            + '---|' * (len(timed) if per_round else 0) + '---|---|\n'
            + ''.join(f'| {m} | {seconds[m]:.1f} | '
                      + ''.join(f'{t[m]:.1f} | ' for t in timed if per_round)
                      + f'{cpu_seconds[m]:.1f} | '
                      + f'{result["mean_test_accuracy"][m]:.4f} |\n'
                      for m in modes)
            + f'\nspeed-up: {result["speedup"]:.2f}x (wall), '
            f'{result["cpu_speedup"]:.2f}x (CPU)\n')
  print(f'wrote {path}.json, {path}.md')
  if not FLAGS.workdir:
    shutil.rmtree(base)


if __name__ == '__main__':
  app.run(main)
