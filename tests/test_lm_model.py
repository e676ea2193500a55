"""The transformer language model: cache, counts, layer copies, generation."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kd import sampling as gen
from kd import models, steps
from kd.models import lm

V, T = 259, 16
PAD = 256  # The byte tokenizer's.
# (name, sizes): grouped-query + tied + SwiGLU; multi-head + untied + GELU.
CONFIGS = {
    'gqa_tied': dict(d_model=32, num_layers=2, num_heads=4, num_kv_heads=2,
                     mlp='swiglu', tied=True, max_len=32),
    'mha_untied': dict(d_model=32, num_layers=2, num_heads=4, mlp='gelu',
                       tied=False, max_len=32),
}


def _tokens(b=3, t=T, seed=0):
  return np.random.default_rng(seed).integers(0, V, (b, t)).astype(np.int32)


@pytest.fixture(scope='module', params=sorted(CONFIGS))
def lm_and_vars(request):
  model = models.create('transformer_lm', V, **CONFIGS[request.param])
  variables = model.init(jax.random.key(1), _tokens(1, 4))
  return model, variables


@pytest.fixture(scope='module')
def forward(lm_and_vars):
  model, variables = lm_and_vars
  return jax.jit(lambda x: model.apply(variables, x))


def test_shapes_and_features(lm_and_vars, forward):
  model, _ = lm_and_vars
  logits, feats = forward(_tokens())
  assert logits.shape == (3, T, V) and logits.dtype == jnp.float32
  assert [f'hidden{i}' in feats for i in range(3)] == [True] * 3
  assert feats['embedding'].shape == (3, T, 32)
  assert not any(k.startswith('attn') for k in feats)
  assert steps.resolve(feats, 'stage-1') == 'stage2'
  np.testing.assert_array_equal(feats['stage2'], feats['hidden2'])
  # The embedding is the final-norm state the head reads.
  params = lm_and_vars[1]['params']
  head = (params['embed']['embedding'].T if model.tied
          else params['head']['kernel'])
  np.testing.assert_allclose(feats['embedding'] @ head, logits, atol=1e-4)


def test_causal_attention_probabilities_on_request(lm_and_vars, forward):
  model, variables = lm_and_vars
  x = _tokens()
  logits, feats = model.clone(return_attention=True).apply(variables, x)
  np.testing.assert_allclose(logits, forward(x)[0], atol=1e-5)
  probs = feats['attn1']
  assert probs.shape == (3, 4, T, T)
  np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)
  assert np.all(np.triu(np.asarray(probs), k=1) == 0)
  # Changing a later token leaves earlier logits unchanged.
  y = x.copy()
  y[:, 10] = (y[:, 10] + 1) % V
  a, b = forward(x)[0], forward(y)[0]
  np.testing.assert_array_equal(a[:, :10], b[:, :10])
  assert not np.allclose(a[:, 10:], b[:, 10:])


def test_prefill_and_decode_match_the_full_forward(lm_and_vars, forward):
  model, variables = lm_and_vars
  x = _tokens()
  full = forward(x)[0]
  extend = jax.jit(functools.partial(model.apply, variables,
                                     method=model.extend))
  logits, cache = extend(x[:, :6], lm.init_cache(model, 3))
  got = [logits]
  for t in range(6, T):
    logits, cache = extend(x[:, t:t + 1], cache)
    got.append(logits)
  assert int(cache['index']) == T
  assert cache['k'].shape == (2, 3, 32, model.kv_heads, 8)
  np.testing.assert_allclose(np.concatenate(got, 1), full, atol=1e-5)


def test_grouped_query_heads_equal_repeated_key_value_heads():
  gqa = models.create('transformer_lm', V, **CONFIGS['gqa_tied'])
  mha = gqa.clone(num_kv_heads=4)
  variables = gqa.init(jax.random.key(2), _tokens(1, 4))
  params = jax.tree.map(lambda a: a, variables['params'])
  for layer in ('blocks_0', 'blocks_1'):
    for name in ('key', 'value'):  # [d, kv, D] -> [d, 2 kv, D], i*G+g <- i.
      k = params[layer]['attn'][name]['kernel']
      params[layer]['attn'][name]['kernel'] = jnp.repeat(k, 2, axis=1)
  x = _tokens()
  np.testing.assert_allclose(mha.apply({'params': params}, x)[0],
                             gqa.apply(variables, x)[0], atol=1e-5)


@pytest.mark.parametrize('sizes', [
    dict(vocab=259, d_model=32, layers=2, heads=4, kv_heads=2, mlp_hidden=88,
         mlp='swiglu', tied=True),
    dict(vocab=259, d_model=32, layers=3, heads=4, kv_heads=4, mlp_hidden=128,
         mlp='gelu', tied=False),
    dict(vocab=1000, d_model=64, layers=1, heads=8, kv_heads=1, mlp_hidden=96,
         mlp='swiglu', tied=False),
])
def test_parameter_count_matches_the_formula(sizes):
  model = models.create('transformer_lm', sizes['vocab'],
                        d_model=sizes['d_model'], num_layers=sizes['layers'],
                        num_heads=sizes['heads'],
                        num_kv_heads=sizes['kv_heads'],
                        mlp_hidden=sizes['mlp_hidden'], mlp=sizes['mlp'],
                        tied=sizes['tied'])
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0),
                                             jnp.zeros((1, 4), jnp.int32)))
  count = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(shapes))
  assert count == lm.lm_param_count(**sizes)


def test_default_mlp_width_and_the_count_by_hand():
  assert lm.default_mlp_hidden(32, 'swiglu') == 88  # 85.3 up to 8.
  assert lm.default_mlp_hidden(32, 'gelu') == 128
  # 259*32 + 32 + 2 * (64 + 2*1024 + 2*32*2*8 + 3*32*88).
  assert lm.lm_param_count(259, 32, 2, 4, 2, 88, 'swiglu', True) == 31_488


def test_student_layers_initialised_from_the_teacher():
  sizes = dict(CONFIGS['gqa_tied'], num_layers=4)
  teacher = models.create('transformer_lm', V, **sizes)
  student = teacher.clone(num_layers=2)
  tp = teacher.init(jax.random.key(0), _tokens(1, 4))['params']
  sp = student.init(jax.random.key(1), _tokens(1, 4))['params']
  layer_map = lm.strided_layer_map(4, 2)
  assert layer_map == (0, 2)
  new = lm.init_from_teacher_layers(tp, sp, layer_map)
  for s, t in (('blocks_0', 'blocks_0'), ('blocks_1', 'blocks_2'),
               ('embed', 'embed'), ('final_norm', 'final_norm')):
    jax.tree.map(np.testing.assert_array_equal, new[s], tp[t])
  # A student of every teacher layer is the teacher.
  x = _tokens()
  same = lm.init_from_teacher_layers(tp, tp, range(4))
  np.testing.assert_array_equal(teacher.apply({'params': same}, x)[0],
                                teacher.apply({'params': tp}, x)[0])
  narrow = teacher.clone(num_layers=2, d_model=16)
  np_ = narrow.init(jax.random.key(1), _tokens(1, 4))['params']
  with pytest.raises(ValueError, match='teacher d_model 32 vs student '
                     'd_model 16'):
    lm.init_from_teacher_layers(tp, np_, layer_map)
  gelu = teacher.clone(num_layers=2, mlp_hidden=64)
  gp = gelu.init(jax.random.key(1), _tokens(1, 4))['params']
  with pytest.raises(ValueError, match=r"\['blocks_0'\]\['mlp'\]\['down'\]"
                     r"\['kernel'\] is \(88, 32\) in the teacher, \(64, 32\)"):
    lm.init_from_teacher_layers(tp, gp, layer_map)
  with pytest.raises(ValueError, match='the teacher has 4 layers'):
    lm.init_from_teacher_layers(tp, sp, (0, 4))


def test_a_sequence_longer_than_the_context_is_an_error(lm_and_vars):
  model, variables = lm_and_vars
  with pytest.raises(ValueError, match='sequence length 33 exceeds the model '
                     'context max_len=32'):
    model.apply(variables, _tokens(1, 33))
  with pytest.raises(ValueError, match='20 \\+ max_new_tokens 13 = 33 exceeds '
                     'the model context max_len=32'):
    gen.generate(model, variables, _tokens(1, 20), jnp.array([20]),
                 jax.random.key(0), max_new_tokens=13, pad_id=PAD)


# Generation.
_N = 8


@pytest.fixture(scope='module')
def gqa():
  """Generation is tested on one model (compile time)."""
  model = models.create('transformer_lm', V, **CONFIGS['gqa_tied'])
  variables = model.init(jax.random.key(1), _tokens(1, 4))
  return model, variables


@pytest.fixture(scope='module')
def sampler(gqa):
  """generate jitted with the weights as an argument, as in a train step."""
  model, variables = gqa
  fn = jax.jit(functools.partial(gen.generate, model, pad_id=PAD),
               static_argnames=('max_new_tokens', 'temperature', 'top_k',
                                'eos_id'))
  return functools.partial(fn, variables)


def _prompts():
  lengths = np.array([5, 1, 8], np.int32)
  prompts = _tokens(3, 8, seed=4)
  prompts[np.arange(8)[None] >= lengths[:, None]] = 0  # Right padding.
  return prompts, lengths


def test_greedy_with_the_cache_equals_greedy_by_full_recompute(gqa, sampler):
  model, variables = gqa
  forward = jax.jit(lambda x: model.apply(variables, x))
  prompts, lengths = _prompts()
  tokens, generated = sampler(prompts, lengths, jax.random.key(0),
                              max_new_tokens=_N)
  assert tokens.shape == generated.shape == (3, 8 + _N)
  for b, n in enumerate(lengths):
    seq = list(prompts[b, :n])
    for _ in range(_N):  # The whole sequence again every step.
      logits = forward(np.array([seq + [0] * (T - len(seq))], np.int32))[0]
      seq.append(int(np.argmax(logits[0, len(seq) - 1])))
    np.testing.assert_array_equal(tokens[b, :n + _N], seq)
    np.testing.assert_array_equal(
        generated[b], (np.arange(8 + _N) >= n) & (np.arange(8 + _N) < n + _N))
    assert np.all(np.asarray(tokens[b, n + _N:]) == PAD)


def test_sampling_is_deterministic_and_cold_sampling_is_greedy(sampler):
  prompts, lengths = _prompts()
  greedy, _ = sampler(prompts, lengths, jax.random.key(0), max_new_tokens=_N)
  cold, _ = sampler(prompts, lengths, jax.random.key(5), max_new_tokens=_N,
                    temperature=1e-4)
  np.testing.assert_array_equal(cold, greedy)
  a = sampler(prompts, lengths, jax.random.key(1), max_new_tokens=_N,
              temperature=1.0, top_k=50)[0]
  b = sampler(prompts, lengths, jax.random.key(1), max_new_tokens=_N,
              temperature=1.0, top_k=50)[0]
  c = sampler(prompts, lengths, jax.random.key(2), max_new_tokens=_N,
              temperature=1.0, top_k=50)[0]
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)


def test_a_sequence_stops_at_eos(sampler):
  prompts, lengths = _prompts()
  free, _ = sampler(prompts, lengths, jax.random.key(0), max_new_tokens=_N)
  eos = int(free[0, lengths[0] + 2])  # Row 0's third new token.
  tokens, generated = sampler(prompts, lengths, jax.random.key(0),
                              max_new_tokens=_N, eos_id=eos)
  for b, n in enumerate(lengths):
    new = list(np.asarray(free[b, n:n + _N]))
    stop = new.index(eos) + 1 if eos in new else _N
    assert generated[b].sum() == stop
    np.testing.assert_array_equal(tokens[b, :n + stop], free[b, :n + stop])
    assert np.all(np.asarray(tokens[b, n + stop:]) == PAD)
  assert generated[0].sum() <= 3


def test_top_k_keeps_the_k_most_likely_tokens():
  logits = jnp.log(jnp.array([[0.1, 0.4, 0.2, 0.3]] * 2000))
  draws = gen.sample_token(logits, jax.random.key(0), temperature=1.0,
                           top_k=2)
  counts = np.bincount(np.asarray(draws), minlength=4) / 2000
  np.testing.assert_allclose(counts, [0, 4 / 7, 0, 3 / 7], atol=0.04)
  np.testing.assert_array_equal(
      gen.sample_token(logits[:2], jax.random.key(0)), [1, 1])


def test_bfloat16_compute_keeps_float32_params_and_logits(lm_and_vars,
                                                          forward):
  model, variables = lm_and_vars
  half = model.clone(dtype=jnp.bfloat16)
  fresh = half.init(jax.random.key(1), _tokens(1, 4))
  assert {p.dtype for p in jax.tree.leaves(fresh)} == {jnp.dtype('float32')}
  x = _tokens()
  logits, feats = jax.jit(half.apply)(variables, x)
  assert logits.dtype == jnp.float32
  assert feats['hidden1'].dtype == jnp.bfloat16
  np.testing.assert_allclose(logits, forward(x)[0], atol=0.15)
  cache = lm.init_cache(half, 3)
  assert cache['k'].dtype == jnp.bfloat16
