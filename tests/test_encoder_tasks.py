"""Encoder tasks: classification rows and batches, the encoder's padding and
[CLS] head, terms averaged over the attention mask, config refusals."""
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kd import config as kd_config
from kd import losses
from kd import models
from kd import steps
from kd.data import classify
from kd.data import mlm
from kd.models import encoder

TINY = 'kd_bbcnews/tiny'
TOK = types.SimpleNamespace(pad_id=0, cls_id=2, sep_id=3)


@pytest.fixture(scope='module')
def tok():
  return mlm.tokenizer(name=TINY, vocab_size=300)


def test_rows_are_cls_ids_sep_then_padding():
  got = classify.rows([np.array([7, 8, 9, 10]), np.array([5])], TOK, 5)
  np.testing.assert_array_equal(got, [[2, 7, 8, 9, 3], [2, 5, 3, 0, 0]])
  with pytest.raises(ValueError, match='set seq_len >= 3'):
    classify.rows([np.array([5])], TOK, 2)


def test_labels_are_the_topics_and_batches_resume_exactly(tok):
  texts, labels = classify.documents(TINY, 'train')
  names = classify.classes(TINY)
  assert names == sorted(set(labels)) and set(names) <= {
      'business', 'entertainment', 'politics', 'sports', 'tech'}
  x, y = classify.labelled_rows(TINY, 'train', tok, 16)
  assert [names[i] for i in y] == labels
  np.testing.assert_array_equal(x[:, 0], tok.cls_id)
  first = tok.encode(texts[:1])[0]
  np.testing.assert_array_equal(x[0, 1:15], first[:14])
  assert x[0, 15] == tok.sep_id
  make = lambda start: classify.classify_batches(
      TINY, batch_size=4, seq_len=16, seed=3, tok=tok, start_step=start)
  run = make(0)
  uninterrupted = [next(run) for _ in range(12)]
  resumed = make(7)
  for want in uninterrupted[7:]:
    got = next(resumed)
    np.testing.assert_array_equal(got['image'], want['image'])
    np.testing.assert_array_equal(got['label'], want['label'])
  per_epoch = len(y) // 4
  seen = np.concatenate([b['image'][:, 1:4] for b in uninterrupted[:per_epoch]])
  assert len({r.tobytes() for r in seen}) == per_epoch * 4  # No repeats.


def test_eval_batches_cover_every_document_once_padding_masked(tok):
  x, y = classify.labelled_rows(TINY, 'test', tok, 16)
  batches = list(classify.classify_eval_batches(
      TINY, batch_size=5, seq_len=16, tok=tok))
  mask = np.concatenate([b['mask'] for b in batches])
  assert mask.sum() == len(y) and len(mask) % 5 == 0
  np.testing.assert_array_equal(
      np.concatenate([b['label'] for b in batches])[:len(y)], y)
  pad = np.concatenate([b['image'] for b in batches])[len(y):]
  assert (pad == tok.pad_id).all()


def test_unlabelled_dataset_is_refused():
  with pytest.raises(ValueError, match='kd_pystdlib has no document labels; '
                     'classification datasets: kd_bbcnews'):
    classify.documents('kd_pystdlib', 'train')


def test_pad_id_masks_padding_and_cls_head_is_the_logits():
  model = models.create('transformer_encoder', 5, head='cls', vocab_size=40,
                        d_model=16, num_layers=1, num_heads=2, max_len=8,
                        pad_id=0)
  tokens = jnp.array([[2, 7, 9, 3, 0, 0, 0, 0], [2, 5, 6, 8, 11, 3, 0, 0]])
  variables = model.init(jax.random.key(0), tokens)
  assert 'mlm' not in variables['params']
  logits, feats = model.apply(variables, tokens)
  assert logits.shape == (2, 5)
  assert 'cls_logits' not in feats  # No second head to score.
  np.testing.assert_array_equal(logits, model.clone(head='mlm').apply(
      {'params': dict(variables['params'], mlm=model.clone(head='mlm').init(
          jax.random.key(0), tokens)['params']['mlm'])}, tokens)[1][
              'cls_logits'])
  explicit = model.apply(variables, tokens, attention_mask=tokens != 0)[0]
  np.testing.assert_allclose(logits, explicit, atol=1e-6)
  # Without pad_id the padding is attended to: other logits.
  unmasked = model.clone(pad_id=-1).apply(variables, tokens)[0]
  assert not np.allclose(logits, unmasked, atol=1e-4)
  # Padding changes nothing: a shorter row gives the same logits.
  alone = model.apply(variables, tokens[:1, :4])[0]
  np.testing.assert_allclose(alone, logits[:1], atol=1e-5)
  with pytest.raises(ValueError, match='give its vocabulary as model kwargs '
                     'vocab_size'):
    encoder.create(5, head='cls')
  with pytest.raises(ValueError, match='num_labels=3 but the data has 5'):
    encoder.create(5, head='cls', vocab_size=40, num_labels=3)


def test_a_term_averages_over_the_attention_mask():
  rng = np.random.default_rng(0)
  s, t = rng.normal(size=(2, 2, 6, 4)).astype(np.float32)
  chosen = np.array([[0, 1, 0, 0, 1, 0], [1, 0, 0, 0, 0, 0]], np.float32)
  attention = np.array([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0]], np.int32)
  batch = {'mask': chosen, 'attention_mask': attention}
  cos = 1 - (s * t).sum(-1) / np.linalg.norm(s, axis=-1) / np.linalg.norm(
      t, axis=-1)
  out = {'h': s}, {'h': t}
  term = steps.Term('cos', 'hidden_cosine', 1.0, 'h', 'h',
                    {'average_over': 'attention_mask'})
  np.testing.assert_allclose(term(*out, batch)[0],
                             (cos * attention).sum() / attention.sum(),
                             rtol=1e-5)
  plain = steps.Term('cos', 'hidden_cosine', 1.0, 'h', 'h')
  np.testing.assert_allclose(plain(*out, batch)[0],
                             (cos * chosen).sum() / chosen.sum(), rtol=1e-5)
  wrong = steps.Term('cos', 'hidden_cosine', 1.0, 'h', 'h',
                     {'average_over': 'attention'})
  with pytest.raises(ValueError, match="average_over='attention' is not a "
                     'mask of this batch'):
    wrong(*out, batch)
  assert losses.spec('hidden_cosine').per_position


def _encoder_config(**data):
  c = kd_config.run_config()
  c.data.update(dict(dict(name=TINY, seq_len=16, task='mlm',
                         tokenizer='wordpiece', vocab_size=300), **data))
  c.model.name = 'transformer_encoder'
  return c


@pytest.mark.parametrize('change, message', [
    (dict(tokenizer='byte'), "config.data.tokenizer='byte': the mlm task reads "
     "BERT's WordPiece tokens"),
    (dict(task='lm'), "config.data.tokenizer='wordpiece': WordPiece has no "
     'end-of-text token to predict'),
    (dict(task='classify'), "config.model.kwargs.head='mlm': the classify task "
     "reads the cls head's logits; set --config.model.kwargs.head='cls'"),
    (dict(task='fill'), "config.data.task='fill': unknown task; valid: lm, mlm,"
     ' classify'),
    (dict(vocab_size=5), 'config.data.vocab_size=5: the WordPiece vocabulary'),
    (dict(export=('float32',)), "config.export.formats=('float32',): a mlm "
     'run is exported after training'),
])
def test_bad_encoder_configs_are_refused(change, message):
  export = change.pop('export', ())
  c = _encoder_config(**change)
  c.export.formats = export
  with pytest.raises(kd_config.ConfigError) as e:
    kd_config.validate(c)
  assert str(e.value).startswith(message), str(e.value)


def test_a_classifier_embeds_data_vocab_size():
  c = _encoder_config(task='classify')
  c.model.kwargs.head = 'cls'
  with pytest.raises(kd_config.ConfigError, match=r'set --config.model.kwargs'
                     r'.vocab_size=300'):
    kd_config.validate(c)
  c.model.kwargs.vocab_size = 300
  kd_config.validate(c)
