"""Encoder distillation losses (DistilBERT, TinyBERT, MiniLM) against NumPy,
and the DistilBERT student's strided init from a BERT teacher."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kd import losses
from kd import models

R = np.random.default_rng(0)
B, T, H = 2, 5, 3
MASK = np.array([[1, 1, 0, 1, 0], [1, 0, 1, 1, 1]], np.float32)
KEYS = np.array([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]], bool)  # One padded key.


def np_softmax(z, keep=None):
  z = z.astype(np.float64)
  if keep is not None:
    z = np.where(keep[:, None, None], z, -np.inf)
  e = np.exp(z - z.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def np_kl_rows(p, q):
  """(1/H) sum_h sum_k p log(p / q), 0 log 0 = 0: [B, H, T, T] -> [B, T]."""
  with np.errstate(divide='ignore', invalid='ignore'):
    terms = np.where(p > 0, p * (np.log(p) - np.log(q)), 0.0)
  return terms.sum(-1).mean(1)


def np_masked_mean(values, mask):
  return np.sum(mask * values) / mask.sum()


def _attention(seed):
  z = np.random.default_rng(seed).normal(size=(B, H, T, T)) * 2
  return np_softmax(z, KEYS)  # Zero probability on the padded key.


def test_attention_kl_is_minilm_kl_per_query_averaged_over_heads():
  s, t = _attention(1), _attention(2)
  want = np_kl_rows(t, s)
  got = losses.features.attention_kl(jnp.float32(s), jnp.float32(t))
  assert got.shape == (B, T)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(
      losses.get('attention_kl')(s, t, mask=MASK), np_masked_mean(want, MASK),
      rtol=1e-5)
  np.testing.assert_allclose(losses.features.attention_kl(t, t), 0, atol=1e-6)
  # Teacher first: KL(t || s), not KL(s || t).
  assert not np.allclose(got, np_kl_rows(s, t), rtol=1e-3)
  # Gradients are finite despite the zero probabilities, and the teacher's
  # are zero.
  gs, gt = jax.grad(lambda a, b: losses.get('attention_kl')(a, b, mask=MASK),
                    argnums=(0, 1))(jnp.float32(s), jnp.float32(t))
  assert np.isfinite(gs).all() and np.any(gs != 0) and not np.any(gt)


def np_value_relation(v, keep=None):
  v = v.astype(np.float64)
  scores = np.einsum('bqhd,bkhd->bhqk', v, v) / np.sqrt(v.shape[-1])
  return np_softmax(scores, keep)


def test_value_relation_is_minilm_kl_of_value_relations():
  # A student with smaller heads than the teacher's (MiniLM).
  s, t = R.normal(size=(B, T, H, 2)), R.normal(size=(B, T, H, 4))
  for keys in (None, KEYS):
    want = np_kl_rows(np_value_relation(t, keys), np_value_relation(s, keys))
    got = losses.features.value_relation(jnp.float32(s), jnp.float32(t),
                                         key_mask=keys)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  # The padded key changes the relation, and the mask weighs the queries.
  assert not np.allclose(got, losses.features.value_relation(s, t), rtol=1e-3)
  np.testing.assert_allclose(
      losses.get('value_relation')(s, t, KEYS, mask=MASK),
      np_masked_mean(want, MASK), rtol=1e-5)
  np.testing.assert_allclose(losses.features.value_relation(t, t, KEYS), 0,
                             atol=1e-6)
  with pytest.raises(ValueError, match=r'same batch, length and heads; got '
                     r'student \(2, 5, 2, 4\), teacher \(2, 5, 3, 4\)'):
    losses.features.value_relation(t[:, :, :2], t)


@pytest.mark.parametrize('name', ['hidden_cosine', 'hidden_mse'])
def test_hidden_losses_are_zero_for_the_teacher_and_honour_the_mask(name):
  t = R.normal(size=(B, T, 8)).astype(np.float32)
  s = t + R.normal(size=t.shape).astype(np.float32)
  np.testing.assert_allclose(losses.get(name)(t, t, mask=MASK), 0, atol=1e-6)
  values = np.asarray(losses.spec(name).fn(s, t))
  assert values.shape == (B, T)
  np.testing.assert_allclose(losses.get(name)(s, t, mask=MASK),
                             np_masked_mean(values, MASK), rtol=1e-6)
  if name == 'hidden_cosine':
    cos = np.sum(s * t, -1) / np.linalg.norm(s, axis=-1) / np.linalg.norm(
        t, axis=-1)
    np.testing.assert_allclose(values, 1 - cos, rtol=1e-5, atol=1e-6)
  else:
    np.testing.assert_allclose(values, np.mean((s - t) ** 2, -1), rtol=1e-5)


def test_the_encoder_exposes_its_attention_values():
  model = models.create('transformer_encoder', 23, d_model=8, num_layers=2,
                        num_heads=2, max_len=8, return_values=True,
                        return_attention=True)
  tokens = jnp.asarray(R.integers(0, 23, (B, T)), jnp.int32)
  params = model.init(jax.random.key(0), tokens)['params']
  _, feats = model.apply({'params': params}, tokens)
  for i in range(2):
    p = params[f'blocks_{i}']['attn']['value']
    want = np.einsum('btd,dhk->bthk', feats[f'hidden{i}'], p['kernel']) \
        + p['bias']
    np.testing.assert_allclose(feats[f'value{i}'], want, rtol=1e-5, atol=1e-6)
    assert feats[f'attn{i}'].shape == (B, 2, T, T)
  assert 'value0' not in model.clone(return_values=False).apply(
      {'params': params}, tokens)[1]


def test_distilbert_student_from_every_other_bert_layer():
  """A 2-layer student without token types or pooler, initialised from a
  4-layer BERT teacher (type_vocab_size=2, [CLS] head), gives the teacher's
  logits restricted to layers 0 and 2 on single-segment input."""
  V, L = 29, 6
  teacher = models.create('transformer_encoder', V, d_model=8, num_layers=4,
                          num_heads=2, max_len=8, num_labels=3)
  student = teacher.clone(num_layers=2, type_vocab_size=0, num_labels=0)
  tokens = jnp.asarray(R.integers(0, V, (B, L)), jnp.int32)
  tp = teacher.init(jax.random.key(0), tokens)['params']
  sp = student.init(jax.random.key(1), tokens)['params']
  layer_map = models.lm.strided_layer_map(4, 2)
  assert layer_map == (0, 2)
  new = models.lm.init_from_teacher_layers(tp, sp, layer_map)
  assert set(new) == set(sp) and 'pooler' not in new
  np.testing.assert_array_equal(
      new['pos_embed']['embedding'],
      tp['pos_embed']['embedding'] + tp['type_embed']['embedding'][0])
  # The teacher restricted to its layers 0 and 2, by hand.
  restricted = {k: v for k, v in tp.items() if not k.startswith('blocks_')}
  restricted.update(blocks_0=tp['blocks_0'], blocks_1=tp['blocks_2'])
  pad = jnp.asarray([[1] * L, [1] * (L - 2) + [0] * 2])
  want = teacher.clone(num_layers=2).apply(
      {'params': restricted}, tokens, attention_mask=pad,
      token_types=jnp.zeros_like(tokens))[0]
  got = student.apply({'params': new}, tokens, attention_mask=pad)[0]
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  # Without the type-0 row folded in, the student would not be the teacher.
  unfolded = dict(new, pos_embed=tp['pos_embed'])
  assert not np.allclose(
      student.apply({'params': unfolded}, tokens, attention_mask=pad)[0],
      want, atol=1e-3)
  # A classifier student of a teacher with no [CLS] head keeps its own
  # fresh head; with head='cls' it takes no masked-LM head either.
  headless = {k: v for k, v in tp.items() if k not in ('pooler', 'classifier')}
  classifier = student.clone(num_labels=3, head='cls')
  with_head = classifier.init(jax.random.key(1), tokens)['params']
  got = models.lm.init_from_teacher_layers(headless, with_head, layer_map)
  assert set(got) == set(with_head) and 'mlm' not in got
  for k in ('pooler', 'classifier'):
    np.testing.assert_array_equal(got[k]['kernel'], with_head[k]['kernel'])
  np.testing.assert_array_equal(got['blocks_1']['mlp']['up']['kernel'],
                                tp['blocks_2']['mlp']['up']['kernel'])
  assert classifier.apply({'params': got}, tokens)[0].shape == (
      tokens.shape[0], 3)
