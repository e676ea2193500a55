"""Sampling from a language model with its key/value cache.

One implementation for the CLI (`kd.generate`), LiteRT export (`kd.export.lm`),
sequence-level KD data (`kd.seqkd`) and on-policy distillation: `generate`
is a pure traceable function (jit it with `model`, `max_new_tokens`,
`temperature`, `top_k`, `pad_id` and `eos_id` static, or call it inside a
jitted step). The prompt is prefilled in one call, then a `lax.while_loop`
decodes one token a step until `max_new_tokens` or until every sequence has
emitted `eos_id`.
"""
import jax
import jax.numpy as jnp
from jax import lax

from kd.losses import divergences
from kd.models import lm


def sample_token(logits: jax.Array, rng: jax.Array, temperature: float = 0.0,
                 top_k: int = 0) -> jax.Array:
  """Next tokens [B] from logits [B, V]: argmax when `temperature` is 0, else
  a draw from softmax(logits / temperature) restricted to the `top_k` most
  likely tokens (all when 0)."""
  if temperature == 0:
    return jnp.argmax(logits, axis=-1).astype(jnp.int32)
  logits = divergences.tempered(logits, temperature)
  if top_k:
    kth = lax.top_k(logits, top_k)[0][:, -1:]
    logits = jnp.where(logits >= kth, logits, -jnp.inf)
  return jax.random.categorical(rng, logits).astype(jnp.int32)


def _left_align(prompts, lengths):
  """Right-padded prompts -> left-padded (every prompt ends at slot P-1),
  with their token mask and RoPE positions (0 at each first real token)."""
  p = prompts.shape[1]
  shift = p - lengths[:, None]  # Padding in front of each prompt.
  slots = jnp.arange(p)[None]
  left = jnp.take_along_axis(prompts, (slots - shift) % p, axis=1)
  return left, slots >= shift, jnp.maximum(slots - shift, 0)


def generate(model: lm.TransformerLM, variables, prompts: jax.Array,
             lengths: jax.Array, rng: jax.Array, max_new_tokens: int,
             temperature: float = 0.0, top_k: int = 0, *, pad_id: int,
             eos_id: int | None = None):
  """Continues right-padded `prompts` [B, P] of `lengths` [B] (>= 1).

  Returns (tokens [B, P + max_new_tokens], generated [B, P + max_new_tokens]
  bool): each row is its prompt, its new tokens right after it, then
  `pad_id` (the tokenizer's: no default, as byte tokenizers have no spare
  0); `generated` marks the new tokens (up to and including the first
  `eos_id`, after which a sequence stops). Requires P + max_new_tokens <=
  model.max_len; with max_new_tokens 0, the prompts themselves.
  """
  b, p = prompts.shape
  check_max_new_tokens(max_new_tokens)
  if not max_new_tokens:
    return prompts.astype(jnp.int32), jnp.zeros((b, p), bool)
  total = p + max_new_tokens
  if total > model.max_len:
    raise ValueError(f'prompt length {p} + max_new_tokens {max_new_tokens} = '
                     f'{total} exceeds the model context max_len='
                     f'{model.max_len}')
  lengths = lengths.astype(jnp.int32)
  left, mask, positions = _left_align(prompts.astype(jnp.int32), lengths)
  logits, cache = model.apply(variables, left, lm.init_cache(model, b, total),
                              positions, mask, method=model.extend)

  def cond(carry):
    i, _, done, _, _ = carry
    return (i < max_new_tokens) & ~jnp.all(done)

  def body(carry):
    i, new, done, logits, cache = carry
    token = sample_token(logits, jax.random.fold_in(rng, i),
                         temperature, top_k)
    token = jnp.where(done, pad_id, token)
    new = new.at[:, i].set(token)
    if eos_id is not None:
      done = done | (token == eos_id)
    logits, cache = model.apply(variables, token[:, None], cache,
                                (lengths + i)[:, None], method=model.extend)
    return i + 1, new, done, logits[:, -1], cache

  new = jnp.full((b, max_new_tokens), pad_id, jnp.int32)
  n, new, done, _, _ = lax.while_loop(
      cond, body,
      (jnp.int32(0), new, jnp.zeros(b, bool), logits[:, -1], cache))
  # Sequence lengths of the new tokens: through the first eos, else all n.
  steps = jnp.arange(max_new_tokens)[None]
  is_eos = (new == eos_id) if eos_id is not None else jnp.zeros_like(new, bool)
  first_eos = jnp.where(is_eos, steps, max_new_tokens).min(axis=1)
  num_new = jnp.minimum(first_eos + 1, n)[:, None]
  # Row layout: prompt (lengths), then num_new tokens, then padding.
  t = jnp.arange(total)[None]
  offset = t - lengths[:, None]
  from_prompt = jnp.take_along_axis(
      jnp.pad(prompts.astype(jnp.int32), ((0, 0), (0, max_new_tokens))),
      jnp.broadcast_to(t, (b, total)), axis=1)
  from_new = jnp.take_along_axis(new, jnp.clip(offset, 0, max_new_tokens - 1),
                                 axis=1)
  generated = (offset >= 0) & (offset < num_new)
  tokens = jnp.where(offset < 0, from_prompt,
                     jnp.where(generated, from_new, pad_id))
  return tokens, generated


def check_max_new_tokens(max_new_tokens) -> None:
  if max_new_tokens < 0:
    raise ValueError(f'--max_new_tokens={max_new_tokens}: give a number >= 0 '
                     'of tokens to add (0 returns the prompt)')


def on_policy_batch(model: lm.TransformerLM, variables, batch: dict,
                    rng: jax.Array, prompt_len: int, temperature: float,
                    top_k: int, pad_id: int, eos_id: int | None) -> dict:
  """A packed LM batch (`kd.data.text.model_batch`) whose tokens after the
  first `prompt_len` are the model's own samples: the input of on-policy
  distillation (GKD, Agarwal et al. 2024), where the teacher then scores
  the student's samples. `label` holds the sampled next tokens and `mask`
  is 1 exactly on the sampled targets (the prompt is context only); a
  sequence that samples eos stops there. No gradient flows through the
  sampling."""
  inputs = batch['image']
  b, t = inputs.shape
  tokens, generated = generate(
      model, jax.lax.stop_gradient(variables), inputs[:, :prompt_len],
      jnp.full((b,), prompt_len, jnp.int32), rng, t + 1 - prompt_len,
      temperature, top_k, pad_id=pad_id, eos_id=eos_id)
  mask = generated[:, 1:].astype(jnp.float32)
  return dict(batch, image=tokens[:, :-1], label=tokens[:, 1:], mask=mask)
