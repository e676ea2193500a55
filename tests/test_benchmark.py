"""The throughput benchmark runs and reports consistent figures."""
import pytest

from experiments.benchmark import run


def test_mnist1d_pair_reports_every_figure():
  r = run.bench('mnist1d', 'float32', iters=1)
  for step in ('student_step', 'teacher_forward', 'distill_step',
               'cached_step'):
    assert r[f'{step}_ex_per_s'] == pytest.approx(
        r['batch'] / (r[f'{step}_ms'] / 1000))
  assert r['overhead_ratio'] == pytest.approx(
      r['distill_step_ms'] / (r['student_step_ms'] + r['teacher_forward_ms']))
  assert r['distill_step_gflop'] > 0
  assert r['distill_step_mfu'] is None  # No peak is known for a CPU.
  assert '| cnn1d -> mlp | float32 | 100 |' in run.markdown([r])


def test_peak_flops_by_device_kind():
  assert run.peak_flops('NVIDIA H100 80GB HBM3', 'bfloat16') == 989e12
  assert run.peak_flops('cpu', 'float32') is None


def test_lm_benchmark_reports_consistent_figures():
  from experiments.benchmark import lm  # pylint: disable=g-import-not-at-top
  s = lm.bench_steps('tiny', 'tiny_half', batch=4, seq_len=16, iters=1)
  for step in ('student_step', 'teacher_forward', 'distill_step',
               'cached_step'):
    assert s[f'{step}_tok_per_s'] == pytest.approx(
        4 * 16 / (s[f'{step}_ms'] / 1000))
  assert s['overhead_ratio'] == pytest.approx(
      s['distill_step_ms'] / (s['student_step_ms'] + s['teacher_forward_ms']))
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
  table = lm.markdown({'steps': s, 'divergence': d, 'generate': g})
  assert '| KV cache tok/s |' in table
