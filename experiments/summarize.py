"""Mean ± std over seeds of a summary entry, as Markdown table rows.

  python -m experiments.summarize 'LABEL=GLOB@KEY' ['LABEL=GLOB@KEY' ...]

Each GLOB matches run folders (one per seed); KEY is an entry of their
summary.json such as `student/test_accuracy`, or FILE:KEY for another JSON
file of the run folder (e.g. generations.json:gen3/test_accuracy).
"""
import glob
import json
import os
import statistics
import sys


def values(pattern: str, key: str) -> list[float]:
  name, key = key.split(':') if ':' in key else ('summary.json', key)
  out = []
  for d in sorted(glob.glob(pattern)):
    with open(os.path.join(d, name)) as f:
      out.append(100 * json.load(f)[key])
  if not out:
    raise FileNotFoundError(f'no run matches {pattern!r}')
  return out


def row(spec: str) -> str:
  label, rest = spec.split('=', 1)
  pattern, key = rest.rsplit('@', 1)
  v = values(pattern, key)
  std = statistics.stdev(v) if len(v) > 1 else 0.0
  return f'| {label} | {len(v)} | {statistics.mean(v):.1f} ± {std:.1f} |'


def main(argv):
  print('| run | seeds | test accuracy (%) |\n|---|---|---|')
  for spec in argv[1:]:
    print(row(spec))


if __name__ == '__main__':
  main(sys.argv)
