"""Masked-LM data (BERT, DistilBERT): a WordPiece tokenizer, packing with
[CLS]/[SEP], and masking as a pure function of (tokens, step, seed).

Tokenizer: `WordPieceTokenizer`, BERT's kind (bert-base-uncased's
normaliser: clean text, Chinese characters split, lowercase, accents
stripped; BertPreTokenizer; WordPiece with '##' continuations and its
decoder), trained with the `tokenizers` library on a dataset's training
split, saved as tokenizer.json in the run and reloaded from there. Trained
here its specials are [PAD] 0, [UNK] 1, [CLS] 2, [SEP] 3, [MASK] 4 (the
order of kd's other tokenizers: pad first; bert-base-uncased has [PAD] 0,
[UNK] 100, [CLS] 101, [SEP] 102, [MASK] 103). A loaded tokenizer.json (an HF
BERT folder's) finds its specials by name: `cls_token` etc. of the
tokenizer_config.json beside it, else BERT's names.

Packing (`pack_rows`): every document becomes `tokens, [SEP]`; the
documents are concatenated into one stream, cut into pieces of seq_len - 1
tokens, and each row is `[CLS], piece`. So every row starts with [CLS], a
[SEP] ends each document (a row may hold several, and a document may go on
in the next row after its [CLS]), and no token is repeated. Training drops
the last piece if it is short (every row full, attention mask all ones);
`mlm_eval_batches` pads it with [PAD] (attention mask 0 there).

Masking (`mask_tokens`): of the positions that are not special tokens, each
is chosen with probability 15% (a Bernoulli draw per position, as BERT's and
transformers' collators); a chosen position's input becomes [MASK] with
probability 80%, a token drawn uniformly from the non-special vocabulary
with 10%, and stays itself with 10%. Labels are the original tokens; only
the chosen positions count (`mask`), so a loss is
sum(mask * nll) / sum(mask), as on the LM path. The draws of row r of step
s come from numpy's default_rng([seed, s, r]) (r counted over the global
batch), so a batch is the same on any number of processes and a resumed run
sees exactly the batches an uninterrupted one would.
"""
import json
import os

import numpy as np

from kd import files
from kd.data import hf_tokenizer
from kd.data import text
from kd.data.input_pipeline import _process_index_count

SPECIALS = ('[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]')
_ROLES = ('pad', 'unk', 'cls', 'sep', 'mask')
MASK_RATE = 0.15
# Of the chosen positions: [MASK], a random token, unchanged.
SPLIT = (0.8, 0.1, 0.1)


class WordPieceTokenizer:
  """BERT's WordPiece tokenizer (tokenizer.json) with its special ids
  `pad_id, unk_id, cls_id, sep_id, mask_id`; `special_ids` all of them."""

  def __init__(self, tok, names: dict[str, str] | None = None,
               path: str = '<trained>'):
    self._tok, self.path = tok, path
    # A saved HF tokenizer may truncate or pad to a model's length; a
    # document is packed whole.
    tok.no_truncation()
    tok.no_padding()
    names = names or {}
    for role, default in zip(_ROLES, SPECIALS):
      piece = names.get(role, default)
      i = tok.token_to_id(piece)
      if i is None:
        raise ValueError(f'{path}: no {role} token {piece!r} in its '
                         'vocabulary; masked-LM data needs [PAD], [UNK], '
                         '[CLS], [SEP] and [MASK] (a BERT WordPiece '
                         'tokenizer)')
      setattr(self, f'{role}_id', i)
    self.vocab_size = tok.get_vocab_size(with_added_tokens=True)
    self.special_ids = np.array(sorted({getattr(self, f'{r}_id')
                                        for r in _ROLES}), np.int32)

  @classmethod
  def train(cls, texts: list[str], vocab_size: int) -> 'WordPieceTokenizer':
    import tokenizers as tk  # pylint: disable=import-outside-toplevel
    tok = tk.Tokenizer(tk.models.WordPiece(unk_token='[UNK]'))
    tok.normalizer = tk.normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = tk.pre_tokenizers.BertPreTokenizer()
    tok.decoder = tk.decoders.WordPiece(prefix='##')
    trainer = tk.trainers.WordPieceTrainer(
        vocab_size=vocab_size, special_tokens=list(SPECIALS),
        continuing_subword_prefix='##', show_progress=False)
    tok.train_from_iterator(texts, trainer)
    return cls(tok)

  @classmethod
  def load(cls, path: str) -> 'WordPieceTokenizer':
    """tokenizer.json at `path` (or in the folder `path`), its special
    tokens named by a tokenizer_config.json beside it if there is one."""
    import tokenizers as tk  # pylint: disable=import-outside-toplevel
    if os.path.isdir(path):
      path = os.path.join(path, 'tokenizer.json')
    try:
      tok = tk.Tokenizer.from_file(path)
    except Exception as e:  # pylint: disable=broad-except
      raise ValueError(f'{path} is not a tokenizer.json the tokenizers '
                       f'library reads ({e})') from None
    names = {}
    config = os.path.join(os.path.dirname(path), 'tokenizer_config.json')
    if os.path.exists(config):
      with open(config) as f:
        found = json.load(f)
      for role in _ROLES:
        piece = found.get(f'{role}_token')
        piece = piece.get('content') if isinstance(piece, dict) else piece
        if isinstance(piece, str):
          names[role] = piece
    return cls(tok, names, path)

  def to_str(self) -> str:
    return self._tok.to_str(pretty=True)

  def save(self, path: str):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    files.write_bytes(path, self.to_str())

  def encode(self, texts: list[str]) -> list[np.ndarray]:
    """Token ids of each text, without [CLS]/[SEP] (packing adds them)."""
    return [np.asarray(e.ids, np.int32) for e in
            self._tok.encode_batch(texts, add_special_tokens=False)]

  def decode(self, ids, skip_special_tokens: bool = False) -> str:
    return self._tok.decode([int(i) for i in ids],
                            skip_special_tokens=skip_special_tokens)

  def id_to_token(self, i: int) -> str:
    return self._tok.id_to_token(int(i))


def tokenizer(*, name: str | None = None, vocab_size: int = 0,
              path: str | None = None, data_dir: str | None = None
              ) -> WordPieceTokenizer:
  """`path` (the run's tokenizer.json, or an HF BERT folder's) if it
  exists, else one trained on `name`'s training split and saved at `path`,
  so that a resumed run tokenizes as the first did. A trained vocabulary
  has at most `vocab_size` entries (fewer when the corpus has no more
  pieces: the model's vocabulary may be larger than the tokenizer's)."""
  if path and os.path.exists(path):
    tok = WordPieceTokenizer.load(path)
    if vocab_size and tok.vocab_size > vocab_size:
      raise ValueError(f'{path} holds a tokenizer of vocabulary '
                       f'{tok.vocab_size}, more than the configured '
                       f'{vocab_size}: set the vocabulary size to '
                       f'{tok.vocab_size} or more, or use a new run directory')
    return tok
  if not name or vocab_size <= len(SPECIALS):
    raise ValueError(f'a WordPiece tokenizer is trained on a dataset (name='
                     f'{name!r}) to a vocabulary larger than {len(SPECIALS)}'
                     f' (vocab_size={vocab_size})')
  tok = WordPieceTokenizer.train(text.documents(name, 'train', data_dir),
                                 vocab_size)
  if path:
    tok.save(path)
  return tok


def _source(config, required: bool = True) -> str:
  """The tokenizer.json a new encoder run starts from: data.tokenizer_path,
  else the teacher run's, else the init_from run's; '' (train one) for
  'wordpiece' when none of them has one ('hf' then raises if `required`)."""
  d = config.data
  if d.tokenizer_path:
    return hf_tokenizer.source_path(d.tokenizer_path, '')
  for run in (config.distill.teacher.workdir, config.init_from):
    if run and os.path.isfile(os.path.join(run, 'tokenizer.json')):
      return os.path.join(run, 'tokenizer.json')
  if d.tokenizer == 'hf' and required:
    return hf_tokenizer.source_path('', '')  # Raises: names the fields.
  return ''


def run_tokenizer(config, run_dir: str | None = None) -> WordPieceTokenizer:
  """The WordPiece tokenizer of an encoder run (data.task 'mlm' or
  'classify'): RUN_DIR/tokenizer.json, kept there on first use from
  `_source` (with the tokenizer_config.json beside it, which names the
  special tokens), or trained on the training split ('wordpiece') and saved
  there. A kept one that differs from its source is refused (a run
  tokenizes one way throughout)."""
  d = config.data
  kept = os.path.join(run_dir, 'tokenizer.json') if run_dir else ''
  if kept and os.path.exists(kept):  # A converted run's is its own.
    source = _source(config, required=False)
    if source:
      hf_tokenizer.check_kept(kept, source, '')
  else:
    source = _source(config)
  if kept and source and not os.path.exists(kept):
    folder = os.path.dirname(os.path.abspath(source))
    os.makedirs(run_dir, exist_ok=True)
    # tokenizer.json last: a run directory with it holds the whole tokenizer.
    for name, src in (('tokenizer_config.json',
                       os.path.join(folder, 'tokenizer_config.json')),
                      ('tokenizer.json', source)):
      if os.path.exists(src):
        with open(src, 'rb') as f:
          files.write_bytes(os.path.join(run_dir, name), f.read())
  path = kept or source
  if path and os.path.exists(path):  # Its training text is not needed.
    return tokenizer(path=path, vocab_size=d.vocab_size)
  return tokenizer(name=text.source(d), vocab_size=d.vocab_size,
                   path=path or None, data_dir=d.data_dir or None)


def _stream(docs: list[np.ndarray], tok) -> np.ndarray:
  """doc, [SEP] for each of `docs` in order."""
  sep = np.array([tok.sep_id], np.int32)
  parts = [p for d in docs for p in (d.astype(np.int32), sep)]
  return np.concatenate(parts) if parts else np.zeros(0, np.int32)


def num_rows(docs: list[np.ndarray], seq_len: int) -> int:
  """Full rows `pack_rows` makes of `docs` (without padding)."""
  return sum(len(d) + 1 for d in docs) // (seq_len - 1)


def pack_rows(docs: list[np.ndarray], tok, seq_len: int, pad: bool = False
              ) -> tuple[np.ndarray, np.ndarray]:
  """(rows [R, seq_len] int32, attention_mask [R, seq_len] int32): `docs`
  packed as the module doc says; with `pad` the last short row is kept,
  padded with [PAD] (attention mask 0), else dropped."""
  if seq_len < 2:
    raise ValueError(f'seq_len={seq_len}: a masked-LM row holds [CLS] and '
                     'at least one token; set seq_len >= 2')
  stream, width = _stream(docs, tok), seq_len - 1
  rows = -(-len(stream) // width) if pad else len(stream) // width
  body = np.full(rows * width, tok.pad_id, np.int32)
  n = min(len(stream), rows * width)
  body[:n] = stream[:n]
  real = (np.arange(rows * width) < n).reshape(rows, width)
  out = np.concatenate([np.full((rows, 1), tok.cls_id, np.int32),
                        body.reshape(rows, width)], axis=1)
  attention = np.concatenate([np.ones((rows, 1), bool), real], axis=1)
  return out, attention.astype(np.int32)


def mask_tokens(tokens: np.ndarray, step: int, seed: int, tok, *,
                first_row: int = 0, rate: float = MASK_RATE
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(inputs, labels, chosen) for `tokens` [B, T] (the module doc's
  masking): inputs [B, T] int32 with the chosen positions replaced, labels
  [B, T] the original tokens, chosen [B, T] float32 (1 where a position
  counts). Row i draws from default_rng([seed, step, first_row + i]), so
  the result is a pure function of (tokens, step, seed, row number)."""
  tokens = np.asarray(tokens, np.int32)
  normal = np.setdiff1d(np.arange(tok.vocab_size), tok.special_ids)
  chosen = np.zeros(tokens.shape, bool)
  how = np.zeros(tokens.shape)
  randoms = np.zeros(tokens.shape, np.int32)
  for i in range(tokens.shape[0]):
    rng = np.random.default_rng([seed, step, first_row + i])
    chosen[i] = rng.random(tokens.shape[1]) < rate
    how[i] = rng.random(tokens.shape[1])
    randoms[i] = normal[rng.integers(0, len(normal), tokens.shape[1])]
  chosen &= ~np.isin(tokens, tok.special_ids)
  inputs = np.where(chosen & (how < SPLIT[0]), tok.mask_id, tokens)
  inputs = np.where(chosen & (how >= SPLIT[0]) & (how < SPLIT[0] + SPLIT[1]),
                    randoms, inputs)
  return inputs.astype(np.int32), tokens, chosen.astype(np.float32)


def _batch(rows, attention, step, seed, tok, first_row):
  inputs, labels, chosen = mask_tokens(rows, step, seed, tok,
                                       first_row=first_row)
  return {'image': inputs, 'label': labels, 'mask': chosen,
          'attention_mask': attention}


def mlm_batches(name: str, *, batch_size: int, seq_len: int, seed: int,
                tok: WordPieceTokenizer, start_step: int = 0,
                data_dir: str | None = None, split: str = 'train',
                process_index: int | None = None,
                process_count: int | None = None):
  """Endless iterator of masked-LM batches of this process's `batch_size`
  rows, in the form kd's steps read (`kd.data.text.model_batch`'s keys):

    image          [B, T] int32:   inputs (token ids after masking);
    label          [B, T] int32:   the tokens before masking;
    mask           [B, T] float32: 1 at the chosen positions (the loss's);
    attention_mask [B, T] int32:   1 on real tokens (all, in training).

  As `kd.data.text.packed_batches`: every epoch packs the documents in an
  order drawn from (seed, epoch) and visits the rows in an order of its
  own; rows left over from the last whole global batch are skipped; process
  i keeps rows i*B..(i+1)*B of every global batch; starting at `start_step`
  yields exactly what an uninterrupted iterator yields from its
  `start_step`-th batch on (masking included: `mask_tokens` of the global
  step)."""
  index, count = _process_index_count(process_index, process_count)
  docs = text._encoded(name, split, tok, data_dir)  # pylint: disable=protected-access
  rows = num_rows(docs, seq_len)
  per_epoch = text.batches_per_epoch(name, split, rows, seq_len,
                                     batch_size * count)
  epoch, view, attention, order = None, None, None, None
  step = start_step
  while True:
    e, b = divmod(step, per_epoch)
    if e != epoch:
      epoch = e
      perm, order = text._epoch_orders(seed, epoch, len(docs), rows)  # pylint: disable=protected-access
      view, attention = pack_rows([docs[i] for i in perm], tok, seq_len)
    first = (b * count + index) * batch_size
    picked = order[first:first + batch_size]
    yield _batch(view[picked], attention[picked], step, seed, tok, first)
    step += 1


def mlm_eval_batches(name: str, *, batch_size: int, seq_len: int, tok,
                     split: str = 'test', seed: int = 0,
                     data_dir: str | None = None,
                     process_index: int | None = None,
                     process_count: int | None = None):
  """Every document of `split` (in file order) packed once, the last row
  and batch padded (attention mask 0, never chosen), masked as
  `mask_tokens` of batch number b and `seed`: the same positions every
  evaluation, so masked-LM accuracy compares across steps and runs."""
  index, count = _process_index_count(process_index, process_count)
  docs = text._encoded(name, split, tok, data_dir)  # pylint: disable=protected-access
  view, attention = pack_rows(docs, tok, seq_len, pad=True)
  global_batch = batch_size * count
  num_batches = -(-len(view) // global_batch)
  extra = num_batches * global_batch - len(view)
  view = np.concatenate([view, np.full((extra, seq_len), tok.pad_id,
                                       np.int32)])
  attention = np.concatenate([attention, np.zeros((extra, seq_len),
                                                  np.int32)])
  for b in range(num_batches):
    first = (b * count + index) * batch_size
    rows = slice(first, first + batch_size)
    yield _batch(view[rows], attention[rows], b, seed, tok, first)
