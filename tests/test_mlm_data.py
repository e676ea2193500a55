"""Masked-LM data: WordPiece tokenizer, [CLS]/[SEP] packing, masking, resume."""
import json
import os

import numpy as np
import pytest

from kd.data import mlm
from kd.data import text

FIXTURE = os.path.join(os.path.dirname(__file__), 'fixtures', 'hf', 'bert')
TINY = 'kd_pystdlib/tiny'
WORDS = ('the cat sat on a mat while dogs ran across fields and rivers under '
         'grey skies Naïve Café players scored goals').split()


def _docs(n=300, seed=0):
  rng = np.random.default_rng(seed)
  return [' '.join(rng.choice(WORDS, rng.integers(3, 25))) + '.'
          for _ in range(n)]


@pytest.fixture(scope='module')
def tok():
  return mlm.WordPieceTokenizer.train(_docs(), 120)


def test_trained_tokenizer_is_berts_kind_and_round_trips(tok, tmp_path):
  assert [tok.id_to_token(i) for i in range(5)] == list(mlm.SPECIALS)
  assert (tok.pad_id, tok.unk_id, tok.cls_id, tok.sep_id, tok.mask_id) == (
      0, 1, 2, 3, 4)
  assert 60 < tok.vocab_size <= 120  # Fewer when the corpus has no more.
  ids = tok.encode(['Naïve café players'])[0]
  assert not np.isin(ids, tok.special_ids).any()  # No [CLS]/[SEP] added.
  # bert-base-uncased's normaliser: lowercase, accents stripped.
  assert tok.decode(ids) == 'naive cafe players'
  assert tok.encode(['xyzzy'])[0].tolist() != []
  specials = tok.encode(['[CLS] the [MASK] sat [SEP]'])[0]
  assert specials[[0, 2, 4]].tolist() == [2, 4, 3]
  path = str(tmp_path / 'tokenizer.json')
  tok.save(path)
  again = mlm.tokenizer(path=path, vocab_size=120)
  assert again.encode(_docs(5, 1))[0].tolist() == tok.encode(
      _docs(5, 1))[0].tolist()
  spec = json.load(open(path))
  assert spec['normalizer']['type'] == 'BertNormalizer'
  assert spec['pre_tokenizer']['type'] == 'BertPreTokenizer'
  assert spec['decoder']['type'] == 'WordPiece'
  assert mlm.tokenizer(path=path, vocab_size=200).vocab_size == tok.vocab_size
  with pytest.raises(ValueError, match=f'vocabulary {tok.vocab_size}, more '
                     f'than the configured 50: set the vocabulary size to '
                     f'{tok.vocab_size} or more'):
    mlm.tokenizer(path=path, vocab_size=50)


def test_an_hf_bert_folders_tokenizer_loads_with_its_specials(tmp_path):
  tok = mlm.WordPieceTokenizer.load(FIXTURE)
  assert (tok.pad_id, tok.unk_id, tok.cls_id, tok.sep_id, tok.mask_id) == (
      0, 1, 2, 3, 4)
  # Names from tokenizer_config.json, wherever the ids are.
  spec = json.load(open(os.path.join(FIXTURE, 'tokenizer.json')))
  (tmp_path / 'tokenizer.json').write_text(json.dumps(spec))
  (tmp_path / 'tokenizer_config.json').write_text(json.dumps(
      {'cls_token': '[MASK]', 'mask_token': '[CLS]'}))
  swapped = mlm.WordPieceTokenizer.load(str(tmp_path / 'tokenizer.json'))
  assert (swapped.cls_id, swapped.mask_id) == (4, 2)
  # A saved truncation (to the model's length) never cuts a document.
  spec['truncation'] = {'direction': 'Right', 'max_length': 4, 'strategy':
                        'LongestFirst', 'stride': 0}
  (tmp_path / 'tokenizer.json').write_text(json.dumps(spec))
  assert len(swapped.encode(['a b c d e f g h'])[0]) == 8
  assert len(mlm.WordPieceTokenizer.load(str(tmp_path)).encode(
      ['a b c d e f g h'])[0]) == 8
  (tmp_path / 'tokenizer.json').write_text(json.dumps(spec)[:100])
  with pytest.raises(ValueError, match='tokenizer.json is not a '
                     'tokenizer.json the tokenizers library reads'):
    mlm.WordPieceTokenizer.load(str(tmp_path))
  (tmp_path / 'tokenizer.json').write_text(json.dumps(spec))
  (tmp_path / 'tokenizer_config.json').write_text(json.dumps(
      {'mask_token': '<mask>'}))
  with pytest.raises(ValueError, match=r"no mask token '<mask>' in its "
                     r'vocabulary; masked-LM data needs'):
    mlm.WordPieceTokenizer.load(str(tmp_path))


def test_rows_start_with_cls_and_documents_end_with_sep(tok):
  docs = [np.array([10, 11, 12]), np.array([20]), np.array([30, 31, 32, 33])]
  rows, attention = mlm.pack_rows(docs, tok, 4)
  # Stream 10 11 12 S 20 S 30 31 32 33 S (11 tokens): pieces of 3.
  np.testing.assert_array_equal(rows, [[2, 10, 11, 12], [2, 3, 20, 3],
                                       [2, 30, 31, 32]])
  assert attention.all() and mlm.num_rows(docs, 4) == 3
  rows, attention = mlm.pack_rows(docs, tok, 4, pad=True)
  np.testing.assert_array_equal(rows[-1], [2, 33, 3, 0])
  np.testing.assert_array_equal(attention[-1], [1, 1, 1, 0])
  assert attention[:-1].all()
  with pytest.raises(ValueError, match='set seq_len >= 2'):
    mlm.pack_rows(docs, tok, 1)


def test_masking_statistics_and_no_special_ever_chosen(tok):
  rows, _ = mlm.pack_rows(tok.encode(_docs(2000, 3)), tok, 64, pad=True)
  inputs, labels, chosen = mlm.mask_tokens(rows, 7, 1, tok)
  np.testing.assert_array_equal(labels, rows)
  special = np.isin(rows, tok.special_ids)
  c = chosen.astype(bool)
  n_normal, n_chosen = (~special).sum(), c.sum()
  assert n_normal > 25_000
  assert not (c & special).any()
  assert abs(n_chosen / n_normal - 0.15) < 0.01
  # Unchosen positions are untouched.
  np.testing.assert_array_equal(inputs[~c], rows[~c])
  masked = (inputs[c] == tok.mask_id).mean()
  changed = ((inputs[c] != rows[c]) & (inputs[c] != tok.mask_id)).mean()
  kept = (inputs[c] == rows[c]).mean()
  assert abs(masked - 0.8) < 0.02
  # A random token equal to the original counts as kept: 10% / normal.
  normal = tok.vocab_size - len(tok.special_ids)
  assert abs(changed - 0.1 * (1 - 1 / normal)) < 0.015
  assert abs(kept - 0.1 * (1 + 1 / normal)) < 0.015
  # Random replacements are ordinary tokens, drawn over the vocabulary.
  swapped = inputs[c][(inputs[c] != rows[c]) & (inputs[c] != tok.mask_id)]
  assert not np.isin(swapped, tok.special_ids).any()
  assert len(np.unique(swapped)) > 60


def test_masking_is_a_pure_function_of_step_seed_and_row(tok):
  rows, _ = mlm.pack_rows(tok.encode(_docs(200, 4)), tok, 32)
  a = mlm.mask_tokens(rows, 5, 0, tok)
  for x, y in zip(a, mlm.mask_tokens(rows, 5, 0, tok)):
    np.testing.assert_array_equal(x, y)
  assert (a[2] != mlm.mask_tokens(rows, 6, 0, tok)[2]).any()
  assert (a[2] != mlm.mask_tokens(rows, 5, 1, tok)[2]).any()
  # Rows 4.. of the batch, masked on their own (another process's share).
  tail = mlm.mask_tokens(rows[4:], 5, 0, tok, first_row=4)
  np.testing.assert_array_equal(tail[0], a[0][4:])


@pytest.fixture(scope='module')
def stdlib_tok(tmp_path_factory):
  d = str(tmp_path_factory.mktemp('tfds_mlm'))
  path = str(tmp_path_factory.mktemp('run') / 'tokenizer.json')
  return mlm.tokenizer(name=TINY, vocab_size=300, path=path, data_dir=d), d, path


def test_a_tokenizer_trained_on_a_dataset_is_kept_in_the_run(stdlib_tok):
  tok, d, path = stdlib_tok
  assert 200 < tok.vocab_size <= 300
  kept = mlm.tokenizer(name=TINY, vocab_size=300, path=path, data_dir=d)
  assert kept.path == path  # Loaded, not trained again.
  docs = text.documents(TINY, 'train', d)[:3]
  assert [x.tolist() for x in kept.encode(docs)] == [
      x.tolist() for x in tok.encode(docs)]
  with pytest.raises(ValueError, match=r"trained on a dataset \(name=None\)"):
    mlm.tokenizer(vocab_size=300)


def test_mlm_batches_resume_exactly_and_split_over_processes(stdlib_tok):
  tok, d, _ = stdlib_tok
  kw = dict(batch_size=4, seq_len=32, seed=3, tok=tok, data_dir=d)
  it = mlm.mlm_batches(TINY, **kw, process_count=1, process_index=0)
  rows = mlm.num_rows(tok.encode(text.documents(TINY, 'train', d)), 32)
  per_epoch = rows // 4
  full = [next(it) for _ in range(per_epoch + 3)]  # Into epoch 1.
  b = full[0]
  assert set(b) == {'image', 'label', 'mask', 'attention_mask'}
  assert b['image'].shape == b['label'].shape == (4, 32)
  assert (b['label'][:, 0] == tok.cls_id).all()
  assert b['mask'].dtype == np.float32 and b['attention_mask'].all()
  assert (b['image'] == tok.mask_id).any()
  assert not (full[0]['mask'] == full[1]['mask']).all()
  k = per_epoch - 1
  resumed = mlm.mlm_batches(TINY, **kw, start_step=k, process_count=1,
                            process_index=0)
  for want in full[k:]:
    got = next(resumed)
    for key in want:
      np.testing.assert_array_equal(got[key], want[key])
  # Two processes of 2 rows make the same global batches.
  kw['batch_size'] = 2
  halves = [mlm.mlm_batches(TINY, **kw, process_count=2, process_index=i)
            for i in range(2)]
  for want in full[:3]:
    got = [next(h) for h in halves]
    for key in want:
      np.testing.assert_array_equal(
          np.concatenate([g[key] for g in got]), want[key])


def test_eval_batches_pad_and_never_choose_padding(stdlib_tok):
  tok, d, _ = stdlib_tok
  batches = list(mlm.mlm_eval_batches(TINY, batch_size=8, seq_len=32,
                                      tok=tok, data_dir=d))
  last = batches[-1]
  assert not last['attention_mask'].all()
  pad = last['attention_mask'] == 0
  assert (last['label'][pad] == tok.pad_id).all()
  assert not last['mask'][pad].any()
  again = list(mlm.mlm_eval_batches(TINY, batch_size=8, seq_len=32,
                                    tok=tok, data_dir=d))
  np.testing.assert_array_equal(again[0]['image'], batches[0]['image'])


def test_a_batch_feeds_the_encoder_and_the_loss_counts_chosen_positions(
    stdlib_tok):
  import jax  # pylint: disable=import-outside-toplevel
  from kd import models  # pylint: disable=import-outside-toplevel
  from kd.losses import classification, reduce  # pylint: disable=import-outside-toplevel
  tok, d, _ = stdlib_tok
  b = next(mlm.mlm_eval_batches(TINY, batch_size=2, seq_len=16, tok=tok,
                                data_dir=d))
  model = models.create('transformer_encoder', tok.vocab_size, d_model=16,
                        num_layers=1, num_heads=2, max_len=16)
  variables = model.init(jax.random.key(0), b['image'])
  logits, _ = model.apply(variables, b['image'],
                          attention_mask=b['attention_mask'])
  loss = reduce.masked_mean(
      classification.cross_entropy(logits, b['label']), b['mask'])
  z = np.asarray(logits, np.float64)
  logp = z - np.log(np.exp(z - z.max(-1, keepdims=True)).sum(-1,
                    keepdims=True)) - z.max(-1, keepdims=True)
  nll = -np.take_along_axis(logp, b['label'][..., None], -1)[..., 0]
  assert b['mask'].sum() > 0
  np.testing.assert_allclose(
      loss, (nll * b['mask']).sum() / b['mask'].sum(), rtol=1e-5)
