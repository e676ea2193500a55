"""Hugging Face model folders (as `save_pretrained` writes them) <-> kd.

  python -m kd.convert --from=hf HF_DIR --out=RUN_DIR [--dtype=bfloat16]
  python -m kd.convert --from=hf --describe HF_DIR [--student_params=30M]

HF_DIR holds config.json, then model.safetensors or the shards that
model.safetensors.index.json lists, and optionally tokenizer.json,
tokenizer_config.json, special_tokens_map.json and generation_config.json
(copied into the run). Neither torch nor transformers is needed: tensors are
read one at a time from the safetensors files (bf16 and fp16 included) and
cast to the dtype asked for.

The family comes from config.json's `model_type` (kd.convert.hf_table's
registry: kd.convert.hf_decoders, kd.convert.hf_encoder); everything is
checked before a byte is written: the family and its options, the files,
every tensor's name and shape (missing, unexpected, mis-shaped: listed).

The inverse (kd.export's HF format) uses the same tables: `to_hf_config`
and `hf_tensors`.
"""
import hashlib
import json
import math
import os
import re
import struct
from typing import Callable, Iterator

import jax
import ml_dtypes
import numpy as np

from kd import models
from kd.convert import common, hf_decoders, hf_table
from kd.convert import hf_encoder  # noqa: F401 (registers bert, distilbert)
from kd.convert.hf_table import FAMILIES, Tensor, UnsupportedError


CONFIG = 'config.json'
SINGLE = 'model.safetensors'
INDEX = 'model.safetensors.index.json'
# Copied into the run directory when the HF folder has them.
TOKENIZER_FILES = ('tokenizer.json', 'tokenizer_config.json',
                   'special_tokens_map.json', 'generation_config.json')
SPECIAL_TOKENS = 'special_tokens.json'  # bos/eos/pad ids, in the run.
DTYPES = {'float32': np.float32, 'bfloat16': ml_dtypes.bfloat16,
          'float16': np.float16}
# safetensors dtypes read (as float32 first, so layout maps such as
# Gemma's 1 + w are exact), and their NumPy types.
_ST_DTYPES = {'F32': np.float32, 'F16': np.float16, 'F64': np.float64,
              'BF16': ml_dtypes.bfloat16}


class HFFolderError(ValueError):
  """An HF folder that cannot be read: a missing or damaged file."""


def _json(path: str, what: str) -> dict:
  if not os.path.isfile(path):
    raise HFFolderError(f'{path} not found: {what}')
  try:
    with open(path) as f:
      found = json.load(f)
  except (OSError, ValueError) as e:
    raise HFFolderError(f'{path} is not readable JSON ({e}); download or save '
                        'it again') from e
  if not isinstance(found, dict):
    raise HFFolderError(f'{path} holds {type(found).__name__}, not a JSON '
                        'object')
  return found


def hf_config(hf_dir: str) -> dict:
  """HF_DIR/config.json as a dict."""
  if not os.path.isdir(hf_dir):
    raise HFFolderError(f'{hf_dir} is not a folder; give the folder '
                        'save_pretrained wrote (config.json and '
                        'model.safetensors)')
  return _json(os.path.join(hf_dir, CONFIG),
               'an HF model folder has config.json (with its model_type)')


def read_config(hf_dir: str) -> tuple[str, dict, int]:
  """(kd model name, kd kwargs, vocabulary size) of HF_DIR's config.json;
  UnsupportedError naming an unknown model_type or an option kd cannot
  honour (and what is supported)."""
  cfg = hf_config(hf_dir)
  return kd_config(cfg)


def kd_config(cfg: dict) -> tuple[str, dict, int]:
  """(kd model name, kd kwargs, vocabulary size) of an HF config dict."""
  if 'model_type' not in cfg:
    raise UnsupportedError(
        f'config.json has no model_type; supported: '
        f'{", ".join(sorted(FAMILIES))}')
  fam = hf_table.family(cfg['model_type'])
  if cfg.get('quantization_config'):
    method = (cfg['quantization_config'] or {}).get('quant_method', '?')
    raise UnsupportedError(
        f'config.json has quantization_config (quant_method={method!r}): '
        'quantized checkpoints are not supported; supported: float32, '
        'bfloat16 or float16 weights (the unquantized release)')
  return fam.kd_config(cfg)


def create(name: str, kwargs: dict, vocab: int):
  """The kd model `name` of `kwargs` and vocabulary (or classes) `vocab`;
  an encoder's [CLS] head (head='cls', vocab_size in kwargs) classifies its
  num_labels."""
  if kwargs.get('head') == 'cls':
    return models.create(name, kwargs['num_labels'], **kwargs)
  return models.create(name, vocab, **kwargs)


def abstract_params(name: str, kwargs: dict, vocab: int) -> dict:
  """The model's parameters as ShapeDtypeStructs (jax.eval_shape: nothing
  allocated)."""
  model = create(name, kwargs, vocab)
  tokens = jax.ShapeDtypeStruct((1, 1), np.int32)
  return jax.eval_shape(
      lambda t: model.init(jax.random.key(0), t, train=False),
      tokens)['params']


def _flat(tree, prefix=()) -> dict[str, object]:
  """{'a/b/c': leaf} of a nested mapping (dict or flax FrozenDict)."""
  out = {}
  for k, v in tree.items():
    if hasattr(v, 'items'):
      out.update(_flat(v, prefix + (k,)))
    else:
      out['/'.join(prefix + (k,))] = v
  return out


def check_table(tensors: list[Tensor], params) -> None:
  """Every kd parameter is made by exactly one table entry, at its shape
  (a family table out of step with the model is a bug: say which)."""
  want = {k: tuple(v.shape) for k, v in _flat(dict(params)).items()}
  made = {p: s for t in tensors for p, s in zip(t.kd, t.kd_shapes)}
  problems = sorted(
      [f'kd parameter {k} {s} has no HF tensor' for k, s in want.items()
       if k not in made] +
      [f'table makes {k} {s}, not a kd parameter' for k, s in made.items()
       if k not in want] +
      [f'{k}: table {made[k]} vs model {s}' for k, s in want.items()
       if k in made and made[k] != s])
  if problems:
    raise common.MismatchError('the HF table and the kd model disagree:\n  '
                               + '\n  '.join(problems))


# Reading safetensors files.

def _header(path: str) -> tuple[dict, int]:
  """(safetensors header {name: {dtype, shape, data_offsets}}, data start),
  checked against the file's size: a truncated or damaged file raises
  HFFolderError naming it."""
  damaged = (f'{path} is not a valid safetensors file ({{}}); it may be '
             'truncated: download or save it again')
  size = os.path.getsize(path)
  with open(path, 'rb') as f:
    head = f.read(8)
    if len(head) < 8:
      raise HFFolderError(damaged.format('shorter than its header'))
    (n,) = struct.unpack('<Q', head)
    if n > min(size - 8, 100 << 20):
      raise HFFolderError(damaged.format(f'header length {n} past the end'))
    try:
      header = json.loads(f.read(n))
    except ValueError as e:
      raise HFFolderError(damaged.format(f'header: {e}')) from e
  header.pop('__metadata__', None)
  end = 0
  for name, entry in header.items():
    try:
      begin, stop = entry['data_offsets']
      shape, dtype = tuple(entry['shape']), entry['dtype']
    except (KeyError, TypeError, ValueError) as e:
      raise HFFolderError(damaged.format(f'entry {name}: {e}')) from e
    if dtype in _ST_DTYPES and (
        stop - begin != math.prod(shape) * np.dtype(_ST_DTYPES[dtype]).itemsize):
      raise HFFolderError(damaged.format(f'{name} {dtype} {shape} has '
                                         f'{stop - begin} bytes'))
    end = max(end, stop)
  if 8 + n + end != size:
    raise HFFolderError(damaged.format(
        f'{size} bytes, its header describes {8 + n + end}'))
  return header, 8 + n


class Weights:
  """The tensors of an HF folder (one file or the shards of its index), read
  one at a time; names, shapes and dtypes from the headers alone."""

  def __init__(self, hf_dir: str):
    self.hf_dir = hf_dir
    index, single = (os.path.join(hf_dir, n) for n in (INDEX, SINGLE))
    if os.path.isfile(index):
      weight_map = _json(index, '').get('weight_map')
      if not isinstance(weight_map, dict):
        raise HFFolderError(f'{index} has no weight_map; save the model '
                            'again')
      files = sorted(set(weight_map.values()))
      missing = [f for f in files if not os.path.isfile(
          os.path.join(hf_dir, f))]
      if missing:
        raise HFFolderError(
            f'{index} names shard files that are not in {hf_dir}: '
            f'{", ".join(missing)}; download them too')
    elif os.path.isfile(single):
      weight_map, files = None, [SINGLE]
    else:
      others = sorted(f for f in os.listdir(hf_dir)
                      if f.endswith(('.bin', '.pt', '.pth', '.h5', '.msgpack')))
      raise HFFolderError(
          f'{hf_dir} has neither {SINGLE} nor {INDEX}'
          + (f' (it has {", ".join(others)}: load and save_pretrained it '
             'with safe_serialization, the default, to get safetensors)'
             if others else ''))
    self.files = files
    self.entries: dict[str, tuple[str, dict, int]] = {}
    for f in files:
      header, start = _header(os.path.join(hf_dir, f))
      for name, entry in header.items():
        if weight_map is not None and weight_map.get(name) != f:
          where = (f'puts in {weight_map[name]}' if name in weight_map
                   else 'does not list')
          raise HFFolderError(
              f'{os.path.join(hf_dir, f)} holds {name}, which {INDEX} '
              f'{where}; download the index and the shards again')
        self.entries[name] = (f, entry, start)
    if weight_map is not None:
      lost = sorted(set(weight_map) - set(self.entries))
      if lost:
        raise HFFolderError(f'{INDEX} lists tensors no shard holds: '
                            f'{", ".join(lost[:20])}')

  def shape(self, name: str) -> tuple[int, ...]:
    return tuple(self.entries[name][1]['shape'])

  def dtype(self, name: str) -> str:
    return self.entries[name][1]['dtype']

  def read(self, name: str) -> np.ndarray:
    """Tensor `name` as float32 (one read of its bytes)."""
    f, entry, start = self.entries[name]
    begin, _ = entry['data_offsets']
    dtype = _ST_DTYPES[entry['dtype']]
    array = np.fromfile(os.path.join(self.hf_dir, f), dtype=dtype,
                        count=math.prod(entry['shape']), offset=start + begin)
    return array.reshape(entry['shape']).astype(np.float32, copy=False)


def _canonical(weights: Weights, fam: hf_table.Family,
               names: set[str]) -> dict[str, str]:
  """{table name: name in the files}: a file's name may lack one of the
  family's prefixes (a base model saved without its LM-head wrapper)."""
  out = {}
  for found in weights.entries:
    name = found
    for pattern, replacement in fam.renames:
      name = re.sub(pattern, replacement, name)
    if name not in names:
      for p in fam.prefixes:
        if p + name in names or any(re.match(r, p + name)
                                    for r in fam.dropped):
          name = p + name
          break
    out.setdefault(name, found)
  return out


def plan(hf_dir: str) -> dict:
  """Everything checked before a weight is read: config, family, kd model,
  files, tensor names, shapes and dtypes. Raises UnsupportedError,
  HFFolderError or common.MismatchError (listing every missing, unexpected
  or mis-shaped tensor)."""
  cfg = hf_config(hf_dir)
  name, kwargs, vocab = kd_config(cfg)
  fam = hf_table.family(cfg['model_type'])
  weights = Weights(hf_dir)
  kwargs = fam.for_weights(kwargs, vocab, set(weights.entries))
  tensors = fam.table(kwargs, vocab)
  check_table(tensors, abstract_params(name, kwargs, vocab))
  wanted = {t.hf: t for t in tensors}
  duplicates = fam.duplicates(kwargs)
  found = _canonical(weights, fam, set(wanted) | set(duplicates))
  problems = []
  for n, t in wanted.items():
    if n not in found:
      problems.append(f'missing: {n} {t.hf_shape}')
    elif weights.shape(found[n]) != t.hf_shape:
      problems.append(f'shape mismatch: {found[n]} is '
                      f'{weights.shape(found[n])}, the config asks for '
                      f'{t.hf_shape}')
  for n, f in found.items():
    if n in wanted or any(re.match(r, n) for r in fam.dropped):
      continue
    if n in duplicates:
      if weights.shape(f) != wanted[duplicates[n]].hf_shape:
        problems.append(f'shape mismatch: {f} {weights.shape(f)} should '
                        f'equal {duplicates[n]}')
      continue
    problems.append(f'unexpected: {f} {weights.shape(f)} (not in a '
                    f'{cfg["model_type"]} model of this config)')
  for n, f in found.items():  # Those read (a dropped buffer may be int).
    if (n in wanted or n in duplicates) and weights.dtype(f) not in _ST_DTYPES:
      problems.append(f'dtype: {f} is {weights.dtype(f)}; supported: '
                      f'{", ".join(_ST_DTYPES)}')
  if problems:
    shown = problems[:50] + ([f'... and {len(problems) - 50} more']
                             if len(problems) > 50 else [])
    raise common.MismatchError(
        f'{hf_dir}: the weights do not match its config.json '
        f'({len(problems)} problems):\n  ' + '\n  '.join(shown))
  return dict(config=cfg, family=fam, model=name, kwargs=kwargs, vocab=vocab,
              tensors=tensors, weights=weights, found=found,
              duplicates={n: d for n, d in duplicates.items() if n in found})


def read_params(p: dict, dtype: str = 'float32',
                place: Callable[[str, np.ndarray], object] | None = None,
                progress: Callable[[int, int], None] | None = None) -> dict:
  """The kd params of a `plan`, read tensor by tensor and cast to `dtype`;
  `place(path, array)` puts each where it goes (a device, a mesh) as it is
  read, so the host holds one tensor at a time beyond what it placed."""
  cast = DTYPES[dtype]
  weights, found = p['weights'], p['found']
  params: dict = {}
  tensors = p['tensors']
  for i, t in enumerate(tensors):
    for path, array in zip(t.kd, t.to_kd(weights.read(found[t.hf]))):
      node = params
      *parents, leaf = path.split('/')
      for part in parents:
        node = node.setdefault(part, {})
      array = np.ascontiguousarray(array, dtype=cast)  # One copy at most.
      node[leaf] = place(path, array) if place else array
    if progress:
      progress(i + 1, len(tensors))
  for dup, original in p['duplicates'].items():
    if not np.array_equal(weights.read(found[dup]),
                          weights.read(found[original])):
      raise common.MismatchError(
          f'{found[dup]} differs from {found[original]}, but the config '
          'ties them (tie_word_embeddings); set tie_word_embeddings to false '
          'in config.json if the head is its own')
  return params


def special_tokens(hf_dir: str, cfg: dict) -> dict:
  """bos/eos/pad token ids: config.json's, else tokenizer_config.json's
  tokens looked up in tokenizer.json (generation_config.json's last)."""
  out = {k: cfg.get(k) for k in ('bos_token_id', 'eos_token_id',
                                 'pad_token_id')}
  tok_cfg_path = os.path.join(hf_dir, 'tokenizer_config.json')
  tok_path = os.path.join(hf_dir, 'tokenizer.json')
  if os.path.isfile(tok_cfg_path) and os.path.isfile(tok_path):
    tok_cfg = _json(tok_cfg_path, '')
    tok = _json(tok_path, '')
    vocab = {a['content']: a['id'] for a in tok.get('added_tokens', [])}
    model_vocab = (tok.get('model') or {}).get('vocab')
    if isinstance(model_vocab, dict):
      vocab = {**model_vocab, **vocab}
    for kind in ('bos', 'eos', 'pad'):
      token = tok_cfg.get(f'{kind}_token')
      if isinstance(token, dict):
        token = token.get('content')
      if out[f'{kind}_token_id'] is None and token in vocab:
        out[f'{kind}_token_id'] = vocab[token]
  gen_path = os.path.join(hf_dir, 'generation_config.json')
  if os.path.isfile(gen_path):
    gen = _json(gen_path, '')
    for k in out:
      if out[k] is None and gen.get(k) is not None:
        out[k] = gen[k]
  return out


def run_config(p: dict, seq_len: int | None = None):
  """The kd run config of a converted HF LM: its model, and text data read
  with the run's own tokenizer (data.tokenizer='hf'), the vocabulary the
  model's (data.vocab_size, which may exceed the tokenizer's own)."""
  config = common.run_config(p['model'], 'kd_text', p['kwargs'])
  config.data.tokenizer = 'hf'
  config.data.vocab_size = p['vocab']
  if p['kwargs'].get('head') == 'cls':  # A fine-tuned encoder classifier.
    config.data.task = 'classify'
  if p['model'] == 'transformer_encoder':  # Its tokens are WordPiece's.
    config.data.task = ('classify' if p['kwargs'].get('head') == 'cls'
                        else 'mlm')
  max_len = p['kwargs'].get('max_len') or 512
  config.data.seq_len = seq_len or min(max_len, 2048)
  return config


def _sha256s(hf_dir: str, names: list[str]) -> dict[str, str]:
  return {n: common.sha256(os.path.join(hf_dir, n)) for n in names
          if os.path.isfile(os.path.join(hf_dir, n))}


def convert(hf_dir: str, out: str, dtype: str = 'float32',
            progress: Callable[[int, int], None] | None = None) -> dict:
  """Converts the HF folder `hf_dir` into the kd run directory `out`;
  returns its summary. Nothing is written unless everything checks."""
  if dtype not in DTYPES:
    raise ValueError(f'unknown --dtype={dtype!r}; valid: '
                     f'{", ".join(DTYPES)}')
  if os.path.exists(out):
    raise FileExistsError(f'{os.path.abspath(out)} exists; remove it or '
                          'choose another --out')
  p = plan(hf_dir)
  # Host jax arrays: orbax then saves without a copy of every tensor
  # (peak host memory about 2x the model instead of 3x).
  cpu = jax.devices('cpu')[0]
  params = read_params(p, dtype, place=lambda _, a: jax.device_put(a, cpu),
                       progress=progress)
  config = run_config(p)
  weight_files = p['weights'].files + (
      [INDEX] if os.path.isfile(os.path.join(hf_dir, INDEX)) else [])
  hashes = _sha256s(hf_dir, [CONFIG] + weight_files)
  digest = hashlib.sha256(json.dumps(hashes, sort_keys=True).encode())
  summary = {
      'steps': config.steps, 'converted': True, 'source': 'hf',
      'source_file': os.path.basename(os.path.abspath(hf_dir)),
      'source_sha256': digest.hexdigest(), 'source_files': hashes,
      'model': p['model'], 'hf_model_type': p['config']['model_type'],
      'dtype': dtype, 'parameters': int(sum(
          np.size(x) for x in jax.tree.leaves(params)))}
  extra = {n: os.path.join(hf_dir, n) for n in TOKENIZER_FILES
           if os.path.isfile(os.path.join(hf_dir, n))}
  common.write_run(out, {'params': params}, config, summary, extra_files=extra,
                   extra_json={SPECIAL_TOKENS: special_tokens(
                       hf_dir, p['config'])})
  return summary


# --describe

def format_bytes(n: float) -> str:
  for unit in ('B', 'KiB', 'MiB', 'GiB', 'TiB'):
    if n < 1024 or unit == 'TiB':
      return f'{n:,.0f} {unit}' if unit == 'B' else f'{n:,.2f} {unit}'
    n /= 1024
  raise AssertionError


def student_count(text: str, name: str, vocab: int) -> int:
  """A student's parameters from --student_params: a count ('30M', '1.2B',
  '125k', '30000000') or the kwargs as JSON of a kd model `name` (the
  teacher's kind) with the teacher's vocabulary ('{"d_model": 512,
  "num_layers": 8, ...}'), counted with jax.eval_shape."""
  s = str(text).strip()
  if s.startswith('{'):
    try:
      kwargs = json.loads(s)
      return parameter_count(name, kwargs, vocab)
    except (ValueError, TypeError) as e:
      raise ValueError(f'--student_params={text!r}: not the JSON kwargs of a '
                       f'{name} ({e})') from e
  units = {'k': 10**3, 'm': 10**6, 'b': 10**9, 'g': 10**9}
  s = s.replace(',', '').replace('_', '').lower()
  try:
    if s and s[-1] in units:
      return int(round(float(s[:-1]) * units[s[-1]]))
    return int(s)
  except ValueError as e:
    raise ValueError(f'--student_params={text!r} is not a parameter count; '
                     'e.g. 30M, 1.2B or 30000000, or the student\'s kwargs '
                     'as JSON') from e


def parameter_count(name: str, kwargs: dict, vocab: int) -> int:
  return int(sum(math.prod(x.shape) for x in
                 jax.tree.leaves(abstract_params(name, kwargs, vocab))))


def describe(hf_dir: str, student_params: str | None = None) -> str:
  """What --describe prints: the kd model and its settings, its parameter
  count (config.json and the weight files' headers where they exist:
  jax.eval_shape, nothing allocated) and memory;
  with `student_params` (see `student_count`), teacher + student memory."""
  cfg = hf_config(hf_dir)
  name, kwargs, vocab = kd_config(cfg)
  if any(os.path.isfile(os.path.join(hf_dir, f)) for f in (INDEX, SINGLE)):
    # The headers say which heads the weights hold (a fine-tuned classifier
    # without the masked-LM head); config.json alone does not.
    kwargs = hf_table.family(cfg['model_type']).for_weights(
        kwargs, vocab, set(Weights(hf_dir).entries))
  n = parameter_count(name, kwargs, vocab)
  lines = [f'{hf_dir}: {cfg["model_type"]} -> kd model {name}',
           f'  vocab_size: {vocab}']
  lines += [f'  {k}: {v!r}' for k, v in sorted(kwargs.items())]
  lines += [f'parameters: {n:,}',
            f'memory: {format_bytes(4 * n)} at float32, {format_bytes(2 * n)} at bfloat16']
  if student_params:
    s = student_count(student_params, name, vocab)
    lines += [
        f'student: {s:,} parameters',
        f'teacher + student weights: {format_bytes(4 * (n + s))} at float32, '
        f'{format_bytes(2 * (n + s))} at bfloat16',
        f'training (teacher frozen; student float32 weights, gradients, '
        f'Adam moments = 16 B/param): {format_bytes(4 * n + 16 * s)} with a '
        f'float32 teacher, {format_bytes(2 * n + 16 * s)} with a bfloat16 one']
  return '\n'.join(lines)


# Export: kd -> HF.

def default_model_type(name: str, kwargs: dict) -> str:
  """The HF family a kd model exports as: gpt2 where its options are
  GPT-2's, the family whose options it uses, else llama."""
  if name != hf_decoders.MODEL:
    types = [t for t, fam in FAMILIES.items()
             if fam.kd_model == name and fam.default_for(kwargs)]
    if not types:
      raise UnsupportedError(
          f'kd model {name!r} has no HF family; supported: '
          f'{", ".join(sorted({f.kd_model for f in FAMILIES.values()}))}')
    return types[0]
  kw = hf_decoders.complete(kwargs)
  if kw['norm'] == 'layer' or kw['positions'] == 'learned':
    return 'gpt2'
  if kw['post_norms']:
    return 'gemma2'
  if kw['qk_norm']:
    return 'qwen3'
  if kw['qkv_bias'] and not kw['out_bias']:
    return 'qwen2'
  if kw['sliding_window']:
    return 'mistral'
  return 'llama'


def to_hf_config(name: str, kwargs: dict, vocab_size: int,
                 model_type: str | None = None) -> dict:
  """The HF config.json dict of kd model `name` with `kwargs` (the inverse
  of `kd_config`; `model_type` default `default_model_type`). An option the
  family cannot express raises UnsupportedError naming it."""
  model_type = model_type or default_model_type(name, kwargs)
  fam = hf_table.family(model_type)
  cfg = fam.hf_config(dict(kwargs), vocab_size)
  cfg.setdefault('model_type', model_type)
  cfg.setdefault('architectures', [fam.architecture])
  back_name, back, back_vocab = fam.kd_config(cfg)
  if name == hf_decoders.MODEL:
    want, got = hf_decoders.complete(kwargs), hf_decoders.complete(back)
  else:
    want, got = fam.complete(kwargs), fam.complete(back)
  differ = sorted(k for k in set(want) | set(got)
                  if k not in ('dtype', 'return_attention')
                  and want.get(k) != got.get(k))
  if back_name != name or back_vocab != vocab_size or differ:
    raise UnsupportedError(
        f'kd model {name} has options an HF {model_type} model cannot '
        'express: ' + ', '.join(f'{k}={want.get(k)!r}' for k in differ)
        + (f' (HF {model_type} has {", ".join(f"{k}={got.get(k)!r}" for k in differ)})'
           if differ else ''))
  return cfg


def hf_tensors(name: str, kwargs: dict, params, vocab_size: int | None = None,
               model_type: str | None = None
               ) -> Iterator[tuple[str, np.ndarray]]:
  """(HF tensor name, float32 array) of kd `params`, one at a time, by
  the family's table (the inverse of import); `vocab_size` defaults to the
  embedding's rows."""
  model_type = model_type or default_model_type(name, kwargs)
  flat = _flat(dict(params))
  if vocab_size is None:
    vocab_size = int(np.shape(flat['embed/embedding'])[0])
  for t in hf_table.family(model_type).table(kwargs, vocab_size):
    arrays = [np.asarray(flat[p], np.float32) for p in t.kd]
    yield t.hf, np.ascontiguousarray(t.to_hf(*arrays))
