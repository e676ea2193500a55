"""Held-out bits per byte of the LM distillation sweep, one bar per method
(mean ± std over seeds, each seed a dot), the teacher as a line.

  python -m experiments.language_model.plot runs/lm_distill \
      --out=experiments/language_model/lm_distill.png

Reads the runs as `kd.tables` does (finished runs only; the student stage of
each pipeline, the shared teacher's own folder for the line).
"""
import os
import statistics

from absl import app
from absl import flags
import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

from kd import tables

_OUT = flags.DEFINE_string('out', None, 'PNG path (default: ROOT/bpb.png).')
METRIC = 'test_bits_per_byte'


def collect(root: str) -> tuple[dict, float | None]:
  """({method: [bits per byte per seed]}, the teacher's bits per byte)."""
  by_method, teacher = {}, None
  for d in tables.find_runs(root):
    for entry in tables.describe(d, metrics=(METRIC,)):
      value = entry['values'][METRIC]
      if value is None:
        continue
      if entry['attrs']['stage'] is None:  # The shared teacher's folder.
        teacher = value
      else:
        by_method.setdefault(entry['attrs']['method'], []).append(value)
  return by_method, teacher


def plot(by_method: dict, teacher: float | None, out: str) -> None:
  order = sorted(by_method, key=lambda m: statistics.mean(by_method[m]))
  fig, ax = plt.subplots(figsize=(7, 3.6))
  for i, m in enumerate(order):
    v = by_method[m]
    std = statistics.stdev(v) if len(v) > 1 else 0.0
    ax.bar(i, statistics.mean(v), yerr=std, color='tab:blue', alpha=0.6,
           capsize=3)
    ax.plot([i] * len(v), v, 'k.', markersize=4)
  if teacher is not None:
    ax.axhline(teacher, color='tab:red', linestyle='--',
               label=f'teacher {teacher:.3f}')
    ax.legend(loc='upper left')
  ax.set_xticks(range(len(order)), order, rotation=20)
  low = min(min(v) for v in by_method.values())
  ax.set_ylim(min(low, teacher or low) - 0.2,
              max(max(v) for v in by_method.values()) + 0.1)
  ax.set_ylabel('held-out bits per byte (lower is better)')
  ax.set_title('0.11M student distilled from a 0.82M teacher (stdlib source)')
  fig.tight_layout()
  fig.savefig(out, dpi=120)


def main(argv):
  if len(argv) != 2:
    raise app.UsageError('usage: python -m experiments.language_model.plot '
                         'ROOT [--out=FILE]')
  by_method, teacher = collect(argv[1])
  if not by_method:
    raise SystemExit(f'no finished student runs under {argv[1]}')
  out = _OUT.value or os.path.join(argv[1], 'bpb.png')
  plot(by_method, teacher, out)
  print(f'wrote {out}')


if __name__ == '__main__':
  app.run(main)
