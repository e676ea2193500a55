"""Teacher-output cache: the teacher's logits and feature taps for every
training example, computed once, then read instead of running the teacher.

Layout of a cache directory: `meta.json` (what produced it) and, per output,
row shards `<output>.<k>.npy` of `shard_rows` examples each, row = the
example's `index` in the split. A run memory-maps the shards and gathers the
rows of each batch on the host. Only valid for inputs that are the same
every epoch (no augmentation, no mixup): consistent teaching keeps the
teacher live.

A language model's cache (`build_topk`) holds the teacher's top-k logits
and their tokens (`TOPK_OUTPUTS`, [T, k] per row) for the rows of the
student's training stream packed once (`kd.data.text.training_rows`: every
epoch re-packs the documents otherwise, so no fixed set of rows would
cover what the student sees) that the run reads in its steps
(`kd.data.text.rows_read`: a short run on a large corpus reads a small
part), stored in the order of their numbers there (`row_numbers.npy`),
which a run with the cache trains on (`packed_batches(...,
fixed_packing=True)`, only the row order changes per epoch). Its `topk_kl`
terms then read it as `topk_kl_cached`, and the losses on a cached top k
(`kd.names.CACHED_TOPK_LOSSES`) read it as it is.

Per token it holds the teacher's top-k log-probabilities, their tokens and
the log of the remaining (tail) mass (`topk_log_probs`): as float32 /
int32 arrays (`TOPK_OUTPUTS`, quantize 'none'), or as one `kd.topk_codec`
record (`topk_records`, quantize 'q8' ... 'q4'), decoded as batches are
read (`TopkCache`). Every process of a multi-host run builds the shards
j = process_index (mod process_count), each written under a temporary name
and renamed when whole, so an interrupted build resumes at its first
missing shard; process 0 then writes `row_numbers.npy` and `meta.json`,
whose `bytes_per_token` and `bytes_per_stored_logit` give the size.
"""
import hashlib
import io
import json
import math
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from kd import data
from kd import files
from kd import logger
from kd import runs
from kd import topk_codec

FORMAT = 1
# 2: log-probabilities and the log tail (1 held the top-k logits only).
TOPK_FORMAT = 2


class CacheMismatchError(ValueError):
  pass


def params_digest(variables) -> str:
  """sha256 over the teacher's variables (names, shapes, bytes)."""
  h = hashlib.sha256()
  for path, leaf in sorted(
      (jax.tree_util.keystr(p), np.asarray(x))
      for p, x in jax.tree_util.tree_leaves_with_path(variables)):
    h.update(path.encode())
    h.update(str(leaf.shape).encode())
    h.update(np.ascontiguousarray(leaf).tobytes())
  return h.hexdigest()


def provenance(config, teacher_step: int, teacher_vars, dtype: str) -> dict:
  """What a cache for `config`'s teacher and training data must record."""
  t, d = config.distill.teacher, config.data
  mine = data.files_of(config)  # Your images: their content, not only where.
  # Through JSON, as a stored one is read back (tuples become lists).
  return json.loads(json.dumps({
      'format': FORMAT,
      'teacher': {'workdir': os.path.abspath(t.workdir), 'step': teacher_step,
                  'model': t.model, 'kwargs': t.kwargs.to_dict(),
                  'dtype': dtype, 'params_sha256': params_digest(teacher_vars)},
      'data': {'name': d.name, 'split': 'train',
               'data_dir': os.path.abspath(d.data_dir) if d.data_dir else '',
               'image_size': d.image_size, 'preprocessing': 'eval (no augment)',
               **({'files_sha256': mine.sha256} if mine else {})},
  }))


TOPK_OUTPUTS = ('topk_values', 'topk_indices', 'topk_log_tail')
RECORDS = 'topk_records'  # A compressed cache's one output.


def topk_log_probs(logits, k: int):
  """(l [..., k], i [..., k], log t [...]): the k largest log-probabilities
  of logits [..., V], their tokens, and the log tail mass log(1 - sum_j
  exp(l_j)), as a log-sum-exp over the other tokens (1 - sum cancels),
  kept >= -100 (none left when k = V)."""
  z = logits.astype(jnp.float32)
  lse = jax.nn.logsumexp(z, -1, keepdims=True)
  values, indices = jax.lax.top_k(z, k)
  rest = jnp.put_along_axis(z, indices, -jnp.inf, -1, inplace=False)
  log_tail = jax.nn.logsumexp(rest, -1) - lse[..., 0]
  return values - lse, indices, jnp.maximum(log_tail, -100.0)


def tokenizer_digest(tok) -> str:
  """sha256 of a BPE tokenizer's JSON; 'byte' for the byte tokenizer."""
  if not hasattr(tok, 'to_str'):
    return 'byte'
  return hashlib.sha256(tok.to_str().encode()).hexdigest()


def lm_provenance(config, teacher_step: int, teacher_vars, dtype: str,
                  tok) -> dict:
  """What a language model's top-k cache must record: the teacher, and the
  rows of the student's training stream (`kd.data.text.training_rows`: the
  corpus, its tokenizer, seq_len and the seed of the fixed packing), k,
  its storage (`quantize`) and the vocabulary size."""
  d, t = config.data, config.distill.teacher
  meta = provenance(config, teacher_step, teacher_vars, dtype)
  meta['format'] = TOPK_FORMAT
  meta['data'] = {
      'name': str(data.text.source(d)), 'split': 'train',
      'data_dir': os.path.abspath(d.data_dir) if d.data_dir else '',
      'tokenizer': d.tokenizer, 'vocab_size': tok.vocab_size,
      'tokenizer_sha256': tokenizer_digest(tok), 'seq_len': d.seq_len,
      'seed': config.seed, 'packing': 'fixed (epoch 0 order)',
      'rows_read_by': {'steps': config.steps, 'batch_size': config.batch_size}}
  meta['topk'] = t.cache_topk
  meta['quantize'] = t.get('cache_quantize', 'none')
  meta['vocab_size'] = tok.vocab_size
  return meta


def topk_sizes(quantize: str, vocab_size: int, k: int) -> dict:
  """Bytes per token and per stored logit of a top-k cache: float32 value,
  int32 token and the float32 tail (8 k + 4), or a codec record."""
  per_token = (8 * k + 4 if quantize == 'none' else
               topk_codec.record_bytes(vocab_size, k, _bits(quantize)))
  return {'bytes_per_token': per_token,
          'bytes_per_stored_logit': round(per_token / k, 4)}


def _bits(quantize: str) -> int:
  return int(quantize[1:])  # 'q8' -> 8.


def check_usable(config) -> None:
  """A cache holds one view per example: refuse configs that draw others."""
  if config.data.augment and data.run_spec(config).augment != 'none':
    raise ValueError(
        'distill.teacher.cache stores one teacher output per example, but '
        f'data.augment=True gives {config.data.name!r} new views every '
        'epoch: set data.augment=False, or keep the teacher live (cache=False)')
  if config.mixup_alpha:
    raise ValueError(
        'distill.teacher.cache cannot serve mixup (consistent teaching needs '
        'the teacher on every mixed batch): set distill.teacher.cache=False')


def build(cache_dir: str, meta: dict, teacher_fn, config, outputs,
          batch_size: int = 512, shard_rows: int = 65_536) -> None:
  """Runs `teacher_fn(images) -> {name: array}` over the whole training split
  and writes the shards of `outputs` and `meta.json` (last, so a partly
  written cache is never taken for a finished one)."""
  d = config.data
  n = data.num_examples(d.name, 'train', d.data_dir or None, d.download,
                        d.image_size or None)
  writers, done = {}, 0
  for batch in data.indexed_batches(d.name, 'train', batch_size,
                                    d.data_dir or None, d.image_size or None,
                                    d.download):
    k = len(batch['index'])
    images = batch['image']
    if k < batch_size:  # One compiled shape for every batch.
      images = np.concatenate(
          [images, np.zeros((batch_size - k, *images.shape[1:]), images.dtype)])
    out = teacher_fn(images)
    _write(writers, cache_dir, n, shard_rows, batch['index'],
           {name: np.asarray(out[name][:k], np.float32) for name in outputs})
    done += k
    print(f'[teacher cache] {done}/{n} examples', end='\r', flush=True)
  print()
  _finish(cache_dir, meta, writers, n, shard_rows)


def build_topk(cache_dir: str, meta: dict, teacher_fn, rows: np.ndarray,
               numbers: np.ndarray, batch_size: int = 32,
               shard_rows: int = 4096, progress_every: float = 30.0) -> None:
  """Writes `teacher_fn(tokens) -> topk_log_probs(...)` of the rows
  `numbers` (sorted) of `rows` [N, T + 1] (inputs rows[:, :-1]) as the
  shards of `TOPK_OUTPUTS`, or of `RECORDS` if `meta['quantize']` says so
  (shard row i is row numbers[i]): this process's shards (j = process_index
  mod process_count), each computed whole unless already there (a rerun
  resumes), then, on process 0 once every process is done,
  `row_numbers.npy` and `meta.json` (last, so a partly written cache is
  never taken for a finished one). Prints rows, rows/s and the ETA every
  `progress_every` seconds."""
  n, k, quantize = len(numbers), meta['topk'], meta['quantize']
  os.makedirs(cache_dir, exist_ok=True)
  _check_unfinished(cache_dir, meta)
  me, count = jax.process_index(), jax.process_count()
  mine = range(me, -(-n // shard_rows), count)
  names = TOPK_OUTPUTS if quantize == 'none' else (RECORDS,)
  path = lambda name, j: os.path.join(cache_dir, f'{name}.{j}.npy')
  todo = [j for j in mine
          if not all(os.path.exists(path(name, j)) for name in names)]
  size = lambda j: min(shard_rows, n - j * shard_rows)
  progress = _Progress(sum(size(j) for j in mine),
                       sum(size(j) for j in mine if j not in todo),
                       progress_every)
  for j in todo:
    start, writers = j * shard_rows, {}
    for at in range(start, start + size(j), batch_size):
      tokens = np.asarray(rows[numbers[at:min(at + batch_size,
                                             start + size(j))], :-1],
                          np.int32)
      got = len(tokens)
      if got < batch_size:  # One compiled shape for every batch.
        tokens = np.concatenate(
            [tokens, np.zeros((batch_size - got, *tokens.shape[1:]),
                              np.int32)])
      out = _stored(quantize, meta['vocab_size'], k,
                    [np.asarray(x)[:got] for x in teacher_fn(tokens)])
      for name, value in out.items():
        if name not in writers:  # In place, never a whole shard in memory.
          writers[name] = np.lib.format.open_memmap(
              path(name, j) + '.partial', mode='w+', dtype=value.dtype,
              shape=(size(j), *value.shape[1:]))
        writers[name][at - start:at - start + got] = value
      progress.add(got)
    for name in list(writers):  # Whole: renamed to its final name.
      writers.pop(name).flush()
      os.replace(path(name, j) + '.partial', path(name, j))
  _barrier('teacher cache shards written')
  if me == 0:
    files.write_bytes(os.path.join(cache_dir, 'row_numbers.npy'),
                      _npy(np.asarray(numbers)))
    shapes = {name: list(np.load(path(name, 0), mmap_mode='r').shape[1:])
              for name in names}
    meta = dict(meta, num_examples=n, shard_rows=shard_rows, outputs=shapes,
                **topk_sizes(quantize, meta['vocab_size'], k))
    files.write_bytes(os.path.join(cache_dir, 'meta.json'),
                      json.dumps(meta, indent=2, sort_keys=True))
    os.remove(os.path.join(cache_dir, _BUILDING))


def _stored(quantize, vocab_size, k, out) -> dict:
  """{output: array} a shard stores of `topk_log_probs`'s outputs."""
  values, indices, log_tail = out
  if quantize == 'none':
    return dict(zip(TOPK_OUTPUTS, (np.asarray(values, np.float32),
                                   np.asarray(indices, np.int32),
                                   np.asarray(log_tail, np.float32))))
  return {RECORDS: topk_codec.encode(values, indices, log_tail, vocab_size,
                                     _bits(quantize))}


_BUILDING = 'building.json'  # The provenance of a build under way.


def _check_unfinished(cache_dir, meta) -> None:
  """Records the build's provenance, or refuses to resume one that was
  started for something else."""
  path = os.path.join(cache_dir, _BUILDING)
  if not os.path.exists(path):
    files.write_bytes(path, json.dumps(meta, indent=2, sort_keys=True))
    return
  with open(path) as f:
    found = json.load(f)
  check_topk_settings(path, meta)
  problems = runs.differences(meta, found, 'unfinished build')
  if problems:
    raise CacheMismatchError(
        f'teacher cache {cache_dir} holds an unfinished build for something '
        'else:\n  ' + '\n  '.join(problems) + f'\nDelete {cache_dir} or set '
        'distill.teacher.cache_dir to another folder.')


def _npy(array) -> bytes:
  """The bytes of `array`'s .npy file (written atomically by the caller)."""
  buf = io.BytesIO()
  np.save(buf, array)
  return buf.getvalue()


def _barrier(name: str) -> None:
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    multihost_utils.sync_global_devices(name)


class _Progress:
  """Prints '[teacher cache] rows done/total, rows/s, ETA' at most every
  `every` seconds and when done; the rate counts this session's rows."""

  def __init__(self, total: int, done: int, every: float = 30.0):
    self.total, self.done, self.every = total, done, every
    self.start = self.last = time.monotonic()
    self.session = 0
    if done:
      print(f'[teacher cache] resuming: {done}/{total} rows already built',
            flush=True)

  def add(self, rows: int) -> None:
    self.done += rows
    self.session += rows
    now = time.monotonic()
    if now - self.last < self.every and self.done < self.total:
      return
    self.last = now
    rate = self.session / max(now - self.start, 1e-9)
    eta = (self.total - self.done) / rate if rate else math.inf
    print(f'[teacher cache] {self.done}/{self.total} rows, {rate:.1f} rows/s,'
          f' ETA {logger.duration(eta)}', flush=True)


def _write(writers, cache_dir, n, shard_rows, index, values) -> None:
  """Puts `values` {output: [len(index), ...]} at rows `index` of the
  output's shards, opened (in place, never all in memory) on first use."""
  os.makedirs(cache_dir, exist_ok=True)
  shard, row = np.divmod(index, shard_rows)
  for name, value in values.items():
    if name not in writers:
      writers[name] = [np.lib.format.open_memmap(
          os.path.join(cache_dir, f'{name}.{j}.npy'), mode='w+',
          dtype=value.dtype,
          shape=(min(shard_rows, n - start), *value.shape[1:]))
                       for j, start in enumerate(range(0, n, shard_rows))]
    for j in np.unique(shard):
      writers[name][j][row[shard == j]] = value[shard == j]


def _finish(cache_dir, meta, writers, n, shard_rows) -> None:
  """Flushes the shards, then writes `meta.json` (last, so a partly written
  cache is never taken for a finished one)."""
  for memmaps in writers.values():
    for m in memmaps:
      m.flush()
  meta = dict(meta, num_examples=n, shard_rows=shard_rows,
              outputs={k: list(m[0].shape[1:]) for k, m in writers.items()})
  files.write_bytes(os.path.join(cache_dir, 'meta.json'),
                    json.dumps(meta, indent=2, sort_keys=True))


class TeacherCache:
  """A finished cache, checked against the run that wants it."""

  def __init__(self, cache_dir: str, meta: dict, outputs):
    path = os.path.join(cache_dir, 'meta.json')
    with open(path) as f:
      found = json.load(f)
    problems = runs.differences(meta, {k: found.get(k) for k in meta}, 'cache')
    missing = sorted(set(outputs) - set(found.get('outputs', {})))
    if missing:
      problems.append(f'outputs: cache lacks {missing}')
    if problems:
      raise CacheMismatchError(
          f'teacher cache {cache_dir} was made for something else:\n  ' +
          '\n  '.join(problems) + '\nDelete it (it is rebuilt) or set '
          'distill.teacher.cache_dir to another folder.')
    self.rows = found['shard_rows']
    self.num_examples = n = found['num_examples']
    fix = f'delete {cache_dir} (it is rebuilt on the next run)'
    numbers = os.path.join(cache_dir, 'row_numbers.npy')
    # Present when the cache holds only some rows (`build_topk`).
    self.numbers = (np.asarray(files.load_array(numbers, (n,), fix))
                    if os.path.exists(numbers) else None)
    # Every shard checked against meta.json before the first step.
    self.shards = {
        name: [files.load_array(
            os.path.join(cache_dir, f'{name}.{k}.npy'),
            (min(self.rows, n - start), *found['outputs'][name]), fix)
               for k, start in enumerate(range(0, n, self.rows))]
        for name in outputs}

  def lookup(self, indices) -> dict:
    """{output: [len(indices), ...]} rows of the given examples."""
    indices = np.asarray(indices)
    if self.numbers is not None:
      at = np.minimum(np.searchsorted(self.numbers, indices),
                      len(self.numbers) - 1)
      missing = indices[self.numbers[at] != indices]
      if len(missing):
        raise CacheMismatchError(
            f'the teacher cache holds the {len(self.numbers)} rows its run '
            f'reads (meta.json: rows_read_by), not rows '
            f'{missing[:5].tolist()}: a run reading others needs a cache of '
            'its own (distill.teacher.cache_dir)')
      indices = at
    shard, row = np.divmod(indices, self.rows)
    out = {}
    for name, shards in self.shards.items():
      value = np.empty((len(indices), *shards[0].shape[1:]), shards[0].dtype)
      for k in np.unique(shard):
        sel = shard == k
        value[sel] = shards[k][row[sel]]
      out[name] = value
    return out


class TopkCache:
  """A language model's finished top-k cache, checked against the run that
  wants it (its k, storage and vocabulary first: `check_topk_settings`),
  read as `TOPK_OUTPUTS` (records decoded per batch)."""

  def __init__(self, cache_dir: str, meta: dict):
    self.k, self.quantize, self.vocab_size = (meta['topk'], meta['quantize'],
                                              meta['vocab_size'])
    path = os.path.join(cache_dir, 'meta.json')
    check_topk_settings(path, meta)
    self.stored = TeacherCache(cache_dir, meta, TOPK_OUTPUTS if
                               self.quantize == 'none' else (RECORDS,))
    self.numbers, self.num_examples = (self.stored.numbers,
                                       self.stored.num_examples)
    with open(path) as f:
      found = json.load(f)
    self.sizes = {key: found[key] for key in ('bytes_per_token',
                                              'bytes_per_stored_logit')}

  def lookup(self, indices) -> dict:
    """{output: [len(indices), T, ...]} of `TOPK_OUTPUTS`."""
    out = self.stored.lookup(indices)
    if self.quantize == 'none':
      return out
    return dict(zip(TOPK_OUTPUTS, topk_codec.decode(
        out[RECORDS], self.vocab_size, self.k, _bits(self.quantize))))


# What a top-k cache was built with, and how a run reads it as it is.
_SETTINGS = (('topk', "distill.teacher.cache_topk={!r} (and its terms' k)"),
             ('quantize', 'distill.teacher.cache_quantize={!r}'),
             ('vocab_size', 'the tokenizer of {!r} tokens it was built for'))


def check_topk_settings(path: str, meta: dict) -> None:
  """Raises CacheMismatchError, one line naming both sides and the fix, if
  the top-k cache described by `path` (its meta.json, or the provenance of
  its unfinished build) holds another k, storage or vocabulary than
  `meta`'s run needs (a cache of another format is left to the full
  comparison)."""
  with open(path) as f:
    found = json.load(f)
  if found.get('format') != meta['format']:
    return
  problems = [(key, found.get(key), meta[key], how) for key, how in _SETTINGS
              if key in meta and found.get(key) != meta[key]]
  if problems:
    cache_dir = os.path.dirname(path)
    raise CacheMismatchError(
        f'teacher cache {cache_dir}: ' + '; '.join(
            f'{key}: cache has {have!r}, this run needs {want!r}'
            for key, have, want, _ in problems) + ': read it as it is with ' +
        ' and '.join(how.format(have) for _, have, _, how in problems) +
        f', or delete {cache_dir} (it is rebuilt) or set '
        'distill.teacher.cache_dir to another folder')


def preflight_topk(config) -> None:
  """Before any work (a pipeline's earlier stages included): a text run's
  top-k cache at an explicit `distill.teacher.cache_dir` that already holds
  another k, storage or (byte/BPE) vocabulary is refused as
  `check_topk_settings` refuses it when the run opens it (several teachers'
  caches: each of cache_dir/<k>)."""
  t, d = config.distill.teacher, config.data
  if not (t.cache and t.get('cache_topk') and t.get('cache_dir')):
    return
  several = [x for x in config.distill.get('teachers', '').split(',')
             if x.strip()]
  meta = {'format': TOPK_FORMAT, 'topk': t.cache_topk,
          'quantize': t.get('cache_quantize', 'none')}
  if d.tokenizer in ('byte', 'bpe'):
    meta['vocab_size'] = (data.text.tokenizer('byte').vocab_size
                          if d.tokenizer == 'byte' else d.vocab_size)
  for cache_dir in ([os.path.join(t.cache_dir, str(k))
                     for k in range(len(several))] or [t.cache_dir]):
    path = os.path.join(cache_dir, 'meta.json')
    if os.path.exists(path):
      check_topk_settings(path, meta)


def open_or_build_topk(cache_dir: str, meta: dict, build_fn) -> TopkCache:
  """The top-k cache in `cache_dir`, built first if it has none (every
  process runs `build_fn()`, `build_topk` over its own shards)."""
  if not os.path.exists(os.path.join(cache_dir, 'meta.json')):
    build_fn()
    _barrier('teacher cache built')
  return TopkCache(cache_dir, meta)


def open_or_build(cache_dir: str, meta: dict, teacher_fn, config,
                  outputs, build_fn=None) -> TeacherCache:
  """The cache in `cache_dir`, built first if it has none (process 0
  builds it with `build_fn()`, default `build`; the others wait)."""
  if not os.path.exists(os.path.join(cache_dir, 'meta.json')):
    if jax.process_index() == 0:
      if build_fn is None:
        build(cache_dir, meta, teacher_fn, config, outputs)
      else:
        build_fn()
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
      multihost_utils.sync_global_devices('teacher cache built')
  return TeacherCache(cache_dir, meta, outputs)
