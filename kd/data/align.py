"""Aligning two tokenizations of the same text by byte offsets (pure NumPy),
for cross-tokenizer distillation (`kd.losses.cross_tokenizer`).

Coordinates: a packed stream (`kd.data.text.pack`: bos, doc, eos per
document) puts each token at the end of what it has read, counted in
units shared by every tokenizer: a document d starting at O_d has its bos
end at O_d + 1, a text token ending at byte e of the document at
O_d + 1 + e, its eos at O_d + n_d + 2 (n_d its UTF-8 bytes), and the next
document starts there. Tokens never cross documents, so two tokenizations
of the same documents in the same order agree on these coordinates wherever
both end at the same byte of the same document (and at every bos and eos):
those positions are *aligned*; both models have read the same text there,
and both predict what follows.

Between two consecutive aligned positions lies a *span*: one or more
tokens of each side spelling the same bytes. With teacher forcing each
side's log-probability of the span is the sum of its tokens' log-probs
(`kd.losses.cross_tokenizer.span_log_probs`).
"""
import numpy as np


def vocab_map(student_tok, teacher_tok) -> tuple[np.ndarray, np.ndarray]:
  """(student ids, teacher ids) of the tokens whose byte strings are in both
  vocabularies (the GOLD-style exact matches, Patiño et al. 2025), and each
  side's eos, bos and pad paired by role (an id paired once), in teacher-id
  order; built once per pair of tokenizers."""
  s_ids = {b: i for i, b in enumerate(student_tok.token_strings()) if b}
  pairs = [(s_ids[b], i) for i, b in enumerate(teacher_tok.token_strings())
           if b in s_ids]
  for role in ('eos_id', 'bos_id', 'pad_id'):
    pair = (getattr(student_tok, role), getattr(teacher_tok, role))
    if all(pair[k] not in {p[k] for p in pairs} for k in (0, 1)):
      pairs.append(pair)
  pairs.sort(key=lambda p: p[1])
  s, t = np.array(pairs, np.int32).T
  return s, t


def document_ends(tok, ids: np.ndarray) -> np.ndarray:
  """[len(ids)]: the byte of the document at which each token ends (its
  bytes, `token_bytes`, summed; a first token's `prefix_bytes`, a space
  the text does not hold, not counted)."""
  sizes = tok.token_bytes[ids].astype(np.int64)
  prefix = getattr(tok, 'prefix_bytes', None)
  if prefix is not None and len(ids):
    sizes[0] -= prefix[ids[0]]
  return np.cumsum(sizes)


def stream_ends(stream: np.ndarray, tok) -> np.ndarray:
  """The coordinate (module doc) of every token of a packed `stream`
  (`text.pack`): the running sum of the units each token reads (bos and
  eos 1, a text token its bytes, a document's first token less its
  `prefix_bytes`)."""
  units = tok.token_bytes[stream].astype(np.int64)
  units[(stream == tok.bos_id) | (stream == tok.eos_id)] = 1
  prefix = getattr(tok, 'prefix_bytes', None)
  if prefix is not None:
    first = np.flatnonzero(stream[:-1] == tok.bos_id) + 1
    units[first] -= prefix[stream[first]]
  return np.cumsum(units)


def check_same_text(student_docs, student_tok, teacher_docs, teacher_tok
                    ) -> None:
  """Raises ValueError at the first document the two tokenizations spell
  with different numbers of bytes (a tokenizer that drops or adds text,
  e.g. an unknown-token id, cannot be aligned by bytes)."""
  for i, (s, t) in enumerate(zip(student_docs, teacher_docs)):
    ns, nt = (int(document_ends(tok, d)[-1]) if len(d) else 0
              for tok, d in ((student_tok, s), (teacher_tok, t)))
    if ns != nt:
      raise ValueError(
          f'document {i}: the student\'s tokenizer spells {ns} bytes, the '
          f'teacher\'s {nt}: a tokenizer that loses or adds bytes (unknown '
          'tokens) cannot be aligned by byte offsets; use byte-level '
          'tokenizers (byte, bpe, or an HF byte-level BPE)')


def align_row(student_ends: np.ndarray, teacher_ends: np.ndarray
              ) -> dict[str, np.ndarray]:
  """The alignment of one row: `student_ends` [T + 1] and `teacher_ends`
  [T' + 1], the coordinates of the row's tokens (inputs then the last
  target; strictly increasing, a padded teacher position with a coordinate
  no student token has). For each student input position p < T:

    aligned      1 if some teacher input position q < T' ends where p does;
    teacher_pos  that q (0 if none);
    span         1 if a later aligned boundary exists in both rows (the
                 span from p to it is whole);
    student_next, teacher_next: the token indices (<= T, <= T') where that
                 next boundary is, so the span's student targets are those
                 of positions p .. student_next - 1 and the teacher's of
                 q .. teacher_next - 1 (p + 1 and q + 1 where no span).
  """
  n_s, n_t = len(student_ends) - 1, len(teacher_ends) - 1
  common = np.intersect1d(student_ends, teacher_ends)
  if not len(common):
    common = np.array([-1])  # Matches no token: nothing is aligned.
  s_at = np.searchsorted(student_ends, common)
  t_at = np.searchsorted(teacher_ends, common)
  is_common = np.isin(student_ends[:n_s], common)
  q = np.zeros(n_s, np.int32)
  q[s_at[s_at < n_s]] = t_at[s_at < n_s]
  aligned = is_common & (q < n_t)
  # The next common coordinate after each position: index k + 1 in common.
  k = np.searchsorted(common, student_ends[:n_s], side='right')
  span = aligned & (k < len(common))
  k = np.minimum(k, len(common) - 1)
  student_next = np.where(span, s_at[k], np.arange(n_s) + 1)
  teacher_next = np.where(span, t_at[k], q + 1)
  return {'aligned': aligned.astype(np.float32),
          'teacher_pos': np.where(aligned, q, 0).astype(np.int32),
          'span': span.astype(np.float32),
          'student_next': student_next.astype(np.int32),
          'teacher_next': np.where(aligned, teacher_next, 1).astype(np.int32)}
