"""Reading sequence-level KD data (`kd.seqkd` writes it): `tokens.npy`
[N, seq_len + 1], `mask.npy` [N, seq_len] and `meta.json`, written last."""
import json
import os

import numpy as np

from kd import files
from kd.data import text


def read_meta(out_dir: str) -> dict | None:
  path = os.path.join(out_dir, 'meta.json')
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def generated_batches(out_dir: str, *, batch_size: int, seed: int, tok,
                      start_step: int = 0, process_index: int | None = None,
                      process_count: int | None = None):
  """Endless iterator of model batches (`kd.data.text.model_batch` form)
  of the stored rows, the contract of `kd.data.text.packed_batches`: every
  epoch visits the rows in an order drawn from (seed, epoch), leftover rows
  of the last whole global batch skipped; process i keeps rows
  i*B..(i+1)*B of every global batch; starting at `start_step` yields what
  an uninterrupted iterator yields from its `start_step`-th batch on."""
  index, count = text._process_index_count(process_index, process_count)  # pylint: disable=protected-access
  meta = read_meta(out_dir)
  if meta is None:
    raise FileNotFoundError(f'{out_dir} holds no finished sequence-level KD '
                            'data (no meta.json): build it (kd.seqkd.build)')
  # Checked here, at the call (before the first step), not at the first batch.
  fix = f'delete {out_dir} and rerun: it is generated again'
  rows, seq_len = meta.get('num_rows'), meta.get('sampling', {}).get(
      'seq_len')
  tokens = files.load_array(os.path.join(out_dir, 'tokens.npy'),
                            (rows, seq_len and seq_len + 1), fix)
  mask = files.load_array(os.path.join(out_dir, 'mask.npy'),
                          (len(tokens), tokens.shape[1] - 1), fix)
  rows = len(tokens)
  per_epoch = rows // (batch_size * count)
  if not per_epoch:
    raise ValueError(f'{out_dir} holds {rows} rows, fewer than one global '
                     f'batch of {batch_size * count}: lower batch_size or '
                     'generate more (distill.seqkd.num_prompts)')
  return _rows_in_order(tokens, mask, tok, per_epoch, batch_size, count,
                        index, seed, start_step)


def _rows_in_order(tokens, mask, tok, per_epoch, batch_size, count, index,
                   seed, start_step):
  rows = len(tokens)
  epoch, order, step = None, None, start_step
  while True:
    e, b = divmod(step, per_epoch)
    if e != epoch:
      epoch, order = e, np.random.default_rng([seed, e]).permutation(rows)
    first = (b * count + index) * batch_size
    take = order[first:first + batch_size]
    t, m = np.asarray(tokens[take], np.int32), np.asarray(mask[take])
    labels = t[:, 1:]
    yield {'image': t[:, :-1], 'label': labels, 'mask': m,
           'bytes': np.where(m > 0, text.target_bytes(tok, t[:, :-1], labels),
                             0).astype(np.int32)}
    step += 1
