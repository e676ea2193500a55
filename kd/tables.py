"""Turn finished runs into a paper table.

  python -m kd.tables ROOT [ROOT ...] [--group-by=teacher,student,method]
      [--paper=experiments/paper_tables/crd.py] [--stage=student]
      [--metric=test_accuracy,best_test_accuracy] [--csv=FILE]

Reads every finished run under the ROOTs (a folder with `config.json` and
`summary.json`; a pipeline whose own summary.json is missing is unfinished
and left out with its stages, as is a run whose summary's steps are not
its config's) and prints a Markdown table: per group the
number of runs (seeds) and, for each `--metric` (summary keys; accuracies and
agreements, fractions, shown in %), mean ± std over the runs that have it
(just the value for one run; '(n=k)' when only k of the group's runs have
it). The default
metrics are the last-step (`last`) and best-evaluation (`best`) test
accuracy, as papers differ on which they report. With a paper spec, the
published number and the difference (first metric - paper).

Pipelines report their `--stage` (by default the last one; a list reports
each, with the stage name as attribute `stage`).

Group-by keys are looked up in the run's `sweep.json` arguments first, then
its attributes: `model` (the reported stage's model, also `student`),
`teacher`, `method` (the loss terms, or 'scratch'), `temperature` (of its
terms), `dataset`, `seed`, `stage`, then its config (any path such as
`optimizer.lr`). A value a run lacks prints as '-'; a list as 1200-1200.
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

from kd import fields

ATTRIBUTES = ('model', 'student', 'teacher', 'method', 'temperature',
              'dataset', 'seed', 'stage')
METRICS = ('test_accuracy', 'best_test_accuracy')
_HEADERS = {'test_accuracy': 'last', 'best_test_accuracy': 'best'}
_MISSING = fields.MISSING


def read_json(path: str):
  """The JSON in `path`, or None (with a warning naming the file) if it is
  not valid JSON, so that one broken run does not stop a table."""
  with open(path) as f:
    text = f.read()
  try:
    return json.loads(text)
  except json.JSONDecodeError as e:
    print(f'warning: {path} is not valid JSON ({e}); its run is left out',
          file=sys.stderr)
    return None


def spread(values, fmt: str = '.3f', sign: str = '') -> str:
  """'mean ± std' of the values that are not None, each as `fmt` (the mean
  with `sign`, e.g. '+'); '-' for none, no std for one."""
  values = [v for v in values if v is not None]
  if not values:
    return '-'
  std = f' ± {statistics.stdev(values):{fmt}}' if len(values) > 1 else ''
  return f'{statistics.mean(values):{sign}{fmt}}{std}'


def grid(head: list[str], rows: list[list[str]]) -> list[str]:
  """The lines of a Markdown table of `head` and rows of cells."""
  return (['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)] +
          ['| ' + ' | '.join(r) + ' |' for r in rows])


def find_runs(root: str) -> list[str]:
  """Folders under root with config.json and summary.json. A run's folder is
  not searched further (a pipeline's stages belong to it), and one without
  summary.json, or whose summary's steps are not its config's (of every
  stage, for a pipeline), is unfinished: left out, its finished stages too."""
  runs, unfinished = [], []
  for dirpath, dirnames, filenames in os.walk(root):
    dirnames.sort()
    if 'config.json' in filenames:
      dirnames[:] = []
      why = ('no summary.json' if 'summary.json' not in filenames else
             unfinished_why(dirpath))
      if why:
        unfinished.append(dirpath + ('' if why == 'no summary.json' else
                                     f' ({why})'))
      else:
        runs.append(dirpath)
  if unfinished:
    print(f'note: {len(unfinished)} unfinished run(s) left out: '
          f'{", ".join(sorted(unfinished))}', file=sys.stderr)
  return sorted(runs)


def sweep_runs(root: str):
  """(run directory, its sweep arguments, config, summary) of every
  finished run a sweep made under `root` (a run without sweep.json, such
  as the sweep's shared teacher, or with a corrupt file, is left out)."""
  for d in find_runs(root):
    sweep = os.path.join(d, 'sweep.json')
    if not os.path.exists(sweep):
      continue
    args = (read_json(sweep) or {}).get('args')
    config = read_json(os.path.join(d, 'config.json'))
    summary = read_json(os.path.join(d, 'summary.json'))
    if args and config and summary:
      yield d, args, config, summary


def unfinished_why(run_dir: str) -> str | None:
  """Why a run with a summary is unfinished ('summary at step S of T',
  per stage for a pipeline), or None; a file that is not JSON is left to
  `describe`, which names it."""
  try:
    with open(os.path.join(run_dir, 'config.json')) as f:
      config = json.load(f)
    with open(os.path.join(run_dir, 'summary.json')) as f:
      summary = json.load(f)
  except (OSError, json.JSONDecodeError):
    return None
  if not isinstance(config, dict) or not isinstance(summary, dict):
    return None
  if 'stages' in config:
    parts = [(f'{n}/', config['stages'].get(n, {}))
             for n in config.get('stage_order', [])]
  else:
    parts = [('', config)]
  for prefix, c in parts:
    if 'steps' in c and summary.get(prefix + 'steps') != c['steps']:
      return (f'{prefix.rstrip("/")} summary' if prefix else 'summary') + (
          f' at step {summary.get(prefix + "steps")} of {c["steps"]}')
  return None


def _cell(value) -> str:
  """A table cell: '-' for missing, 4 for 4.0, 1200-1200 for a list."""
  if value is None or value is _MISSING:
    return '-'
  if isinstance(value, (list, tuple)):
    return '-'.join(_cell(v) for v in value)
  if isinstance(value, float) and value.is_integer():
    return str(int(value))
  return str(value)


def describe(run_dir: str, stages: list[str] | None = None,
             metrics=METRICS) -> list[dict]:
  """Attributes and metrics of one run, one entry per reported stage of a
  pipeline (`stages`, by default its last); [] if a file is corrupt."""
  files = [os.path.join(run_dir, f) for f in ('config.json', 'summary.json',
                                              'sweep.json')]
  config, summary = read_json(files[0]), read_json(files[1])
  sweep = read_json(files[2]) if os.path.exists(files[2]) else {}
  if config is None or summary is None or sweep is None:
    return []
  if 'stages' not in config:
    return [_entry(run_dir, config, summary, sweep, None, '', metrics)]
  out = []
  for stage in stages or config['stage_order'][-1:]:
    if stage not in config['stages']:
      raise ValueError(f'{run_dir} has no stage {stage!r}; its stages: '
                       f'{list(config["stage_order"])}')
    out.append(_entry(run_dir, config['stages'][stage], summary, sweep, stage,
                      f'{stage}/', metrics))
  return out


def _entry(run_dir, config, summary, sweep, stage, prefix, metrics) -> dict:
  terms = config['distill']['terms'].values()
  temperatures = {t.get('kwargs', {}).get('temperature') for t in terms} - {
      None}
  attrs = {'model': config['model']['name'],
           'student': config['model']['name'],
           'teacher': config['distill']['teacher']['model'] or None,
           'method': '+'.join(sorted({t['loss'] for t in terms})) or 'scratch',
           'temperature': (temperatures.pop() if len(temperatures) == 1
                           else None),
           'dataset': config['data']['name'], 'seed': config['seed'],
           'stage': stage}
  attrs.update(sweep.get('args', {}))
  return {'dir': run_dir, 'attrs': attrs, 'config': config,
          'values': {m: summary.get(prefix + m) for m in metrics},
          'metrics': sorted(k.removeprefix(prefix) for k, v in summary.items()
                            if k.startswith(prefix) and _numeric(v))}


def _numeric(v) -> bool:
  return isinstance(v, (int, float)) and not isinstance(v, bool)


def _key(run: dict, keys: list[str]) -> tuple:
  return tuple(_cell(run['attrs'][k] if k in run['attrs'] else
                     fields.get(run['config'], k, _MISSING)) for k in keys)


def check_keys(runs: list[dict], keys: list[str]) -> None:
  """Raises ValueError for a key that is no attribute, sweep argument or
  config path of any run, listing the valid ones."""
  args = sorted({k for r in runs for k in r['attrs']} - set(ATTRIBUTES))
  for k in keys:
    if k not in ATTRIBUTES and k not in args and all(
        not fields.has(r['config'], k) for r in runs):
      raise ValueError(
          f'unknown --group-by key {k!r}; valid: {", ".join(ATTRIBUTES)}; '
          f'sweep arguments: {", ".join(args) or "none"}; or a config path '
          'such as optimizer.lr')


def check_metrics(runs: list[dict], metrics) -> None:
  """Raises ValueError for a metric no run's summary has, listing theirs."""
  found = sorted({m for r in runs for m in r.get('metrics', ())})
  for m in metrics:
    if found and m not in found:
      raise ValueError(f'unknown --metric {m!r}: no run\'s summary has it; '
                       f'their metrics: {", ".join(found)}')


def _stats(values: list) -> tuple[float, float | None, int]:
  """(mean, std, n) of the values that are there; std is None for one."""
  values = [v for v in values if v is not None]
  if not values:
    return math.nan, None, 0
  return (statistics.mean(values),
          statistics.stdev(values) if len(values) > 1 else None, len(values))


def load_paper(path: str):
  """A paper spec (PUBLISHED, KEYS, SOURCE), or ValueError naming the file."""
  if not os.path.isfile(path):
    raise ValueError(f'--paper={path}: no such file; the paper specs are in '
                     'experiments/paper_tables/')
  spec = importlib.util.spec_from_file_location('paper_spec', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  missing = [k for k in ('PUBLISHED', 'KEYS', 'SOURCE')
             if not hasattr(module, k)]
  if missing:
    raise ValueError(f'--paper={path} has no {", ".join(missing)}; see '
                     'experiments/paper_tables/crd.py for the format')
  return module


def table(runs: list[dict], keys: list[str], paper=None,
          metrics=METRICS) -> list[dict]:
  """One row per group: keys, n (runs), each metric's mean, std (`<m>_std`)
  and number of runs that have it (`<m>_n`), published, diff (first metric -
  published)."""
  check_keys(runs, keys)
  groups = {}
  for run in runs:
    groups.setdefault(_key(run, keys), []).append(run)
  rows = []
  def order(key):  # Numbers as numbers: T=4 before T=20.
    return tuple((0, float(k), '') if k.replace('.', '', 1).isdigit()
                 else (1, 0.0, k) for k in key)

  for key, members in sorted(groups.items(), key=lambda kv: order(kv[0])):
    row = dict(zip(keys, key), n=len(members))
    for m in metrics:
      row[m], row[f'{m}_std'], row[f'{m}_n'] = _stats(
          [r['values'][m] for r in members])
    if paper is not None:
      published = paper.PUBLISHED.get(key)
      row['paper'] = published
      row['diff'] = (None if published is None or math.isnan(row[metrics[0]])
                     else row[metrics[0]] - published)
    rows.append(row)
  return rows


def is_fraction(metric: str) -> bool:
  return 'accuracy' in metric or 'agreement' in metric


def _number(x: float) -> str:
  return f'{x:,.0f}' if abs(x) >= 1000 else f'{x:.4g}'


def _value(metric: str, mean: float, std: float | None, n: int = 0,
           runs: int = 0) -> str:
  """'m ± s': fractions in %, other figures (bits per byte, seconds,
  parameters) as they are; ' (n=k)' when only k of the group's runs have
  the metric."""
  if math.isnan(mean):
    return '-'
  if is_fraction(metric):
    text = f'{100 * mean:.2f}' + ('' if std is None else f' ± {100 * std:.2f}')
  else:
    text = _number(mean) + ('' if std is None else f' ± {_number(std)}')
  return text + (f' (n={n})' if n != runs else '')


def markdown(rows: list[dict], keys: list[str], paper=None,
             metrics=METRICS) -> str:
  names = [_HEADERS.get(m, m) for m in metrics]
  head = keys + ['seeds'] + [f'{n} (%)' if is_fraction(m) else n
                             for m, n in zip(metrics, names)]
  if paper is not None:
    head += ['paper (%)', f'{names[0]} - paper']
  out = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
  for r in rows:
    cells = [r[k] for k in keys] + [str(r['n'])] + [
        _value(m, r[m], r[f'{m}_std'], r[f'{m}_n'], r['n']) for m in metrics]
    if paper is not None:
      cells += (['-', '-'] if r['diff'] is None else
                [f'{100 * r["paper"]:.2f}', f'{100 * r["diff"]:+.2f}'])
    out.append('| ' + ' | '.join(cells) + ' |')
  if paper is not None:
    out.append(f'\nPublished: {paper.SOURCE}')
  return '\n'.join(out)


def define_flags():
  flags.DEFINE_list('group-by', ['model'], 'Attributes to group by.')
  flags.DEFINE_string('paper', None, 'A paper spec (PUBLISHED, KEYS).')
  flags.DEFINE_list('stage', None, 'Pipeline stage(s) to report.')
  flags.DEFINE_string('csv', None, 'Also write the rows as CSV.')
  flags.DEFINE_list('metric', list(METRICS), 'Summary keys to report, one '
                    'column each, e.g. test_accuracy,tflite_int8_accuracy.')


def main(argv):
  if len(argv) < 2:
    raise app.UsageError('usage: python -m kd.tables ROOT [ROOT ...] [flags]')
  f = flags.FLAGS
  for root in argv[1:]:
    if not os.path.isdir(root):
      sys.exit(f'{root}: no such folder; pass the --workdir of launch.sweep '
               'or kd.main runs')
  try:
    paper = load_paper(f.paper) if f.paper else None
    keys = (list(paper.KEYS) if paper is not None and
            not f['group-by'].present else f['group-by'].value)
    runs = [entry for root in argv[1:] for d in find_runs(root)
            for entry in describe(d, f.stage, f.metric)]
    if not runs:
      sys.exit('no finished runs (summary.json + config.json) under '
               f'{" ".join(argv[1:])}')
    if f['metric'].present:
      check_metrics(runs, f.metric)
    rows = table(runs, keys, paper, f.metric)
  except ValueError as e:
    sys.exit(str(e))
  print(markdown(rows, keys, paper, f.metric))
  if f.csv:
    with open(f.csv, 'w', newline='') as out:
      writer = csv.DictWriter(out, fieldnames=list(rows[0]))
      writer.writeheader()
      writer.writerows(rows)


if __name__ == '__main__':
  define_flags()
  app.run(main)
