"""The OFD and review-KD adapters, and terms naming several outputs: shapes,
OFD's measured margin, and a few optimiser steps lowering each new term."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from kd import adapters
from kd import losses
from kd import steps
from kd.parallel import AXIS

R = np.random.default_rng(0)
B = 4


def on_axis(fn):
  """fn with the named batch axis bound (one shard), as a step runs."""
  return lambda *a: jax.tree.map(lambda x: x[0], jax.vmap(
      fn, axis_name=AXIS)(*jax.tree.map(lambda x: x[None], a)))


def test_ofd_margin_is_measured_once_from_the_teachers_map():
  s = R.normal(size=(B, 4, 4, 3)).astype(np.float32)
  t = (R.normal(size=(B, 4, 4, 5)) + 0.3).astype(np.float32)
  adapter = adapters.get('ofd')
  params, state = adapter.init(jax.random.key(0), s, t, 0)
  assert (state['margin'] > 0).all()  # Not measured yet.
  apply = on_axis(lambda p, st, a, b: adapter.apply(p, st, a, b, {}, None))
  (out, t_out), kw, state = apply(params, state, s, t)
  assert out.shape == t.shape and np.array_equal(t_out, t)
  flat = t.reshape(-1, 5)
  want = losses.features.ofd_margin(flat.mean(0), flat.std(0))
  np.testing.assert_allclose(state['margin'], want, rtol=1e-4)
  np.testing.assert_array_equal(kw['margin'], state['margin'])
  _, kw2, state2 = apply(params, state, s, 3.0 * t)  # Kept, not re-measured.
  np.testing.assert_array_equal(state2['margin'], state['margin'])
  np.testing.assert_array_equal(kw2['margin'], state['margin'])


def test_review_kd_outputs_have_the_teachers_sizes_and_widths():
  s = (R.normal(size=(B, 8, 8, 2)), R.normal(size=(B, 4, 4, 3)),
       R.normal(size=(B, 6)))
  t = (R.normal(size=(B, 4, 4, 5)), R.normal(size=(B, 2, 2, 7)),
       R.normal(size=(B, 9)))
  adapter = adapters.get('review_kd')
  # Compiled, not op by op (the ABFs' resizes and convolutions are many).
  params, state = jax.jit(lambda s, t: adapter.init(jax.random.key(0), s, t,
                                                     0))(s, t)
  (out, t_maps), _, _ = jax.jit(lambda p, st, s, t: adapter.apply(
      p, st, s, t, {}, None))(params, state, s, t)
  assert [o.shape for o in out] == [(B, 4, 4, 5), (B, 2, 2, 7),
                                    (B, 1, 1, 9)]
  assert [m.shape for m in t_maps] == [o.shape for o in out]
  # Every stage's ABF but the deepest fuses the one below it.
  assert sorted(params['params']) == ['abf0', 'abf1', 'abf2']
  assert 'attention' in params['params']['abf0']
  assert 'attention' not in params['params']['abf2']


def test_a_term_naming_several_outputs_passes_tuples():
  out = {'stage1': 1, 'stage2': 2, 'stage3': 3, 'embedding': 4}
  assert steps.select(out, 'stage-2,stage-1,embedding') == (2, 3, 4)
  assert steps.select(out, 'stage-1') == 3
  assert steps.feature_names(out, 'stage-3, stage-2') == ('stage1',
                                                          'stage2')


LABELS = R.integers(0, 10, size=B)
TERMS = {  # name: (term, student outputs, teacher outputs)
    'kd_std': (steps.Term('kd', 'kd', 1.0, kwargs={'temperature': 2.0,
                                                   'standardize': True}),
               {'logits': R.normal(size=(B, 10))},
               {'logits': 3 * R.normal(size=(B, 10))}),
    'dkd_std': (steps.Term('dkd', 'dkd', 1.0, kwargs={
        'temperature': 2.0, 'standardize': True}),
                {'logits': R.normal(size=(B, 10))},
                {'logits': 3 * R.normal(size=(B, 10))}),
    'fsp': (steps.Term('fsp', 'fsp', 1.0, 'stage-2,stage-1', 'stage-2,stage-1'),
            {'stage1': R.normal(size=(B, 8, 8, 3)),
             'stage2': R.normal(size=(B, 4, 4, 4))},
            {'stage1': R.normal(size=(B, 8, 8, 3)),
             'stage2': R.normal(size=(B, 4, 4, 4))}),
    'ofd': (steps.Term('ofd', 'ofd', 1.0, 'preact_stage-1', 'preact_stage-1',
                       adapter='ofd'),
            {'preact_stage1': R.normal(size=(B, 4, 4, 3))},
            {'preact_stage1': R.normal(size=(B, 4, 4, 6)) + 0.2}),
    'hcl': (steps.Term('review', 'hcl', 1.0, 'stage-2,stage-1,embedding',
                       'preact_stage-2,preact_stage-1,embedding',
                       adapter='review_kd'),
            {'stage1': R.normal(size=(B, 8, 8, 2)),
             'stage2': R.normal(size=(B, 4, 4, 3)),
             'embedding': R.normal(size=(B, 6))},
            {'preact_stage1': R.normal(size=(B, 8, 8, 4)),
             'preact_stage2': R.normal(size=(B, 4, 4, 5)),
             'embedding': R.normal(size=(B, 5))}),
}


@pytest.mark.parametrize('name', sorted(TERMS))
def test_a_few_steps_lower_the_term_with_finite_gradients(name):
  term, s_out, t_out = TERMS[name]
  s_out = jax.tree.map(jnp.float32, s_out)
  t_out = jax.tree.map(jnp.float32, t_out)
  batch = {'label': LABELS}
  adapter = term.make_adapter()
  params, state = {}, {}
  if adapter is not None:
    params, state = jax.jit(lambda s, t: adapter.init(
        jax.random.key(1), s, t, 0))(steps.select(s_out, term.student),
                                     steps.select(t_out, term.teacher))
  tx = optax.adam(0.05)
  trainable = (s_out, params)
  opt_state = tx.init(trainable)

  def value(trainable, state):
    feats, p = trainable
    return term(feats, t_out, batch, p, state, jax.random.key(0))

  @jax.jit
  @on_axis
  def update(trainable, opt_state, state):
    (v, new_state), g = jax.value_and_grad(value, has_aux=True)(trainable,
                                                                state)
    updates, opt_state = tx.update(g, opt_state, trainable)
    finite = jnp.all(jnp.array([jnp.isfinite(x).all()
                                for x in jax.tree.leaves(g)]))
    return optax.apply_updates(trainable, updates), opt_state, new_state, (
        v, finite)

  values = []
  for _ in range(15):
    trainable, opt_state, state, (v, finite) = update(trainable, opt_state,
                                                      state)
    assert bool(finite) and np.isfinite(float(v))
    values.append(float(v))
  assert values[-1] < 0.7 * values[0], values


def test_warmup_ramps_the_weight_and_is_not_a_loss_argument():
  term = steps.Term('kd', 'kd', 2.0, kwargs={'warmup_steps': 4})
  assert [float(term.weight_at(s)) for s in (0, 1, 3, 10)] == [0.5, 1.0, 2.0,
                                                               2.0]
  assert steps.Term('kd', 'kd', 2.0).weight_at(0) == 2.0
  out = {'logits': jnp.asarray(R.normal(size=(B, 10)), jnp.float32)}
  value, _ = term(out, {'logits': out['logits'] + 1.0}, {})
  assert float(value) == pytest.approx(0.0, abs=1e-5)


def test_configs_give_each_pair_its_weights_and_warmup():
  # pylint: disable=import-outside-toplevel
  from configs.cifar100 import distill
  from configs.imagenet import distill as imagenet
  terms = lambda arg: distill.get_config(arg).stages.student.distill.terms
  assert terms('teacher=resnet32x4,student=resnet8x4,method=reviewkd'
               ).reviewkd.weight == 5.0
  review = terms('teacher=wrn_40_2,student=wrn_16_2,method=reviewkd').reviewkd
  assert review.weight == 1.0 and review.kwargs.warmup_steps == 20 * 781
  assert terms('method=dkd_std').dkd.kwargs.warmup_steps == 20 * 781
  assert terms('method=kd_std').kd.kwargs.standardize
  for _ in range(2):  # Configs do not change the METHODS they copy.
    c = imagenet.get_config('method=reviewkd,batch=256')
    assert c.stages.student.distill.terms.reviewkd.kwargs.warmup_steps == \
        1_281_167 // 256


def test_check_terms_names_a_missing_output_of_several():
  from kd import models, train  # pylint: disable=import-outside-toplevel
  model = models.create('cnn', 10, channels=(4, 8, 8), dense=16)
  x = jnp.zeros((2, 16, 16, 3))
  bad = steps.Term('fsp', 'fsp', 1.0, 'stage-2,stage9', 'stage-2,stage-1')
  with pytest.raises(ValueError, match=r"student output 'stage-2,stage9'; "
                     r'the student has: .*stage1'):
    train.check_terms((bad,), model, model, x)
  good = steps.Term('fsp', 'fsp', 1.0, 'stage-3,stage-2', 'stage-3,stage-2')
  train.check_terms((good,), model, model, x)
  assert train.teacher_outputs(model, (good,), x) == ['logits', 'stage0',
                                                      'stage1']
  wide = models.create('cnn', 10, channels=(4, 8, 16), dense=16)
  with pytest.raises(ValueError, match="loss 'fsp'.*channels differ"):
    train.check_terms((steps.Term('fsp', 'fsp', 1.0, 'stage-2,stage-1',
                                  'stage-2,stage-1'),), model, wide, x)
