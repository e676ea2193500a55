"""Throughput and memory of language-model distillation, in one process.

  python -m experiments.benchmark.lm [--iters=5] [--steps=259,32768:256] [--out=DIR]

Three measurements, synthetic tokens on the device, medians of timed
iterations after warm-up, interleaved (`run.time_interleaved`):
  steps       per vocabulary V of `--steps` (`V:chunk` computes the term
              `chunk` positions at a time, `kd.losses.chunked`): tokens/s
              of the student's supervised step, the teacher's forward pass,
              the live distillation step (CE + forward KL per token, one
              log-softmax per model shared by both, `kd.steps.LogProbs`),
              the same step with each loss computing its own
              (`distill_step_apart`, the step before that sharing), and at
              the byte vocabulary the cached step (top-16 KL,
              `topk_kl_cached`, from teacher logits in the batch, as with
              a top-k teacher cache); the overhead ratio
              t(distill) / (t(student) + t(teacher)) of both distillation
              steps and t(cached) / t(student), for the `configs/lm` sizes
              (teacher 0.82M -> student 0.11M at V = 259, batch 32 x 128);
  divergence  the temporary memory XLA plans for the value and gradient of
              `generalized_jsd` at [B, T, V] (default 4 x 512 x 32,768),
              plain and through `kd.losses.chunked`: each compiled on its
              own (`memory_analysis().temp_size_in_bytes`), run never;
  generate    greedy tokens/s of `kd.sampling.generate` (KV cache) and of a
              loop that re-runs the full forward pass on the whole prefix
              for every new token (argmax of its last position); both are
              one jitted loop and give the same tokens.
Writes lm_results.json to --out and prints the tables.
"""
import json
import os
import sys
from typing import Callable

from absl import app
from absl import flags
import jax
from jax import lax
import jax.numpy as jnp
import numpy as np
import optax

from configs.lm import train as lm_configs
from experiments.benchmark import run
from kd import sampling
from kd import losses, models, runs, steps
from kd.parallel import DataParallel


def _lm(size: str, vocab: int, seq_len: int):
  return models.create('transformer_lm', vocab,
                       **lm_configs.SIZES[size], max_len=2 * seq_len)


def distill_step_apart(student, teacher, tx, terms) -> Callable:
  """`kd.steps.make_distill_step(student, teacher, tx, terms, 1.0)` as it
  was before `kd.steps.LogProbs`: the CE and each term compute their own
  log-softmaxes (the 'before' of the shared ones)."""

  def loss_fn(trainable, state, teacher_out, batch):
    params, _ = trainable
    logits, feats, new_state = steps.apply_train(student, params,
                                                 state.model_state,
                                                 batch['image'])
    ce = steps.label_loss(logits, batch)
    distill, metrics, new_aux_state = steps.apply_terms(
        terms, steps.outputs(logits, feats), teacher_out, batch, state.step)
    metrics.update(ce=ce, loss=ce + distill, accuracy=steps.accuracy(
        logits, batch['label'], batch.get('mask')))
    return ce + distill, (new_state, new_aux_state, metrics)

  def step(state, teacher_vars, batch):
    teacher_out = lax.stop_gradient(steps.teacher_outputs(
        teacher, teacher_vars, batch))
    return steps.update(state, tx, loss_fn, state, teacher_out, batch)

  return step


def step_programs(teacher_size: str = 'teacher',
                  student_size: str = 'student', batch: int = 32,
                  seq_len: int = 128, vocab: int = 259, topk: int = 16,
                  chunk_size: int = 0) -> tuple[dict, dict]:
  """({name: (compiled program, its arguments)}, the setting): the student
  step, teacher forward, distillation step (its term `chunk_size`
  positions at a time if set), the same with each loss's own
  log-softmaxes, and with `topk` the cached step (top-`topk` KL from
  teacher logits in the batch)."""
  parallel = DataParallel('pmap')
  batch -= batch % parallel.local_devices
  teacher = _lm(teacher_size, vocab, seq_len)
  student = _lm(student_size, vocab, seq_len)
  rng = np.random.default_rng(0)
  tokens = rng.integers(0, vocab, size=(batch, seq_len + 1)).astype(np.int32)
  x, y = tokens[:, :-1], tokens[:, 1:]
  data = parallel.shard({'image': x, 'label': y,
                         'mask': np.ones(y.shape, np.float32)})
  tx = optax.adam(1e-3)
  t_vars = teacher.init(jax.random.key(1), x[:1])
  state = steps.create_state(student, tx, jax.random.key(0), x[:1])
  s_params = _count({'params': state.params})
  def fresh():  # Each step donates the state it is given.
    return parallel.replicate(state)
  rep_t = parallel.replicate(t_vars)
  terms = (steps.Term('forward_kl', 'forward_kl', 1.0, kwargs=(
      {'chunk_size': chunk_size} if chunk_size else {})),)
  fns = {
      'student_step': (parallel.wrap(steps.make_supervised_step(student, tx),
                                     1), (fresh(), data)),
      'teacher_forward': (parallel.wrap(
          lambda v, b: teacher.apply(v, b['image'])[0], 1,
          donate_first=False), (rep_t, data)),
      'distill_step': (parallel.wrap(steps.make_distill_step(
          student, teacher, tx, terms, 1.0), 2), (fresh(), rep_t, data)),
      'distill_step_apart': (parallel.wrap(distill_step_apart(
          student, teacher, tx, terms), 2), (fresh(), rep_t, data)),
  }
  if topk:  # As a run with a top-k teacher cache feeds the step (kd.cache).
    values, indices = jax.jit(lambda v, a: lax.top_k(
        teacher.apply(v, a)[0], topk))(t_vars, x)
    cached = parallel.shard({'image': x, 'label': y,
                             'mask': np.ones(y.shape, np.float32),
                             'teacher': {'topk_values': np.asarray(values),
                                         'topk_indices': np.asarray(indices)}})
    cached_terms = (steps.Term('topk', 'topk_kl_cached', 1.0,
                               teacher='topk_values,topk_indices'),)
    fns['cached_step'] = (parallel.wrap(steps.make_distill_step(
        student, None, tx, cached_terms, 1.0), 1), (fresh(), cached))
  out = {'teacher': teacher_size, 'student': student_size, 'batch': batch,
         'seq_len': seq_len, 'vocab': vocab, 'topk': topk,
         'chunk_size': chunk_size,
         'teacher_params': _count(t_vars), 'student_params': s_params,
         'device': jax.devices()[0].device_kind,
         'devices': parallel.local_devices}
  return fns, out


def bench_steps(teacher_size: str = 'teacher', student_size: str = 'student',
                batch: int = 32, seq_len: int = 128, vocab: int = 259,
                topk: int = 16, iters: int = 5, chunk_size: int = 0) -> dict:
  """Tokens/s of the `step_programs`, taking turns, and their ratios."""
  fns, out = step_programs(teacher_size, student_size, batch, seq_len, vocab,
                           topk, chunk_size)
  batch = out['batch']
  for name, sec in run.time_interleaved(fns, iters).items():
    out[f'{name}_ms'] = 1000 * sec
    out[f'{name}_tok_per_s'] = batch * seq_len / sec
  apart = out['student_step_ms'] + out['teacher_forward_ms']
  out['overhead_ratio'] = out['distill_step_ms'] / apart
  out['overhead_ratio_apart'] = out['distill_step_apart_ms'] / apart
  if topk:
    out['cached_vs_student'] = out['cached_step_ms'] / out['student_step_ms']
  return out


def _count(variables) -> int:
  return sum(int(np.prod(a.shape))
             for a in jax.tree.leaves(variables['params']))


def divergence_temp_bytes(batch: int, seq_len: int, vocab: int,
                          chunk_size: int = 0) -> int:
  """Temporary bytes XLA plans for value and gradient (student logits) of
  mean generalized JSD(beta 0.5) over [batch, seq_len, vocab] logits,
  plain or `chunked` by `chunk_size` positions."""
  fn = losses.divergences.generalized_jsd
  if chunk_size:
    fn = losses.chunked(fn, chunk_size)
  shape = jax.ShapeDtypeStruct((batch, seq_len, vocab), jnp.float32)
  grad = jax.value_and_grad(lambda s, t: jnp.mean(fn(s, t, beta=0.5)))
  analysis = jax.jit(grad).lower(shape, shape).compile().memory_analysis()
  return int(analysis.temp_size_in_bytes)


def bench_divergence(batch: int = 4, seq_len: int = 512, vocab: int = 32_768,
                     chunk_size: int = 256) -> dict:
  plain = divergence_temp_bytes(batch, seq_len, vocab)
  chunk = divergence_temp_bytes(batch, seq_len, vocab, chunk_size)
  return {'batch': batch, 'seq_len': seq_len, 'vocab': vocab,
          'chunk_size': chunk_size, 'logits_mb': batch * seq_len * vocab * 4
          / 2**20, 'plain_temp_mb': plain / 2**20,
          'chunked_temp_mb': chunk / 2**20, 'ratio': chunk / plain}


def full_recompute_generate(model, variables, prompts, max_new_tokens: int):
  """Greedy continuation of equal-length `prompts` [B, P]: every new token
  is the argmax at the last prefix position of a full forward pass over the
  whole [B, P + max_new_tokens] buffer (causal, so the unfilled tail does
  not change it). [B, P + max_new_tokens] tokens."""
  b, p = prompts.shape
  buf = jnp.concatenate(
      [prompts, jnp.zeros((b, max_new_tokens), prompts.dtype)], axis=1)

  def body(i, buf):
    logits = model.apply(variables, buf)[0]
    token = jnp.argmax(logits[:, p + i - 1], -1).astype(buf.dtype)
    return buf.at[:, p + i].set(token)

  return lax.fori_loop(0, max_new_tokens, body, buf)


def bench_generate(size: str = 'teacher', batch: int = 8, prompt: int = 32,
                   new_tokens: int = 96, vocab: int = 259, iters: int = 3
                   ) -> dict:
  """Greedy tokens/s with the KV cache and with full recomputation."""
  model = _lm(size, vocab, (prompt + new_tokens) // 2 + 1)
  prompts = jnp.asarray(np.random.default_rng(0).integers(
      0, vocab, size=(batch, prompt)), jnp.int32)
  variables = model.init(jax.random.key(0), prompts[:, :1])
  cached = jax.jit(lambda v, x: sampling.generate(
      model, v, x, jnp.full((batch,), prompt), jax.random.key(0), new_tokens,
      pad_id=0)[0])
  full = jax.jit(lambda v, x: full_recompute_generate(model, v, x,
                                                      new_tokens))
  out = {'model': size, 'batch': batch, 'prompt': prompt,
         'new_tokens': new_tokens,
         'same_tokens': bool(jnp.all(cached(variables, prompts)
                                     == full(variables, prompts)))}
  for name, sec in run.time_interleaved(
      {'kv_cache': (cached, (variables, prompts)),
       'full_recompute': (full, (variables, prompts))}, iters).items():
    out[f'{name}_tok_per_s'] = batch * new_tokens / sec
  out['speedup'] = out['kv_cache_tok_per_s'] / out['full_recompute_tok_per_s']
  return out


def _steps_row(s: dict) -> str:
  cached = lambda key, f: format(s[key], f) if s['topk'] else '-'
  return (f"| {s['vocab']:,} | {s['chunk_size'] or '-'} | "
          f"{s['teacher_params'] / 1e6:.2f}M -> "
          f"{s['student_params'] / 1e6:.2f}M | "
          f"{s['student_step_tok_per_s']:,.0f} | "
          f"{s['teacher_forward_tok_per_s']:,.0f} | "
          f"{s['distill_step_apart_tok_per_s']:,.0f} | "
          f"{s['distill_step_tok_per_s']:,.0f} | "
          f"{s['overhead_ratio_apart']:.2f} | {s['overhead_ratio']:.2f} | "
          f"{cached('cached_step_tok_per_s', ',.0f')} | "
          f"{cached('cached_vs_student', '.2f')} |")


def markdown(result: dict) -> str:
  rows, d, g = result['steps'], result['divergence'], result['generate']
  s = rows[0]
  return '\n'.join([
      f"Steps: {s['teacher']} -> {s['student']}, batch {s['batch']} x "
      f"{s['seq_len']}; distillation step CE + forward KL, before (each "
      'loss its own log-softmax) and after (one per model)',
      '',
      '| V | chunk | params | student step tok/s | teacher fwd tok/s | '
      'distill step before tok/s | distill step tok/s | overhead ratio '
      f"before | overhead ratio | cached top-{s['topk']} step tok/s | "
      'cached / student |',
      '|---|---|---|---|---|---|---|---|---|---|---|',
      *[_steps_row(r) for r in rows],
      '',
      f"Generalized JSD, value + gradient, [{d['batch']}, {d['seq_len']}, "
      f"{d['vocab']}] logits ({d['logits_mb']:,.0f} MB each)",
      '',
      '| plain temp MB | chunked temp MB (chunk '
      f"{d['chunk_size']}) | chunked / plain |",
      '|---|---|---|',
      f"| {d['plain_temp_mb']:,.0f} | {d['chunked_temp_mb']:,.0f} | "
      f"{d['ratio']:.3f} |",
      '',
      f"Greedy generation: {g['model']}, batch {g['batch']}, prompt "
      f"{g['prompt']}, {g['new_tokens']} new tokens (same tokens: "
      f"{g['same_tokens']})",
      '',
      '| KV cache tok/s | full recompute tok/s | speed-up |',
      '|---|---|---|',
      f"| {g['kv_cache_tok_per_s']:,.0f} | "
      f"{g['full_recompute_tok_per_s']:,.0f} | {g['speedup']:.1f}x |"])


def define_flags():
  flags.DEFINE_integer('iters', 5, 'Timed iterations per measurement.')
  flags.DEFINE_list('steps', ['259', '32768:256'], 'Vocabularies of the '
                    'step timings, each V or V:chunk (the term chunk '
                    'positions at a time).')
  flags.DEFINE_string('out', 'benchmark_results', 'Output folder.')
  flags.DEFINE_integer('vocab', 32_768, 'Vocabulary of the divergence '
                       'memory measurement.')
  flags.DEFINE_integer('chunk_size', 256, 'Positions per chunk.')


def main(argv):
  del argv
  f = flags.FLAGS
  rows = []
  for spec in f.steps:
    vocab, _, chunk = spec.partition(':')
    rows.append(bench_steps(vocab=int(vocab), chunk_size=int(chunk or 0),
                            topk=16 if int(vocab) < 1024 else 0,
                            iters=f.iters))
    print(_steps_row(rows[-1]), flush=True)
  result = {'steps': rows,
            'divergence': bench_divergence(vocab=f.vocab,
                                           chunk_size=f.chunk_size),
            'generate': bench_generate(iters=f.iters)}
  print(json.dumps(result), file=sys.stderr, flush=True)
  os.makedirs(f.out, exist_ok=True)
  runs.write_json(os.path.join(f.out, 'lm_results.json'), result)
  print(f"{rows[0]['device']}, {rows[0]['devices']} "
        f"device(s)\n{markdown(result)}")


if __name__ == '__main__':
  define_flags()
  app.run(main)
