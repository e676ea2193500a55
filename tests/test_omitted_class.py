"""Bias correction of an omitted class, on logits built by hand."""
import numpy as np

from experiments.omitted_class.analyze import bias_correction


def test_raising_the_omitted_bias_recovers_the_class():
  rng = np.random.default_rng(0)
  y = np.repeat(np.arange(3), 20)
  # Class 2 was never trained on: its logit is 4 lower than it should be.
  logits = np.eye(3)[y] * 3.0 + rng.normal(scale=0.3, size=(60, 3))
  logits[:, 2] -= 4.0
  out = bias_correction(logits, y, logits, omit=2)
  assert out['before'] == 0.0
  assert out['after_test_tuned'] == 1.0 and out['overall_after_test_tuned'] == 1.0
  assert 1.0 < out['delta_test_tuned'] < 7.0
  # The label-free delta makes class 2 at least a tenth of the predictions.
  assert out['after_prior'] > out['before'] and out['delta_prior'] > 0
