"""A language model run as one LiteRT file with `prefill` and `decode`
signatures, the loop that generates with it, and its figures.

Signatures (batch 1, builtin ops only; P = prompt_len, L = cache_len, N
layers, K key/value heads, D head dim; caches float32 [N, 1, L, K, D]):

  prefill(tokens [1, P] int32) -> logits [1, P, V], k_cache, v_cache
  decode(token [1, 1] int32, pos [1] int32, k_cache, v_cache)
      -> logits [1, V], k_cache, v_cache

Cache slot j holds the keys and values of the token at position j, and a
query at position p reads slots 0..p (causal). So a prompt of n <= P tokens
is right-padded to P with any id: `logits[0, n - 1]` predicts token n, which
`decode` writes at pos n; each padding slot is overwritten before any query
can read it, and no mask is needed. Decoding needs pos < L.

Quantization is of the weights only (inputs, caches and outputs stay
float32): 'fp16' stores float16 weights; 'dynamic' int8 weights run by
LiteRT's hybrid kernels (the converter's dynamic-range recipe, activations
quantized on the fly); 'int8' and 'int4' weight-only int8 / int4 weights
(per channel, dequantized to float32 for float kernels: ai-edge-quantizer's
`weight_only_wi8_afp32` / `weight_only_wi4_afp32` recipes).
"""
import collections
import json
import math
import os
import shutil
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from kd.export import artifact
from kd.models import lm
from kd.sampling import generate, sample_token

# kd.runs, kd.data and kd.export.tflite load TensorFlow: they are imported
# where a run is read or a file converted, so that ONNX export (which
# imports this module for its graphs and runner) needs no TensorFlow.

QUANTIZATIONS = ('none', 'fp16', 'dynamic', 'int8', 'int4')
_CONVERTER = {'none': 'none', 'fp16': 'fp16', 'dynamic': 'dynamic',
              'int8': 'none', 'int4': 'none'}
_WEIGHT_ONLY = {'int8': 'weight_only_wi8_afp32',
                'int4': 'weight_only_wi4_afp32'}
_DESCRIBED = {
    'none': 'float32',
    'fp16': 'float16 weights',
    'dynamic': 'int8 weights, per channel (the converter\'s dynamic-range '
               'recipe); float32 activation tensors, which the hybrid '
               'kernels quantize on the fly',
    'int8': 'weight-only int8, per channel (ai-edge-quantizer '
            'weight_only_wi8_afp32): dequantized to float32, float kernels',
    'int4': 'weight-only int4, per channel (ai-edge-quantizer '
            'weight_only_wi4_afp32): dequantized to float32, float kernels'}

LMRun = collections.namedtuple('LMRun',
                               'workdir config model variables step tokenizer')


def load_run(workdir: str) -> LMRun:
  """The language model of a run directory, float32, at its newest readable
  checkpoint (`kd.runs.load_run`), with the run's tokenizer."""
  from kd import runs  # pylint: disable=import-outside-toplevel
  from kd.data import text  # pylint: disable=import-outside-toplevel
  config, model, variables, step = runs.load_run(workdir)
  if config.model.name != 'transformer_lm':
    raise ValueError(f'{workdir} holds a {config.model.name!r} model, not a '
                     'transformer_lm')
  return LMRun(workdir, config, model, variables, step,
               text.run_tokenizer(config, workdir))


def context_len(run: LMRun) -> int:
  """Tokens the model was trained on at once: data.seq_len, or max_len."""
  return min(run.model.max_len,
             run.config.data.get('seq_len', 0) or run.model.max_len)


def _one_hot_lookup(next_fun, args, kwargs, context):
  """Token embedding lookups as one_hot(tokens) @ table (exact). The
  converter turns it into an EMBEDDING_LOOKUP whose table it quantizes like
  every other weight, where jnp.take's GATHER_ND keeps a float32 copy."""
  module = context.module
  if isinstance(module, nn.Embed) and context.method_name == '__call__':
    (tokens,) = args
    one_hot = jax.nn.one_hot(tokens, module.num_embeddings,
                             dtype=module.embedding.dtype)
    return (one_hot @ module.embedding).astype(module.dtype or jnp.float32)
  return next_fun(*args, **kwargs)


def functions(model: lm.TransformerLM, variables, cache_len: int):
  """The JAX functions behind the two signatures (see the module doc)."""

  def prefill(tokens):
    with nn.intercept_methods(_one_hot_lookup):
      logits, cache = model.apply(variables, tokens,
                                  lm.init_cache(model, 1, cache_len),
                                  method=model.extend)
    return {'logits': logits, 'k_cache': cache['k'], 'v_cache': cache['v']}

  def decode(token, pos, k_cache, v_cache):
    # Every slot up to pos is a real token (see the module doc).
    cache = {'k': k_cache, 'v': v_cache,
             'mask': jnp.ones((1, cache_len), bool), 'index': pos[0]}
    with nn.intercept_methods(_one_hot_lookup):
      logits, cache = model.apply(variables, token, cache,
                                  method=model.extend)
    return {'logits': logits[:, -1], 'k_cache': cache['k'],
            'v_cache': cache['v']}

  return prefill, decode


def cache_shape(model: lm.TransformerLM, cache_len: int) -> tuple:
  return (model.num_layers, 1, cache_len, model.kv_heads, model.head_size)


def convert(model, variables, *, prompt_len: int, cache_len: int,
            quantize: str = 'none') -> bytes:
  """The `.tflite` flatbuffer with `prefill` and `decode` signatures."""
  from kd.export import tflite  # pylint: disable=import-outside-toplevel
  if quantize not in QUANTIZATIONS:
    raise ValueError(f'unknown quantize {quantize!r}; valid: {QUANTIZATIONS}')
  if not 0 < prompt_len <= cache_len <= model.max_len:
    raise ValueError(f'need 0 < prompt_len ({prompt_len}) <= cache_len '
                     f'({cache_len}) <= the model context max_len '
                     f'({model.max_len})')
  prefill, decode = functions(model, variables, cache_len)
  cache = np.zeros(cache_shape(model, cache_len), np.float32)
  blob = tflite.convert_signatures({
      'prefill': (prefill, {'tokens': np.zeros((1, prompt_len), np.int32)}),
      'decode': (decode, {'token': np.zeros((1, 1), np.int32),
                          'pos': np.zeros((1,), np.int32),
                          'k_cache': cache, 'v_cache': cache})},
                                   quantize=_CONVERTER[quantize])
  if quantize in _WEIGHT_ONLY:  # Its recipes find tensors by name.
    blob = weight_only(blob, _WEIGHT_ONLY[quantize])
  return tflite.without_tensor_names(blob)


def weight_only(blob: bytes, recipe_name: str) -> bytes:
  """The float flatbuffer quantized by an ai-edge-quantizer recipe."""
  try:
    from ai_edge_quantizer import quantizer, recipe  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError('weight-only int8/int4 export needs ai-edge-quantizer: '
                      'pip install ai-edge-quantizer (or --quantize=dynamic '
                      'for the converter\'s own int8 recipe)') from e
  q = quantizer.Quantizer(bytearray(blob), getattr(recipe, recipe_name)())
  return bytes(q.quantize(enable_progress_report=False).quantized_model)


class LiteRTLM:
  """An exported language model run by the LiteRT interpreter."""

  def __init__(self, model_content: bytes):
    from ai_edge_litert.interpreter import Interpreter  # pylint: disable=import-outside-toplevel
    self.size_bytes = len(model_content)
    self._interpreter = Interpreter(model_content=model_content)
    self._prefill = self._interpreter.get_signature_runner('prefill')
    self._decode = self._interpreter.get_signature_runner('decode')
    self.prompt_len = int(
        self._prefill.get_input_details()['tokens']['shape'][1])
    self.cache_len = int(
        self._decode.get_input_details()['k_cache']['shape'][2])

  @classmethod
  def from_file(cls, path: str) -> 'LiteRTLM':
    with open(path, 'rb') as f:
      return cls(f.read())

  def signatures(self) -> dict:
    return self._interpreter.get_signature_list()

  def op_names(self) -> set[str]:
    details = self._interpreter._get_ops_details()  # pylint: disable=protected-access
    return {op['op_name'] for op in details}

  def prefill(self, tokens: np.ndarray):
    """Logits [P, V] of right-padded `tokens` [P] and the cache."""
    out = self._prefill(tokens=np.asarray(tokens, np.int32)[None])
    return out['logits'][0], (out['k_cache'], out['v_cache'])

  def decode(self, token: int, pos: int, cache):
    out = self._decode(token=np.array([[token]], np.int32),
                       pos=np.array([pos], np.int32),
                       k_cache=cache[0], v_cache=cache[1])
    return out['logits'][0], (out['k_cache'], out['v_cache'])

  def generate(self, prompt, max_new_tokens: int, *, temperature: float = 0.,
               top_k: int = 0, seed: int = 0,
               eos_id: int | None = None) -> list[int]:
    """New tokens after `prompt` (token ids), drawn as `kd.generate` draws
    them (token i from key fold_in(key(seed), i)); stops after `eos_id`."""
    n = len(prompt)
    if not 0 < n <= self.prompt_len:
      raise ValueError(f'prompt of {n} tokens; this model takes 1 to '
                       f'{self.prompt_len} (its exported prompt length): '
                       'shorten the prompt or export with a larger '
                       '--prompt_len')
    if n + max_new_tokens > self.cache_len:
      raise ValueError(f'prompt length {n} + max_new_tokens {max_new_tokens} '
                       f'exceeds the exported cache length {self.cache_len}')
    tokens = np.zeros(self.prompt_len, np.int32)
    tokens[:n] = prompt
    logits, cache = self.prefill(tokens)
    logits = logits[n - 1]
    rng = jax.random.key(seed)
    new = []
    for i in range(max_new_tokens):
      if temperature == 0:
        token = int(np.argmax(logits))
      else:
        token = int(sample_token(jnp.asarray(logits)[None],
                                 jax.random.fold_in(rng, i), temperature,
                                 top_k)[0])
      new.append(token)
      if token == eos_id or i + 1 == max_new_tokens:
        break
      logits, cache = self.decode(token, n + i, cache)
    return new


def jax_generate(model, variables, prompts, max_new_tokens: int, *, pad_id,
                 temperature: float = 0., top_k: int = 0, seed: int = 0,
                 eos_id: int | None = None) -> list[list[int]]:
  """`kd.sampling.generate` on a list of token-id prompts: the new tokens
  of each (through eos)."""
  p = max(map(len, prompts))
  padded = np.full((len(prompts), p), pad_id, np.int32)
  for i, x in enumerate(prompts):
    padded[i, :len(x)] = x
  lengths = np.array([len(x) for x in prompts], np.int32)
  fn = jax.jit(generate, static_argnums=(0, 5, 6, 7),
               static_argnames=('pad_id', 'eos_id'))
  tokens, generated = fn(model, variables, padded, lengths,
                         jax.random.key(seed), max_new_tokens, temperature,
                         top_k, pad_id=pad_id, eos_id=eos_id)
  tokens, generated = np.asarray(tokens), np.asarray(generated)
  return [list(map(int, t[g])) for t, g in zip(tokens, generated)]


def heldout_rows(run: LMRun, seq_len: int, count: int,
                 split: str = 'test') -> list[dict]:
  """`count` packed batches of one row (see `kd.data.text`) spread evenly
  over `split`: dicts of tokens [1, seq_len + 1], mask and bytes."""
  from kd.data import text  # pylint: disable=import-outside-toplevel
  d = run.config.data
  rows = list(text.eval_batches(text.source(d), batch_size=1, seq_len=seq_len,
                                tok=run.tokenizer, split=split,
                                data_dir=d.get('data_dir') or None))
  if len(rows) < count:
    raise ValueError(f'{d.name} {split} has {len(rows)} rows of {seq_len} '
                     f'tokens, fewer than the {count} asked for')
  return [dict(rows[i], row=int(i))
          for i in np.linspace(0, len(rows) - 1, count).astype(int)]


def heldout_scores(logits_fn, rows) -> tuple[float, float]:
  """(bits per byte, next-token accuracy) over `rows`, with logits [T, V] =
  logits_fn(input tokens [T]) in float64:
  sum(mask * nll) / ln 2 / sum(bytes) and sum(mask * [argmax = target]) /
  sum(mask)."""
  nll, nbytes, right, targets = 0., 0, 0., 0.
  for r in rows:
    logits = np.asarray(logits_fn(r['tokens'][0, :-1]), np.float64)
    target, mask = r['tokens'][0, 1:], r['mask'][0]
    top = logits.max(-1)
    lse = top + np.log(np.exp(logits - top[:, None]).sum(-1))
    nll += float(np.sum(mask * (lse - logits[np.arange(len(target)),
                                             target])))
    nbytes += int(r['bytes'].sum())
    right += float(np.sum(mask * (logits.argmax(-1) == target)))
    targets += float(mask.sum())
  return nll / math.log(2) / nbytes, right / targets


def input_section(run: LMRun, prompt_len: int, cache_len: int) -> dict:
  """The sidecar's `input`: how an app turns text into the file's token
  ids (`kd.data.text`'s packing and `kd.generate`'s prompt)."""
  tok = run.tokenizer
  kind = run.config.data.get('tokenizer', 'byte')
  ids = ('the UTF-8 bytes of the text (0..255)' if kind == 'byte' else
         'the text encoded by the BPE tokenizer file beside this one')
  return {
      'kind': 'text', 'dtype': 'int32', 'tokenizer': kind,
      'token_ids': ids,
      'special_ids': {'pad': tok.pad_id, 'bos': tok.bos_id,
                      'eos': tok.eos_id},
      'context_len': context_len(run), 'prompt_len': prompt_len,
      'cache_len': cache_len,
      'attention_mask': None,
      'formula': (f'tokens = [{tok.bos_id}] + {ids}, right-padded to '
                  f'prompt_len {prompt_len} with any id (pad '
                  f'{tok.pad_id}); no attention mask: the model is causal, '
                  'so logits[0, n - 1] of a prompt of n tokens never reads '
                  f'the padding; generation stops after eos {tok.eos_id} '
                  f'and at cache_len {cache_len} tokens'),
  }


def _heldout_source(run: LMRun, rows: list[dict], row_tokens: int) -> dict:
  """Where the held-out figures come from, for an app to recompute them
  from the raw dataset (`kd.data.text.eval_batches`, batch 1)."""
  from kd.data import text  # pylint: disable=import-outside-toplevel
  d = run.config.data
  b = text.builder(text.source(d), d.get('data_dir') or None)
  return {
      'dataset': d.name, 'tfds_name': b.info.full_name, 'feature': 'text',
      'split': 'test', 'row_tokens': row_tokens,
      'rows': [r['row'] for r in rows],
      'packing': ('documents in file order, each as [bos] + its token ids + '
                  '[eos], concatenated into one stream, padded at the end '
                  'with pad to a multiple of row_tokens plus one; row r is '
                  'stream[r * row_tokens : (r + 1) * row_tokens + 1], '
                  'inputs its first row_tokens, targets its last'),
      'formula': ('mask = target not in (pad, bos); bytes = the UTF-8 bytes '
                  'a masked target stands for (byte tokenizer: 1 for ids '
                  '0..255, 0 for eos); bits_per_byte = sum(mask * '
                  '(logsumexp(logits) - logits[target])) / ln 2 / '
                  'sum(bytes); next_token_accuracy = sum(mask * '
                  '(argmax(logits) = target)) / sum(mask), logits in '
                  'float64, summed over the rows'),
  }


def _median_seconds(fn, runs: int = 3) -> float:
  fn()  # Warm-up (and jit compilation).
  times = []
  for _ in range(runs):
    t0 = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t0)
  return float(np.median(times))


def measure(run: LMRun, runner: LiteRTLM, *, prompts: int = 20,
            new_tokens: int = 64, bpb_rows: int = 8, speed: bool = True,
            runtime: str = 'litert') -> dict:
  """Greedy parity with JAX on `prompts` held-out prompts (lengths spread
  over P/2..P) x `new_tokens`, held-out bits per byte (JAX float vs this
  file, on `bpb_rows` rows of P tokens) and batch-1 generation speed; the
  file's figures under the key `runtime`."""
  p, model, variables = runner.prompt_len, run.model, run.variables
  tok = run.tokenizer
  if p + new_tokens > min(runner.cache_len, model.max_len):
    raise ValueError(f'parity needs prompts of up to {p} tokens + '
                     f'{new_tokens} new tokens, more than the cache length '
                     f'{runner.cache_len}: lower --parity_tokens or '
                     '--prompt_len, or raise --cache_len')
  rows = heldout_rows(run, p, max(prompts, bpb_rows))
  starts = np.linspace(0, len(rows) - 1, prompts).astype(int)
  # A held-out row's first n tokens, n from P/2 up to P.
  lengths = np.linspace(max(1, p // 2), p, prompts).astype(int)
  heldout = [rows[i]['tokens'][0, :n] for i, n in zip(starts, lengths)]
  want = jax_generate(model, variables, heldout, new_tokens,
                      pad_id=tok.pad_id)
  got = [runner.generate(x, new_tokens) for x in heldout]
  same = [w == g for w, g in zip(want, got)]
  first_diff = [next((i for i, (a, b) in enumerate(zip(w, g)) if a != b),
                     None) for w, g in zip(want, got)]
  apply = jax.jit(lambda x: model.apply(variables, x[None])[0][0])
  bpb = rows[:bpb_rows]
  jax_bpb, jax_acc = heldout_scores(apply, bpb)
  file_bpb, file_acc = heldout_scores(lambda x: runner.prefill(x)[0], bpb)
  out = {
      'parity': {'prompts': prompts, 'new_tokens': new_tokens,
                 'prompt_lengths': [int(n) for n in lengths],
                 'greedy_sequences_equal': int(sum(same)),
                 'greedy_tokens_equal': int(sum(
                     sum(a == b for a, b in zip(w, g))
                     for w, g in zip(want, got))),
                 'first_difference': first_diff},
      'bits_per_byte': {
          'rows': bpb_rows, 'row_tokens': p, 'split': 'test',
          'jax_float32': jax_bpb, runtime: file_bpb},
      'next_token_accuracy': {'jax_float32': jax_acc, runtime: file_acc},
      'heldout': _heldout_source(run, bpb, p),
  }
  if speed:
    x = heldout[-1]
    fn = jax.jit(generate, static_argnums=(0, 5, 6, 7),
                 static_argnames=('pad_id',))
    args = (model, variables, x[None].astype(np.int32),
            np.array([len(x)], np.int32), jax.random.key(0), new_tokens, 0.,
            0)
    jax_s = _median_seconds(lambda: jax.block_until_ready(
        fn(*args, pad_id=tok.pad_id)))
    lite_s = _median_seconds(lambda: runner.generate(x, new_tokens))
    out['tokens_per_s'] = {
        'note': f'batch 1, greedy, a {len(x)}-token prompt then '
                f'{new_tokens} new tokens (prefill included), median of 3 '
                f'on {os.cpu_count()} CPU cores; noisy on a shared machine',
        'jax': new_tokens / jax_s, runtime: new_tokens / lite_s}
  return out


def export(run: LMRun, out_path: str, *, quantize: str = 'none',
           prompt_len: int | None = None, cache_len: int | None = None,
           prompts: int = 20, new_tokens: int = 64, bpb_rows: int = 8,
           speed: bool = True) -> dict:
  """Writes `out_path` (.tflite), `out_path + '.json'` and, for BPE, the
  tokenizer next to them; returns the sidecar. Defaults: cache_len the
  training context, prompt_len half of it."""
  cache_len = cache_len or context_len(run)
  prompt_len = prompt_len or cache_len // 2
  kw = dict(prompt_len=prompt_len, cache_len=cache_len)
  blob = convert(run.model, run.variables, quantize=quantize, **kw)
  float_bytes = len(blob) if quantize == 'none' else len(
      convert(run.model, run.variables, **kw))
  runner = LiteRTLM(blob)
  tok, model = run.tokenizer, run.model
  tokenizer = tokenizer_info(run, out_path)
  cache = list(cache_shape(model, cache_len))
  sidecar = {
      'file': os.path.basename(out_path), 'bytes': len(blob),
      'float32_bytes': float_bytes, 'size_vs_float32': len(blob) / float_bytes,
      'quantize': quantize,
      'quantization': _DESCRIBED[quantize],
      'kind': 'transformer_lm', 'checkpoint_step': run.step,
      'vocab_size': tok.vocab_size, 'context_len': context_len(run),
      'prompt_len': prompt_len, 'cache_len': cache_len,
      'tokenizer': tokenizer,
      'input': input_section(run, prompt_len, cache_len),
      'signatures': {
          'prefill': {
              'inputs': {'tokens': [[1, prompt_len], 'int32',
                                    'prompt, right-padded with any id']},
              'outputs': {'logits': [[1, prompt_len, tok.vocab_size],
                                     'float32', 'logits[0, n - 1] predicts '
                                     'the token after a prompt of n'],
                          'k_cache': [cache, 'float32', 'keys'],
                          'v_cache': [cache, 'float32', 'values']}},
          'decode': {
              'inputs': {'token': [[1, 1], 'int32', 'the token at pos'],
                         'pos': [[1], 'int32', 'its position: n, n + 1, ...'],
                         'k_cache': [cache, 'float32', 'from the last call'],
                         'v_cache': [cache, 'float32', 'from the last call']},
              'outputs': {'logits': [[1, tok.vocab_size], 'float32',
                                     'predicts the token at pos + 1'],
                          'k_cache': [cache, 'float32', 'keys'],
                          'v_cache': [cache, 'float32', 'values']}}},
      'builtin_ops': sorted(runner.op_names()),
      'cache_layout': '[layers, batch 1, slot (= position), kv_heads, '
                      'head_dim]; slot j holds position j; a query at pos '
                      'reads slots 0..pos',
  }
  if prompts:
    sidecar.update(measure(run, runner, prompts=prompts,
                           new_tokens=new_tokens, bpb_rows=bpb_rows,
                           speed=speed))
  artifact.write(out_path, blob, sidecar)
  copy_tokenizer(run, out_path, tokenizer)
  return sidecar


def tokenizer_info(run: LMRun, out_path: str) -> dict:
  """The sidecar's `tokenizer`: ids, and for BPE the file next to
  `out_path`."""
  tok = run.tokenizer
  info = {'kind': run.config.data.get('tokenizer', 'byte'),
          'vocab_size': tok.vocab_size, 'pad_id': tok.pad_id,
          'bos_id': tok.bos_id, 'eos_id': tok.eos_id,
          'prompt': 'bos_id, then the encoded text',
          'byte_ids': 'UTF-8 bytes 0..255'}
  if info['kind'] in ('bpe', 'hf'):
    del info['byte_ids']
    info['file'] = os.path.basename(out_path) + '.tokenizer.json'
  return info


def copy_tokenizer(run: LMRun, out_path: str, info: dict):
  """A BPE or HF run's tokenizer.json to the file `info` names."""
  if info['kind'] in ('bpe', 'hf'):
    shutil.copyfile(os.path.join(run.workdir, 'tokenizer.json'),
                    os.path.join(os.path.dirname(os.path.abspath(out_path)),
                                 info['file']))


def sidecar_tokenizer(model_path: str):
  """The tokenizer an exported file's sidecar names (a BPE file is next to
  the model)."""
  from kd.data import hf_tokenizer, text  # pylint: disable=import-outside-toplevel
  with open(model_path + '.json') as f:
    info = json.load(f)['tokenizer']
  if info['kind'] in ('bpe', 'hf'):
    path = os.path.join(os.path.dirname(os.path.abspath(model_path)),
                        info['file'])
    if info['kind'] == 'hf':  # Its special ids are the sidecar's.
      return hf_tokenizer.HFTokenizer.load(
          path, info['vocab_size'],
          (info['bos_id'], info['eos_id'], info['pad_id']))
    return text.BPETokenizer.load(path)
  return text.tokenizer(info['kind'])
