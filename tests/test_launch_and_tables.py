"""Sweep expansion and scripts, and paper tables from run folders."""
import glob
import importlib
import json
import os
import re
import shlex
import signal
import statistics
import subprocess
import sys
import time

import jax
import pytest

from kd import runs as kd_runs
from kd import tables
from launch import sweep
from tests import run_checks

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPEC = '''
NAME = 'demo'
CONFIG = 'configs/mnist1d/distill.py'
ARGS = ['method=scratch,teacher_dir={root}/teacher', 'method=kd,temperature=4']
GRID = {'config.stages.student.optimizer.lr': [0.01, 0.003]}
SEEDS = [0, 1]
TAGS = ['t1']
'''


@pytest.fixture
def spec(tmp_path):
  path = tmp_path / 'spec.py'
  path.write_text(SPEC)
  return sweep.load_spec(str(path))


def test_expansion_names_every_run_after_its_overrides(spec, tmp_path):
  runs = sweep.expand(spec, str(tmp_path))
  assert len(runs) == 2 * 2 * 2
  names = [r.name for r in runs]
  assert len(set(names)) == 8
  assert names[0] == 'method=scratch__stages.student.optimizer.lr=0.01__seed=0'
  first = runs[0]
  assert first.arg == (f'method=scratch,teacher_dir={tmp_path}/demo/teacher,'
                       'seed=0')
  cmd = first.command(spec.CONFIG)
  assert cmd[:3] == [sys.executable, '-m', 'kd.main']
  assert f'--workdir={tmp_path}/demo/{first.name}' in cmd
  assert '--wandb_group=demo' in cmd and '--wandb_tags=t1' in cmd
  assert '--config.stages.student.optimizer.lr=0.01' in cmd


def test_finished_runs_are_skipped(spec, tmp_path, capsys):
  runs = sweep.expand(spec, str(tmp_path))
  os.makedirs(runs[0].workdir)
  open(os.path.join(runs[0].workdir, 'summary.json'), 'w').write('{}')
  assert sweep.run_local(spec, runs, parallel=1, dry_run=True) == 0
  out = capsys.readouterr().out
  assert '8 runs, 1 finished, 7 to run' in out
  assert runs[0].name not in out.split('to run', 1)[1]


def test_a_summary_short_of_the_configs_steps_is_run_again(spec, tmp_path):
  """The sweep counts a run finished as kd.tables does: its summary at the
  config's steps (it once counted any summary.json)."""
  run = sweep.expand(spec, str(tmp_path))[0]
  os.makedirs(run.workdir)
  with open(os.path.join(run.workdir, 'config.json'), 'w') as f:
    json.dump({'steps': 100}, f)
  for steps, finished in ((50, False), (100, True)):
    with open(os.path.join(run.workdir, 'summary.json'), 'w') as f:
      json.dump({'steps': steps}, f)
    assert run.finished is finished


@pytest.mark.parametrize('mode,file,expected', [
    ('slurm', 'sweep.slurm', ['#SBATCH --array=1-8', 'srun bash -c "$cmd"']),
    ('tpu', 'sweep_tpu.sh', ['gcloud compute tpus tpu-vm ssh', '--worker=all']),
    ('wandb', 'sweep.yaml', ['config.stages.student.optimizer.lr:',
                             'values: ["0.01", "0.003"]', '${args}',
                             'values: [0, 1]'])])
def test_cluster_scripts(tmp_path, mode, file, expected):
  (tmp_path / 'spec.py').write_text(SPEC)
  proc = subprocess.run(
      [sys.executable, '-m', 'launch.sweep', str(tmp_path / 'spec.py'),
       f'--workdir={tmp_path / "runs"}', f'--mode={mode}'], cwd=ROOT,
      capture_output=True, text=True, timeout=120)
  assert proc.returncode == 0, proc.stderr[-2000:]
  text = (tmp_path / 'runs' / 'demo' / file).read_text()
  for snippet in expected:
    assert snippet in text, (snippet, text)
  described = json.load(open(tmp_path / 'runs' / 'demo' /
                             'method=kd_temperature=4__stages.student.optimizer.lr=0.01__seed=1'
                             / 'sweep.json'))
  assert described['args'] == {'method': 'kd', 'temperature': '4', 'seed': '1'}
  if mode == 'slurm':
    commands = (tmp_path / 'runs' / 'demo' / 'commands.txt').read_text()
    assert len(commands.splitlines()) == 8


def test_args_as_a_string_is_an_error_naming_the_spec(tmp_path):
  path = tmp_path / 'bad_spec.py'
  path.write_text(SPEC.replace(
      "ARGS = ['method=scratch,teacher_dir={root}/teacher', "
      "'method=kd,temperature=4']", "ARGS = 'method=kd'"))
  with pytest.raises(ValueError, match=r'bad_spec.py: ARGS is the string '
                     r"'method=kd'; make it a list"):
    sweep.load_spec(str(path))


FAKE_PROGRAM = """
import os, signal, sys, time
workdir = [a.split('=', 1)[1] for a in sys.argv if a.startswith('--workdir=')][0]
def stop(signum, frame):
  open(os.path.join(workdir, 'terminated'), 'w').close()
  sys.exit(143)
signal.signal(signal.SIGTERM, stop)
with open(os.path.join(workdir, 'started'), 'w') as f:
  f.write(sys.executable)
time.sleep(120)
"""


@pytest.mark.parametrize('signum,code', [(signal.SIGTERM, 143),
                                         (signal.SIGINT, 130)])
def test_a_signal_stops_the_runs_and_a_second_sweep_is_refused(tmp_path,
                                                              signum, code):
  """Runs start with the sweep's interpreter (no python on PATH here) as the
  spec's PROGRAM. A second sweep on the folder is refused in one line,
  naming the first's pid, and leaves the live runs alone (it used to fail
  them all, with lock tracebacks in their log.txt). SIGTERM or SIGINT (which
  orphaned the runs) reaches both running runs as SIGTERM, the third never
  starts."""
  (tmp_path / 'fake_program.py').write_text(FAKE_PROGRAM)
  (tmp_path / 'spec.py').write_text(
      "NAME = 'stop'\nCONFIG = 'unused.py'\nARGS = ['a=1', 'a=2', 'a=3']\n"
      "SEEDS = [0]\nPROGRAM = 'fake_program'\n")
  env = dict(os.environ, PYTHONPATH=str(tmp_path), PATH=str(tmp_path))
  cmd = [sys.executable, '-m', 'launch.sweep', str(tmp_path / 'spec.py'),
         f'--workdir={tmp_path / "runs"}', '--parallel=2']
  proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
  dirs = [tmp_path / 'runs' / 'stop' / f'a=1__seed=0',
          tmp_path / 'runs' / 'stop' / f'a=2__seed=0']
  for _ in range(300):
    if all((d / 'started').exists() for d in dirs) or proc.poll() is not None:
      break
    time.sleep(0.1)
  logs = [(d / 'log.txt').read_text() for d in dirs]
  second = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)
  assert second.returncode == 1
  assert second.stderr.strip().splitlines() == [
      f'{tmp_path / "runs" / "stop"} is in use by another sweep (pid '
      f'{proc.pid}): wait for it to finish, or stop it (kill -TERM '
      f'{proc.pid}: its runs checkpoint) and start this one again']
  assert [(d / 'log.txt').read_text() for d in dirs] == logs
  assert proc.poll() is None
  proc.send_signal(signum)
  out = proc.communicate(timeout=60)[0]
  assert proc.returncode == code, out
  assert f'{signal.Signals(signum).name}: runs stopped' in out
  for d in dirs:
    assert (d / 'started').read_text() == sys.executable
    assert (d / 'terminated').exists(), (d / 'log.txt').read_text()
  assert not (tmp_path / 'runs' / 'stop' / 'a=3__seed=0').exists()


def _fake_run(root, name, model, seed, last, best, method='scratch'):
  d = os.path.join(root, name)
  os.makedirs(d)
  terms = {} if method == 'scratch' else {'kd': {'loss': method}}
  json.dump({'seed': seed, 'model': {'name': model},
             'data': {'name': 'mnist1d'},
             'distill': {'teacher': {'model': 'cnn1d' if terms else ''},
                         'terms': terms}}, open(os.path.join(d, 'config.json'), 'w'))
  json.dump({'test_accuracy': last, 'best_test_accuracy': best},
            open(os.path.join(d, 'summary.json'), 'w'))
  return d


def _describe_all(root, stages=None, metrics=tables.METRICS):
  return [e for d in tables.find_runs(root)
          for e in tables.describe(d, stages, metrics)]


def test_table_mean_std_seeds_and_paper_difference(tmp_path):
  root = str(tmp_path)
  for seed, (last, best) in enumerate([(0.70, 0.72), (0.74, 0.75), (0.72, 0.76)]):
    _fake_run(root, f'mlp{seed}', 'mlp', seed, last, best)
  _fake_run(root, 'cnn0', 'cnn1d', 0, 0.95, 0.96)
  paper = tables.load_paper(os.path.join(ROOT, 'experiments/paper_tables/mnist1d.py'))
  rows = tables.table(_describe_all(root), ['model'], paper)
  cnn, mlp = rows
  assert mlp['n'] == 3 and mlp['test_accuracy'] == pytest.approx(0.72)
  assert mlp['test_accuracy_std'] == pytest.approx(0.02)
  assert mlp['best_test_accuracy'] == pytest.approx(0.7433333)
  assert mlp['paper'] == 0.68 and mlp['diff'] == pytest.approx(0.04)
  assert cnn['n'] == 1 and cnn['test_accuracy_std'] is None
  text = tables.markdown(rows, ['model'], paper)
  assert '| mlp | 3 | 72.00 ± 2.00 | 74.33 ± 2.08 | 68.00 | +4.00 |' in text
  assert '| cnn1d | 1 | 95.00 | 96.00 | 94.00 | +1.00 |' in text


def _pipeline(d, summary, sweep_args=None, finished=True):
  d.mkdir(parents=True)
  stage = {'seed': 3, 'model': {'name': 'mlp'}, 'data': {'name': 'mnist1d'},
           'distill': {'teacher': {'model': 'cnn1d'},
                       'terms': {'kd': {'loss': 'kd',
                                        'kwargs': {'temperature': 4.0}}}}}
  json.dump({'stage_order': ['teacher', 'student'],
             'stages': {'teacher': stage, 'student': stage}},
            open(d / 'config.json', 'w'))
  if finished:
    json.dump(summary, open(d / 'summary.json', 'w'))
  if sweep_args is not None:
    json.dump({'args': sweep_args}, open(d / 'sweep.json', 'w'))


def test_pipeline_runs_report_their_stages(tmp_path):
  d = tmp_path / 'run'
  _pipeline(d, {'student/test_accuracy': 0.8, 'teacher/test_accuracy': 0.9},
            {'method': 'kd', 'temperature': '8'})
  (run,) = _describe_all(str(tmp_path))
  assert run['values']['test_accuracy'] == 0.8
  assert run['attrs']['temperature'] == '8' and run['attrs']['stage'] == 'student'
  assert run['attrs']['method'] == 'kd' and run['attrs']['teacher'] == 'cnn1d'
  both = tables.describe(str(d), ['teacher', 'student'])
  assert [(r['attrs']['stage'], r['values']['test_accuracy']) for r in both] == [
      ('teacher', 0.9), ('student', 0.8)]
  with pytest.raises(ValueError, match=r"has no stage 'gen1'; its stages: "
                     r"\['teacher', 'student'\]"):
    tables.describe(str(d), ['gen1'])


def test_temperature_of_the_terms_unless_a_sweep_argument(tmp_path):
  _pipeline(tmp_path / 'a', {'student/test_accuracy': 0.8})
  _pipeline(tmp_path / 'b', {'student/test_accuracy': 0.7},
            {'temperature': '20'})
  rows = tables.table(_describe_all(str(tmp_path)), ['temperature'])
  assert [(r['temperature'], r['test_accuracy']) for r in rows] == [
      ('4', 0.8), ('20', 0.7)]


def test_unfinished_pipelines_and_their_stages_are_left_out(tmp_path, capsys):
  _pipeline(tmp_path / 'done', {'student/test_accuracy': 0.8})
  _pipeline(tmp_path / 'running', None, finished=False)
  stage = _fake_run(str(tmp_path / 'running'), 'teacher', 'cnn1d', 0, 0.9, 0.9)
  assert os.path.exists(os.path.join(stage, 'summary.json'))
  assert tables.find_runs(str(tmp_path)) == [str(tmp_path / 'done')]
  assert f'1 unfinished run(s) left out: {tmp_path / "running"}' in (
      capsys.readouterr().err)


@pytest.mark.parametrize('broken', ['summary.json', 'sweep.json',
                                    'config.json'])
def test_a_corrupt_json_file_is_named_and_its_run_left_out(tmp_path, capsys,
                                                           broken):
  for name in ('a', 'b'):
    _pipeline(tmp_path / name, {'student/test_accuracy': 0.8},
              {'method': 'kd'})
  (tmp_path / 'b' / broken).write_text('{"student/test_acc')
  runs = _describe_all(str(tmp_path))
  assert [r['dir'] for r in runs] == [str(tmp_path / 'a')]
  err = capsys.readouterr().err
  assert f'warning: {tmp_path / "b" / broken} is not valid JSON' in err


def test_an_unknown_group_by_key_lists_the_valid_ones(tmp_path):
  _pipeline(tmp_path / 'a', {'student/test_accuracy': 0.8},
            {'method': 'kd', 'mixup': '1.0'})
  runs = _describe_all(str(tmp_path))
  assert tables.table(runs, ['data.name', 'mixup'])  # Config, argument.
  with pytest.raises(ValueError, match=(
      r"unknown --group-by key 'temprature'; valid: model, student, teacher, "
      r'method, temperature, dataset, seed, stage; sweep arguments: mixup; '
      r'or a config path such as optimizer.lr')):
    tables.table(runs, ['model', 'temprature'])
  proc = subprocess.run([sys.executable, '-m', 'kd.tables', str(tmp_path),
                         '--group-by=temprature'], cwd=ROOT,
                        capture_output=True, text=True, timeout=120)
  assert proc.returncode == 1 and "unknown --group-by key 'temprature'" in (
      proc.stderr)


def _doc_command_and_table(name: str) -> tuple[list[str], list[str]]:
  """The `python -m kd.tables runs/NAME ...` command (its `\\` continuation
  lines joined) that a table follows in the README, a doc in docs/ or an
  experiment's README (exactly one), and that table."""
  found = []
  for path in (['README.md'] + sorted(glob.glob('docs/*.md', root_dir=ROOT))
               + sorted(glob.glob('experiments/*/README.md', root_dir=ROOT))):
    lines = open(os.path.join(ROOT, path)).read().replace(
        '\\\n', ' ').splitlines()
    for i, line in enumerate(lines):
      if line.strip().startswith(f'python -m kd.tables runs/{name} '):
        j = next(j for j in range(i, len(lines))  # Past the command block.
                 if lines[j].strip() and not lines[j].startswith('    '))
        if lines[j].startswith('|'):
          found.append((lines, i, j))
  assert len(found) == 1, f'runs/{name}: {len(found)} tables in the docs'
  ((lines, i, j),) = found
  k = next(k for k in range(j, len(lines) + 1)
           if k == len(lines) or not lines[k].startswith('|'))
  return lines[i].split(), lines[j:k]


def _values(cell: str, n: int, metric: str) -> list[float]:
  """n values whose mean and sample std are the cell's 'm ± s' (fractions
  in %); None for a metric the runs do not have ('-')."""
  if cell == '-':
    return [None] * n
  scale = 100 if tables.is_fraction(metric) else 1
  mean, _, std = cell.replace(',', '').partition(' ± ')
  if n == 1:
    return [float(mean) / scale]
  d = [i - (n - 1) / 2 for i in range(n)]
  return [(float(mean) + float(std) * x / statistics.stdev(d)) / scale
          for x in d]


def _steps(config) -> dict:
  """The steps a finished run's summary.json holds (each stage's)."""
  if 'stages' in config:
    return {f'{n}/steps': config.stages[n].steps for n in config.stage_order}
  return {'steps': config.steps}


def _sweep_tree(name: str, root: str) -> dict:
  """The run folders of spec `name` under root as the sweep leaves them
  before training (config.json from the spec's config, sweep.json, the
  shared teacher's folder when it is the sweep's), with an empty summary;
  {folder: config}."""
  spec = sweep.load_spec(os.path.join(ROOT, 'launch/specs', f'{name}.py'))
  config_module = importlib.import_module(
      spec.CONFIG.removesuffix('.py').replace('/', '.'))
  dirs = {}
  for run in sweep.expand(spec, root):
    config = config_module.get_config(run.arg)
    sweep.describe(run)
    dirs[run.workdir] = config
    teacher = config.get('stage_dirs', {}).get('teacher', '')
    if teacher.startswith(os.path.join(root, spec.NAME)):
      dirs[teacher] = config.stages.teacher
  for d, config in dirs.items():
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, 'config.json'), 'w') as f:
      f.write(config.to_json())
    with open(os.path.join(d, 'summary.json'), 'w') as f:
      f.write('{}')
  return dirs


@pytest.mark.parametrize('name', ['mnist1d_baselines', 'mnist1d_hinton',
                                  'mnist1d_consistent', 'mnist1d_qat',
                                  'lm_distill', 'mnist1d_online',
                                  'mnist1d_self_distillation',
                                  'mnist1d_adversarial', 'hf_teacher'])
def test_doc_tables_are_what_their_command_prints(tmp_path, name):
  """The sweep's runs as `launch.sweep` and the spec's config write them
  (config.json, sweep.json, the shared teacher), with the doc's numbers
  as summaries; the doc's command must print the doc's table."""
  argv, table = _doc_command_and_table(name)
  assert argv[:4] == ['python', '-m', 'kd.tables', f'runs/{name}']
  metrics = next((a.split('=', 1)[1].split(',') for a in argv
                  if a.startswith('--metric=')), list(tables.METRICS))
  header = [c.strip() for c in table[0].strip('|').split('|')]
  keys = header[:header.index('seeds')]
  expected = {}
  for line in table[2:]:
    cells = [c.strip() for c in line.strip('|').split('|')]
    expected[tuple(cells[:len(keys)])] = cells[len(keys) + 1:][:len(metrics)]
  root = str(tmp_path / 'runs')
  groups = {}
  for d, config in _sweep_tree(name, root).items():
    (entry,) = tables.describe(d)
    groups.setdefault(tables._key(entry, keys), []).append((d, config))
  assert sorted(groups) == sorted(expected)
  for key, members in groups.items():
    columns = [_values(cell, len(members), m)
               for cell, m in zip(expected[key], metrics)]
    for (d, config), values in zip(members, zip(*columns)):
      prefix = f'{config.stage_order[-1]}/' if 'stages' in config else ''
      with open(os.path.join(d, 'summary.json'), 'w') as f:
        json.dump({prefix + m: v for m, v in zip(metrics, values)
                   if v is not None} | _steps(config), f)
  proc = subprocess.run([sys.executable, '-m', 'kd.tables',
                         os.path.join(root, name)] + argv[4:], cwd=ROOT,
                        capture_output=True, text=True, timeout=120)
  assert proc.returncode == 0, proc.stderr[-2000:]
  printed = [line for line in proc.stdout.splitlines() if line.startswith('|')]
  assert printed == table


def test_cifar100_spec_covers_the_benchmark_pairs(tmp_path):
  spec = sweep.load_spec(os.path.join(ROOT, 'launch/specs/cifar100_crd.py'))
  runs = sweep.expand(spec, str(tmp_path))
  assert len(runs) == 5 * 3 * 3
  assert {r.arg.split(',method=')[1].split(',')[0] for r in runs} == {
      'kd', 'crd', 'dkd'}
  paper = tables.load_paper(os.path.join(ROOT,
                                         'experiments/paper_tables/crd.py'))
  assert paper.PUBLISHED[('resnet32x4', 'resnet8x4', 'crd')] == pytest.approx(
      0.7551)
  first = runs[0].arg
  assert f'teacher_dir={tmp_path}/cifar100_crd/teacher_wrn_40_2' in first
  dirs = _sweep_tree('cifar100_crd', str(tmp_path / 'runs'))
  runs = [e for d in dirs for e in tables.describe(d)]
  rows = tables.table(runs, list(paper.KEYS), paper)
  assert len(rows) == 5 * 3 + 5  # Students, and the 5 teachers from labels.
  assert all(r['paper'] is not None for r in rows), [
      r for r in rows if r['paper'] is None]


def test_paper_specs_name_keys_kd_tables_finds(tmp_path):
  from configs.mnist1d import train as recipes  # pylint: disable=import-outside-toplevel
  from experiments.born_again import config as born_again  # pylint: disable=import-outside-toplevel
  from kd.config import term  # pylint: disable=import-outside-toplevel
  def write(d, config, summary):
    os.makedirs(d)
    with open(os.path.join(d, 'config.json'), 'w') as f:
      f.write(config.to_json())
    json.dump(summary | _steps(config),
              open(os.path.join(d, 'summary.json'), 'w'))

  for name, hidden, method in [('teacher', (1200, 1200), 'scratch'),
                               ('scratch', (800, 800), 'scratch'),
                               ('kd', (800, 800), 'kd')]:
    c = recipes.recipe('mlp')
    c.model.kwargs.hidden = hidden
    if method == 'kd':
      c.distill.teacher.update(workdir='teacher', model='mlp')
      c.distill.terms.kd = term('kd', temperature=20.0)
    write(str(tmp_path / 'hinton' / name), c, {'test_accuracy': 0.99})
  write(str(tmp_path / 'ban' / 'ban_s0'),
        born_again.get_config(f'variant=ban,gen0_dir={tmp_path}/gen0'),
        {f'gen{k}/test_accuracy': 0.6 for k in range(4)})
  for spec, root, stages in [('hinton2015', 'hinton', None),
                             ('born_again', 'ban',
                              ['gen0', 'gen1', 'gen2', 'gen3'])]:
    paper = tables.load_paper(
        os.path.join(ROOT, 'experiments/paper_tables', f'{spec}.py'))
    rows = tables.table(_describe_all(str(tmp_path / root), stages),
                        list(paper.KEYS), paper)
    found = {tuple(r[k] for k in paper.KEYS) for r in rows}
    assert found == set(paper.PUBLISHED), spec


def _tables_command(text: str) -> list[str]:
  """The arguments of the `python -m kd.tables` command in `text`."""
  command = re.search(r'python -m kd\.tables ((?:\\\n|[^\n])+)',
                      text).group(1)
  return shlex.split(command.replace('\\\n', ' '))


@pytest.mark.parametrize('variant, keys', [
    ('multi_teacher', ('mode', 'weights', 'hint')), ('online', ('students',)),
    ('self_distillation', ('mode', 'alpha')),
    ('adversarial', ('form', 'embedding', 'conditional', 'kd_weight',
                     'raw_logits'))])
def test_variant_readme_tables_group_their_sweep(tmp_path, variant, keys):
  """A variant README's commands are its sweep spec's, and the `kd.tables`
  command groups the spec's runs one row per ARGS entry, each metric over
  the 3 seeds."""
  spec_path = os.path.join(ROOT, 'launch/specs', f'mnist1d_{variant}.py')
  spec = sweep.load_spec(spec_path)
  readme = open(os.path.join(ROOT, 'experiments', variant, 'README.md')).read()
  assert f'python -m launch.sweep launch/specs/mnist1d_{variant}.py' in readme
  args = _tables_command(readme)
  assert args == _tables_command(open(spec_path).read())
  flags_ = dict(a.split('=', 1) for a in args[1:])
  assert tuple(flags_['--group-by'].split(',')) == keys
  metrics = flags_['--metric'].split(',')
  root = str(tmp_path / 'runs')
  for d, config in _sweep_tree(f'mnist1d_{variant}', root).items():
    with open(os.path.join(d, 'summary.json'), 'w') as f:
      json.dump({m: 0.5 for m in metrics} | _steps(config), f)
  assert args[0] == f'runs/mnist1d_{variant}'
  rows = tables.table(_describe_all(os.path.join(root, spec.NAME),
                                    metrics=metrics), list(keys),
                      metrics=metrics)
  assert len(rows) == len(spec.ARGS)
  for row in rows:
    assert row['n'] == 3 and all(row[m] == 0.5 for m in metrics), row


TINY_CONFIG = '''
from kd.config import run_config


def get_config(arg=None):
  a = dict(kv.split('=', 1) for kv in (arg or '').split(',') if kv)
  c = run_config()
  c.seed = int(a.get('seed', 0))
  c.data.name, c.data.augment = 'kd_digits', False
  c.model.kwargs.hidden = (8,)
  c.batch_size, c.eval_batch_size, c.steps = 32, 512, int(a['steps'])
  c.log_every = c.checkpoint_every = c.steps
  c.wandb.mode = 'disabled'
  c.evaluate.latency = False
  return c
'''


def _agent_command(sweep_config: dict, run_id: str) -> list[str]:
  """The command line the W&B agent (wandb/wandb_agent.py,
  Agent._command_run) runs for the first value of every parameter."""
  from wandb.sdk.launch.sweeps import utils  # pylint: disable=import-outside-toplevel
  command = {'run_id': run_id, 'program': sweep_config['program'],
             'args': {k: {'value': v['values'][0]}
                      for k, v in sweep_config['parameters'].items()}}
  sweep_vars = utils.create_sweep_command_args(command)
  sweep_vars.update(interpreter=['python'], program=[command['program']],
                    env=['/usr/bin/env'])
  out = []
  for c in utils.create_sweep_command(sweep_config['command']):
    c = str(c)
    if c.startswith('${') and c.endswith('}'):
      out += sweep_vars.get(c[2:-1]) or []
    else:
      out.append(c)
  return out


def test_wandb_sweep_command_runs_with_its_seed(tmp_path):
  import yaml  # pylint: disable=import-outside-toplevel
  (tmp_path / 'tiny.py').write_text(TINY_CONFIG)
  (tmp_path / 'spec.py').write_text(
      f"NAME = 'agent'\nCONFIG = {str(tmp_path / 'tiny.py')!r}\n"
      "ARGS = ['steps=20', 'steps=30']\n"
      "GRID = {'config.optimizer.lr': [0.003, 0.01]}\nSEEDS = [7, 8]\n")
  root = tmp_path / 'runs'
  subprocess.run([sys.executable, '-m', 'launch.sweep',
                  str(tmp_path / 'spec.py'), f'--workdir={root}',
                  '--mode=wandb'], cwd=ROOT, check=True, timeout=120)
  sweep_config = yaml.safe_load((root / 'agent' / 'sweep.yaml').read_text())
  cmd = _agent_command(sweep_config, 'abc123')
  # The agent's `python` is the one on its PATH.
  env = dict(os.environ, WANDB_RUN_ID='abc123',
             PATH=os.path.dirname(sys.executable) + os.pathsep +
             os.environ['PATH'])
  proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True,
                        text=True, timeout=300)
  assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
  (run,) = [r for r in sweep.expand(sweep.load_spec(str(tmp_path / 'spec.py')),
                                    str(root))
            if r.name == 'steps=20__optimizer.lr=0.003__seed=7']
  config = json.load(open(os.path.join(run.workdir, 'config.json')))
  assert config['seed'] == 7 and config['steps'] == 20
  assert config['optimizer']['lr'] == 0.003
  summary = json.load(open(os.path.join(run.workdir, 'summary.json')))
  # It trained from seed 7's initialisation and reports its checkpoint.
  run_checks.assert_run_moved(run.workdir, 20)
  _, model, variables, _ = kd_runs.load_run(run.workdir)
  apply = jax.jit(lambda x: {'run': model.apply(variables, x,
                                                train=False)[0]})
  run_checks.assert_accuracies(
      {'run/test_accuracy': summary['test_accuracy']},
      run_checks.accuracies(kd_runs.load_config(run.workdir), apply))
  run_checks.assert_logged(run.workdir, summary, ('test_accuracy',),
                           ('loss',), log_every=20)
  assert json.load(open(os.path.join(run.workdir, 'sweep.json')))['args'] == {
      'steps': '20', 'seed': '7'}


def test_dkd_table_spec_runs_the_new_methods_with_published_numbers(tmp_path):
  spec = sweep.load_spec(os.path.join(ROOT, 'launch/specs/cifar100_dkd.py'))
  runs = sweep.expand(spec, str(tmp_path))
  assert len(runs) == 5 * 5 * 3
  methods = {r.arg.split(',method=')[1].split(',')[0] for r in runs}
  assert methods == {'fsp', 'ofd', 'reviewkd', 'kd_std', 'dkd_std'}
  paper = tables.load_paper(os.path.join(ROOT,
                                         'experiments/paper_tables/crd.py'))
  pairs = {tuple(r.arg.replace('teacher=', '').replace('student=', '')
                 .split(',')[:2]) for r in runs}
  for t, s in pairs:
    for m in ('fsp', 'ofd', 'reviewkd'):
      assert 0.69 < paper.PUBLISHED[(t, s, m)] < 0.77, (t, s, m)
  assert paper.PUBLISHED[('resnet32x4', 'resnet8x4', 'reviewkd')] == \
      pytest.approx(0.7563)


def _tiny_spec(tmp_path, args, grid="{'config.optimizer.lr': [0.003, 0.01]}",
               name='vec'):
  (tmp_path / 'tiny.py').write_text(TINY_CONFIG.replace('  return c\n', '''
  if 'init_from' in a:
    c.init_from = a['init_from']
  return c
'''))
  (tmp_path / 'spec.py').write_text(
      f"NAME = {name!r}\nCONFIG = {str(tmp_path / 'tiny.py')!r}\n"
      f'ARGS = {args!r}\nGRID = {grid}\nSEEDS = [0]\n')
  return sweep.load_spec(str(tmp_path / 'spec.py'))


def test_vectorized_sweep_over_a_config_field_with_a_bad_run(tmp_path, capsys):
  """A GRID over config.optimizer.lr plans one group (was
  UnrecognizedFlagError, even with --dry_run); a run whose argument does not
  parse and runs that fail to start are FAILED with their reason, and the
  valid runs train."""
  spec = _tiny_spec(tmp_path, ['steps=20', 'steps=x',
                               f'steps=20,init_from={tmp_path}/nowhere'])
  root = tmp_path / 'runs'
  proc = subprocess.run(
      [sys.executable, '-m', 'launch.sweep', str(tmp_path / 'spec.py'),
       f'--workdir={root}', '--vectorize', '--dry_run'], cwd=ROOT,
      capture_output=True, text=True, timeout=300)
  assert proc.returncode == 1, proc.stderr[-3000:]
  assert ('train: 2 together: steps=20__optimizer.lr=0.003__seed=0, '
          'steps=20__optimizer.lr=0.01__seed=0') in proc.stdout
  assert ("FAILED: steps=x__optimizer.lr=0.01__seed=0: IllegalFlagValueError: "
          in proc.stdout and "ValueError: invalid literal for int() with base "
          "10: 'x'" in proc.stdout), proc.stdout
  assert not root.joinpath('vec', 'steps=20__optimizer.lr=0.01__seed=0').exists()

  runs = sweep.expand(spec, str(root))
  assert sweep.run_vectorized(spec, runs, dry_run=False) == 4
  out = capsys.readouterr().out
  for run in runs:
    if run.arg.startswith('steps=20,seed'):
      assert f'done: {run.name}' in out
      summary = json.load(open(os.path.join(run.workdir, 'summary.json')))
      assert summary['steps'] == 20
      config = json.load(open(os.path.join(run.workdir, 'config.json')))
      assert config['optimizer']['lr'] == dict(run.overrides)[
          'config.optimizer.lr']
    else:
      assert f'FAILED: {run.name}: ' in out
      assert not os.path.exists(os.path.join(run.workdir, 'summary.json'))
      assert 'Traceback' in open(os.path.join(run.workdir, 'log.txt')).read()
  assert f'init_from: {tmp_path}/nowhere/checkpoints does not exist' in out


DONE_PROGRAM = """
import json, os, sys
workdir = [a.split('=', 1)[1] for a in sys.argv if a.startswith('--workdir=')][0]
if os.path.exists(os.path.join(workdir, 'summary.json')):
  sys.exit('ran twice in ' + workdir)
json.dump({'argv': sys.argv}, open(os.path.join(workdir, 'summary.json'), 'w'))
"""


def test_args_differing_only_in_teacher_dir_get_folders_of_their_own(tmp_path):
  """Two teachers' students were one folder: the second run failed, a rerun
  reported both finished, and sweep.json credited the second teacher."""
  (tmp_path / 'done_program.py').write_text(DONE_PROGRAM)
  (tmp_path / 'spec.py').write_text(
      "NAME = 'two'\nCONFIG = 'unused.py'\nPROGRAM = 'done_program'\n"
      "ARGS = ['method=kd,teacher_dir={root}/t1', "
      "'method=kd,teacher_dir={root}/t2', 'method=scratch', "
      "'method=scratch']\nSEEDS = [0]\n")
  env = dict(os.environ, PYTHONPATH=str(tmp_path))
  cmd = [sys.executable, '-m', 'launch.sweep', str(tmp_path / 'spec.py'),
         f'--workdir={tmp_path / "runs"}']
  first = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=120)
  assert first.returncode == 0, first.stdout + first.stderr
  assert '3 runs, 0 finished, 3 to run' in first.stdout
  again = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=120)
  assert '3 runs, 3 finished, 0 to run' in again.stdout, again.stdout
  runs = sweep.expand(sweep.load_spec(str(tmp_path / 'spec.py')),
                      str(tmp_path / 'runs'))
  kd_runs_ = [r for r in runs if 'method=kd' in r.arg]
  assert [r.name[:len('method=kd__seed=0__')] for r in kd_runs_] == [
      'method=kd__seed=0__'] * 2
  assert len({r.workdir for r in kd_runs_}) == 2
  assert [r.name for r in runs if 'scratch' in r.arg] == [
      'method=scratch__seed=0']
  for run, teacher in zip(kd_runs_, ('t1', 't2')):
    teacher_dir = f'{tmp_path}/runs/two/{teacher}'
    described = json.load(open(os.path.join(run.workdir, 'sweep.json')))
    assert described['args']['teacher_dir'] == teacher_dir
    argv = json.load(open(os.path.join(run.workdir, 'summary.json')))['argv']
    assert f'--config=unused.py:method=kd,teacher_dir={teacher_dir},seed=0' in (
        argv)


def _steps_run(root, name, steps, summary, seed=0):
  d = _fake_run(root, name, 'mlp', seed, 0.0, 0.0)
  config = json.load(open(os.path.join(d, 'config.json')))
  json.dump(config | {'steps': 100}, open(os.path.join(d, 'config.json'), 'w'))
  json.dump(summary | {'steps': steps},
            open(os.path.join(d, 'summary.json'), 'w'))
  return d


def test_a_run_is_finished_when_its_summary_has_its_configs_steps(tmp_path,
                                                                 capsys):
  root = str(tmp_path)
  done = _steps_run(root, 'done', 100, {'test_accuracy': 0.9})
  _steps_run(root, 'half', 50, {'test_accuracy': 0.1})
  _pipeline(tmp_path / 'pipe', {'teacher/steps': 100, 'student/steps': 70,
                                'student/test_accuracy': 0.1})
  config = json.load(open(tmp_path / 'pipe' / 'config.json'))
  for stage in config['stages'].values():
    stage['steps'] = 100
  json.dump(config, open(tmp_path / 'pipe' / 'config.json', 'w'))
  assert tables.find_runs(root) == [done]
  err = capsys.readouterr().err
  assert '2 unfinished run(s) left out' in err
  assert f'{root}/half (summary at step 50 of 100)' in err
  assert f'{root}/pipe (student summary at step 70 of 100)' in err


def test_each_metrics_runs_are_counted_on_their_own(tmp_path):
  """Three seeds, one without best_test_accuracy: its n is 2, not 3."""
  root = str(tmp_path)
  for seed, summary in enumerate([
      {'test_accuracy': 0.70, 'best_test_accuracy': 0.80},
      {'test_accuracy': 0.72, 'best_test_accuracy': 0.84},
      {'test_accuracy': 0.74}]):
    _steps_run(root, f's{seed}', 100, summary, seed)
  (row,) = tables.table(_describe_all(root), ['model'])
  assert row['n'] == 3 and row['test_accuracy_n'] == 3
  assert row['best_test_accuracy_n'] == 2
  assert row['best_test_accuracy'] == pytest.approx(0.82)
  text = tables.markdown([row], ['model'])
  assert '| mlp | 3 | 72.00 ± 2.00 | 82.00 ± 2.83 (n=2) |' in text


@pytest.mark.parametrize('args,error', [
    (['--metric=test_acc'], "unknown --metric 'test_acc': no run's summary has "
     'it; their metrics: best_test_accuracy, steps, test_accuracy'),
    (['--paper=nowhere/crd.py'], '--paper=nowhere/crd.py: no such file; the '
     'paper specs are in experiments/paper_tables/'),
    (['missing_folder'], 'missing_folder: no such folder; pass the --workdir '
     'of launch.sweep or kd.main runs')])
def test_tables_cli_names_a_bad_argument_in_one_line(tmp_path, args, error):
  _steps_run(str(tmp_path), 'a', 100, {'test_accuracy': 0.9,
                                       'best_test_accuracy': 0.9})
  argv = [a if a != 'missing_folder' else str(tmp_path / a) for a in args]
  proc = subprocess.run([sys.executable, '-m', 'kd.tables', str(tmp_path)]
                        + argv, cwd=ROOT, capture_output=True, text=True,
                        timeout=120)
  assert proc.returncode == 1, proc.stdout
  assert proc.stderr.strip().splitlines() == [
      error.replace('missing_folder', str(tmp_path / 'missing_folder'))]
