"""Turn finished runs into a paper table.

  python -m kd.tables ROOT [--group-by=teacher,student,method]
      [--paper=experiments/paper_tables/crd.py] [--stage=student] [--csv=FILE]

Reads every run under ROOT (a folder with `summary.json`; pipelines report
their `--stage`, by default the last one) and prints a Markdown table: mean
± std over seeds and the number of seeds, for last-step and best-evaluation
test accuracy in separate columns (papers differ on which they report), and,
with a paper spec, the published number and the difference (last - paper).

Group-by keys are looked up in the run's `sweep.json` arguments first, then
in its config: `model` (the reported stage's model), `teacher`, `student`,
`method` (the loss terms, or 'scratch'), `dataset`, or any config path such
as `optimizer.lr`.
"""
import csv
import importlib.util
import json
import math
import os
import statistics
import sys

from absl import app
from absl import flags


def _load(path):
  with open(path) as f:
    text = f.read()
  try:
    return json.loads(text)
  except json.JSONDecodeError as e:
    raise ValueError(f'{path} is not valid JSON ({e}): a run cut short while '
                     'writing it; rerun that run\'s command') from e


def find_runs(root: str) -> list[str]:
  """Directories under root with a summary.json that are not pipeline
  stages of a run already found."""
  runs = []
  for dirpath, dirnames, filenames in os.walk(root):
    if 'summary.json' in filenames and 'config.json' in filenames:
      runs.append(dirpath)
      dirnames[:] = []  # A pipeline's stages belong to it.
  return sorted(runs)


def _lookup(config: dict, path: str):
  for part in path.split('.'):
    if not isinstance(config, dict) or part not in config:
      return None
    config = config[part]
  return config


def describe(run_dir: str, stage: str | None = None,
             metric: str = 'test_accuracy') -> dict:
  """Attributes and figures of one run (of its `stage` if a pipeline)."""
  config, summary = (_load(os.path.join(run_dir, f))
                     for f in ('config.json', 'summary.json'))
  prefix = ''
  if 'stages' in config:
    stage = stage or config['stage_order'][-1]
    config, prefix = config['stages'][stage], f'{stage}/'
  sweep_path = os.path.join(run_dir, 'sweep.json')
  args = _load(sweep_path)['args'] if os.path.exists(sweep_path) else {}
  terms = sorted({t['loss'] for t in config['distill']['terms'].values()})
  attrs = {'model': config['model']['name'], 'student': config['model']['name'],
           'teacher': config['distill']['teacher']['model'] or None,
           'method': '+'.join(terms) or 'scratch',
           'dataset': config['data']['name'], 'seed': config['seed']}
  attrs.update(args)
  get = lambda k: summary.get(prefix + k)
  return {'dir': run_dir, 'attrs': attrs, 'config': config,
          'last': get(metric),
          'best': get('best_' + metric)}


def _key(run: dict, keys: list[str]) -> tuple:
  return tuple(str(run['attrs'].get(k, _lookup(run['config'], k)))
               for k in keys)


def _stats(values: list[float]) -> tuple[float, float]:
  values = [v for v in values if v is not None]
  if not values:
    return math.nan, math.nan
  return (statistics.mean(values),
          statistics.stdev(values) if len(values) > 1 else 0.0)


def load_paper(path: str):
  spec = importlib.util.spec_from_file_location('paper_spec', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def table(runs: list[dict], keys: list[str], paper=None) -> list[dict]:
  """One row per group: keys, n, last/best mean and std, published, diff."""
  groups = {}
  for run in runs:
    groups.setdefault(_key(run, keys), []).append(run)
  rows = []
  def order(key):  # Numbers as numbers: T=4 before T=20.
    return tuple((0, float(k), '') if k.replace('.', '', 1).isdigit()
                 else (1, 0.0, k) for k in key)

  for key, members in sorted(groups.items(), key=lambda kv: order(kv[0])):
    last, last_sd = _stats([r['last'] for r in members])
    best, best_sd = _stats([r['best'] for r in members])
    row = dict(zip(keys, key), n=len(members), last=last, last_std=last_sd,
               best=best, best_std=best_sd)
    if paper is not None:
      published = paper.PUBLISHED.get(key)
      row['paper'] = published
      row['diff'] = None if published is None else last - published
    rows.append(row)
  return rows


def markdown(rows: list[dict], keys: list[str], paper=None) -> str:
  pct = lambda m, s: '-' if math.isnan(m) else f'{100 * m:.2f} ± {100 * s:.2f}'
  head = keys + ['seeds', 'last (%)', 'best (%)']
  if paper is not None:
    head += ['paper (%)', 'last - paper']
  out = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
  for r in rows:
    cells = [r[k] for k in keys] + [str(r['n']), pct(r['last'], r['last_std']),
                                    pct(r['best'], r['best_std'])]
    if paper is not None:
      cells += (['-', '-'] if r['paper'] is None else
                [f'{100 * r["paper"]:.2f}', f'{100 * r["diff"]:+.2f}'])
    out.append('| ' + ' | '.join(cells) + ' |')
  if paper is not None:
    out.append(f'\nPublished: {paper.SOURCE}')
  return '\n'.join(out)


def define_flags():
  flags.DEFINE_list('group-by', ['model'], 'Attributes to group by.')
  flags.DEFINE_string('paper', None, 'A paper spec (PUBLISHED, KEYS).')
  flags.DEFINE_string('stage', None, 'Pipeline stage to report.')
  flags.DEFINE_string('csv', None, 'Also write the rows as CSV.')
  flags.DEFINE_string('metric', 'test_accuracy', 'Summary key to report, '
                      'e.g. tflite_int8_accuracy.')


def main(argv):
  if len(argv) != 2:
    raise app.UsageError('usage: python -m kd.tables ROOT [flags]')
  f = flags.FLAGS
  paper = load_paper(f.paper) if f.paper else None
  keys = (list(paper.KEYS) if paper is not None and not f['group-by'].present
          else f['group-by'].value)
  dirs = find_runs(argv[1])
  if not dirs:
    sys.exit(f'no finished runs (summary.json + config.json) under {argv[1]}')
  rows = table([describe(d, f.stage, f.metric) for d in dirs], keys, paper)
  print(markdown(rows, keys, paper))
  if f.csv:
    with open(f.csv, 'w', newline='') as out:
      writer = csv.DictWriter(out, fieldnames=list(rows[0]))
      writer.writeheader()
      writer.writerows(rows)


if __name__ == '__main__':
  define_flags()
  app.run(main)
