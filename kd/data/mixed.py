"""A mixed text corpus: config.data.name 'kd_pystdlib+kd_bbcnews' (built-in
corpora joined by '+'), each packed row of one source, so a per-row choice
(routing to a teacher, `kd.teachers`) sees one source per row.

Every source packs as `kd.data.text` packs one corpus (bos, tokens, eos
per document; rows of seq_len + 1 tokens overlapping by one); the rows of
all sources are then visited in one order, and a batch carries, besides
`kd.data.text`'s tokens, mask and bytes,

  source [B] int32: the row's source, an index into the name's parts.

An epoch's document orders (one per source, in order) and row order are
drawn from (seed, epoch), so resuming at `start_step` yields what an
uninterrupted iterator yields from there.
"""
import numpy as np

from kd.data import text
from kd.data.input_pipeline import _process_index_count


def is_mixed(name) -> bool:
  return isinstance(name, str) and '+' in name


def parts(name: str) -> tuple[str, ...]:
  """The sources of `name`, a row's `source` its index here."""
  found = tuple(p.strip() for p in name.split('+'))
  for p in found:
    if p.split('/')[0] == 'kd_text' or not text.is_text(p):
      raise ValueError(
          f'data.name={name!r}: {p!r} is not a built-in text corpus; mix '
          f'those of {", ".join(n for n in text.TEXT if n != "kd_text")} '
          "(or their '/tiny'), joined by '+'")
  if len(set(found)) != len(found):
    raise ValueError(f'data.name={name!r} names a source twice; name each '
                     'once')
  return found


def _epoch_rows(docs, tok, seq_len: int, seed: int, epoch: int):
  """([rows, seq_len + 1] tokens, [rows] source ids, row order) of one
  epoch: each source's documents packed in an order drawn from (seed,
  epoch), source after source, then one order over all rows."""
  rng = np.random.default_rng([seed, epoch])
  views = [text.windows(text.pack([d[i] for i in rng.permutation(len(d))],
                                  tok), seq_len) for d in docs]
  source = np.repeat(np.arange(len(views), dtype=np.int32),
                     [len(v) for v in views])
  return np.concatenate(views), source, rng.permutation(len(source))


def packed_batches(name: str, *, batch_size: int, seq_len: int, seed: int,
                   tok=None, data_dir: str | None = None,
                   split: str = 'train', start_step: int = 0,
                   process_index: int | None = None,
                   process_count: int | None = None):
  """Endless iterator of this process's `batch_size` rows (with `source`),
  as `kd.data.text.packed_batches`: process i keeps rows i*B..(i+1)*B of
  every global batch; rows left over from the last whole global batch of
  an epoch are skipped."""
  tok = tok or text.ByteTokenizer()
  index, count = _process_index_count(process_index, process_count)
  docs = [text._encoded(p, split, tok, data_dir) for p in parts(name)]  # pylint: disable=protected-access
  rows = sum(text._num_rows(d, seq_len) for d in docs)  # pylint: disable=protected-access
  per_epoch = rows // (batch_size * count)
  if not per_epoch:
    raise ValueError(
        f'{name} {split} packs into {rows} rows of {seq_len} tokens, fewer '
        f'than one global batch of {batch_size * count}: lower batch_size or '
        'seq_len')
  epoch, step = None, start_step
  while True:
    e, b = divmod(step, per_epoch)
    if e != epoch:
      epoch = e
      view, source, order = _epoch_rows(docs, tok, seq_len, seed, epoch)
    first = (b * count + index) * batch_size
    picked = order[first:first + batch_size]
    yield {**text._batch(view[picked], tok), 'source': source[picked]}  # pylint: disable=protected-access
    step += 1


def eval_batches(name: str, *, batch_size: int, seq_len: int, tok=None,
                 split: str = 'test', data_dir: str | None = None,
                 process_index: int | None = None,
                 process_count: int | None = None):
  """Every token of every source's `split` as a target exactly once
  (`kd.data.text.eval_batches` per source, in order), each batch of one
  source, with `source`."""
  for j, p in enumerate(parts(name)):
    for batch in text.eval_batches(
        p, batch_size=batch_size, seq_len=seq_len, tok=tok, split=split,
        data_dir=data_dir, process_index=process_index,
        process_count=process_count):
      yield {**batch, 'source': np.full(len(batch['tokens']), j, np.int32)}
