"""Mean ± std over seeds of summary.json entries, as Markdown table rows.

  python -m experiments.summarize KEY 'LABEL=GLOB' ['LABEL=GLOB' ...]

Each GLOB matches run folders (one per seed); KEY is an entry of their
summary.json such as `student/test_accuracy`, or FILE:KEY for another JSON
file of the run folder.
"""
import glob
import json
import os
import statistics
import sys


def row(label: str, pattern: str, key: str) -> str:
  name, key = key.split(':') if ':' in key else ('summary.json', key)
  values = []
  for d in sorted(glob.glob(pattern)):
    with open(os.path.join(d, name)) as f:
      values.append(100 * json.load(f)[key])
  std = statistics.stdev(values) if len(values) > 1 else 0.0
  return (f'| {label} | {len(values)} | {statistics.mean(values):.2f} ± '
          f'{std:.2f} |')


def main(argv):
  key, groups = argv[1], argv[2:]
  print('| run | seeds | test accuracy (%) |\n|---|---|---|')
  for g in groups:
    label, pattern = g.split('=', 1)
    print(row(label, pattern, key))


if __name__ == '__main__':
  main(sys.argv)
