"""The cross-tokenizer table (issue #23 item 1) from the finished runs of
`launch/specs/lm_cross_tokenizer.py`: per method the held-out bits per byte
of the byte-level student (mean ± std over seeds), the teacher it learnt
from, its difference from the student trained from scratch with the same
seed (mean ± std over the seeds both have), and in how many of those seeds
it is lower; then each teacher's own bits per byte.

  python -m experiments.cross_tokenizer.table runs/lm_cross_tokenizer
"""
import sys

from kd import tables

METRIC = 'test_bits_per_byte'
ORDER = ('scratch', 'uld', 'hybrid', 'forward_kl')


def _teacher(config: dict) -> str:
  d = config['data']
  return f'BPE-{d["vocab_size"]}' if d['tokenizer'] == 'bpe' else d[
      'tokenizer']


def rows(root: str) -> tuple[list[list[str]], list[list[str]]]:
  """(student rows, teacher rows) of the table, as cells."""
  students, teachers = {}, {}
  for d in tables.find_runs(root):
    stages = {e['attrs']['stage']: e for e in tables.describe(
        d, ['teacher', 'student'], (METRIC,))}
    teacher, student = stages.get('teacher'), stages.get('student')
    if teacher is None or student is None or student['values'][METRIC] is None:
      continue
    name = _teacher(teacher['config'])
    if teacher['values'][METRIC] is not None:
      teachers[name] = teacher['values'][METRIC]
    a = student['attrs']
    students.setdefault(a['method'], {})[int(a['seed'])] = (
        student['values'][METRIC], '-' if a['method'] == 'scratch' else name)
  scratch = {s: v for s, (v, _) in students.get('scratch', {}).items()}
  out = []
  for method in sorted(students, key=lambda m: (ORDER + (m,)).index(m)):
    runs = students[method]
    diffs = [v - scratch[s] for s, (v, _) in runs.items() if s in scratch]
    compared = method != 'scratch' and diffs
    out.append([method, next(iter(runs.values()))[1], str(len(runs)),
                tables.spread([v for v, _ in runs.values()]),
                tables.spread(diffs, sign='+') if compared else '-',
                f'{sum(d < 0 for d in diffs)} of {len(diffs)}' if compared
                else '-'])
  return out, [[k, f'{v:.3f}'] for k, v in sorted(teachers.items())]


def markdown(root: str) -> str:
  students, teachers = rows(root)
  head = ['method', 'teacher', 'seeds', 'bits per byte',
          'minus scratch (same seed)', 'lower than scratch']
  return '\n'.join(tables.grid(head, students) + [''] + tables.grid(
      ['teacher', 'bits per byte'], teachers))


def main(argv: list[str]) -> int:
  if len(argv) != 1:
    print(__doc__.strip().splitlines()[-1].strip(), file=sys.stderr)
    return 2
  students, _ = rows(argv[0])
  if not students:
    print(f'no finished run with {METRIC} under {argv[0]}: run '
          'python -m launch.sweep launch/specs/lm_cross_tokenizer.py '
          '--workdir=runs first', file=sys.stderr)
    return 1
  print(markdown(argv[0]))
  return 0


if __name__ == '__main__':
  sys.exit(main(sys.argv[1:]))
