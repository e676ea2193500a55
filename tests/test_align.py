"""Byte-offset alignment of two tokenizations on hand-written strings that
the tokenizers split differently: multi-byte UTF-8, merged whitespace,
bytes the BPE never saw."""
import types

import numpy as np
import pytest

from kd.data import align, text

TRAIN = ['hello world, hello there.\n\n  indented  lines\n',
         'caf\u00e9 na\u00efve r\u00e9sum\u00e9 \u00e9t\u00e9 caf\u00e9',
         'the theory of the thing    then\n\n\n'] * 30
DOCS = ['hello  world\n\n caf\u00e9',  # Whitespace runs, a 2-byte letter.
        'r\u00e9sum\u00e9 \U0001f642\x00\u6771!',  # Unseen: emoji, NUL, CJK.
        '    then the\n']


@pytest.fixture(scope='module')
def bpes():
  return text.BPETokenizer.train(TRAIN, 300), text.BPETokenizer.train(
      TRAIN, 280)


def spelled(tok, ids):
  strings = tok.token_strings()
  return [strings[i] for i in ids]


def test_document_ends_are_the_bytes_each_token_has_read(bpes):
  for tok in (text.ByteTokenizer(), *bpes):
    for doc, ids in zip(DOCS, tok.encode(DOCS)):
      ends = align.document_ends(tok, ids)
      pieces = spelled(tok, ids)
      raw = doc.encode('utf-8')
      assert ends[-1] == len(raw)
      for k, end in enumerate(ends):
        assert b''.join(pieces[:k + 1]) == raw[:end]
  bpe = bpes[0]
  # The BPE merged what it saw (a 2-byte letter with its neighbours, a
  # newline run) and spells what it never saw byte by byte: the emoji is 4
  # one-byte tokens.
  ids = bpe.encode(DOCS)
  assert any('é'.encode() in p and len(p) > 2 for p in spelled(bpe, ids[1]))
  assert b'\n\n' in spelled(bpe, ids[0])
  emoji = '\U0001f642'.encode()
  pieces = spelled(bpe, ids[1])
  at = pieces.index(emoji[:1])
  assert pieces[at:at + 4] == [bytes([b]) for b in emoji]


def brute_force(s_ends, t_ends):
  """align_row by its definition, one position at a time."""
  n_s, n_t = len(s_ends) - 1, len(t_ends) - 1
  out = {k: [] for k in ('aligned', 'teacher_pos', 'span', 'student_next',
                         'teacher_next')}
  for p in range(n_s):
    qs = [q for q in range(n_t) if t_ends[q] == s_ends[p]]
    later = [c for c in s_ends if c > s_ends[p] and c in set(t_ends)]
    whole = bool(qs) and bool(later)
    out['aligned'].append(float(bool(qs)))
    out['teacher_pos'].append(qs[0] if qs else 0)
    out['span'].append(float(whole))
    out['student_next'].append(list(s_ends).index(min(later)) if whole
                               else p + 1)
    out['teacher_next'].append(list(t_ends).index(min(later)) if whole else
                               (qs[0] + 1 if qs else 1))
  return out


@pytest.mark.parametrize('pair', ['byte-bpe', 'bpe-byte', 'bpe-bpe'])
def test_aligned_positions_and_spans_spell_the_same_bytes(bpes, pair):
  toks = {'byte-bpe': (text.ByteTokenizer(), bpes[0]),
          'bpe-byte': (bpes[0], text.ByteTokenizer()),
          'bpe-bpe': bpes[::-1]}[pair]  # The student the finer.
  streams = [text.pack(tok.encode(DOCS), tok) for tok in toks]
  ends = [align.stream_ends(s, tok) for s, tok in zip(streams, toks)]
  assert [len(e) for e in ends] == [len(s) for s in streams]
  assert ends[0][-1] == ends[1][-1] == sum(len(d.encode()) + 2 for d in DOCS)
  got = align.align_row(*ends)
  want = brute_force(*ends)
  for k, v in want.items():
    np.testing.assert_array_equal(got[k], v, err_msg=k)
  # Every bos and eos is aligned, and each span is the same text both ways.
  (s_tok, t_tok), (s_ids, t_ids) = toks, streams
  for p in np.flatnonzero(got['span']):
    q = got['teacher_pos'][p]
    s_span = spelled(s_tok, s_ids[p + 1:got['student_next'][p] + 1])
    t_span = spelled(t_tok, t_ids[q + 1:got['teacher_next'][p] + 1])
    assert b''.join(s_span) == b''.join(t_span)
    assert s_ids[p] != s_tok.eos_id or t_ids[q] == t_tok.eos_id
  bounds = np.isin(s_ids[:-1], [s_tok.bos_id, s_tok.eos_id])
  assert got['aligned'][bounds].all()
  # A finer student ends inside the teacher's tokens; a coarser never.
  assert (got['aligned'].mean() == 1) == (pair == 'bpe-byte')


def test_inside_a_multibyte_letter_nothing_is_aligned(bpes):
  doc = ['caf\u00e9 caf\u00e9']
  byte, bpe = text.ByteTokenizer(), bpes[0]
  got = align.align_row(*(align.stream_ends(text.pack(tok.encode(doc), tok),
                                             tok) for tok in (byte, bpe)))
  # The BPE holds each word whole; the byte student's inputs are bos c a f
  # 0xc3 0xa9 ' ' c a f 0xc3 0xa9 (eos the last target): aligned at bos and
  # after each 'é', never between its two bytes.
  assert spelled(bpe, bpe.encode(doc)[0]) == [b'caf\xc3\xa9', b' caf\xc3\xa9']
  np.testing.assert_array_equal(got['aligned'], np.isin(np.arange(12),
                                                        [0, 5, 11]))
  np.testing.assert_array_equal(got['student_next'][[0, 5]], [5, 11])
  np.testing.assert_array_equal(got['teacher_pos'][[0, 5, 11]], [0, 1, 2])


def test_a_teacher_row_cut_short_leaves_the_rest_unaligned(bpes):
  byte, bpe = text.ByteTokenizer(), bpes[0]
  s, t = (align.stream_ends(text.pack(tok.encode(DOCS[:1]), tok), tok)
          for tok in (byte, bpe))
  cut = align.align_row(s, t[:4])
  full = align.align_row(s, t)
  last = t[3]  # The cut row's last target: its inputs end before it.
  before = s[:-1] < last
  np.testing.assert_array_equal(cut['aligned'][before],
                                full['aligned'][before])
  assert not cut['aligned'][s[:-1] >= last].any()
  assert not align.align_row(s, np.array([10**9, 10**9 + 1]))['aligned'].any()


def test_vocab_map_pairs_tokens_of_the_same_bytes(bpes):
  byte, (bpe, small) = text.ByteTokenizer(), bpes
  s, t = align.vocab_map(byte, bpe)
  # A byte-level BPE holds every byte: 256 one-byte tokens, and the
  # specials paired by role; every byte-level student token is matched.
  assert len(s) == 259 and sorted(s) == list(range(259))
  for role in ('eos_id', 'bos_id', 'pad_id'):
    assert (getattr(byte, role), getattr(bpe, role)) in zip(s, t)
  # A teacher with one special for every role (GPT-2's <|endoftext|>):
  # paired once, with the student's eos.
  gpt2 = types.SimpleNamespace(token_strings=lambda: [b'', b'a', b'b'],
                               eos_id=0, bos_id=0, pad_id=0)
  s2, t2 = align.vocab_map(byte, gpt2)
  assert list(zip(s2, t2)) == [(byte.eos_id, 0), (97, 1), (98, 2)]
  for a, b in zip(s, t):
    assert byte.token_strings()[a] == bpe.token_strings()[b]
  s, t = align.vocab_map(small, bpe)
  assert len(s) == len(set(s)) == len(t) > 256 + 1  # Merges in common.
  assert list(t) == sorted(t)
  strings = (small.token_strings(), bpe.token_strings())
  assert all(strings[0][a] == strings[1][b] for a, b in zip(s, t) if a > 2)


def test_tokenizations_of_different_text_are_refused(bpes):
  byte, bpe = text.ByteTokenizer(), bpes[0]

  class Lossy(text.ByteTokenizer):  # An unknown-token id that spells 0 bytes.
    token_bytes = np.where(np.arange(259) == 0, 0, byte.token_bytes)

  docs = ['ok', 'a\x00b']
  align.check_same_text(byte.encode(docs), byte, bpe.encode(docs), bpe)
  with pytest.raises(ValueError, match=r"^document 1: the student's tokenizer "
                     r"spells 2 bytes, the teacher's 3: a tokenizer that "
                     'loses or adds bytes'):
    align.check_same_text(Lossy().encode(docs), Lossy(), bpe.encode(docs), bpe)
