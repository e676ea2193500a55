"""The several-teachers table (issue #23 item 3) from the finished runs of
`launch/specs/lm_multi_teacher.py`: per method the student's held-out bits
per byte on each source of the mixed corpus and on both (mean ± std over
seeds), the single teacher with the lower bits per byte on both marked
'best single'; then each teacher's own bits per byte on its corpus.

  python -m experiments.multi_teacher_lm.table runs/lm_multi_teacher
"""
import os
import statistics
import sys

from kd import tables

METRIC = 'test_bits_per_byte'
ORDER = ('scratch', 'code', 'prose', 'mean', 'route')
TEACHERS = ('code_teacher', 'prose_teacher')


def sources(run_dir: str) -> list[str]:
  """The sources of a run's student, as its summary names them."""
  config = tables.read_json(os.path.join(run_dir, 'config.json')) or {}
  name = config.get('stages', {}).get('student', {}).get('data', {}).get(
      'name', '')
  return [p.replace('/', '_') for p in name.split('+')] if '+' in name else []


def rows(root: str) -> tuple[list[str], list[list[str]], list[list[str]]]:
  """(sources, student rows, teacher rows) of the table, as cells."""
  found, teachers, names = {}, {}, []
  for d in tables.find_runs(root):
    names = names or sources(d)
    if not names:
      continue
    metrics = (METRIC,) + tuple(f'{s}/{METRIC}' for s in names)
    for e in tables.describe(d, list(TEACHERS) + ['student'], metrics):
      stage, v = e['attrs']['stage'], e['values']
      if stage in TEACHERS and v[METRIC] is not None:
        teachers[f'{stage} ({e["config"]["data"]["name"]})'] = v[METRIC]
      elif stage == 'student' and v[METRIC] is not None:
        found.setdefault(e['attrs']['method'], {})[int(e['attrs']['seed'])] = [
            v[m] for m in metrics]
  singles = [m for m in ('code', 'prose') if m in found]
  best = min(singles, key=lambda m: statistics.mean(
      r[0] for r in found[m].values())) if singles else None
  out = []
  for method in sorted(found, key=lambda m: (ORDER + (m,)).index(m)):
    runs = list(found[method].values())
    label = f'{method} (best single)' if method == best else method
    out.append([label, str(len(runs))] + [
        tables.spread([r[i] for r in runs if r[i] is not None])
        for i in range(1, len(names) + 1)] + [tables.spread([r[0] for r in runs])])
  return names, out, [[k, f'{v:.3f}'] for k, v in sorted(teachers.items())]


def markdown(root: str) -> str:
  names, students, teachers = rows(root)
  head = ['student on the mix', 'seeds'] + [
      f'bits per byte, {s}' for s in names] + ['bits per byte, both']
  return '\n'.join(tables.grid(head, students) + [''] + tables.grid(
      ['teacher (its corpus)', 'bits per byte'], teachers))


def main(argv: list[str]) -> int:
  if len(argv) != 1:
    print(__doc__.strip().splitlines()[-1].strip(), file=sys.stderr)
    return 2
  _, students, _ = rows(argv[0])
  if not students:
    print(f'no finished run with {METRIC} under {argv[0]}: run '
          'python -m launch.sweep launch/specs/lm_multi_teacher.py '
          '--workdir=runs first', file=sys.stderr)
    return 1
  print(markdown(argv[0]))
  return 0


if __name__ == '__main__':
  sys.exit(main(sys.argv[1:]))
