"""Runs a few supervised and distillation steps under each wrapper and device
count; writes losses and final parameters to an .npz (used by
test_parallel.py in a subprocess with 8 simulated CPU devices)."""
import sys

import jax
import numpy as np
import optax

from kd import models, steps
from kd.parallel import DataParallel

STEPS, BATCH = 3, 16


def run(kind: str, num_devices: int) -> dict:
  parallel = DataParallel(kind, num_devices)
  rng = np.random.default_rng(0)
  x = rng.normal(size=(STEPS, BATCH, 8, 8, 1)).astype(np.float32)
  y = rng.integers(0, 10, size=(STEPS, BATCH)).astype(np.int32)
  student, teacher = models.create('mlp', 10, hidden=(16,)), models.create(
      'cnn', 10, channels=(4, 8), dense=16)
  tx = optax.sgd(0.1, momentum=0.9)
  teacher_vars = teacher.init(jax.random.key(1), x[0, :1])
  out = {}
  for mode in ('supervised', 'distill', 'crd'):
    aux_params, aux_state = {}, {}
    terms = (steps.Term('kd', 'kd', 0.5, kwargs={'temperature': 2.0}),)
    if mode == 'crd':
      terms = (steps.Term('crd', 'crd', 0.8, 'embedding', 'embedding',
                          adapter='crd', adapter_kwargs={
                              'feat_dim': 8, 'num_negatives': 5}),)
      s_emb = np.zeros((2, 16), np.float32)
      t_emb = np.zeros((2, 16), np.float32)
      aux_params['crd'], aux_state['crd'] = terms[0].make_adapter().init(
          jax.random.key(2), s_emb, t_emb, num_examples=STEPS * BATCH)
    state = steps.create_state(student, tx, jax.random.key(0), x[0, :1],
                               aux_params, aux_state)
    if mode == 'supervised':
      step = parallel.wrap(steps.make_supervised_step(student, tx), 1)
      extra = ()
    else:
      step = parallel.wrap(steps.make_distill_step(
          student, teacher, tx, terms, ce_weight=0.5), 2)
      extra = (parallel.replicate(teacher_vars),)
    p_state = parallel.replicate(state)
    losses = []
    for i in range(STEPS):
      batch = parallel.shard({'image': x[i], 'label': y[i],
                              'index': np.arange(BATCH, dtype=np.int32)
                              + i * BATCH})
      p_state, metrics = step(p_state, *extra, batch)
      losses.append(parallel.unreplicate(metrics)['loss'])
    final = parallel.unreplicate(p_state)
    params = final.params
    if mode == 'crd':
      out['crd_memory'] = np.asarray(final.aux_state['crd']['memory_student'])
    out[f'{mode}_losses'] = np.array(losses)
    out[f'{mode}_params'] = np.concatenate(
        [np.ravel(p) for p in jax.tree.leaves(params)])
  return out


if __name__ == '__main__':
  assert jax.device_count() == 8, jax.devices()
  results = {}
  for kind in ('pmap', 'mesh'):
    for n in (1, 8):
      for k, v in run(kind, n).items():
        results[f'{kind}{n}/{k}'] = v
  np.savez(sys.argv[1], **results)
