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
