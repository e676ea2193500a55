"""Packed batches holding both tokenizations of each row, for a teacher
whose tokenizer differs from the student's (cross-tokenizer distillation,
`kd.losses.cross_tokenizer`).

The student's rows are exactly those of `kd.data.text.packed_batches` (the
same documents, epochs and row order). Each epoch the teacher's tokens of
the same documents are packed in the same order, and a student row of T
inputs gets the T' + 1 teacher tokens starting at the first one that ends
at or after the row's first input (`teacher_seq_len` T'; padded at the
stream's end). A batch adds to the student's (`text.model_batch`):

  teacher_image [B, T'] int32, teacher_label [B, T'] int32: the teacher's
      inputs and next tokens;
  align: per student position [B, T] (`kd.data.align.align_row`):
      aligned (1 where a teacher position ends at the same byte and the
      student's target counts: the mask of an aligned loss), teacher_pos,
      span, student_next, teacher_next.

A student position whose byte the teacher's row does not reach (T' too
small) is left unaligned: a byte-level student against a BPE teacher
needs T' <= T.
"""
import numpy as np

from kd.data import align
from kd.data import text
from kd.data.input_pipeline import _process_index_count


def teacher_seq_len(config) -> int:
  """A cross-tokenizer run's teacher tokens per row (`data.teacher_seq_len`,
  0: `data.seq_len`)."""
  return config.data.get('teacher_seq_len', 0) or config.data.seq_len


def paired_batches(name, *, batch_size: int, seq_len: int,
                   teacher_seq_len: int, seed: int, tok, teacher_tok,
                   data_dir: str | None = None, split: str = 'train',
                   start_step: int = 0, process_index: int | None = None,
                   process_count: int | None = None):
  """Endless iterator of this process's batches (module doc), the
  student's parts equal to `text.packed_batches` with the same arguments;
  starting at `start_step` yields what an uninterrupted iterator yields
  from there."""
  index, count = _process_index_count(process_index, process_count)
  texts = text.documents(name, split, data_dir)
  s_docs, t_docs = tok.encode(texts), teacher_tok.encode(texts)
  align.check_same_text(s_docs, tok, t_docs, teacher_tok)
  rows = text._num_rows(s_docs, seq_len)  # pylint: disable=protected-access
  per_epoch = text.batches_per_epoch(name, split, rows, seq_len,
                                     batch_size * count)
  epoch, step = None, start_step
  while True:
    e, b = divmod(step, per_epoch)
    if e != epoch:
      epoch = e
      perm, order = text._epoch_orders(  # pylint: disable=protected-access
          seed, epoch, len(texts), rows)
      streams = []
      for docs, k in ((s_docs, tok), (t_docs, teacher_tok)):
        stream = text.pack([docs[i] for i in perm], k)
        streams.append((stream, align.stream_ends(stream, k)))
      view = text.windows(streams[0][0], seq_len)
    first = (b * count + index) * batch_size
    picked = order[first:first + batch_size]
    yield paired_batch(view[picked], picked, seq_len, teacher_seq_len,
                       streams, tok, teacher_tok)
    step += 1


def paired_batch(rows, picked, seq_len, teacher_seq_len, streams, tok,
                 teacher_tok) -> dict:
  """The batch of student `rows` (row numbers `picked` of the packing whose
  (tokens, coordinates) per side are `streams`)."""
  (_, s_ends), (t_stream, t_ends) = streams
  batch = text.model_batch(
      text._batch(rows, tok))  # pylint: disable=protected-access
  width = teacher_seq_len + 1
  t_rows, aligns = [], []
  for r in picked:
    ends = s_ends[r * seq_len:r * seq_len + seq_len + 1]
    j = np.searchsorted(t_ends, ends[0])
    tokens = np.full(width, teacher_tok.pad_id, np.int64)
    # Past the stream: coordinates no student token has.
    coords = t_ends[-1] + 1 + np.arange(width)
    got = t_stream[j:j + width]
    tokens[:len(got)], coords[:len(got)] = got, t_ends[j:j + width]
    t_rows.append(tokens)
    aligns.append(align.align_row(ends, coords))
  t_rows = np.stack(t_rows).astype(np.int32)
  a = {k: np.stack([x[k] for x in aligns]) for k in aligns[0]}
  a['aligned'] *= batch['mask']
  a['span'] *= a['aligned']
  return {**batch, 'teacher_image': t_rows[:, :-1],
          'teacher_label': t_rows[:, 1:], 'align': a}
