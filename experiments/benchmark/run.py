"""Throughput of distillation, measured side by side in one process.

  python -m experiments.benchmark.run [--pairs=mnist1d,cifar_r32x4,...]
      [--dtypes=float32,bfloat16] [--iters=20] [--out=DIR]
  python -m experiments.benchmark.run --mfu_of=experiments/benchmark/results/h100_batch512.json

For each (teacher, student, batch, input shape) pair and compute dtype:
examples/s of the student's supervised step, the teacher's forward pass, the
live distillation step (teacher forward + student step, one jitted call) and
the cached step (the student step reading teacher logits from the batch, as
with `distill.teacher.cache`); compile time of each; the overhead ratio
t(distill) / (t(student) + t(teacher)); and the distillation step's model
FLOPs (XLA's count of the forward passes, backward as 2x forward) and MFU
against the device's dense peak (`PEAK_FLOPS`; none on a CPU).
Synthetic data on the device; medians of timed iterations after warm-up.
Writes results.json and results.md to --out.
"""
import json
import os
import resource
import statistics
import sys
import time

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np
import optax

from kd import models, runs, steps
from kd.parallel import DataParallel

# name: (teacher, student, global batch, input shape, classes)
PAIRS = {
    'mnist1d': ('cnn1d', 'mlp', 100, (40, 1), 10),
    'cifar_r32x4_r8x4': ('resnet32x4', 'resnet8x4', 64, (32, 32, 3), 100),
    'cifar_wrn40_2_wrn16_2': ('wrn_40_2', 'wrn_16_2', 64, (32, 32, 3), 100),
    'imagenet_r34_r18': ('resnet34_imagenet', 'resnet18_imagenet', 64,
                         (224, 224, 3), 1000),
}


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


def _time(fn, args, iters):
  """Median seconds per call, after two warm-up calls."""
  def call(args):
    out = jax.block_until_ready(fn(*args))
    if isinstance(out, tuple) and hasattr(out[0], 'params'):
      args = (out[0],) + tuple(args[1:])  # The old state was donated.
    return args

  args = call(call(args))
  times = []
  for _ in range(iters):
    t0 = time.perf_counter()
    args = call(args)
    times.append(time.perf_counter() - t0)
  return statistics.median(times)


def _compile_seconds(fn, args) -> float:
  t0 = time.perf_counter()
  fn.lower(*args).compile()
  return time.perf_counter() - t0


def bench(pair: str, dtype: str, iters: int, batch: int = 0) -> dict:
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
  state = steps.create_state(student, tx, jax.random.key(0), x[:1])
  t_logits = np.asarray(jax.jit(
      lambda v, a: teacher.apply(v, a, train=False)[0])(t_vars, x))
  data = parallel.shard({'image': x, 'label': y})
  # As a run with distill.teacher.cache feeds the step (kd.cache).
  cached = parallel.shard({'image': x, 'label': y,
                           'teacher': {'logits': t_logits}})
  rep_t = parallel.replicate(t_vars)
  terms = (steps.Term('kd', 'kd', 1.0, kwargs={'temperature': 4.0}),)
  forward = parallel.wrap(
      lambda v, b: teacher.apply(v, b['image'], train=False)[0], 1,
      donate_first=False)
  runs = {
      'student_step': (parallel.wrap(steps.make_supervised_step(student, tx),
                                     1), (parallel.replicate(state), data)),
      'teacher_forward': (forward, (rep_t, data)),
      'distill_step': (parallel.wrap(steps.make_distill_step(
          student, teacher, tx, terms, 1.0), 2),
                       (parallel.replicate(state), rep_t, data)),
      'cached_step': (parallel.wrap(steps.make_distill_step(
          student, None, tx, terms, 1.0), 1),
                      (parallel.replicate(state), cached)),
  }
  out = {'pair': pair, 'teacher': t_name, 'student': s_name, 'batch': batch,
         'dtype': dtype, 'device': jax.devices()[0].device_kind,
         'devices': parallel.local_devices}
  for name, (fn, args) in runs.items():
    compile_s = _compile_seconds(fn, args)
    sec = _time(fn, args, iters)
    out[f'{name}_ex_per_s'] = batch / sec
    out[f'{name}_ms'] = 1000 * sec
    out[f'{name}_compile_s'] = compile_s
  out['overhead_ratio'] = out['distill_step_ms'] / (
      out['student_step_ms'] + out['teacher_forward_ms'])
  out['cached_vs_student'] = out['cached_step_ms'] / out['student_step_ms']
  add_mfu(out, teacher, t_vars, student,
          {'params': state.params, **state.model_state}, x)
  stats = jax.devices()[0].memory_stats() or {}
  out['peak_memory_mb'] = (stats['peak_bytes_in_use'] / 2**20
                           if 'peak_bytes_in_use' in stats else
                           resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                           / 1024)
  out['peak_memory_of'] = ('device' if 'peak_bytes_in_use' in stats
                           else 'process max RSS')
  return out


def _figure(x: float) -> str:
  return f'{x:,.1f}' if x >= 10 else f'{x:.2g}'


def markdown(rows) -> str:
  lines = ['| pair | dtype | batch | student step ex/s | teacher fwd ex/s | '
           'distill step ex/s | cached step ex/s | overhead ratio | '
           'cached / student | compile s (distill) | peak MB | '
           'GFLOP / distill step | MFU (distill) |',
           '|' + '---|' * 13]
  for r in rows:
    lines.append(
        f"| {r['teacher']} -> {r['student']} | {r['dtype']} | {r['batch']} "
        f"| {r['student_step_ex_per_s']:,.0f} | {r['teacher_forward_ex_per_s']:,.0f} "
        f"| {r['distill_step_ex_per_s']:,.0f} | {r['cached_step_ex_per_s']:,.0f} "
        f"| {r['overhead_ratio']:.2f} | {r['cached_vs_student']:.2f} "
        f"| {r['distill_step_compile_s']:.1f} | {r['peak_memory_mb']:,.0f} "
        f"| {_figure(r['distill_step_gflop'])} | "
        + (f"{_figure(100 * r['distill_step_mfu'])}% |"
           if r['distill_step_mfu'] else '- |'))
  return '\n'.join(lines)


def define_flags():
  flags.DEFINE_list('pairs', ['mnist1d', 'cifar_r32x4_r8x4',
                              'cifar_wrn40_2_wrn16_2'], 'Pairs to measure.')
  flags.DEFINE_list('dtypes', ['float32'], 'Compute dtypes.')
  flags.DEFINE_integer('iters', 10, 'Timed iterations per measurement.')
  flags.DEFINE_string('out', 'benchmark_results', 'Output folder.')
  flags.DEFINE_integer('batch', 0, 'Global batch for every pair (0: each '
                       "pair's own).")
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
    for dtype in f.dtypes:
      rows.append(bench(pair, dtype, f.iters, f.batch))
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
