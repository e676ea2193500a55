"""Throughput of distillation, measured side by side in one process.

  python -m experiments.benchmark.run [--pairs=mnist1d,cifar_r32x4,...]
      [--dtypes=float32,bfloat16] [--iters=20] [--out=DIR]
      [--peer [--peer_python=/work/venv_torch/bin/python]]
  python -m experiments.benchmark.run --mfu_of=experiments/benchmark/results/h100_batch512.json

For each (teacher, student, batch, input shape) pair and compute dtype:
examples/s of the student's supervised step, the teacher's forward pass, the
live distillation step (teacher forward + student step, one jitted call) and
the cached step (the student step reading teacher logits from the batch, as
with `distill.teacher.cache`); the teacher's forward pass and the
distillation step again with the teacher's batch norms folded into its
convolutions (`kd.fold`, as `distill.teacher.fold_bn` loads a teacher; no
figure where nothing folds); compile time of each; the overhead ratio
t(distill) / (t(student) + t(teacher)); and the distillation step's model
FLOPs (XLA's count of the forward passes, backward as 2x forward) and MFU
against the device's dense peak (`PEAK_FLOPS`; none on a CPU).
Synthetic data on the device; every configuration's timed calls interleaved
(one call of each in turn, so a change in the machine's load hits them
alike), medians after two warm-up calls.

Memory (`{step}_memory_mb`; the table's 'peak MB' is the distillation
step's): XLA's plan for that one compiled program on one device
(`compiled.memory_analysis()`): its arguments and outputs, less the outputs
that reuse donated arguments, plus its temporaries. It is each
configuration's own figure, not the process's running peak, and leaves out
what the runtime holds besides (other programs, the input pipeline).

Input pipeline (`--pipeline`, on by default): examples/s of the training
iterator alone (`kd.data.example_batches` with the dataset's augmentation:
CIFAR crop and flip, ImageNet Inception crop), MNIST-1D real (built
offline), CIFAR-100 and ImageNet as `tfds.testing.mock_data` records
(random images through the same decode, cache, shuffle and augmentation;
`--pipeline_data_dir` where the real ones are prepared), after one epoch
has filled the in-memory cache.

`--peer` runs `experiments/benchmark/peer_pytorch.py` (PyTorch, the
reference model definitions, the same protocol) with `--peer_python`
right after each pair's float32 row, and adds its examples/s and the ratios
kd / PyTorch.
Writes results.json and results.md to --out.
"""
import contextlib
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np
import optax
import tensorflow_datasets as tfds

from kd import data, fold, models, runs, steps
from kd.parallel import DataParallel

# name: (teacher, student, global batch, input shape, classes); the dataset
# whose training iterator `pipeline_rate` measures is DATASETS[name].
PAIRS = {
    'mnist1d': ('cnn1d', 'mlp', 100, (40, 1), 10),
    'cifar_r32x4_r8x4': ('resnet32x4', 'resnet8x4', 64, (32, 32, 3), 100),
    'cifar_wrn40_2_wrn16_2': ('wrn_40_2', 'wrn_16_2', 64, (32, 32, 3), 100),
    'imagenet_r34_r18': ('resnet34_imagenet', 'resnet18_imagenet', 64,
                         (224, 224, 3), 1000),
}
DATASETS = {'mnist1d': 'mnist1d', 'cifar_r32x4_r8x4': 'cifar100',
            'cifar_wrn40_2_wrn16_2': 'cifar100',
            'imagenet_r34_r18': 'imagenet2012'}
STEPS = ('student_step', 'teacher_forward', 'distill_step', 'cached_step',
         'teacher_forward_folded', 'distill_step_folded')
PEER_STEPS = ('student_step', 'teacher_forward', 'distill_step')


# Dense peak FLOP/s per device kind and compute dtype (float32 matmuls run
# as TF32 on the tensor cores under XLA's default precision), from NVIDIA's
# H100/H200 SXM datasheets.
PEAK_FLOPS = {'H100': {'bfloat16': 989e12, 'float32': 494e12},
              'H200': {'bfloat16': 989e12, 'float32': 494e12}}


def peak_flops(device_kind: str, dtype: str) -> float | None:
  for name, peaks in PEAK_FLOPS.items():
    if name in device_kind:
      return peaks[dtype]
  return None


def forward_flops(model, variables, x) -> float:
  """XLA's count for one forward pass of a batch, compiled on one device
  (under pmap the count covers a fraction of the work, so it is not used)."""
  cost = jax.jit(lambda v, a: model.apply(v, a, train=False)[0]).lower(
      variables, x).compile().cost_analysis()
  return float((cost[0] if isinstance(cost, list) else cost)['flops'])


def add_mfu(row: dict, teacher, t_vars, student, s_vars, x) -> dict:
  """Adds the distillation step's model FLOPs (the teacher's forward pass,
  the student's forward and backward, 2x forward, passes) and its MFU."""
  row['distill_step_gflop'] = (3 * forward_flops(student, s_vars, x)
                               + forward_flops(teacher, t_vars, x)) / 1e9
  peak = peak_flops(row['device'], row['dtype'])
  row['distill_step_mfu'] = (
      row['distill_step_gflop'] * 1e9 / (row['distill_step_ms'] / 1000)
      / (peak * row['devices']) if peak else None)
  return row


def mfu_of_results(path: str) -> list[dict]:
  """The rows of a results.json measured elsewhere (e.g. on a GPU), with
  FLOPs counted here by XLA for the same models and batch, and MFU against
  the measuring device's peak."""
  with open(path) as f:
    rows = json.load(f)
  for row in rows:
    t_name, s_name, _, shape, classes = PAIRS[row['pair']]
    dt = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}[row['dtype']]
    teacher = models.create(t_name, classes, dtype=dt)
    student = models.create(s_name, classes, dtype=dt)
    x = np.zeros((row['batch'], *shape), np.float32)
    add_mfu(row, teacher, teacher.init(jax.random.key(1), x[:1]), student,
            student.init(jax.random.key(0), x[:1]), x)
  return rows


def _call(fn, args):
  """Runs `fn(*args)`; the arguments of its next call (a step's new state
  in place of the donated one)."""
  out = jax.block_until_ready(fn(*args))
  if isinstance(out, tuple) and hasattr(out[0], 'params'):
    return (out[0],) + tuple(args[1:])
  return args


def time_interleaved(configs: dict, iters: int) -> dict:
  """{name: median seconds per call} of `configs` (name: (fn, args)), after
  two warm-up calls each, their timed calls taken in turn."""
  args = {k: _call(fn, _call(fn, a)) for k, (fn, a) in configs.items()}
  times = {k: [] for k in configs}
  for _ in range(iters):
    for k, (fn, _) in configs.items():
      t0 = time.perf_counter()
      args[k] = _call(fn, args[k])
      times[k].append(time.perf_counter() - t0)
  return {k: statistics.median(v) for k, v in times.items()}


def compiled_figures(fn, args) -> tuple:
  """(compile seconds, planned memory MB: arguments + outputs - aliased
  (donated) + temporaries, the compiled program) of `fn` for `args`, on
  one device; the timings call that program, so nothing compiles twice."""
  t0 = time.perf_counter()
  compiled = fn.lower(*args).compile()
  seconds = time.perf_counter() - t0
  m = compiled.memory_analysis()
  total = (m.argument_size_in_bytes + m.output_size_in_bytes
           - m.alias_size_in_bytes + m.temp_size_in_bytes)
  return seconds, total / 2**20, compiled


def pipeline_rate(pair: str, batch: int, iters: int,
                  data_dir: str = '') -> dict:
  """Examples/s of the pair's training iterator (augmentation on), timed
  over `iters` batches after a first epoch (decoding, cache filling)."""
  name = DATASETS[pair]
  spec = data.spec(name)
  mock = name not in data.input_pipeline.OFFLINE and not data_dir
  with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
    if mock:
      from tests.mock_tfds import metadata_dir  # pylint: disable=import-outside-toplevel
      examples = 4 * batch
      data_dir = metadata_dir(tmp, {name: ('train',)}, examples)
      stack.enter_context(tfds.testing.mock_data(num_examples=examples,
                                                 data_dir=data_dir))
    image_size = spec.input_shape[0] if spec.augment != 'none' else None
    it = data.example_batches(name, batch_size=batch, seed=0, augment=True,
                            data_dir=data_dir or None, image_size=image_size)
    size = data.num_examples(name, 'train', data_dir or None)
    for _ in range(max(size // batch, 1) + 1):
      next(it)
    t0 = time.perf_counter()
    for _ in range(iters):
      next(it)
    sec = (time.perf_counter() - t0) / iters
    del it  # Its prefetching threads would compete with later timings.
    gc.collect()
  return {'input_pipeline_ex_per_s': batch / sec,
          'input_pipeline_data': f'{name} ({"mock" if mock else "real"})'}


def bench(pair: str, dtype: str, iters: int, batch: int = 0,
          steps_per_dispatch: int = 8) -> dict:
  t_name, s_name, default_batch, shape, classes = PAIRS[pair]
  batch = batch or default_batch
  dt = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}[dtype]
  parallel = DataParallel('pmap')
  batch -= batch % parallel.local_devices
  teacher = models.create(t_name, classes, dtype=dt)
  student = models.create(s_name, classes, dtype=dt)
  rng = np.random.default_rng(0)
  x = rng.normal(size=(batch, *shape)).astype(np.float32)
  y = rng.integers(0, classes, size=batch).astype(np.int32)
  tx = optax.sgd(0.01, momentum=0.9)
  t_vars = teacher.init(jax.random.key(1), x[:1])
  folded, f_vars = fold.fold_batch_norms(teacher, t_vars, x[:1])
  state = steps.create_state(student, tx, jax.random.key(0), x[:1])
  t_logits = np.asarray(jax.jit(
      lambda v, a: teacher.apply(v, a, train=False)[0])(t_vars, x))
  placed = parallel.shard({'image': x, 'label': y})
  # As a run with distill.teacher.cache feeds the step (kd.cache).
  cached = parallel.shard({'image': x, 'label': y,
                           'teacher': {'logits': t_logits}})
  terms = (steps.Term('kd', 'kd', 1.0, kwargs={'temperature': 4.0}),)

  def forward(model):
    return parallel.wrap(
        lambda v, b: model.apply(v, b['image'], train=False)[0], 1,
        donate_first=False)

  def distill(model):
    return parallel.wrap(steps.make_distill_step(student, model, tx, terms,
                                                 1.0), 2)

  configs = {
      'student_step': (parallel.wrap(steps.make_supervised_step(student, tx),
                                     1), (parallel.replicate(state), placed)),
      'teacher_forward': (forward(teacher),
                          (parallel.replicate(t_vars), placed)),
      'distill_step': (distill(teacher), (parallel.replicate(state),
                                          parallel.replicate(t_vars), placed)),
      'cached_step': (parallel.wrap(steps.make_distill_step(
          student, None, tx, terms, 1.0), 1),
                      (parallel.replicate(state), cached)),
  }
  k = steps_per_dispatch
  if k > 1:  # As `config.steps_per_dispatch=k` runs (kd.steps.multi_step).
    configs['distill_step_k'] = (parallel.wrap(steps.multi_step(
        steps.make_distill_step(student, teacher, tx, terms, 1.0), k), 2,
                                               lead=1), (
        parallel.replicate(state), parallel.replicate(t_vars),
        parallel.shard({'image': np.stack([x] * k),
                        'label': np.stack([y] * k)}, lead=1)))
  if folded is not teacher:  # Something folded.
    configs['teacher_forward_folded'] = (forward(folded),
                                         (parallel.replicate(f_vars), placed))
    configs['distill_step_folded'] = (distill(folded), (
        parallel.replicate(state), parallel.replicate(f_vars), placed))
  out = {'pair': pair, 'teacher': t_name, 'student': s_name, 'batch': batch,
         'dtype': dtype, 'device': jax.devices()[0].device_kind,
         'devices': parallel.local_devices}
  for name, (fn, args) in configs.items():
    (out[f'{name}_compile_s'], out[f'{name}_memory_mb'],
     compiled) = compiled_figures(fn, args)
    configs[name] = (compiled, args)
  for name, sec in time_interleaved(configs, iters).items():
    per_step = sec / (k if name == 'distill_step_k' else 1)
    out[f'{name}_ex_per_s'] = batch / per_step
    out[f'{name}_ms'] = 1000 * per_step
  out['overhead_ratio'] = out['distill_step_ms'] / (
      out['student_step_ms'] + out['teacher_forward_ms'])
  if k > 1:
    out['steps_per_dispatch'] = k
    out['overhead_ratio_k'] = out['distill_step_k_ms'] / (
        out['student_step_ms'] + out['teacher_forward_ms'])
  out['cached_vs_student'] = out['cached_step_ms'] / out['student_step_ms']
  if 'distill_step_folded_ms' in out:
    out['folded_speedup'] = (out['distill_step_ms']
                             / out['distill_step_folded_ms'])
  add_mfu(out, teacher, t_vars, student,
          {'params': state.params, **state.model_state}, x)
  out['peak_memory_mb'] = out['distill_step_memory_mb']
  out['peak_memory_of'] = ('XLA plan of the distillation step, one device: '
                           'arguments + outputs - donated + temporaries')
  return out


def peer(pair: str, iters: int, batch: int, python: str,
         repdistiller: str) -> dict:
  """`peer_pytorch`'s figures for `pair`, run by `python` (a subprocess:
  PyTorch usually lives in an environment of its own)."""
  cmd = [python, '-m', 'experiments.benchmark.peer_pytorch', f'--pair={pair}',
         f'--iters={iters}', f'--batch={batch}',
         f'--repdistiller={repdistiller}']
  done = subprocess.run(cmd, capture_output=True, text=True, check=False,
                        cwd=os.path.dirname(os.path.dirname(
                            os.path.dirname(os.path.abspath(__file__)))))
  if done.returncode:
    raise RuntimeError(f'{" ".join(cmd)} failed:\n{done.stderr.strip()}')
  return json.loads(done.stdout.strip().splitlines()[-1])


def add_peer(row: dict, p: dict) -> dict:
  """`row` with the peer's examples/s and kd / PyTorch ratios."""
  row['peer_torch'] = p['torch']
  for step in PEER_STEPS:
    row[f'peer_{step}_ex_per_s'] = p[f'{step}_ex_per_s']
    row[f'kd_vs_peer_{step}'] = (row[f'{step}_ex_per_s']
                                 / p[f'{step}_ex_per_s'])
  if 'distill_step_folded_ex_per_s' in row:
    row['kd_vs_peer_distill_step_folded'] = (
        row['distill_step_folded_ex_per_s'] / p['distill_step_ex_per_s'])
  return row


def _figure(x: float) -> str:
  return f'{x:,.1f}' if x >= 10 else f'{x:.2g}'


def _megabytes(x: float) -> str:
  return f'{x:,.0f}' if x >= 10 else _figure(x)


def _rate(r: dict, key: str) -> str:
  return f'{r[key]:,.0f}' if r.get(key) is not None else '-'


def markdown(rows) -> str:
  """The rows as a table; the folded-teacher, input-pipeline and PyTorch
  columns appear when some row has them."""
  folded = any('distill_step_folded_ex_per_s' in r for r in rows)
  k = max(r.get('steps_per_dispatch', 1) for r in rows)
  pipeline = any('input_pipeline_ex_per_s' in r for r in rows)
  peer = any('peer_distill_step_ex_per_s' in r for r in rows)
  head = ['pair', 'dtype', 'batch', 'student step ex/s', 'teacher fwd ex/s',
          'distill step ex/s', 'cached step ex/s']
  head += ['teacher fwd folded ex/s', 'distill folded ex/s'] * folded
  head += [f'distill ex/s, {k} steps a call',
           f'overhead ratio, {k} steps a call'] * (k > 1)
  head += ['overhead ratio', 'cached / student', 'compile s (distill)',
           'peak MB', 'GFLOP / distill step', 'MFU (distill)']
  head += ['input pipeline ex/s'] * pipeline
  head += ['PyTorch student ex/s', 'PyTorch teacher fwd ex/s',
           'PyTorch distill ex/s', 'kd / PyTorch student',
           'kd / PyTorch distill', 'kd folded / PyTorch distill'] * peer
  lines = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
  for r in rows:
    cells = [f"{r['teacher']} -> {r['student']}", r['dtype'], str(r['batch'])]
    cells += [_rate(r, f'{k}_ex_per_s') for k in (
        'student_step', 'teacher_forward', 'distill_step', 'cached_step')]
    if folded:
      cells += [_rate(r, 'teacher_forward_folded_ex_per_s'),
                _rate(r, 'distill_step_folded_ex_per_s')]
    if k > 1:
      cells += [_rate(r, 'distill_step_k_ex_per_s'),
                f"{r['overhead_ratio_k']:.2f}" if 'overhead_ratio_k' in r
                else '-']
    cells += [f"{r['overhead_ratio']:.2f}", f"{r['cached_vs_student']:.2f}",
              f"{r['distill_step_compile_s']:.1f}",
              _megabytes(r['peak_memory_mb']), _figure(r['distill_step_gflop']),
              f"{_figure(100 * r['distill_step_mfu'])}%"
              if r['distill_step_mfu'] else '-']
    if pipeline:
      cells.append(_rate(r, 'input_pipeline_ex_per_s'))
    if peer:
      cells += [_rate(r, f'peer_{k}_ex_per_s') for k in PEER_STEPS]
      cells += [f'{r[k]:.2f}' if r.get(k) is not None else '-' for k in (
          'kd_vs_peer_student_step', 'kd_vs_peer_distill_step',
          'kd_vs_peer_distill_step_folded')]
    lines.append('| ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


def define_flags():
  flags.DEFINE_list('pairs', ['mnist1d', 'cifar_r32x4_r8x4',
                              'cifar_wrn40_2_wrn16_2'], 'Pairs to measure.')
  flags.DEFINE_list('dtypes', ['float32'], 'Compute dtypes.')
  flags.DEFINE_integer('iters', 10, 'Timed iterations per measurement.')
  flags.DEFINE_integer('steps_per_dispatch', 8, 'Also time the distillation '
                       'step k to a jitted call (lax.scan over k batches, '
                       'as config.steps_per_dispatch=k); 1: skip.')
  flags.DEFINE_string('out', 'benchmark_results', 'Output folder.')
  flags.DEFINE_integer('batch', 0, 'Global batch for every pair (0: each '
                       "pair's own).")
  flags.DEFINE_bool('pipeline', True, "Measure each pair's training "
                    'iterator (examples/s).')
  flags.DEFINE_string('pipeline_data_dir', '', 'A TFDS data dir holding the '
                      'prepared CIFAR-100 / ImageNet (default: mock records).')
  flags.DEFINE_bool('peer', False, 'Also time the pairs in PyTorch '
                    '(peer_pytorch.py, float32 rows) and print kd / PyTorch.')
  flags.DEFINE_string('peer_python', sys.executable, 'The Python that runs '
                      'peer_pytorch.py (one with torch installed).')
  flags.DEFINE_string('repdistiller', '/work/refcode', "The folder holding "
                      "RepDistiller's models/ (the peer's CIFAR models).")
  flags.DEFINE_string('mfu_of', None, 'A results.json measured elsewhere: '
                      'print its table with FLOPs and MFU added, measure '
                      'nothing.')



def main(argv):
  del argv
  f = flags.FLAGS
  if f.mfu_of:
    rows = mfu_of_results(f.mfu_of)
    print(f'{rows[0]["device"]}, {rows[0]["devices"]} device(s)\n'
          f'{markdown(rows)}')
    return
  rows = []
  for pair in f.pairs:
    rate = (pipeline_rate(pair, f.batch or PAIRS[pair][2], max(f.iters, 20),
                          f.pipeline_data_dir) if f.pipeline else {})
    for dtype in f.dtypes:
      rows.append({**bench(pair, dtype, f.iters, f.batch,
                           f.steps_per_dispatch), **rate})
      if f.peer and dtype == 'float32':  # Right after kd's row.
        add_peer(rows[-1], peer(pair, f.iters, rows[-1]['batch'],
                                f.peer_python, f.repdistiller))
      print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
  os.makedirs(f.out, exist_ok=True)
  runs.write_json(os.path.join(f.out, 'results.json'), rows)
  table = markdown(rows)
  with open(os.path.join(f.out, 'results.md'), 'w') as fh:
    fh.write(table + '\n')
  print(f'{rows[0]["device"]}, {rows[0]["devices"]} device(s)\n{table}')


if __name__ == '__main__':
  define_flags()
  app.run(main)
