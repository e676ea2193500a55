"""Bias correction of an omitted class, on logits built by hand."""
import numpy as np

from experiments.omitted_class.analyze import DELTAS, bias_correction


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
  # The label-free delta is the smallest that makes class 2 at least a tenth
  # of the predictions on the training logits.
  share = lambda d: np.mean((logits + d * (np.arange(3) == 2)).argmax(-1) == 2)
  i = list(DELTAS).index(out['delta_prior'])
  assert i > 0 and share(DELTAS[i]) >= 0.1 > share(DELTAS[i - 1])
  assert out['after_prior'] == np.mean(
      (logits[y == 2] + DELTAS[i] * (np.arange(3) == 2)).argmax(-1) == 2)
