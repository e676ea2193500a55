"""Document classification for an encoder's [CLS] head (BERT fine-tuning):
labelled documents of a text dataset as rows of WordPiece ids.

Labels: a dataset's documents carry their label in their path
(`LABELLED`: kd_bbcnews's topic, 'business/001.txt' -> 'business'); the
classes are the labels of the training split, sorted, numbered from 0.

A row is `[CLS], the document's first seq_len - 2 tokens, [SEP]`, padded
with [PAD] to seq_len (BERT's single-segment input, truncated at the end as
its fine-tuning scripts do). A batch, in the form kd's steps read:

  image  [B, T] int32:   the rows (the encoder's `pad_id` masks the padding);
  label  [B] int32:      the class of each document;
  mask   [B] float32:    1 for a document, 0 for an evaluation batch's padding.

Training visits the documents in an order drawn from (seed, epoch) and skips
the ones left over from the last whole global batch; starting at step s
yields exactly what an uninterrupted iterator yields from its s-th batch.
"""
import functools

import numpy as np
import tensorflow_datasets as tfds

from kd.data import text
from kd.data.input_pipeline import _process_index_count
from kd.data.text_builders import CorpusError

# Dataset -> the label of a document's path.
LABELLED = {'kd_bbcnews': lambda path: path.split('/')[0]}


def check_labelled(name: str) -> None:
  if name.split('/')[0] not in LABELLED:
    raise ValueError(f'{name} has no document labels; classification '
                     f'datasets: {", ".join(sorted(LABELLED))}')


def documents(name: str, split: str, data_dir: str | None = None
              ) -> tuple[list[str], list[str]]:
  """(texts, labels) of `split`, in file order."""
  check_labelled(name)
  label_of = LABELLED[name.split('/')[0]]
  ds = text.builder(name, data_dir).as_dataset(
      split=split, shuffle_files=False,
      read_config=tfds.ReadConfig(add_tfds_id=False))
  texts, labels = [], []
  for e in tfds.as_numpy(ds):
    texts.append(e['text'].decode('utf-8'))
    labels.append(label_of(e['path'].decode('utf-8')))
  if not texts:
    raise CorpusError(f'{name} has no documents in split {split!r}')
  return texts, labels


@functools.lru_cache(maxsize=None)
def _classes(name: str, data_dir: str | None) -> tuple[str, ...]:
  return tuple(sorted(set(documents(name, 'train', data_dir)[1])))


def classes(name: str, data_dir: str | None = None) -> list[str]:
  """The sorted labels of `name`'s training split (class i is the i-th);
  read once per process (the spec, the checks, the batches and the export
  all ask)."""
  return list(_classes(name, data_dir))


def rows(ids: list[np.ndarray], tok, seq_len: int) -> np.ndarray:
  """[N, seq_len] int32: `[CLS] ids[:seq_len - 2] [SEP]`, [PAD] after."""
  if seq_len < 3:
    raise ValueError(f'seq_len={seq_len}: a classification row holds [CLS], '
                     '[SEP] and at least one token; set seq_len >= 3')
  out = np.full((len(ids), seq_len), tok.pad_id, np.int32)
  for i, d in enumerate(ids):
    d = np.asarray(d[:seq_len - 2], np.int32)
    out[i, :len(d) + 2] = np.concatenate([[tok.cls_id], d, [tok.sep_id]])
  return out


def labelled_rows(name: str, split: str, tok, seq_len: int,
                  data_dir: str | None = None
                  ) -> tuple[np.ndarray, np.ndarray]:
  """(rows [N, T] int32, class ids [N] int32) of `split`; a label the
  training split lacks is refused."""
  texts, labels = documents(name, split, data_dir)
  names = classes(name, data_dir)
  unknown = sorted(set(labels) - set(names))
  if unknown:
    raise ValueError(f'{name} {split} has labels {unknown} that its training '
                     f'split lacks (classes: {names})')
  index = {c: i for i, c in enumerate(names)}
  return (rows(tok.encode(texts), tok, seq_len),
          np.array([index[c] for c in labels], np.int32))


def classify_batches(name: str, *, batch_size: int, seq_len: int, seed: int,
                     tok, start_step: int = 0, data_dir: str | None = None,
                     split: str = 'train', process_index: int | None = None,
                     process_count: int | None = None):
  """Endless iterator of this process's `batch_size` labelled rows (the
  module doc's batches and order)."""
  index, count = _process_index_count(process_index, process_count)
  x, y = labelled_rows(name, split, tok, seq_len, data_dir)
  global_batch = batch_size * count
  per_epoch = len(x) // global_batch
  if not per_epoch:
    raise ValueError(f'{name} {split} has {len(x)} documents, fewer than one '
                     f'global batch of {global_batch}: lower batch_size')
  step, epoch, order = start_step, None, None
  while True:
    e, b = divmod(step, per_epoch)
    if e != epoch:
      epoch, order = e, np.random.default_rng([seed, e]).permutation(len(x))
    first = b * global_batch + index * batch_size
    picked = order[first:first + batch_size]
    yield {'image': x[picked], 'label': y[picked],
           'mask': np.ones(batch_size, np.float32)}
    step += 1


def classify_eval_batches(name: str, *, batch_size: int, seq_len: int, tok,
                          split: str = 'test', data_dir: str | None = None,
                          process_index: int | None = None,
                          process_count: int | None = None):
  """Every document of `split` once, in file order; the last global batch
  padded with [PAD] rows of mask 0."""
  index, count = _process_index_count(process_index, process_count)
  x, y = labelled_rows(name, split, tok, seq_len, data_dir)
  global_batch = batch_size * count
  total = -(-len(x) // global_batch) * global_batch
  mask = (np.arange(total) < len(x)).astype(np.float32)
  x = np.concatenate([x, np.full((total - len(x), seq_len), tok.pad_id,
                                 np.int32)])
  y = np.concatenate([y, np.zeros(total - len(y), np.int32)])
  for first in range(index * batch_size, total, global_batch):
    rows_ = slice(first, first + batch_size)
    yield {'image': x[rows_], 'label': y[rows_], 'mask': mask[rows_]}
