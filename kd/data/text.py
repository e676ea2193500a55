"""Text corpora as packed token batches for language models.

Tokenizers: `ByteTokenizer` (the default: UTF-8 bytes 0..255, then pad 256,
bos 257, eos 258; vocabulary 259), `BPETokenizer`, a byte-level BPE
trained on the training split with the `tokenizers` library (pad 0, bos 1,
eos 2), saved as JSON in the run directory and reloaded from there, or an
HF tokenizer.json (`kd.data.hf_tokenizer`, 'hf'), kept in the run directory
likewise.

Packing: every document becomes `bos, tokens, eos`; the documents are
concatenated into one stream and cut into rows of `seq_len + 1` tokens that
overlap by one, so every stream token is a target exactly once (attention
is not cut at document boundaries, as in GPT-2's training). A batch is

  tokens [B, T + 1] int32: inputs tokens[:, :-1], targets tokens[:, 1:];
  mask   [B, T] float32:   1 where the target is a real token (text or eos),
                           0 on padding (by position, whatever the pad id)
                           and on a bos after an eos (nothing to learn);
  bytes  [B, T] int32:     UTF-8 bytes each target token covers (0 where
                           masked and for eos; a document's first token
                           less the tokenizer's `prefix_bytes`),

so the loss is the masked mean over [B, T], sum(mask * nll) / sum(mask),
and bits per byte is sum(mask * nll) / ln 2 / sum(bytes).
"""
import os

import numpy as np
import tensorflow_datasets as tfds

from kd import files
from kd.data import corpus
from kd.data import hf_tokenizer
from kd.data import text_builders
from kd.data.input_pipeline import (DatasetSpec, _data_dir,
                                    _process_index_count)
from kd.names import TEXT_DATASETS as TEXT, TOKENIZERS, is_text


class ByteTokenizer:
  """UTF-8 bytes; pad 256, bos 257, eos 258."""
  vocab_size, pad_id, bos_id, eos_id = 259, 256, 257, 258

  @property
  def token_bytes(self) -> np.ndarray:
    """[vocab_size]: bytes of text each token stands for (0: special)."""
    return (np.arange(self.vocab_size) < 256).astype(np.int32)

  def token_strings(self) -> list[bytes]:
    """The bytes each token stands for (b'' for the special tokens)."""
    return [bytes([i]) for i in range(256)] + [b''] * 3

  def encode(self, texts: list[str]) -> list[np.ndarray]:
    return [np.frombuffer(t.encode('utf-8'), np.uint8).astype(np.uint16)
            for t in texts]

  def decode(self, ids) -> str:
    ids = np.asarray(ids)
    return bytes(ids[ids < 256].astype(np.uint8)).decode('utf-8', 'replace')


class BPETokenizer:
  """Byte-level BPE (GPT-2's pre-tokenizer); pad 0, bos 1, eos 2."""
  SPECIALS = ('<pad>', '<bos>', '<eos>')
  pad_id, bos_id, eos_id = 0, 1, 2

  def __init__(self, tok):
    self._tok = tok
    self.vocab_size = tok.get_vocab_size()
    self.token_bytes = np.array([len(b) for b in self.token_strings()],
                                np.int32)

  def token_strings(self) -> list[bytes]:
    """The bytes each token stands for (b'' for the special tokens)."""
    out = [b''] * self.vocab_size
    # A byte-level token is spelt with one alphabet character per byte.
    for piece, i in self._tok.get_vocab().items():
      if piece not in self.SPECIALS:
        out[i] = hf_tokenizer.piece_bytes(piece, byte_level=True)
    return out

  @classmethod
  def train(cls, texts: list[str], vocab_size: int) -> 'BPETokenizer':
    import tokenizers as tk  # pylint: disable=import-outside-toplevel
    tok = tk.Tokenizer(tk.models.BPE())
    tok.pre_tokenizer = tk.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = tk.decoders.ByteLevel()
    trainer = tk.trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=list(cls.SPECIALS),
        initial_alphabet=tk.pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False)
    tok.train_from_iterator(texts, trainer)
    return cls(tok)

  @classmethod
  def load(cls, path: str) -> 'BPETokenizer':
    import tokenizers as tk  # pylint: disable=import-outside-toplevel
    return cls(tk.Tokenizer.from_file(path))

  def to_str(self) -> str:
    return self._tok.to_str()

  def save(self, path: str):
    files.write_bytes(path, self._tok.to_str(pretty=True))

  def encode(self, texts: list[str]) -> list[np.ndarray]:
    return [np.asarray(e.ids, np.uint16 if self.vocab_size <= 65536
                       else np.int32) for e in self._tok.encode_batch(texts)]

  def decode(self, ids) -> str:
    return self._tok.decode([int(i) for i in ids])


def source(d) -> 'str | corpus.Files':
  """What the functions here read for config.data `d`: the name of a
  built-in corpus, or kd_text's files (`kd.data.corpus.text_files`)."""
  return corpus.text_files(d) if d.name == 'kd_text' else d.name


def builder(name: 'str | corpus.Files', data_dir: str | None = None):
  """The prepared builder of text dataset `name` ('kd_pystdlib',
  'kd_bbcnews', 'kd_gensim', 'kd_english', '<name>/tiny', or your files:
  `source`), prepared here on first use."""
  if isinstance(name, corpus.Files):
    b = text_builders.files_builder(name, _data_dir(data_dir))
    if not b.is_prepared():
      tfds.disable_progress_bar()
      b.download_and_prepare(file_format='tfrecord')
    return b
  if '+' in name:
    raise ValueError(f'{name!r} mixes corpora (kd.data.mixed): pass each of '
                     'its parts')
  base = name.split('/')[0]
  if base == 'kd_text':
    raise ValueError('kd_text reads the files of config.data.files: pass '
                     'kd.data.text.source(config.data)')
  if base not in TEXT:
    raise ValueError(f'unknown text dataset {name!r}; valid: '
                     f'{", ".join(TEXT)} (or <name>/tiny)')
  b = tfds.builder(name, data_dir=_data_dir(data_dir))
  if not b.is_prepared():
    tfds.disable_progress_bar()
    b.download_and_prepare(file_format='tfrecord')
  if base == 'kd_pystdlib':
    _check_stdlib(b)
  return b


def _check_stdlib(b):
  """A kd_pystdlib built from another standard library is another dataset."""
  built = b.info.metadata
  root = text_builders.stdlib_dir()
  files = text_builders.stdlib_files(root)
  if text_builders.fingerprint(files) != built.get('files_sha256'):
    raise text_builders.CorpusError(
        f'kd_pystdlib in {b.data_dir} was built from the standard library of '
        f'Python {built.get("python_version")} ({built.get("num_files")} '
        f'files); this interpreter\'s ({root}, {len(files)} files) differs. '
        f'Rebuild it: delete {b.data_dir} (it is prepared again on first '
        f'use), or use another data_dir.')


def documents(name: str, split: str, data_dir: str | None = None
              ) -> list[str]:
  """The texts of `split`, in file order (of a mixed corpus
  'kd_pystdlib+kd_bbcnews', `kd.data.mixed`: source after source)."""
  if isinstance(name, str) and '+' in name:
    return [doc for part in name.split('+')
            for doc in documents(part, split, data_dir)]
  b = builder(name, data_dir)
  ds = b.as_dataset(split=split, shuffle_files=False,
                    read_config=tfds.ReadConfig(add_tfds_id=False))
  return [e['text'].decode('utf-8') for e in tfds.as_numpy(ds)]


def tokenizer(kind: str = 'byte', *, name: str | None = None,
              vocab_size: int = 0, path: str | None = None,
              data_dir: str | None = None):
  """The tokenizer `kind`. 'bpe' loads `path` (the run directory's
  tokenizer.json) if it exists, else trains on `name`'s training split and
  saves it there, so a resumed run tokenizes as the first did."""
  if kind == 'byte':
    return ByteTokenizer()
  if kind == 'hf':
    return hf_tokenizer.HFTokenizer.load(path, vocab_size)
  if kind != 'bpe':
    raise ValueError(f'unknown tokenizer {kind!r}; valid: {TOKENIZERS}')
  if path and os.path.exists(path):
    tok = BPETokenizer.load(path)
    if vocab_size and tok.vocab_size != vocab_size:
      raise ValueError(f'{path} holds a tokenizer of vocabulary '
                       f'{tok.vocab_size}, not the configured {vocab_size}: '
                       f'set the vocabulary size to {tok.vocab_size} or use '
                       f'a new run directory')
    return tok
  if not name or vocab_size <= 256 + len(BPETokenizer.SPECIALS):
    raise ValueError(f'a BPE tokenizer is trained on a dataset (name={name!r})'
                     f' to a vocabulary larger than 259 (vocab_size='
                     f'{vocab_size})')
  tok = BPETokenizer.train(documents(name, 'train', data_dir), vocab_size)
  if path:
    tok.save(path)
  return tok


def pack(docs: list[np.ndarray], tok) -> np.ndarray:
  """One stream: bos, doc, eos for each of `docs` in order."""
  parts = []
  for d in docs:
    parts += [np.array([tok.bos_id], d.dtype), d, np.array([tok.eos_id],
                                                           d.dtype)]
  return np.concatenate(parts) if parts else np.zeros(0, np.uint16)


def windows(stream: np.ndarray, seq_len: int) -> np.ndarray:
  """[rows, seq_len + 1] view: row r is stream[r T : r T + T + 1]."""
  rows = (len(stream) - 1) // seq_len
  return np.lib.stride_tricks.sliding_window_view(
      stream[:rows * seq_len + 1], seq_len + 1)[::seq_len]


def _batch(rows: np.ndarray, tok, real: np.ndarray | None = None
           ) -> dict[str, np.ndarray]:
  """`rows` as a batch; `real` [B, T + 1] marks the tokens that are not
  padding (default: all)."""
  tokens = rows.astype(np.int32)
  inputs, targets = tokens[:, :-1], tokens[:, 1:]
  mask = ~((targets == tok.bos_id) & (inputs == tok.eos_id))
  if real is not None:
    mask &= real[:, 1:]
  return {'tokens': tokens, 'mask': mask.astype(np.float32),
          'bytes': np.where(mask, target_bytes(tok, inputs, targets), 0
                            ).astype(np.int32)}


def target_bytes(tok, inputs: np.ndarray, targets: np.ndarray) -> np.ndarray:
  """UTF-8 bytes of text each target token stands for: `token_bytes`, less
  `prefix_bytes` (a tokenizer's space before every document) where the
  target is a document's first token (its input is bos)."""
  out = tok.token_bytes[targets]
  prefix = getattr(tok, 'prefix_bytes', None)
  if prefix is not None:
    out = out - np.where(inputs == tok.bos_id, prefix[targets], 0)
  return out


def _encoded(name, split, tok, data_dir):
  docs = tok.encode(documents(name, split, data_dir))
  if not docs or not sum(map(len, docs)):
    raise text_builders.CorpusError(
        f'{name} has no text in split {split!r}: rebuild it (delete its '
        f'directory under {_data_dir(data_dir) or "~/tensorflow_datasets"}) '
        f'or pick another split')
  return docs


def packed_batches(name: str, *, batch_size: int, seq_len: int, seed: int,
                   tok=None, data_dir: str | None = None,
                   split: str = 'train', start_step: int = 0,
                   process_index: int | None = None,
                   process_count: int | None = None,
                   fixed_packing: bool = False):
  """Endless iterator of packed batches (see the module doc) of this
  process's `batch_size` rows. Every epoch packs the documents in an order
  of its own and visits the rows in an order of its own, both drawn from
  (seed, epoch); rows left over from the last whole global batch are
  skipped. With `fixed_packing` every epoch keeps epoch 0's packing
  (`fixed_rows`), only the row order changes, and each batch carries the
  row numbers as `index`: the keys of a teacher-output cache (`kd.cache`),
  whose rows must be the ones the student sees. Process i keeps rows
  i*B..(i+1)*B of every global batch, so the global batches do not depend
  on the process count. Starting at
  `start_step` yields exactly what an uninterrupted iterator yields from
  its `start_step`-th batch on."""
  tok = tok or ByteTokenizer()
  index, count = _process_index_count(process_index, process_count)
  docs = _encoded(name, split, tok, data_dir)
  rows = _num_rows(docs, seq_len)
  per_epoch = batches_per_epoch(name, split, rows, seq_len,
                                batch_size * count)
  epoch, view, order = None, None, None
  step = start_step
  while True:
    e, b = divmod(step, per_epoch)
    if e != epoch:
      epoch = e
      perm, order = _epoch_orders(seed, epoch, len(docs), rows)
      if not fixed_packing or view is None:
        view = (fixed_rows(docs, tok, seq_len, seed) if fixed_packing else
                windows(pack([docs[i] for i in perm], tok), seq_len))
    first = (b * count + index) * batch_size
    picked = order[first:first + batch_size]
    batch = _batch(view[picked], tok)
    if fixed_packing:
      batch['index'] = picked
    yield batch
    step += 1


def _num_rows(docs: list[np.ndarray], seq_len: int) -> int:
  """Rows of `seq_len` tokens (and the next one) that packing `docs` (each
  between bos and eos) gives."""
  return (sum(len(d) + 2 for d in docs) - 1) // seq_len


def batches_per_epoch(name, split, rows: int, seq_len: int,
                      global_batch: int) -> int:
  """Whole global batches in an epoch of `rows` packed rows; none is an
  error naming the split and the fix."""
  if rows < global_batch:
    raise ValueError(
        f'{name} {split} packs into {rows} rows of {seq_len} tokens, fewer '
        f'than one global batch of {global_batch}: lower batch_size or '
        f'seq_len')
  return rows // global_batch


def _epoch_orders(seed: int, epoch: int, num_docs: int, rows: int):
  """(document order, row order) of an epoch, both drawn from (seed, epoch)."""
  rng = np.random.default_rng([seed, epoch])
  return rng.permutation(num_docs), rng.permutation(rows)


def rows_read(name: str, *, batch_size: int, seq_len: int, seed: int,
              steps: int, tok=None, data_dir: str | None = None,
              split: str = 'train') -> np.ndarray:
  """Sorted numbers (`index`) of the rows that `steps` global batches of
  `batch_size` rows of `packed_batches(..., fixed_packing=True)` draw, over
  all processes: what a run of `steps` steps reads of `training_rows`."""
  tok = tok or ByteTokenizer()
  docs = _encoded(name, split, tok, data_dir)
  rows = _num_rows(docs, seq_len)
  per_epoch = rows // batch_size
  if not per_epoch:
    raise ValueError(f'{name} {split} packs into {rows} rows of {seq_len} '
                     f'tokens, fewer than one batch of {batch_size}')
  read = np.zeros(rows, bool)
  for e in range(-(-steps // per_epoch)):
    batches = min(steps - e * per_epoch, per_epoch)
    read[_epoch_orders(seed, e, len(docs), rows)[1][:batches * batch_size]] = (
        True)
    if read.all():
      break
  return np.flatnonzero(read)


def fixed_rows(docs: list[np.ndarray], tok, seq_len: int, seed: int
               ) -> np.ndarray:
  """[rows, seq_len + 1]: the windows of epoch 0's packing (documents in
  the order drawn from (seed, 0)), which `fixed_packing` keeps for every
  epoch."""
  perm = np.random.default_rng([seed, 0]).permutation(len(docs))
  return windows(pack([docs[i] for i in perm], tok), seq_len)


def training_rows(name: str, *, seq_len: int, seed: int, tok=None,
                  data_dir: str | None = None, split: str = 'train'
                  ) -> np.ndarray:
  """Every row `packed_batches(..., fixed_packing=True)` draws from, by its
  `index`: [rows, seq_len + 1] tokens."""
  tok = tok or ByteTokenizer()
  return fixed_rows(_encoded(name, split, tok, data_dir), tok, seq_len, seed)


def eval_batches(name: str, *, batch_size: int, seq_len: int, tok=None,
                 split: str = 'test', data_dir: str | None = None,
                 process_index: int | None = None,
                 process_count: int | None = None):
  """Every token of `split` (documents in file order) as a target exactly
  once, in packed batches; the last row and batch are padded (mask 0). Every
  process yields the same number of batches (process i: rows i*B..(i+1)*B
  of every global batch)."""
  tok = tok or ByteTokenizer()
  index, count = _process_index_count(process_index, process_count)
  stream = pack(_encoded(name, split, tok, data_dir), tok)
  rows = -(-(len(stream) - 1) // seq_len)
  global_batch = batch_size * count
  num_batches = -(-rows // global_batch)
  padded = np.full(num_batches * global_batch * seq_len + 1, tok.pad_id,
                   stream.dtype)
  padded[:len(stream)] = stream
  real = np.arange(len(padded)) < len(stream)
  view, real = windows(padded, seq_len), windows(real, seq_len)
  for b in range(num_batches):
    first = (b * count + index) * batch_size
    rows = slice(first, first + batch_size)
    yield _batch(view[rows], tok, real[rows])



def run_tokenizer(config, run_dir: str | None = None,
                  from_teacher: bool = True):
  """The tokenizer of a text run (`config.data.tokenizer`). A BPE one lives
  in RUN_DIR/tokenizer.json: copied there from the teacher's run when the
  teacher has one (a student must read the teacher's tokens; not
  `from_teacher`: a cross-tokenizer student has its own), else trained
  on the training split and saved there on first use."""
  d = config.data
  # Several teachers (distill.teachers) read one tokenizer: the first's.
  teacher_dir = ((config.distill.teacher.workdir or config.distill.get(
      'teachers', '').split(',')[0].strip()) if from_teacher else '')
  if d.tokenizer == 'hf':
    return hf_run_tokenizer(d, run_dir, teacher_dir)
  if d.tokenizer != 'bpe':
    return tokenizer(d.tokenizer)
  path = os.path.join(run_dir, 'tokenizer.json') if run_dir else None
  teacher_path = (os.path.join(teacher_dir, 'tokenizer.json')
                  if teacher_dir else None)
  if (path and not os.path.exists(path) and teacher_path
      and os.path.exists(teacher_path)):
    os.makedirs(run_dir, exist_ok=True)
    with open(teacher_path, 'rb') as f:
      files.write_bytes(path, f.read())
  return tokenizer('bpe', name=source(d), vocab_size=d.vocab_size,
                   path=path, data_dir=d.data_dir or None)


def hf_run_tokenizer(d, run_dir: str | None, teacher_dir: str):
  """An 'hf' run's tokenizer: RUN_DIR/tokenizer.json (a converted HF run's,
  or kept there on first use from `data.tokenizer_path` or the teacher's
  run, with the files that name its special tokens)."""
  kept = os.path.join(run_dir, 'tokenizer.json') if run_dir else ''
  if kept and os.path.exists(kept):
    hf_tokenizer.check_kept(kept, d.get('tokenizer_path', ''), teacher_dir)
  else:
    source = hf_tokenizer.source_path(d.get('tokenizer_path', ''),
                                      teacher_dir)
    if not run_dir:
      return tokenizer('hf', path=source, vocab_size=d.vocab_size)
    hf_tokenizer.copy_to_run(source, run_dir)
  return tokenizer('hf', path=kept, vocab_size=d.vocab_size)


def spec(name: str, seq_len: int, tok) -> DatasetSpec:
  """A text dataset as a next-token classification problem: inputs of
  `seq_len` token ids, one class per vocabulary entry."""
  if seq_len <= 0:
    raise ValueError(f'config.data.seq_len={seq_len}: a text dataset ({name})'
                     ' needs the training sequence length; set it > 0')
  return DatasetSpec(name, 'tokens', tok.vocab_size, (seq_len,), (), (),
                     'none', 'int32')


def model_batch(batch: dict) -> dict:
  """A packed batch in the form every kd step reads: `image` the model
  input (token ids [B, T]; the key predates non-image inputs), `label` the
  next tokens [B, T], `mask` and `bytes` per target (and `index`, the
  row numbers, with fixed packing; `source`, a mixed corpus's row source)."""
  tokens = batch['tokens']
  out = {'image': tokens[:, :-1], 'label': tokens[:, 1:],
         'mask': batch['mask'], 'bytes': batch['bytes']}
  for key in ('index', 'source'):
    if key in batch:
      out[key] = batch[key]
  return out
