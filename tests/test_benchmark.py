"""The throughput benchmark runs and reports consistent figures."""
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.benchmark import run


def test_batch_norm_pair_reports_every_figure(monkeypatch):
  # A teacher with batch norms to fold, small enough to compile quickly.
  monkeypatch.setitem(run.PAIRS, 'tiny', ('resnet8', 'mlp', 8, (8, 8, 3), 10))
  # The timings call the programs compiled for the memory figures.
  compiles_while_timing = []
  timed = run.time_interleaved

  def listen(event, *_, **__):
    if event == '/jax/core/compile/backend_compile_duration':
      compiles_while_timing.append(event)

  def counting(configs, iters):
    jax.monitoring.register_event_duration_secs_listener(listen)
    try:
      return timed(configs, iters)
    finally:
      jax.monitoring.unregister_event_duration_listener(listen)

  monkeypatch.setattr(run, 'time_interleaved', counting)
  r = run.bench('tiny', 'float32', iters=1, steps_per_dispatch=2)
  assert not compiles_while_timing
  for step in run.STEPS:
    assert r[f'{step}_ex_per_s'] == pytest.approx(
        r['batch'] / (r[f'{step}_ms'] / 1000))
    assert r[f'{step}_memory_mb'] > 0
  assert r['overhead_ratio'] == pytest.approx(
      r['distill_step_ms'] / (r['student_step_ms'] + r['teacher_forward_ms']))
  # Two steps a call: per-step figures, the call's time halved.
  assert r['steps_per_dispatch'] == 2
  assert r['overhead_ratio_k'] == pytest.approx(
      r['distill_step_k_ms'] / (r['student_step_ms'] + r['teacher_forward_ms']))
  assert r['distill_step_k_ex_per_s'] == pytest.approx(
      r['batch'] / (r['distill_step_k_ms'] / 1000))
  assert r['folded_speedup'] == pytest.approx(
      r['distill_step_ms'] / r['distill_step_folded_ms'])
  # Each program's own memory: the step holding both models plans more than
  # the teacher's forward pass, and the folded teacher drops the norms'.
  assert r['peak_memory_mb'] == r['distill_step_memory_mb']
  assert r['distill_step_memory_mb'] > r['teacher_forward_memory_mb']
  assert r['teacher_forward_folded_memory_mb'] < r['teacher_forward_memory_mb']
  assert r['distill_step_gflop'] > 0
  assert r['distill_step_mfu'] is None  # No peak is known for a CPU.
  table = run.markdown([r])
  assert '| resnet8 -> mlp | float32 | 8 |' in table
  assert '| distill folded ex/s |' in table and 'PyTorch' not in table
  assert '| overhead ratio, 2 steps a call |' in table


def test_memory_is_the_programs_planned_bytes():
  x = np.zeros((256, 1024), np.float32)  # 1 MB.
  assert run.compiled_figures(jax.jit(lambda a: a * 2), (x,))[1] == 2.0
  # The output reuses the donated input's buffer.
  assert run.compiled_figures(jax.jit(lambda a: a * 2, donate_argnums=0),
                              (x,))[1] == 1.0


def test_input_pipeline_rate_on_mock_cifar():
  r = run.pipeline_rate('cifar_r32x4_r8x4', batch=8, iters=2)
  assert r['input_pipeline_data'] == 'cifar100 (mock)'
  assert r['input_pipeline_ex_per_s'] > 0


def test_peer_ratios_and_missing_torch():
  row = {'student_step_ex_per_s': 50.0, 'teacher_forward_ex_per_s': 90.0,
         'distill_step_ex_per_s': 30.0, 'distill_step_folded_ex_per_s': 33.0}
  p = {'torch': '2.x', 'student_step_ex_per_s': 100.0,
       'teacher_forward_ex_per_s': 120.0, 'distill_step_ex_per_s': 60.0}
  run.add_peer(row, p)
  assert row['kd_vs_peer_student_step'] == 0.5
  assert row['kd_vs_peer_distill_step'] == 0.5
  assert row['kd_vs_peer_distill_step_folded'] == pytest.approx(0.55)
  try:
    import torch  # pylint: disable=import-outside-toplevel,unused-import
  except ImportError:
    with pytest.raises(RuntimeError, match='pip install torch'):
      run.peer('mnist1d', 1, 100, sys.executable, '/nonexistent')


def test_peak_flops_by_device_kind():
  assert run.peak_flops('NVIDIA H100 80GB HBM3', 'bfloat16') == 989e12
  assert run.peak_flops('cpu', 'float32') is None


def test_lm_benchmark_reports_consistent_figures():
  from experiments.benchmark import lm  # pylint: disable=g-import-not-at-top
  s = lm.bench_steps('tiny', 'tiny_half', batch=4, seq_len=16, iters=1)
  for step in ('student_step', 'teacher_forward', 'distill_step',
               'distill_step_apart', 'cached_step'):
    assert s[f'{step}_tok_per_s'] == pytest.approx(
        4 * 16 / (s[f'{step}_ms'] / 1000))
  assert s['overhead_ratio'] == pytest.approx(
      s['distill_step_ms'] / (s['student_step_ms'] + s['teacher_forward_ms']))
  assert s['overhead_ratio_apart'] == pytest.approx(
      s['distill_step_apart_ms']
      / (s['student_step_ms'] + s['teacher_forward_ms']))
  assert s['cached_vs_student'] == pytest.approx(
      s['cached_step_ms'] / s['student_step_ms'])
  assert s['teacher_params'] > s['student_params'] > 0
  # Chunking bounds the [positions, V] intermediates by the chunk's.
  d = lm.bench_divergence(batch=2, seq_len=64, vocab=512, chunk_size=16)
  assert d['chunked_temp_mb'] < d['plain_temp_mb']
  assert d['logits_mb'] == pytest.approx(2 * 64 * 512 * 4 / 2**20)
  g = lm.bench_generate('tiny', batch=2, prompt=4, new_tokens=6, iters=1)
  assert g['same_tokens']  # Both are greedy decodes of the same model.
  assert g['speedup'] == pytest.approx(
      g['kv_cache_tok_per_s'] / g['full_recompute_tok_per_s'])
  chunked = lm.bench_steps('tiny', 'tiny_half', batch=4, seq_len=16,
                           vocab=300, topk=0, iters=1, chunk_size=16)
  assert 'cached_step_ms' not in chunked and chunked['chunk_size'] == 16
  table = lm.markdown({'steps': [s, chunked], 'divergence': d, 'generate': g})
  assert '| KV cache tok/s |' in table
  assert '| 300 | 16 | ' in table and table.count('| 259 | - | ') == 1


def test_hf_peer_row_takes_torchs_fastest_thread_count():
  from experiments.benchmark import hf  # pylint: disable=import-outside-toplevel
  common = {'torch': '2.x', 'transformers': '5.x',
            'attn_implementation': 'sdpa'}
  peers = {'1': {**common, 'threads': 1, 'student_step_ex_per_s': 40.0,
                 'teacher_forward_ex_per_s': 30.0,
                 'distill_step_ex_per_s': 20.0},
           '2': {**common, 'threads': 2, 'student_step_ex_per_s': 50.0,
                 'teacher_forward_ex_per_s': 60.0,
                 'distill_step_ex_per_s': 10.0}}
  row = {'teacher_params': 3_000_000, 'student_params': 400_000, 'batch': 8,
         'seq_len': 128, 'student_step_ex_per_s': 20.0,
         'teacher_forward_ex_per_s': 45.0, 'distill_step_ex_per_s': 30.0}
  hf.add_peer(row, peers)
  # One thread count for all three steps: the fastest distillation step's.
  assert row['peer_threads'] == 1
  assert row['kd_vs_peer_distill_step'] == 1.5
  assert row['kd_vs_peer_student_step'] == 0.5
  assert row['kd_vs_peer_teacher_forward'] == 1.5
  assert row['peer_by_threads']['2']['teacher_forward'] == 60.0
  assert ('| 3,000,000 -> 400,000 | 8 x 128 | 1 | 20.00 | 40.00 | 0.50 |'
          in hf.markdown(row))


def test_topk_cache_rows_are_the_formulas_and_error_grows_with_fewer_bits(
    monkeypatch):
  from experiments.benchmark import topk_cache  # pylint: disable=g-import-not-at-top
  from kd import topk_codec  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(topk_cache, 'ROWS', 16)
  monkeypatch.setattr(topk_cache, 'SEQ', 8)
  monkeypatch.setattr(topk_cache, 'BATCH', 4)
  rows = {r['storage']: r for r in topk_cache.bench(259, 64, iters=1)}
  assert rows['none']['bytes_per_token'] == 8 * 64 + 4
  for q in ('q8', 'q6', 'q5', 'q4'):
    assert rows[q]['bytes_per_token'] == topk_codec.record_bytes(
        259, 64, int(q[1]))
    assert rows[q]['bytes_per_stored_logit'] == pytest.approx(
        rows[q]['bytes_per_token'] / 64, abs=1e-4)
    assert rows[q]['reader_vs_float32'] == pytest.approx(
        rows[q]['reader_tokens_per_s'] / rows['none']['reader_tokens_per_s'])
  kls = [rows[q]['kl'] for q in ('q8', 'q6', 'q5', 'q4')]
  assert 0 < kls[0] < kls[1] < kls[2] < kls[3]
  assert '| 259 | 64 | q8 | 101 | 1.58 |' in topk_cache.markdown(rows.values())


def test_lm_profile_keys_operations_by_their_jax_op_and_shape():
  from experiments.benchmark import lm_profile  # pylint: disable=import-outside-toplevel
  text = jax.jit(lambda a, b: jnp.tanh(a @ b)).lower(
      jnp.ones((8, 4)), jnp.ones((4, 3))).compile().as_text()
  keys = lm_profile.op_keys(text).values()
  assert any(k.startswith('dot_general f32[8,3]') for k in keys), keys
  ms = lambda **kw: {'wall_ms': 1.0, 'ops': 2, 'op_ms': kw}
  table = lm_profile.report({'student_step': ms(a=1.0, b=2.0),
                             'teacher_forward': ms(b=1.0),
                             'distill_step': ms(a=1.5, b=5.0, c=0.5)})
  rows = [l for l in table.splitlines() if l.startswith('| `')]
  assert rows == ['| `b` | 5.0 | 3.0 | +2.0 |', '| `a` | 1.5 | 1.0 | +0.5 |',
                  '| `c` | 0.5 | 0.0 | +0.5 |']
