"""Parts of the steps checked by hand: mixup, the CRD memory bank, adapters."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kd import adapters, losses, steps


def _in_axis(fn, *args):
  """Runs fn under a 1-device pmap so that its collectives are bound."""
  stacked = jax.tree.map(lambda a: jnp.asarray(a)[None], args)
  out = jax.pmap(fn, axis_name='batch')(*stacked)
  return jax.tree.map(lambda x: np.asarray(x[0]), out)


def test_mixup_mixes_inputs_and_pairs_labels():
  x = np.arange(24, dtype=np.float32).reshape(6, 4)
  y = np.arange(6, dtype=np.int32)
  out = steps.mixup({'image': x, 'label': y}, jax.random.key(3), 1.0)
  lam = float(out['lam'])
  assert 0.0 < lam < 1.0
  perm = np.asarray(out['label_b'])  # Labels are 0..5, so they are the perm.
  assert sorted(perm.tolist()) == list(range(6))
  np.testing.assert_allclose(out['image'], lam * x + (1 - lam) * x[perm],
                             rtol=1e-6)


def test_crd_bank_update_and_scores():
  crd = adapters.crd(feat_dim=4, num_negatives=3, temperature=0.5,
                     momentum=0.5)
  rng = np.random.default_rng(0)
  s, t = rng.normal(size=(2, 6)).astype(np.float32), rng.normal(
      size=(2, 5)).astype(np.float32)
  params, state = crd.init(jax.random.key(0), s, t, num_examples=10)
  assert state['memory_student'].shape == (10, 4)
  batch = {'index': np.array([7, 2], np.int32)}

  def run(params, state, s, t, idx):
    scores, kw, new = crd.apply(params, state, s, t, {'index': idx},
                                jax.random.key(1))
    assert kw == {'num_examples': 10}
    return scores, new

  (out_s, out_t), new = _in_axis(run, params, state, s, t, batch['index'])
  assert out_s.shape == out_t.shape == (2, 4)
  v_s = np.asarray(adapters.Embed(4).apply({'params': params['params']['student']}, s))
  mem = np.asarray(state['memory_student'])
  for row, i in enumerate([7, 2]):
    expected = 0.5 * mem[i] + 0.5 * v_s[row]
    np.testing.assert_allclose(new['memory_student'][i],
                               expected / np.linalg.norm(expected), rtol=1e-5)
  untouched = [i for i in range(10) if i not in (7, 2)]
  np.testing.assert_array_equal(new['memory_student'][untouched], mem[untouched])
  # Z is fixed from the first batch: mean score times N.
  pos = np.exp(np.asarray(state['memory_teacher'])[[7, 2]] @ v_s.T / 0.5)
  assert new['z_student'] > 0
  np.testing.assert_allclose(out_s[:, 0] * new['z_student'], np.diag(pos),
                             rtol=1e-4)


def test_regressor_maps_student_width_to_teacher_width():
  reg = adapters.regressor()
  s, t = np.ones((2, 4, 4, 8), np.float32), np.ones((2, 4, 4, 16), np.float32)
  params, _ = reg.init(jax.random.key(0), s, t, 0)
  (mapped, target), kw, _ = reg.apply(params, {}, s, t, {}, None)
  assert mapped.shape == (2, 4, 4, 16) and target is t and kw == {}


def test_stage_names_count_from_the_last():
  out = {'logits': 0, 'stage0': 0, 'stage1': 0, 'stage2': 0, 'embedding': 0}
  assert steps.resolve(out, 'stage-1') == 'stage2'
  assert steps.resolve(out, 'stage-3') == 'stage0'
  assert steps.resolve(out, 'stage-4') == 'stage-4'  # Left for the error.
  assert steps.resolve(out, 'embedding') == 'embedding'


def test_gradient_accumulation_averages_k_batches_into_one_update():
  import optax  # pylint: disable=import-outside-toplevel
  from kd import config as kd_config, optim  # pylint: disable=import-outside-toplevel
  opt = kd_config.run_config().optimizer
  opt.update(name='sgd', lr=0.1, momentum=0.0, schedule='constant',
             accumulate_steps=2)
  tx, _ = optim.create(opt, 10)
  params = jnp.zeros(3)
  state = tx.init(params)
  g1, g2 = jnp.array([1.0, 0.0, 2.0]), jnp.array([3.0, 2.0, 0.0])
  u1, state = tx.update(g1, state, params)
  assert np.all(np.asarray(u1) == 0)  # No update after the first batch.
  u2, state = tx.update(g2, state, params)
  np.testing.assert_allclose(optax.apply_updates(params, u2),
                             -0.1 * (g1 + g2) / 2, rtol=1e-6)


def test_teacher_dtype_auto_is_float32_on_cpu():
  from kd import train  # pylint: disable=import-outside-toplevel
  assert train.teacher_dtype('auto') == 'float32'
  assert train.teacher_dtype('bfloat16') == 'bfloat16'


def test_ab_connector_normalises_to_the_teachers_channels():
  s = jax.random.normal(jax.random.key(0), (4, 6, 6, 3)) * 5 + 2
  t = jnp.zeros((4, 6, 6, 8))
  a = adapters.get('ab')
  params, _ = a.init(jax.random.key(1), s, t, 0)
  (out, t_out), _, _ = a.apply(params, {}, s, t, None, None)
  assert out.shape == t.shape and t_out is t
  # Batch norm with the batch's statistics, scale 1 and bias 0 at init.
  np.testing.assert_allclose(jnp.mean(out, (0, 1, 2)), 0.0, atol=1e-5)
  np.testing.assert_allclose(jnp.std(out, (0, 1, 2)), 1.0, atol=1e-3)


@pytest.mark.parametrize('shape_s, shape_t', [((2, 4, 4, 3), (2, 4, 4, 4)),
                                              ((2, 6, 3), (2, 6, 4))])
def test_ft_stages_train_their_own_part(shape_s, shape_t):
  s = jax.random.normal(jax.random.key(0), shape_s)
  t = jax.random.normal(jax.random.key(1), shape_t)
  para, trans = adapters.get('ft', stage='paraphraser'), adapters.get('ft')
  params, _ = para.init(jax.random.key(2), s, t, 0)
  factor = shape_t[-1] // 2

  def loss(adapter, name):
    def f(p, s_in):
      (a, b), _, _ = adapter.apply(p, {}, s_in, t, None, None)
      return losses.get(name)(a, b)
    return f

  # Paraphraser stage: reconstruct the teacher map; the student is unused.
  (rec, target), _, _ = para.apply(params, {}, s, t, None, None)
  assert rec.shape == t.shape and target is t
  g, g_s = jax.jit(jax.grad(loss(para, 'hint'), argnums=(0, 1)))(params, s)
  norm = lambda tree: sum(float(jnp.abs(x).sum()) for x in jax.tree.leaves(tree))
  assert norm(g['params']['paraphraser']) > 0
  assert norm(g['params']['translator']) == 0 and norm(g_s) == 0
  # Translator stage: factors of width rate * teacher channels; the
  # paraphraser stays frozen, the translator and the student learn.
  (fs, ft), _, _ = trans.apply(params, {}, s, t, None, None)
  assert fs.shape[-1] == ft.shape[-1] == factor
  g, g_s = jax.jit(jax.grad(loss(trans, 'factor_transfer'),
                            argnums=(0, 1)))(params, s)
  assert norm(g['params']['paraphraser']) == 0
  assert norm(g['params']['translator']) > 0 and norm(g_s) > 0
  with pytest.raises(ValueError, match="unknown ft stage 'x'.*paraphraser"):
    adapters.get('ft', stage='x')


def test_preact_stage_counts_from_the_last_and_falls_back():
  o = {'stage1': 0, 'stage2': 0, 'preact_stage1': 0, 'preact_stage2': 0}
  assert steps.resolve(o, 'preact_stage-1') == 'preact_stage2'
  assert steps.resolve(o, 'stage-2') == 'stage1'
  assert steps.resolve({'stage1': 0, 'stage2': 0}, 'preact_stage-1') == 'stage2'
  assert steps.resolve(o, 'stage-5') == 'stage-5'  # Reported by check_terms.
