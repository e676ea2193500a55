"""The prune-then-distil table (issue #24) from the finished runs of
`launch/specs/lm_prune_distill.py`: per method the student's parameters,
the held-out bits per byte of its initialisation (the pruned model before
any training, where one is tested), after the run's training tokens (mean
± std over seeds) and minus random init + KD's with the same seed, and the
training tokens it needs to reach random init + KD's and strided init +
KD's final bits per byte (linear between test points, mean over seeds;
against theirs); a PNG of bits per byte against training tokens beside
it.

  python -m experiments.prune_distill.table runs/lm_prune_distill \\
      --out=experiments/prune_distill
"""
import argparse
import json
import os
import statistics
import sys

from kd import tables

METRIC = 'test_bits_per_byte'
ORDER = ('random', 'strided', 'width', 'depth', 'both', 'width_ce')
INIT = {'random': 'random init', 'strided': 'every k-th teacher layer',
        'width': 'width-pruned', 'depth': 'depth-pruned',
        'both': 'width+depth-pruned', 'width_ce': 'width-pruned'}


def curve(stage_dir: str, start: float | None, per_step: int,
          metric: str = METRIC, lower=lambda v: v):
  """[(training tokens or examples, lower(metric))] of a student's test
  rows, from `start` (its initialisation's metric, if tested) at 0;
  `lower` maps the metric to a figure that falls as the student learns
  (1 - accuracy)."""
  points = [] if start is None else [(0, lower(start))]
  with open(os.path.join(stage_dir, 'metrics.jsonl')) as f:
    for line in f:
      row = json.loads(line)
      if metric in row:
        points.append((row['step'] * per_step, lower(row[metric])))
  return sorted(dict(points).items())


def ordered(found: dict, order: tuple = ORDER) -> list[str]:
  """The methods of `found`, those named in `order` first, in its order."""
  return sorted(found, key=lambda m: (order + (m,)).index(m))


def tokens_to_reach(curve, target: float) -> float | None:
  """The first training tokens at which the curve reaches `target`, linear
  between its points; None if it never does."""
  for (t0, v0), (t1, v1) in zip(curve, curve[1:]):
    if v1 <= target:
      return t0 if v0 <= target else t0 + (t1 - t0) * (v0 - target) / (
          v0 - v1)
  return curve[0][0] if curve and curve[0][1] <= target else None


def runs(root: str) -> dict:
  """{method: {seed: run}}, a run: params, curve, init and final bpb."""
  out = {}
  for d, args, config, summary in tables.sweep_runs(root):
    s = config['stages']['student']
    per_step = s['batch_size'] * s['data']['seq_len']
    init = summary.get(f'pruned/{METRIC}')
    out.setdefault(args['method'], {})[int(args['seed'])] = {
        'params': summary['student/params'], 'init': init,
        'final': summary[f'student/{METRIC}'],
        'teacher': summary.get(f'teacher/{METRIC}'),
        'curve': curve(os.path.join(d, 'student'), init, per_step)}
  return out


def reach_cells(found: dict, target: float | None, fmt,
                base_method: str = 'random') -> dict[str, str]:
  """Per method: the mean training tokens (or examples) at which its seeds'
  curves reach `target` (`base_method`'s mean final figure), `fmt` of it,
  and how many times fewer than `base_method`'s own seeds needed to reach
  it (the seeds that never do are counted, not averaged)."""
  reach = {m: [tokens_to_reach(r['curve'], target) for r in seeds.values()]
           if target is not None else [] for m, seeds in found.items()}
  base = [t for t in reach.get(base_method, []) if t is not None]
  base = statistics.mean(base) if base else None
  cells = {}
  for method, ts in reach.items():
    reached = [t for t in ts if t is not None]
    cell = '-' if not ts else 'not within the run'
    if reached:
      mean = statistics.mean(reached)
      cell = fmt(mean)
      if method != base_method and base:
        cell += f' ({base / max(mean, 1):.1f}x fewer)'
      if len(reached) < len(ts):
        cell += f', {len(ts) - len(reached)} seed(s) never'
    cells[method] = cell
  return cells


def rows(found: dict) -> list[list[str]]:
  base = found.get('random', {})
  final = lambda m: (statistics.mean(r['final'] for r in found[m].values())
                     if m in found else None)
  millions = lambda t: f'{t / 1e6:.2f}M'
  reach = reach_cells(found, final('random'), millions)
  # What pruning buys over the teacher's own layers, too.
  reach_strided = reach_cells(found, final('strided'), millions, 'strided')
  out = []
  for method in ordered(found):
    seeds = found[method]
    diffs = [r['final'] - base[s]['final'] for s, r in seeds.items()
             if s in base and method != 'random']
    first = next(iter(seeds.values()))
    out.append([method, INIT.get(method, method),
                f'{first["params"]:,.0f}', str(len(seeds)),
                tables.spread([r['init'] for r in seeds.values()]),
                tables.spread([r['final'] for r in seeds.values()]),
                tables.spread(diffs, sign='+') if diffs else '-',
                reach[method], reach_strided[method]])
  return out


def per_seed(found: dict, order: tuple, fmt) -> list[str]:
  """A markdown grid: per method and seed, `fmt` of each test's figure."""
  seeds = sorted({s for m in found.values() for s in m})
  return tables.grid(['method'] + [f'seed {s}' for s in seeds], [
      [method] + [' '.join(fmt(v) for _, v in found[method][s]['curve'])
                  if s in found[method] else '-' for s in seeds]
      for method in ordered(found, order)])


def markdown(found: dict) -> str:
  head = ['method', 'initialisation', 'params', 'seeds',
          'bits per byte at init', 'bits per byte after training',
          'minus random+KD (same seed)', 'tokens to reach random+KD',
          'tokens to reach strided+KD']
  lines = tables.grid(head, rows(found))
  lines += ['', 'Bits per byte per seed at each test (training tokens from '
            '0, every 50 steps; random and strided init untested at 0):', '']
  lines += per_seed(found, ORDER, lambda v: f'{v:.3f}')
  teacher = [r['teacher'] for m in found.values() for r in m.values()
             if r['teacher'] is not None]
  if teacher:
    lines += ['', f'Teacher: {teacher[0]:.3f} bits per byte.']
  return '\n'.join(lines)


def plot(found: dict, path: str, order=ORDER, init=None,
         x_label='training tokens (millions)', x_scale=1e6,
         y_label='held-out bits per byte (mean over seeds)', y=lambda v: v,
         teacher_y=lambda v: v, y_top: float | None = 5.0) -> None:
  """Each method's mean curve over seeds (`curve`'s points: x / `x_scale`
  against `y` of the mean), the teacher's figure (`teacher_y` of it)
  dotted."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use('Agg')
  from matplotlib import pyplot as plt  # pylint: disable=import-outside-toplevel
  init = INIT if init is None else init
  fig, ax = plt.subplots(figsize=(7, 4.5))
  for method in ordered(found, order):
    curves = [dict(r['curve']) for r in found[method].values()]
    shared = sorted(set.intersection(*(set(c) for c in curves)))
    ax.plot([t / x_scale for t in shared],
            [y(statistics.mean(c[t] for c in curves)) for t in shared],
            marker='o', ms=3, label=f'{method} ({init.get(method, method)})')
  teacher = [r['teacher'] for m in found.values() for r in m.values()
             if r['teacher'] is not None]
  if teacher:
    ax.axhline(teacher_y(teacher[0]), color='k', ls=':', label='teacher')
  ax.set_xlabel(x_label)
  ax.set_ylabel(y_label)
  if y_top:
    ax.set_ylim(top=min(ax.get_ylim()[1], y_top))
  ax.legend(fontsize=8)
  ax.grid(alpha=0.3)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def main(argv: list[str]) -> int:
  parser = argparse.ArgumentParser(prog='experiments.prune_distill.table')
  parser.add_argument('root')
  parser.add_argument('--out', default='',
                      help='folder for table.md and plot.png')
  args = parser.parse_args(argv)
  found = runs(args.root)
  if not found:
    print(f'no finished run under {args.root}: run python -m launch.sweep '
          'launch/specs/lm_prune_distill.py --workdir=runs first',
          file=sys.stderr)
    return 1
  text = markdown(found)
  print(text)
  if args.out:
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, 'table.md'), 'w') as f:
      f.write(text + '\n')
    plot(found, os.path.join(args.out, 'plot.png'))
    print(f'wrote {args.out}/table.md and {args.out}/plot.png')
  return 0


if __name__ == '__main__':
  sys.exit(main(sys.argv[1:]))
