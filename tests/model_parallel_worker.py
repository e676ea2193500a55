"""A teacher split over the `model` axis of a 2-D mesh, on 8 simulated CPU
devices (run by test_model_parallel.py in a subprocess): its outputs, how
its parameters are laid out, and a short distillation against the same run
with a replicated teacher. Writes a JSON report."""
import json
import sys

import jax
import numpy as np

from kd import config as kd_config, models, train
from kd.parallel import DataParallel


def forward_report() -> dict:
  parallel = DataParallel('mesh', model_shards=4)
  teacher = models.create('cnn', 10, channels=(8, 16), dense=32)
  x = np.random.default_rng(0).normal(size=(16, 8, 8, 1)).astype(np.float32)
  variables = teacher.init(jax.random.key(0), x[:1])
  fn = lambda v, a: teacher.apply(v, a, train=False)
  forward, placed = parallel.sharded_apply(fn, variables)
  images = parallel.shard(x)
  (logits, feats) = forward(placed, images)
  want_logits, want_feats = fn(variables, x)
  kernel = placed['params']['dense']['kernel']
  return {
      'mesh': dict(parallel.mesh.shape),
      'max_logit_diff': float(np.max(np.abs(np.asarray(logits) - want_logits))),
      'max_embedding_diff': float(np.max(np.abs(
          np.asarray(feats['embedding']) - want_feats['embedding']))),
      'dense_kernel': list(kernel.shape),
      'dense_kernel_shard': list(kernel.addressable_shards[0].data.shape),
      'head_bias_shard': list(placed['params']['head']['bias']
                              .addressable_shards[0].data.shape),
  }


def distill(root: str, model_shards: int) -> dict:
  c = kd_config.run_config()
  c.data.name, c.data.augment = 'kd_digits', False
  c.model.name, c.model.kwargs = 'mlp', {'hidden': (16,)}
  c.batch_size, c.steps, c.log_every, c.checkpoint_every = 16, 6, 3, 6
  c.wandb.mode = 'disabled'
  c.evaluate.latency = False
  c.parallel = 'mesh'
  teacher_dir = f'{root}/teacher'
  if model_shards == 1:
    tc = c.copy_and_resolve_references()
    tc.model.name, tc.model.kwargs = 'cnn', {'channels': (8,), 'dense': 32}
    train.train_and_evaluate(tc, teacher_dir)
  t = c.distill.teacher
  t.workdir, t.model, t.model_shards = teacher_dir, 'cnn', model_shards
  t.kwargs = {'channels': (8,), 'dense': 32}
  c.distill.terms.kd = kd_config.term('kd', 1.0, temperature=4.0)
  c.distill.terms.hint = kd_config.term('hint', 0.1, 'embedding', 'embedding',
                                        adapter='regressor')
  summary = train.train_and_evaluate(c, f'{root}/student{model_shards}')
  from kd import runs  # pylint: disable=import-outside-toplevel
  state = runs.latest_state(f'{root}/student{model_shards}', 's')[0]
  flat = np.concatenate([np.ravel(v) for v in
                         jax.tree.leaves((state['params'],
                                          state['aux_params']))])
  return {'params': flat.tolist(),
          **{k: summary[k] for k in ('test_accuracy', 'teacher_agreement',
                                     'kl_to_teacher')}}


if __name__ == '__main__':
  report = {'forward': forward_report(),
            'replicated': distill(sys.argv[2], 1),
            'sharded': distill(sys.argv[2], 2)}
  with open(sys.argv[1], 'w') as f:
    json.dump(report, f)
