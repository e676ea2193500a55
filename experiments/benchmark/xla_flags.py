"""A student's training step under XLA flag settings, side by side.

  python -m experiments.benchmark.xla_flags [--models=resnet8x4,wrn_16_2] [--rounds=2]
      [--setting= --setting=--xla_cpu_use_onednn=true ...]

XLA reads its flags once per process, so each setting runs in its own
process (`XLA_FLAGS=<setting>`), the settings taking turns for `--rounds`
rounds so that a machine's drift hits them alike. Each process times the
supervised step (SGD, momentum 0.9, synthetic CIFAR-sized batch 64) of
each model: median of `--iters` calls after a warm-up call. Prints, per
model and setting, the median over rounds and its speed relative to the
first setting (the default, empty: t(first) / t(setting)). A setting XLA rejects stops the script with
XLA's message.
"""
import json
import os
import statistics
import subprocess
import sys

from absl import app
from absl import flags

from experiments.benchmark import scan_unroll

DEFAULT_SETTINGS = [
    '',
    '--xla_cpu_use_onednn=true',
    '--xla_cpu_use_xnnpack=true',
    '--xla_cpu_experimental_onednn_fusion_type=dot,eltwise',
    '--xla_cpu_experimental_ynn_fusion_type=individual_convolution',
    '--xla_cpu_experimental_xnn_graph_fusion_mode=XNN_GRAPH_FUSION_MODE_GREEDY',
]

flags.DEFINE_list('models', ['resnet8x4', 'wrn_16_2'], 'CIFAR zoo models.')
flags.DEFINE_multi_string('setting', None, 'An XLA_FLAGS value (repeat the '
                          'flag for several; default: a list of CPU '
                          'library and fusion options).')
flags.DEFINE_integer('rounds', 2, 'Turns each setting takes.')
flags.DEFINE_integer('iters', 4, 'Timed calls per process and model.')
flags.DEFINE_bool('child', False, 'Internal: time the models in this '
                  'process and print JSON.')
FLAGS = flags.FLAGS


def step_seconds(name: str, iters: int) -> float:
  """Median seconds of the supervised step of zoo model `name`."""
  par, step, state, x, y = scan_unroll.supervised(name, 64)
  _, times = scan_unroll.call_seconds(par.wrap(step, 1), state,
                                      par.shard({'image': x, 'label': y}),
                                      iters)
  return statistics.median(times)


def run_setting(setting: str) -> dict:
  env = dict(os.environ, XLA_FLAGS=setting)
  cmd = [sys.executable, '-m', 'experiments.benchmark.xla_flags', '--child',
         f'--models={",".join(FLAGS.models)}', f'--iters={FLAGS.iters}']
  p = subprocess.run(cmd, env=env, capture_output=True, text=True,
                     check=False)
  if p.returncode:
    sys.exit(f'XLA_FLAGS={setting!r} failed:\n{p.stderr[-3000:]}')
  return json.loads(p.stdout.strip().splitlines()[-1])


def main(argv):
  del argv
  if FLAGS.child:
    print(json.dumps({m: step_seconds(m, FLAGS.iters)
                      for m in FLAGS.models}))
    return
  settings = FLAGS.setting or DEFAULT_SETTINGS
  seconds = {s: {m: [] for m in FLAGS.models} for s in settings}
  for r in range(FLAGS.rounds):
    for s in settings:
      for m, t in run_setting(s).items():
        seconds[s][m].append(t)
      print(f'round {r + 1}/{FLAGS.rounds} {s or "(default)"}: '
            f'{seconds[s]}', file=sys.stderr, flush=True)
  base = settings[0]
  print('| XLA_FLAGS | ' + ' | '.join(f'{m} s/step | {m} speed vs default'
                                      for m in FLAGS.models) + ' |')
  print('|---|' + '---|---|' * len(FLAGS.models))
  for s in settings:
    cells = []
    for m in FLAGS.models:
      t = statistics.median(seconds[s][m])
      cells += [f'{t:.3f}', f'{statistics.median(seconds[base][m]) / t:.2f}x']
    print(f'| `{s}` | ' + ' | '.join(cells) + ' |' if s else
          '| (default) | ' + ' | '.join(cells) + ' |')


if __name__ == '__main__':
  app.run(main)
