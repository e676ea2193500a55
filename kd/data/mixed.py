"""A mixed text corpus: config.data.name 'kd_pystdlib+kd_bbcnews' (built-in
corpora joined by '+'), or your files (data.name='kd_text') with a
`data.source_field` naming each document's source (one source per value,
`kd.data.corpus.source_files`), each packed row of one source, so a
per-row choice (routing to a teacher, `kd.teachers`) sees one source per
row. The functions here take the name, or the sources themselves
(`sources`).

Every source packs as `kd.data.text` packs one corpus (bos, tokens, eos
per document; rows of seq_len + 1 tokens overlapping by one); the rows of
all sources are then visited in one order, and a batch carries, besides
`kd.data.text`'s tokens, mask and bytes,

  source [B] int32: the row's source, an index into the name's parts
      (`labels`).

An epoch's document orders (one per source, in order) and row order are
drawn from (seed, epoch), so resuming at `start_step` yields what an
uninterrupted iterator yields from there.
"""
import numpy as np

from kd.data import align
from kd.data import corpus
from kd.data import paired
from kd.data import text
from kd.data.input_pipeline import _process_index_count


def is_mixed(name) -> bool:
  return isinstance(name, str) and '+' in name


def is_mixed_data(d) -> bool:
  """Whether config.data `d` is a mixed corpus: built-in corpora joined by
  '+', or your files with a `source_field`."""
  return is_mixed(d.name) or (d.name == 'kd_text'
                              and bool(d.get('source_field')))


_VALUES = {}  # (files' sha256, field) -> their sources: read once.


def labels(d) -> tuple[str, ...]:
  """The source names of config.data `d` (a mixed corpus): the built-in
  corpora of its name, or the sorted values of your files' `source_field`;
  a row's `source` is its index here."""
  if d.name != 'kd_text':
    return parts(d.name)
  files = text.source(d)
  key = (files.sha256, d.source_field)
  if key not in _VALUES:
    _VALUES[key] = corpus.source_values(files, d.source_field)
  return _VALUES[key]


def sources(d) -> tuple:
  """What the functions here read of config.data `d`, one per `labels`
  entry: the built-in corpus names, or each source's files."""
  if d.name != 'kd_text':
    return parts(d.name)
  files = text.source(d)
  return tuple(corpus.source_files(files, d.source_field, v)
               for v in labels(d))


def _parts(name) -> tuple:
  return name if isinstance(name, tuple) else parts(name)


def _named(name) -> str:
  return '+'.join(map(str, name)) if isinstance(name, tuple) else name


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


def _epoch_orders(docs, seq_len: int, seed: int, epoch: int):
  """(each source's document order, the order of all rows) of one epoch,
  drawn from (seed, epoch)."""
  rng = np.random.default_rng([seed, epoch])
  perms = [rng.permutation(len(d)) for d in docs]
  rows = sum(text._num_rows(d, seq_len) for d in docs)  # pylint: disable=protected-access
  return perms, rng.permutation(rows)


def _epoch_rows(docs, tok, seq_len: int, seed: int, epoch: int):
  """([rows, seq_len + 1] tokens, [rows] source ids, row order) of one
  epoch: each source's documents packed in its `_epoch_orders` order,
  source after source, then one order over all rows."""
  perms, order = _epoch_orders(docs, seq_len, seed, epoch)
  views = [text.windows(text.pack([d[i] for i in perm], tok), seq_len)
           for d, perm in zip(docs, perms)]
  source = np.repeat(np.arange(len(views), dtype=np.int32),
                     [len(v) for v in views])
  return np.concatenate(views), source, order


def _documents(name, split, tok, data_dir):
  return [text._encoded(p, split, tok, data_dir) for p in _parts(name)]  # pylint: disable=protected-access


def training_rows(name: str, *, seq_len: int, seed: int, tok=None,
                  data_dir: str | None = None, split: str = 'train'):
  """([rows, seq_len + 1] tokens, [rows] source ids): every row that
  `packed_batches(..., fixed_packing=True)` draws from, by its `index`
  (epoch 0's packing)."""
  tok = tok or text.ByteTokenizer()
  view, source, _ = _epoch_rows(_documents(name, split, tok, data_dir), tok,
                                seq_len, seed, 0)
  return view, source


def rows_read(name: str, *, batch_size: int, seq_len: int, seed: int,
              steps: int, tok=None, data_dir: str | None = None,
              split: str = 'train') -> np.ndarray:
  """Sorted numbers (`index`) of the rows that `steps` global batches of
  `batch_size` rows of `packed_batches(..., fixed_packing=True)` draw."""
  tok = tok or text.ByteTokenizer()
  docs = _documents(name, split, tok, data_dir)
  rows = sum(text._num_rows(d, seq_len) for d in docs)  # pylint: disable=protected-access
  per_epoch = rows // batch_size
  if not per_epoch:
    raise ValueError(f'{_named(name)} {split} packs into {rows} rows of '
                     f'{seq_len} tokens, fewer than one batch of '
                     f'{batch_size}')
  read = np.zeros(rows, bool)
  for e in range(-(-steps // per_epoch)):
    batches = min(steps - e * per_epoch, per_epoch)
    read[_epoch_rows(docs, tok, seq_len, seed, e)[2][:batches * batch_size]] = (
        True)
  return np.flatnonzero(read)


def packed_batches(name: str, *, batch_size: int, seq_len: int, seed: int,
                   tok=None, data_dir: str | None = None,
                   split: str = 'train', start_step: int = 0,
                   process_index: int | None = None,
                   process_count: int | None = None,
                   fixed_packing: bool = False):
  """Endless iterator of this process's `batch_size` rows (with `source`),
  as `kd.data.text.packed_batches`: process i keeps rows i*B..(i+1)*B of
  every global batch; rows left over from the last whole global batch of
  an epoch are skipped. With `fixed_packing` every epoch keeps epoch 0's
  rows (`training_rows`), only their order changes, and each batch carries
  the row numbers as `index` (the keys of each teacher's top-k cache)."""
  tok = tok or text.ByteTokenizer()
  index, count = _process_index_count(process_index, process_count)
  docs = _documents(name, split, tok, data_dir)
  rows = sum(text._num_rows(d, seq_len) for d in docs)  # pylint: disable=protected-access
  per_epoch = text.batches_per_epoch(_named(name), split, rows, seq_len,
                                     batch_size * count)
  epoch, step, view = None, start_step, None
  while True:
    e, b = divmod(step, per_epoch)
    if e != epoch:
      epoch = e
      if fixed_packing:  # Epoch 0's rows, this epoch's order.
        if view is None:
          view, source, _ = _epoch_rows(docs, tok, seq_len, seed, 0)
        order = _epoch_rows(docs, tok, seq_len, seed, epoch)[2]
      else:
        view, source, order = _epoch_rows(docs, tok, seq_len, seed, epoch)
    first = (b * count + index) * batch_size
    picked = order[first:first + batch_size]
    batch = {**text._batch(view[picked], tok), 'source': source[picked]}  # pylint: disable=protected-access
    if fixed_packing:
      batch['index'] = picked
    yield batch
    step += 1


def eval_batches(name: str, *, batch_size: int, seq_len: int, tok=None,
                 split: str = 'test', data_dir: str | None = None,
                 process_index: int | None = None,
                 process_count: int | None = None):
  """Every token of every source's `split` as a target exactly once
  (`kd.data.text.eval_batches` per source, in order), each batch of one
  source, with `source`."""
  for j, p in enumerate(_parts(name)):
    for batch in text.eval_batches(
        p, batch_size=batch_size, seq_len=seq_len, tok=tok, split=split,
        data_dir=data_dir, process_index=process_index,
        process_count=process_count):
      yield {**batch, 'source': np.full(len(batch['tokens']), j, np.int32)}


def paired_batches(name: str, *, batch_size: int, seq_len: int,
                   teacher_seq_len: int, seed: int, tok, teacher_toks,
                   data_dir: str | None = None, split: str = 'train',
                   start_step: int = 0, process_index: int | None = None,
                   process_count: int | None = None):
  """Endless iterator of this process's batches of routed teachers of
  several tokenizers: the student's part (with `source`) equal to
  `model_batch` of `packed_batches` with the same arguments, and each row
  of a source whose teacher reads another tokenizer (`teacher_toks`, one
  per source of `name`: that teacher's tokenizer, or None for the
  student's) paired with that tokenizer's tokens of the same text as
  `kd.data.paired` pairs one corpus's rows (teacher_image, teacher_label,
  align). The other rows hold token 0 there and no aligned position."""
  index, count = _process_index_count(process_index, process_count)
  texts = [text.documents(p, split, data_dir) for p in _parts(name)]
  docs = [tok.encode(t) for t in texts]
  t_docs = [None if k is None else k.encode(t)
            for k, t in zip(teacher_toks, texts)]
  for d, t, k in zip(docs, t_docs, teacher_toks):
    if k is not None:
      align.check_same_text(d, tok, t, k)
  rows = [text._num_rows(d, seq_len) for d in docs]  # pylint: disable=protected-access
  first_row = np.cumsum([0] + rows)
  per_epoch = text.batches_per_epoch(_named(name), split, sum(rows), seq_len,
                                     batch_size * count)
  epoch, step = None, start_step
  while True:
    e, b = divmod(step, per_epoch)
    if e != epoch:
      epoch = e
      perms, order = _epoch_orders(docs, seq_len, seed, epoch)
      packed = [text.pack([d[i] for i in perm], tok)
                for d, perm in zip(docs, perms)]
      view = np.concatenate([text.windows(s, seq_len) for s in packed])
      streams = []  # Per source: (tokens, coordinates) of each side.
      for s, t, k, perm in zip(packed, t_docs, teacher_toks, perms):
        if k is None:
          streams.append(None)
          continue
        t_s = text.pack([t[i] for i in perm], k)
        streams.append(((s, align.stream_ends(s, tok)),
                        (t_s, align.stream_ends(t_s, k))))
      source = np.repeat(np.arange(len(docs), dtype=np.int32), rows)
    first = (b * count + index) * batch_size
    picked = order[first:first + batch_size]
    yield _paired_batch(view[picked], picked, source[picked], first_row,
                        seq_len, teacher_seq_len, streams, tok, teacher_toks)
    step += 1


def _paired_batch(rows, picked, source, first_row, seq_len, teacher_seq_len,
                  streams, tok, teacher_toks) -> dict:
  """The batch of rows `picked` (of sources `source`): each paired source's
  rows by `kd.data.paired.paired_batch`, the others unaligned."""
  batch = {**text.model_batch(text._batch(rows, tok)), 'source': source}  # pylint: disable=protected-access
  n = len(rows)
  out = {'teacher_image': np.zeros((n, teacher_seq_len), np.int32),
         'teacher_label': np.zeros((n, teacher_seq_len), np.int32),
         'align': {'aligned': np.zeros((n, seq_len), np.float32),
                   'teacher_pos': np.zeros((n, seq_len), np.int32),
                   'span': np.zeros((n, seq_len), np.float32),
                   # An unaligned position's one-token spans (align_row).
                   'student_next': np.broadcast_to(
                       np.arange(1, seq_len + 1, dtype=np.int32),
                       (n, seq_len)).copy(),
                   'teacher_next': np.ones((n, seq_len), np.int32)}}
  for j, k in enumerate(teacher_toks):
    here = np.flatnonzero(source == j)
    if k is None or not len(here):
      continue
    got = paired.paired_batch(rows[here], picked[here] - first_row[j],
                              seq_len, teacher_seq_len, streams[j], tok, k)
    for key in ('teacher_image', 'teacher_label'):
      out[key][here] = got[key]
    for key, v in got['align'].items():
      out['align'][key][here] = v
  return {**batch, **out}
