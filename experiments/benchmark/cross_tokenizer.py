"""The cost of cross-tokenizer distillation steps, in one process.

  python -m experiments.benchmark.cross_tokenizer [--iters=5] [--out=DIR]

Milliseconds per training step (medians of timed iterations after warm-up,
interleaved: `run.time_interleaved`) of a byte-level student (`configs/lm`
size `student`, batch 32 x 128 bytes) trained
  student_step     from the corpus alone;
  forward_kl_step  with forward KL from a byte-level teacher (size
                   `teacher`, vocabulary 259: the same tokenizer);
  uld_step         with ULD from a BPE teacher of the same size and
                   `teacher_vocab` tokens (4,096) reading its own 128 tokens
                   per row;
  hybrid_step      with the aligned hybrid KL from that teacher (vocabulary
                   map: the 256 bytes and eos);
and each step's time over the student's and over the forward-KL step's.
Synthetic tokens; the alignment is `kd.data.align.align_row` of teacher
tokens of 1 to 6 bytes (3.5 on average) against the student's bytes.
Writes cross_tokenizer.json to --out and prints the table.
"""
import json
import os

from absl import app
from absl import flags
import jax
import numpy as np
import optax

from configs.lm import train as lm_configs
from experiments.benchmark import run
from kd import models, steps
from kd.data import align
from kd.parallel import DataParallel

STEPS = ('student_step', 'forward_kl_step', 'uld_step', 'hybrid_step')


def _lm(size: str, vocab: int, seq_len: int):
  return models.create('transformer_lm', vocab, **lm_configs.SIZES[size],
                       max_len=2 * seq_len)


def synthetic_batch(batch: int, seq_len: int, teacher_vocab: int,
                    seed: int = 0) -> dict:
  """Random bytes for the student, random teacher tokens of 1 to 6 bytes
  covering them, and their alignment, as `kd.data.paired` lays a batch
  out."""
  rng = np.random.default_rng(seed)
  tokens = rng.integers(0, 256, (batch, seq_len + 1)).astype(np.int32)
  t_tokens = rng.integers(3, teacher_vocab, (batch, seq_len + 1)).astype(
      np.int32)
  s_ends = np.arange(1, seq_len + 2)
  rows = []
  for _ in range(batch):
    t_ends = np.cumsum(rng.integers(1, 7, seq_len + 1))
    rows.append(align.align_row(s_ends, t_ends))
  return {'image': tokens[:, :-1], 'label': tokens[:, 1:],
          'mask': np.ones((batch, seq_len), np.float32),
          'teacher_image': t_tokens[:, :-1], 'teacher_label': t_tokens[:, 1:],
          'align': {k: np.stack([r[k] for r in rows]) for k in rows[0]}}


def bench_steps(teacher_size: str = 'teacher', student_size: str = 'student',
                batch: int = 32, seq_len: int = 128, teacher_vocab: int = 4096,
                iters: int = 5, which: tuple = STEPS) -> dict:
  """The figures of the module doc for the steps `which` (ratios to the
  student's and forward-KL steps where those are timed)."""
  parallel = DataParallel('pmap')
  batch -= batch % parallel.local_devices
  student = _lm(student_size, 259, seq_len)
  byte_teacher = _lm(teacher_size, 259, seq_len)
  bpe_teacher = _lm(teacher_size, teacher_vocab, seq_len)
  host = synthetic_batch(batch, seq_len, teacher_vocab)
  data = parallel.shard(host)
  x = host['image'][:1]
  tx = optax.adam(1e-3)
  state = steps.create_state(student, tx, jax.random.key(0), x)
  fresh = lambda: parallel.replicate(state)  # Each step donates its state.
  byte_vars = parallel.replicate(byte_teacher.init(jax.random.key(1), x))
  bpe_vars = parallel.replicate(bpe_teacher.init(jax.random.key(2), x))
  matched = (np.append(np.arange(256), 258), np.append(np.arange(3, 259), 2))
  term = lambda name, **kw: (steps.Term(name, name, 1.0, kwargs=kw),)

  def distill(teacher, terms):
    return parallel.wrap(steps.make_distill_step(student, teacher, tx, terms,
                                                 1.0), 2)

  fns = {
      'student_step': (parallel.wrap(steps.make_supervised_step(student, tx),
                                     1), (fresh(), data)),
      'forward_kl_step': (distill(byte_teacher, term('forward_kl')),
                          (fresh(), byte_vars, data)),
      'uld_step': (distill(bpe_teacher, term('uld')),
                   (fresh(), bpe_vars, data)),
      'hybrid_step': (distill(bpe_teacher, term(
          'hybrid_kl', matched_student=matched[0],
          matched_teacher=matched[1])), (fresh(), bpe_vars, data)),
  }
  out = {'teacher': teacher_size, 'student': student_size, 'batch': batch,
         'seq_len': seq_len, 'teacher_vocab': teacher_vocab,
         'aligned': float(host['align']['aligned'].mean()),
         'device': jax.devices()[0].device_kind,
         'devices': parallel.local_devices}
  timed = run.time_interleaved({k: fns[k] for k in which}, iters)
  for name, sec in timed.items():
    out[f'{name}_ms'] = 1000 * sec
  for name in timed:
    for base, key in (('student_step', 'student'),
                      ('forward_kl_step', 'forward_kl')):
      if base in timed:
        out[f'{name}_vs_{key}'] = out[f'{name}_ms'] / out[f'{base}_ms']
  return out


def markdown(r: dict) -> str:
  lines = [f"{r['student']} student, {r['teacher']} teachers, batch "
           f"{r['batch']} x {r['seq_len']} bytes, BPE teacher vocabulary "
           f"{r['teacher_vocab']:,}, {100 * r['aligned']:.0f}% of positions "
           f"aligned; {r['device']} x {r['devices']}", '',
           '| step | ms | / student step | / forward-KL step |',
           '|---|---|---|---|']
  ratio = lambda k: f'{r[k]:.2f}' if k in r else '-'
  for name in STEPS:
    if f'{name}_ms' in r:
      lines.append(f"| {name} | {r[f'{name}_ms']:.1f} | "
                   f"{ratio(f'{name}_vs_student')} | "
                   f"{ratio(f'{name}_vs_forward_kl')} |")
  return '\n'.join(lines)


def define_flags():
  flags.DEFINE_integer('iters', 5, 'Timed iterations per step.')
  flags.DEFINE_string('out', '', 'Directory for cross_tokenizer.json.')


def main(argv):
  del argv
  result = bench_steps(iters=flags.FLAGS.iters)
  if flags.FLAGS.out:
    os.makedirs(flags.FLAGS.out, exist_ok=True)
    with open(os.path.join(flags.FLAGS.out, 'cross_tokenizer.json'),
              'w') as f:
      json.dump(result, f, indent=2)
  print(markdown(result))


if __name__ == '__main__':
  define_flags()
  app.run(main)
