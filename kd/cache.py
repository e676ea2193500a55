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
terms then read it as `topk_kl_cached`.
"""
import hashlib
import json
import os

import jax
import numpy as np

from kd import data
from kd import files
from kd import runs

FORMAT = 1


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


TOPK_OUTPUTS = ('topk_values', 'topk_indices')


def tokenizer_digest(tok) -> str:
  """sha256 of a BPE tokenizer's JSON; 'byte' for the byte tokenizer."""
  if not hasattr(tok, 'to_str'):
    return 'byte'
  return hashlib.sha256(tok.to_str().encode()).hexdigest()


def lm_provenance(config, teacher_step: int, teacher_vars, dtype: str,
                  tok) -> dict:
  """What a language model's top-k cache must record: the teacher, and the
  rows of the student's training stream (`kd.data.text.training_rows`: the
  corpus, its tokenizer, seq_len and the seed of the fixed packing) and k."""
  d = config.data
  meta = provenance(config, teacher_step, teacher_vars, dtype)
  meta['data'] = {
      'name': str(data.text.source(d)), 'split': 'train',
      'data_dir': os.path.abspath(d.data_dir) if d.data_dir else '',
      'tokenizer': d.tokenizer, 'vocab_size': tok.vocab_size,
      'tokenizer_sha256': tokenizer_digest(tok), 'seq_len': d.seq_len,
      'seed': config.seed, 'packing': 'fixed (epoch 0 order)',
      'rows_read_by': {'steps': config.steps, 'batch_size': config.batch_size}}
  meta['topk'] = config.distill.teacher.cache_topk
  return meta


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
               shard_rows: int = 4096) -> None:
  """Writes `teacher_fn(tokens) -> (values, indices)`, the teacher's top-k
  logits [B, T, k] and their tokens, for the rows `numbers` (sorted) of
  `rows` [N, T + 1] (inputs rows[:, :-1]), as the shards of `TOPK_OUTPUTS`
  (float32 values, int32 indices; shard row i is row numbers[i]) and
  `row_numbers.npy`."""
  n = len(numbers)
  os.makedirs(cache_dir, exist_ok=True)
  np.save(os.path.join(cache_dir, 'row_numbers.npy'), np.asarray(numbers))
  writers = {}
  for start in range(0, n, batch_size):
    tokens = np.asarray(rows[numbers[start:start + batch_size], :-1],
                        np.int32)
    k = len(tokens)
    if k < batch_size:  # One compiled shape for every batch.
      tokens = np.concatenate(
          [tokens, np.zeros((batch_size - k, *tokens.shape[1:]), np.int32)])
    values, indices = teacher_fn(tokens)
    _write(writers, cache_dir, n, shard_rows, np.arange(start, start + k),
           {'topk_values': np.asarray(values[:k], np.float32),
            'topk_indices': np.asarray(indices[:k], np.int32)})
    print(f'[teacher cache] {start + k}/{n} rows', end='\r', flush=True)
  print()
  _finish(cache_dir, meta, writers, n, shard_rows)


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
