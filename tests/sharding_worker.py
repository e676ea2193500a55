"""Language-model distillation (kd.steps.make_distill_step: cross-entropy +
forward KL, the 'kd' loss at T = 1) on a data x fsdp x tensor = 2 x 2 x 2
mesh of 8 simulated CPU devices against one device; how the student, its
optimizer state and a larger teacher are laid out; an MLP distilled from a
CNN by the generic rules; several LM teachers (a mixture, and routing to
teachers of two vocabularies); a global-batch step with no collectives. Run by test_sharding.py in a subprocess; writes a JSON
report. With `multihost` (and kd.distributed's KD_* variables), one of
several processes running the same distillation on the same mesh. `load`:
a teacher checkpoint read straight onto the mesh (kd.runs.load_variables
with shardings) and a student started from its every other layer
(kd.train.warm_start) against the host path."""
import collections
import json
import os
import sys
import tempfile

import jax
import jax.numpy as jnp
import numpy as np
import optax

from kd import checkpoint, distributed, models, runs, steps, teachers, train
from kd.data import align
from kd.parallel import DataParallel
from kd.sharding import ShardedParallel

STEPS, BATCH, LENGTH, VOCAB = 3, 8, 16, 64


def per_device_bytes(tree) -> list[int]:
  out = collections.Counter()
  for leaf in jax.tree.leaves(tree):
    for shard in leaf.addressable_shards:
      out[shard.device.id] += shard.data.nbytes
  return [out[d.id] for d in jax.devices()]


def total_bytes(tree) -> int:
  return sum(np.asarray(x).nbytes for x in jax.tree.leaves(tree))


def local_part(batch):
  """This process's rows of a global batch."""
  n, i = jax.process_count(), jax.process_index()
  return jax.tree.map(lambda x: np.split(x, n)[i], batch)


def run(parallel, state, teacher_vars, step, batches):
  state, teacher_vars = parallel.replicate(state), parallel.replicate(
      teacher_vars)
  wrapped = parallel.wrap(step, 2)
  losses = []
  for batch in batches:
    state, metrics = wrapped(state, teacher_vars,
                             parallel.shard(local_part(batch)))
    losses.append(float(parallel.unreplicate(metrics)['loss']))
  return state, teacher_vars, losses


def setup():
  """(state, teacher variables, step, batches) of a small LM distillation."""
  student = models.create('transformer_lm', VOCAB, d_model=32, num_layers=1,
                          num_heads=4, mlp_hidden=64, max_len=LENGTH)
  teacher = models.create('transformer_lm', VOCAB, d_model=64, num_layers=2,
                          num_heads=4, mlp_hidden=128, max_len=LENGTH)
  tokens = np.random.default_rng(0).integers(
      0, VOCAB, (STEPS, BATCH, LENGTH + 1)).astype(np.int32)
  batches = [{'image': t[:, :-1], 'label': t[:, 1:]} for t in tokens]
  # SGD: Adam's normalised updates would magnify float rounding.
  tx = optax.sgd(0.5, momentum=0.9)
  # On the host: a run's donated state must not be the other run's.
  state, teacher_vars = init_on_host(student, teacher, tx,
                                     batches[0]['image'][:1])
  terms = (steps.Term('forward_kl', 'kd', 1.0, kwargs={'temperature': 1.0}),)
  step = steps.make_distill_step(student, teacher, tx, terms, ce_weight=1.0)
  return state, teacher_vars, step, batches


def init_on_host(student, teacher, tx, x):
  """(student train state, teacher variables) as host arrays, initialised
  by one compiled program (op by op, a transformer compiles hundreds)."""
  return jax.tree.map(np.asarray, jax.jit(lambda x: (
      steps.create_state(student, tx, jax.random.key(0), x),
      teacher.init(jax.random.key(1), x)))(x))


def flat(tree) -> list[float]:
  return np.concatenate([np.ravel(x) for x in jax.tree.leaves(tree)]).tolist()


def distill_report() -> dict:
  state, teacher_vars, step, batches = setup()
  one = DataParallel('mesh', num_local_devices=1)
  want, _, want_losses = run(one, state, teacher_vars, step, batches)
  sharded = ShardedParallel({'data': 2, 'fsdp': 2, 'tensor': 2})
  placed = sharded.place(state)
  got, got_teacher, got_losses = run(sharded, state, teacher_vars, step,
                                     batches)
  try:
    sharded.check_batch_size(6)
    bad_batch_error = ''
  except ValueError as e:
    bad_batch_error = str(e)
  query = got.params['blocks_0']['attn']['query']['kernel']
  return {
      'mesh': dict(sharded.mesh.shape),
      'losses': got_losses, 'want_losses': want_losses,
      'params': flat(sharded.to_host(got.params)),
      'max_param_diff': max(jax.tree.leaves(jax.tree.map(
          lambda a, b: float(np.max(np.abs(a - b))),
          sharded.to_host(got.params), one.unreplicate(want.params)))),
      'layout_kept': jax.tree.leaves(jax.tree.map(
          lambda a, b: a.sharding.is_equivalent_to(b.sharding, a.ndim),
          placed, got)),
      'per_process_batch': sharded.check_batch_size(BATCH),
      'bad_batch_error': bad_batch_error,
      'query_spec': [str(a) for a in query.sharding.spec],
      'query_shard': list(query.addressable_shards[0].data.shape),
      'student_bytes': total_bytes(state.params),
      'student_device_bytes': per_device_bytes(got.params),
      'momentum_bytes': total_bytes(state.opt_state),
      'momentum_device_bytes': per_device_bytes(got.opt_state),
      'teacher_bytes': total_bytes(teacher_vars),
      'teacher_device_bytes': per_device_bytes(got_teacher),
  }


def several_report() -> dict:
  """Several LM teachers (kd.teachers) under the sharded wrapper against one
  device: a weighted mixture at T = 2, and routing by each row's source to
  a teacher of the student's vocabulary (forward KL) or of another
  (VOCAB + 16 tokens, its own tokens of each row, the aligned hybrid)."""
  lm = lambda vocab: models.create('transformer_lm', vocab, d_model=32,
                                   num_layers=1, num_heads=4, mlp_hidden=64,
                                   max_len=LENGTH)
  student, same, other = lm(VOCAB), lm(VOCAB), lm(VOCAB + 16)
  rng = np.random.default_rng(3)
  batches = []
  for _ in range(STEPS):
    s, t = (rng.integers(0, v, (BATCH, LENGTH + 1)).astype(np.int32)
            for v in (VOCAB, VOCAB + 16))
    rows = [align.align_row(np.arange(1, LENGTH + 2),
                            np.cumsum(rng.integers(1, 4, LENGTH + 1)))
            for _ in range(BATCH)]
    batches.append({'image': s[:, :-1], 'label': s[:, 1:],
                    'mask': np.ones((BATCH, LENGTH), np.float32),
                    'source': np.arange(BATCH, dtype=np.int32) % 2,
                    'teacher_image': t[:, :-1], 'teacher_label': t[:, 1:],
                    'align': {k: np.stack([r[k] for r in rows])
                              for k in rows[0]}})
  tx = optax.sgd(0.5, momentum=0.9)
  x = batches[0]['image'][:1]
  state, v_same, v_same2, v_other = jax.tree.map(np.asarray, jax.jit(
      lambda x: (steps.create_state(student, tx, jax.random.key(0), x),
                 same.init(jax.random.key(1), x),
                 same.init(jax.random.key(2), x),
                 other.init(jax.random.key(3), x)))(x))
  matched = (np.arange(40), np.arange(40))
  cases = {
      'mixture': (teachers.Teachers((same, same), (0.7, 0.3), 2.0),
                  (v_same, v_same2),
                  (steps.Term('kl', 'forward_kl', 1.0,
                              kwargs={'temperature': 2.0}),)),
      'routed_across': (teachers.Teachers(
          (other, same), routes=(0, 1), vocab_maps=(matched, None)),
                        (v_other, v_same),
                        (steps.Term('kl', 'forward_kl', 1.0),
                         steps.Term('xt', 'hybrid_kl', 0.5)))}
  out = {}
  for name, (teacher, variables, terms) in cases.items():
    step = steps.make_distill_step(student, teacher, tx, terms, 1.0)
    one = DataParallel('mesh', num_local_devices=1)
    want, _, want_losses = run(one, state, variables, step, batches)
    sharded = ShardedParallel({'data': 2, 'fsdp': 2, 'tensor': 2})
    got, _, losses = run(sharded, state, variables, step, batches)
    out[name] = {'losses': losses, 'want_losses': want_losses,
                 'max_param_diff': max(jax.tree.leaves(jax.tree.map(
                     lambda a, b: float(np.max(np.abs(a - b))),
                     sharded.to_host(got.params),
                     one.unreplicate(want.params))))}
  return out


def generic_report() -> dict:
  """An MLP distilled from a CNN, split by the generic rules."""
  rng = np.random.default_rng(2)
  batches = [{'image': rng.normal(size=(BATCH, 8, 8, 1)).astype(np.float32),
              'label': rng.integers(0, 10, BATCH).astype(np.int32)}
             for _ in range(STEPS)]
  student = models.create('mlp', 10, hidden=(16, 32))
  teacher = models.create('cnn', 10, channels=(8,), dense=32)
  tx = optax.sgd(0.1, momentum=0.9)
  state, teacher_vars = init_on_host(student, teacher, tx,
                                     batches[0]['image'][:1])
  terms = (steps.Term('kd', 'kd', 1.0, kwargs={'temperature': 4.0}),)
  step = steps.make_distill_step(student, teacher, tx, terms, ce_weight=1.0)
  one = DataParallel('mesh', num_local_devices=1)
  want, _, want_losses = run(one, state, teacher_vars, step, batches)
  sharded = ShardedParallel({'data': 2, 'fsdp': 2, 'tensor': 2})
  got, _, losses = run(sharded, state, teacher_vars, step, batches)
  kernel = got.params['dense1']['kernel']
  return {'losses': losses, 'want_losses': want_losses,
          'max_param_diff': max(jax.tree.leaves(jax.tree.map(
              lambda a, b: float(np.max(np.abs(a - b))),
              sharded.to_host(got.params), one.unreplicate(want.params)))),
          'kernel_spec': [str(a) for a in kernel.sharding.spec]}


def global_step_report() -> dict:
  """A least-squares step over the global batch, written with no named
  axis (the mean over the batch is the global mean), with a rule of its own
  for its weight matrix."""
  def step(w, batch):
    loss, grad = jax.value_and_grad(lambda w: jnp.mean(
        (batch['x'] @ w['w'] - batch['y'])**2))(w)
    return jax.tree.map(lambda p, g: p - 0.1 * g, w, grad), loss

  rng = np.random.default_rng(1)
  w = {'w': rng.normal(size=(8, 4)).astype(np.float32)}
  batch = {'x': rng.normal(size=(16, 8)).astype(np.float32),
           'y': rng.normal(size=(16, 4)).astype(np.float32)}
  want, want_loss = jax.jit(step)(w, batch)
  sharded = ShardedParallel({'fsdp': 4, 'tensor': 2},
                            rules=((r'\bw$', ('embed', 'mlp')),))
  got, loss = sharded.wrap(step)(sharded.place(w), sharded.shard(batch))
  return {'loss': float(loss), 'want_loss': float(want_loss),
          'max_param_diff': float(np.max(np.abs(
              sharded.to_host(got)['w'] - want['w']))),
          'w_spec': [str(a) for a in got['w'].sharding.spec]}


def load_report() -> dict:
  """A teacher run's checkpoint (with Adam's state, as training leaves it)
  read onto the mesh and to the host; a half-depth student of its width
  started from its layers both ways."""
  teacher = models.create('transformer_lm', VOCAB, d_model=32, num_layers=4,
                          num_heads=4, mlp_hidden=64, max_len=LENGTH)
  student = models.create('transformer_lm', VOCAB, d_model=32, num_layers=2,
                          num_heads=4, mlp_hidden=64, max_len=LENGTH)
  x = np.zeros((1, LENGTH), np.int32)
  tx = optax.adam(1e-3)
  saved = jax.tree.map(np.asarray, jax.jit(lambda x: steps.create_state(
      teacher, tx, jax.random.key(3), x))(x))
  run_dir = tempfile.mkdtemp()
  mngr = checkpoint.manager(os.path.join(run_dir, 'checkpoints'))
  checkpoint.save(mngr, 7, saved)
  mngr.wait_until_finished()
  mngr.close()
  abstract = jax.eval_shape(lambda: teacher.init(jax.random.key(0), x))
  sharded = ShardedParallel({'data': 2, 'fsdp': 2, 'tensor': 2})
  want = sharded.shardings(abstract)
  host, host_step = runs.load_variables(run_dir, abstract, 't')
  got, step = runs.load_variables(run_dir, abstract, 't', want)
  placed = sharded.place(got)
  wrong = jax.eval_shape(lambda: student.init(jax.random.key(0), x))
  try:
    runs.load_variables(run_dir, wrong, 't', sharded.shardings(wrong))
    mismatch = ''
  except checkpoint.ArchitectureMismatchError as e:
    mismatch = str(e)
  s_state = jax.jit(lambda x: steps.create_state(
      student, tx, jax.random.key(4), x))(x)
  warm_host = train.warm_start(s_state, run_dir, 's', 'strided')
  warm = train.warm_start(s_state, run_dir, 's', 'strided', sharded)
  s_want = sharded.shardings({'params': s_state.params})['params']
  same = lambda a, b: bool(np.array_equal(np.asarray(a), np.asarray(b)))
  return {
      'steps': [host_step, step],
      'host_types': sorted({type(v).__name__ for v in jax.tree.leaves(host)}),
      'values_equal': jax.tree.leaves(jax.tree.map(same, got, host)),
      'saved_equal': jax.tree.leaves(jax.tree.map(
          same, got['params'], saved.params)),
      'shardings_equal': jax.tree.leaves(jax.tree.map(
          lambda a, s: a.sharding == s, got, want)),
      'query_spec': [str(a) for a in got['params']['blocks_1']['attn'][
          'query']['kernel'].sharding.spec],
      'placed_kept': jax.tree.leaves(jax.tree.map(
          lambda a, b: a is b, placed, got)),
      'mismatch': mismatch,
      'warm_equal': jax.tree.leaves(jax.tree.map(
          same, warm.params, warm_host.params)),
      'warm_from_layer_2': same(
          warm.params['blocks_1']['mlp']['up']['kernel'],
          saved.params['blocks_2']['mlp']['up']['kernel']),
      'warm_shardings_equal': jax.tree.leaves(jax.tree.map(
          lambda a, s: a.sharding.is_equivalent_to(s, a.ndim),
          warm.params, s_want)),
  }


def multihost_report() -> dict:
  """The same run on the same mesh, its devices in several processes."""
  state, teacher_vars, step, batches = setup()
  sharded = ShardedParallel({'data': 2, 'fsdp': 2, 'tensor': 2})
  got, _, losses = run(sharded, state, teacher_vars, step, batches)
  return {'processes': jax.process_count(),
          'local_devices': jax.local_device_count(),
          'losses': losses, 'params': flat(sharded.to_host(got.params))}


if __name__ == '__main__':
  if len(sys.argv) > 2 and sys.argv[2] == 'multihost':
    distributed.initialize()
    report = multihost_report()
  else:
    report = {'distill': distill_report(), 'generic': generic_report(),
              'global': global_step_report(), 'load': load_report(),
              'several': several_report()}
  if jax.process_index() == 0:
    with open(sys.argv[1], 'w') as f:
      json.dump(report, f)
