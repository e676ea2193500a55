"""The MNIST-1D prune-then-distil tables (issue #24) from the finished runs
of `launch/specs/mnist1d_prune_distill.py` (cnn1d) or
`launch/specs/vit_prune_distill.py` (ViT): per method the student's
parameters, its test accuracy at initialisation (the pruned net before any
training, where one is tested), after training and at its best test (mean
± std over seeds) and minus random init + KD's with the same seed, and the
training examples it needs to reach random init + KD's final accuracy
(linear between test points, mean over seeds; against random init + KD's
own); with --out, the table and a PNG of test accuracy against training
examples, named after the sweep's folder.

  python -m experiments.prune_distill.mnist1d runs/mnist1d_prune_distill \\
      --out=experiments/prune_distill
"""
import argparse
import os
import statistics
import sys

from experiments.prune_distill.table import (curve, ordered, per_seed, plot,
                                             reach_cells)
from kd import tables

METRIC = 'test_accuracy'
ORDER = ('random', 'width', 'width_l1', 'width_ce')
INIT = {'random': 'random init, KD', 'width': 'pruned by activation, KD',
        'width_l1': 'pruned by filter L1, KD',
        'width_ce': 'pruned by activation, labels only'}


def runs(root: str) -> dict:
  """{method: {seed: run}}, a run: params, curve, init and final accuracy."""
  out = {}
  for d, args, config, summary in tables.sweep_runs(root):
    s = config['stages']['student']
    init = summary.get(f'pruned/{METRIC}')
    out.setdefault(args['method'], {})[int(args['seed'])] = {
        'params': summary['student/params'], 'init': init,
        'final': summary[f'student/{METRIC}'],
        'teacher': summary.get(f'teacher/{METRIC}'),
        'teacher_params': summary.get('teacher/params'),
        'teacher_model': config['stages']['teacher']['model']['name'],
        'curve': curve(os.path.join(d, 'student'), init, s['batch_size'],
                       METRIC, lambda accuracy: 1 - accuracy)}
  return out


def _pct(values, sign=''):
  return tables.spread([None if v is None else 100 * v for v in values],
                       '.1f', sign)


def rows(found: dict) -> list[list[str]]:
  base = found.get('random', {})
  target = (1 - statistics.mean(r['final'] for r in base.values())
            if base else None)  # As test error: lower is better.
  reach = reach_cells(found, target, lambda e: f'{e:,.0f}')
  out = []
  for method in ordered(found, ORDER):
    seeds = found[method]
    diffs = [r['final'] - base[s]['final'] for s, r in seeds.items()
             if s in base and method != 'random']
    first = next(iter(seeds.values()))
    out.append([method, INIT.get(method, method), f'{first["params"]:,.0f}',
                str(len(seeds)), _pct([r['init'] for r in seeds.values()]),
                _pct([r['final'] for r in seeds.values()]),
                _pct([1 - min(e for _, e in r['curve'])
                      for r in seeds.values()]),
                _pct(diffs, '+') if diffs else '-', reach[method]])
  return out


def markdown(found: dict) -> str:
  head = ['method', 'initialisation, training', 'params', 'seeds',
          'test accuracy at init (%)', 'after training (%)',
          'best test (%)', 'minus random+KD (same seed)',
          'examples to reach random+KD']
  lines = tables.grid(head, rows(found))
  lines += ['', 'Test accuracy (%) per seed at each test (training examples '
            'from 0; random init untested at 0):', '']
  lines += per_seed(found, ORDER, lambda error: f'{100 * (1 - error):.1f}')
  teacher = [r for m in found.values() for r in m.values()
             if r['teacher'] is not None]
  if teacher:
    t = teacher[0]
    lines += ['', f'Teacher ({t["teacher_model"]}, {t["teacher_params"]:,.0f} '
              f'parameters): {100 * t["teacher"]:.1f}% test accuracy.']
  return '\n'.join(lines)


def main(argv: list[str]) -> int:
  parser = argparse.ArgumentParser(prog='experiments.prune_distill.mnist1d')
  parser.add_argument('root')
  parser.add_argument('--out', default='',
                      help='folder for <sweep>.md and <sweep>.png')
  args = parser.parse_args(argv)
  found = runs(args.root)
  if not found:
    print(f'no finished run under {args.root}: run python -m launch.sweep '
          'launch/specs/mnist1d_prune_distill.py (or vit_prune_distill.py) '
          '--workdir=runs first',
          file=sys.stderr)
    return 1
  text = markdown(found)
  print(text)
  if args.out:
    os.makedirs(args.out, exist_ok=True)
    out = os.path.join(args.out, os.path.basename(os.path.normpath(args.root)))
    with open(out + '.md', 'w') as f:
      f.write(text + '\n')
    plot(found, out + '.png', ORDER, INIT,
         'training examples (thousands)', 1e3,
         'test accuracy (%, mean over seeds)', lambda error: 100 * (1 - error),
         lambda accuracy: 100 * accuracy, None)
    print(f'wrote {out}.md and {out}.png')
  return 0


if __name__ == '__main__':
  sys.exit(main(sys.argv[1:]))
