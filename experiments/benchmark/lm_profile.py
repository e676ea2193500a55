"""Where the LM distillation step's time goes, from XLA's own timings.

  python -m experiments.benchmark.lm_profile [--vocab=259] [--chunk_size=0] [--rounds=3]

Traces (`jax.profiler`) the student step, the teacher's forward pass and the
distillation step of `lm.step_programs`, taking turns, and sums per program
the time XLA:CPU's thunk executor records for each HLO operation, keyed by
the JAX operation its root comes from (the op path of its metadata, e.g.
`transpose(jvp(TransformerLM))/.../embed.attend/dot_general`, the logits'
weight gradient) and its output shape. Prints per program the wall time,
the operations' summed time (above the wall where operations run side by
side on the cores) and the number of operations a call, then the keys whose
time in the distillation step most exceeds their time in the two programs
apart. Median-free and one run: read it for where, not for how much.
"""
import collections
import glob
import gzip
import json
import os
import re
import tempfile

from absl import app
from absl import flags
import jax

from experiments.benchmark import lm
from experiments.benchmark import run

PROGRAMS = ('student_step', 'teacher_forward', 'distill_step')
_OP = re.compile(r'^\s*(?:ROOT )?%([\w.\-]+) = (\S+) [\w-]+\(.*?'
                 r'op_name="(?:jit|pmap)\([^)]*\)/([^"]*)"', re.M)


def op_keys(compiled_text: str) -> dict:
  """{HLO operation name: 'op path [shape]'} of a compiled program."""
  return {name: f'{path} {shape.split("{")[0]}'
          for name, shape, path in _OP.findall(compiled_text)}


def profile(rounds: int = 3, **setting) -> dict:
  """{program: {'wall_ms', 'ops', 'op_ms': {key: ms a call}}}."""
  fns, _ = lm.step_programs(**setting)
  fns = {k: fns[k] for k in PROGRAMS}
  keys = {k: op_keys(fn.lower(*a).compile().as_text())
          for k, (fn, a) in fns.items()}
  args = {k: run._call(fn, run._call(fn, a))  # pylint: disable=protected-access
          for k, (fn, a) in fns.items()}
  order = []
  with tempfile.TemporaryDirectory() as tmp:
    with jax.profiler.trace(tmp):
      for _ in range(rounds):
        for k, (fn, _) in fns.items():
          with jax.profiler.TraceAnnotation(f'lm_profile {k}'):
            args[k] = run._call(fn, args[k])  # pylint: disable=protected-access
          order.append(k)
    path, = glob.glob(os.path.join(tmp, '**', '*.trace.json.gz'),
                      recursive=True)
    with gzip.open(path) as f:
      events = [e for e in json.load(f)['traceEvents'] if e.get('ph') == 'X']
  calls = sorted((e for e in events if e['name'].startswith('lm_profile ')),
                 key=lambda e: e['ts'])
  ops = [e for e in events if 'hlo_op' in e.get('args', {})]
  out = {k: {'wall_ms': 0.0, 'ops': 0, 'op_ms': collections.Counter()}
         for k in fns}
  for call in calls:
    k = call['name'][len('lm_profile '):]
    out[k]['wall_ms'] += call['dur'] / 1e3 / rounds
    for e in ops:
      if call['ts'] <= e['ts'] < call['ts'] + call['dur']:
        name = e['args']['hlo_op']
        out[k]['op_ms'][keys[k].get(name, name)] += e['dur'] / 1e3 / rounds
        out[k]['ops'] += 1
  for k in out:
    out[k]['ops'] //= rounds
  return out


def report(result: dict, top: int = 12) -> str:
  lines = ['| program | wall ms | operations ms | operations a call |',
           '|---|---|---|---|']
  for k, r in result.items():
    lines.append(f"| {k} | {r['wall_ms']:,.1f} | "
                 f"{sum(r['op_ms'].values()):,.1f} | {r['ops']} |")
  apart = collections.Counter(result['student_step']['op_ms'])
  apart.update(result['teacher_forward']['op_ms'])
  excess = collections.Counter(result['distill_step']['op_ms'])
  excess.subtract(apart)
  lines += ['', '| operation (JAX op path, shape) | distill step ms | '
            'student step + teacher fwd ms | excess ms |', '|---|---|---|---|']
  for key, ms in excess.most_common(top):
    lines.append(f"| `{key}` | {result['distill_step']['op_ms'][key]:,.1f} "
                 f"| {apart[key]:,.1f} | {ms:+,.1f} |")
  return '\n'.join(lines)


def main(argv):
  del argv
  f = flags.FLAGS
  print(report(profile(f.rounds, vocab=f.vocab, chunk_size=f.chunk_size,
                       topk=0)))


if __name__ == '__main__':
  flags.DEFINE_integer('vocab', 259, 'Vocabulary.')
  flags.DEFINE_integer('chunk_size', 0, 'Positions per chunk of the term.')
  flags.DEFINE_integer('rounds', 3, 'Traced calls of each program.')
  app.run(main)
