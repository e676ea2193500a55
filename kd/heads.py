"""Test accuracy of each head of a multi-head student: DeiT's class and
distillation heads beside the mean of the two that the model predicts with."""
from typing import Iterable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

HEADS = {'cls_logits': 'test_accuracy_cls', 'dist_logits': 'test_accuracy_dist'}


def head_accuracies(model, variables, batches: Iterable[Mapping],
                    heads: Mapping[str, str] = HEADS) -> dict:
  """{summary key: accuracy} over masked eval batches ({'image', 'label',
  'mask'}, as `kd.data.eval_batches` yields them) for the model's logits
  ('test_accuracy') and each feature named in `heads` that it returns."""

  @jax.jit
  def correct(batch):
    logits, feats = model.apply(variables, batch['image'], train=False)
    outs = {'test_accuracy': logits,
            **{key: feats[name] for name, key in heads.items() if name in feats}}
    return {key: jnp.sum(batch['mask'] * (jnp.argmax(out, -1) == batch['label']))
            for key, out in outs.items()}

  totals, count = {}, 0.0
  for batch in batches:
    for key, value in correct(batch).items():
      totals[key] = totals.get(key, 0.0) + float(value)
    count += float(np.sum(batch['mask']))
  if not count:
    raise ValueError('head_accuracies got no examples: `batches` is empty')
  return {key: value / count for key, value in totals.items()}
