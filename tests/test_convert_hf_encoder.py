"""python -m kd.convert --from=hf for bert and distilbert (kd.convert.
hf_encoder): masked-LM logits equal transformers' (tests/fixtures/hf), the
table inverts exactly and exports transformers' names, an exported encoder
with a [CLS] head reads back identically, bert-base-uncased's checkpoint
forms load, and each refusal names its cause."""
import importlib.util
import json
import os
import shutil

import jax
import numpy as np
import pytest
import tokenizers as tk
from safetensors.numpy import load_file, save_file

from kd import runs
from kd.convert import __main__ as cli
from kd.convert import hf
from kd.export import hf as export_hf
from tests import hf_checks

HF = hf_checks.HF
ENCODERS = ('bert', 'distilbert')



def _load(run_dir):
  """(apply(variables, tokens, mask) -> (MLM logits, features) as NumPy,
  jitted; the converted run's variables)."""
  _, model, variables, step = runs.load_run(str(run_dir))
  assert step == 0
  fn = jax.jit(lambda v, t, m: model.apply(v, t, train=False,
                                            attention_mask=m))
  return lambda *a: jax.tree.map(np.asarray, fn(*a)), variables


def _apply(run_dir, tokens, mask=None):
  fn, variables = _load(run_dir)
  return fn(variables, tokens, mask)


@pytest.mark.parametrize('family', ENCODERS)
def test_logits_equal_transformers(family, tmp_path, capsys):
  src = os.path.join(HF, family)
  code, out, err = hf_checks.convert(capsys, src, tmp_path / 'run')
  assert code == 0, err
  assert 'wrote' in out
  ref = np.load(os.path.join(src, 'logits.npz'))
  logits, feats = _apply(tmp_path / 'run', ref['tokens'],
                         ref['attention_mask'])
  hf_checks.assert_parity(logits, ref['logits'], family, family)
  assert 'cls_logits' not in feats  # A masked-LM checkpoint: no [CLS] head.
  config = json.load(open(tmp_path / 'run' / 'config.json'))
  assert config['model']['name'] == 'transformer_encoder'
  assert config['model']['kwargs']['type_vocab_size'] == (
      2 if family == 'bert' else 0)


@pytest.mark.parametrize('family', ENCODERS)
def test_table_inverts_and_names_equal_transformers(family):
  """Export (hf_tensors, to_hf_config) of the imported params gives the
  folder's own tensors, transformers' names and shapes for that config
  (names/<family>.json, written by save_pretrained), and the same kd model
  back; a kd encoder of these options exports as this family by default."""
  p = hf.plan(os.path.join(HF, family))
  params = hf.read_params(p)
  exported = dict(hf.hf_tensors(p['model'], p['kwargs'], params))
  names = json.load(open(os.path.join(HF, 'names', f'{family}.json')))
  assert {n: list(a.shape) for n, a in exported.items()} == names['tensors']
  for name, array in exported.items():
    np.testing.assert_array_equal(array, p['weights'].read(name))
  cfg = hf.to_hf_config(p['model'], p['kwargs'], p['vocab'])
  assert cfg['model_type'] == family
  assert cfg['architectures'] == names['config']['architectures']
  assert hf.kd_config(cfg) == (p['model'], p['kwargs'], p['vocab'])


_spec = importlib.util.spec_from_file_location(
    'make_exported_encoder', os.path.join(HF, 'exported_encoder', 'make.py'))
make = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make)


@pytest.mark.parametrize('name', list(make.MODELS))
def test_export_with_a_cls_head_is_what_transformers_computes(name, tmp_path,
                                                              capsys):
  """A kd encoder with a [CLS] head exports as *ForSequenceClassification
  (pooler / pre_classifier, classifier, and the masked-LM head beside them):
  the committed export (tests/fixtures/hf/exported_encoder) is what the
  tables write; transformers' masked-LM and class logits on it (padding
  masked) are kd's; and it reads back to the same kd model."""
  folder = os.path.join(HF, 'exported_encoder', name)
  config, tensors = make.folder_files(name)
  assert config == json.load(open(os.path.join(folder, 'config.json')))
  committed = load_file(os.path.join(folder, 'model.safetensors'))
  assert sorted(committed) == sorted(tensors)
  for key, array in tensors.items():
    np.testing.assert_array_equal(committed[key], array, err_msg=key)
  assert config['architectures'] == [
      {'bert': 'BertForSequenceClassification',
       'distilbert': 'DistilBertForSequenceClassification'}[
           name.removesuffix('_cls')]]
  assert len(config['id2label']) == make.MODELS[name]['num_labels']
  assert hf_checks.convert(capsys, folder, tmp_path / 'run')[0] == 0
  ref = np.load(os.path.join(folder, 'logits.npz'))
  fn, variables = _load(tmp_path / 'run')
  logits, feats = fn(variables, ref['tokens'], ref['attention_mask'])
  cls = name.endswith('_cls')  # A fine-tuned classifier: no masked-LM head.
  # head='cls': the logits are the class logits.
  pairs = [(logits if cls else feats['cls_logits'], ref['cls_logits'])]
  if cls:
    assert 'logits' not in ref and 'mlm' not in variables['params']
    assert config['pad_token_id'] == 0
    _, model, _, _ = runs.load_run(str(tmp_path / 'run'))
    assert (model.head, model.pad_id) == ('cls', 0)
    # One input: the mask from the [PAD] ids is transformers' mask.
    pairs.append((np.asarray(model.apply(variables, ref['tokens'])[0]),
                  ref['cls_logits']))
  else:
    pairs.append((logits, ref['logits']))
  for got, want in pairs:
    assert got.shape == want.shape
    assert np.abs(got - want).max() <= 1e-4 * max(1, np.abs(want).max())
  kd_logits, kd_feats = fn({'params': make.params(name)}, ref['tokens'],
                           ref['attention_mask'])
  np.testing.assert_array_equal(logits, kd_logits)
  if not cls:
    np.testing.assert_array_equal(feats['cls_logits'],
                                  kd_feats['cls_logits'])


def _folder(tmp_path, family='bert', config=None, drop=(), add=None,
            rename=None):
  """A copy of fixture `family` with config.json updated by `config` and
  model.safetensors without `drop`, with `add`, names changed by
  `rename(name)`."""
  dst = tmp_path / family
  shutil.copytree(os.path.join(HF, family), dst)
  if config is not None:
    cfg = json.load(open(dst / 'config.json'))
    cfg.update(config)
    json.dump(cfg, open(dst / 'config.json', 'w'))
  w = hf.Weights(str(dst))
  tensors = {(rename or str)(n): w.read(n) for n in w.entries
             if n not in drop}
  save_file({**tensors, **(add or {})}, str(dst / 'model.safetensors'))
  return dst


def test_bert_base_uncased_checkpoint_forms(tmp_path, capsys):
  """The Hub's bert-base-uncased file (saved by BertForPreTraining, before
  transformers renamed LayerNorm's gamma/beta) holds LayerNorm.gamma/beta,
  the pooler, the next-sentence head, the position_ids buffer and the tied
  decoder: it converts to the same logits."""
  w = hf.Weights(os.path.join(HF, 'bert'))
  d = 48
  src = _folder(
      tmp_path, rename=lambda n: n.replace('LayerNorm.weight',
                                           'LayerNorm.gamma').replace(
                                               'LayerNorm.bias',
                                               'LayerNorm.beta'),
      add={'bert.pooler.dense.weight': np.ones((d, d), np.float32),
           'bert.pooler.dense.bias': np.ones(d, np.float32),
           'cls.seq_relationship.weight': np.ones((2, d), np.float32),
           'cls.seq_relationship.bias': np.ones(2, np.float32),
           'bert.embeddings.position_ids': np.arange(64)[None].astype(
               np.float32),
           'cls.predictions.decoder.weight': w.read(
               'bert.embeddings.word_embeddings.weight'),
           'cls.predictions.decoder.bias': w.read('cls.predictions.bias')})
  code, _, err = hf_checks.convert(capsys, src, tmp_path / 'run')
  assert code == 0, err
  ref = np.load(os.path.join(HF, 'bert', 'logits.npz'))
  logits, _ = _apply(tmp_path / 'run', ref['tokens'])
  scale = max(1.0, float(np.abs(ref['logits']).max()))
  assert np.abs(logits - ref['logits']).max() <= 1e-4 * scale


def _refused(capsys, tmp_path, src, *patterns):
  code, _, err = hf_checks.convert(capsys, src, tmp_path / 'out')
  assert code == 1
  for pattern in patterns:
    assert pattern in err, err
  assert not os.path.exists(tmp_path / 'out')
  return err


@pytest.mark.parametrize('family, config, patterns', [
    ('bert', {'hidden_act': 'relu'}, ["hidden_act='relu'", "'gelu'"]),
    ('bert', {'position_embedding_type': 'relative_key'},
     ["position_embedding_type='relative_key'", "'absolute'"]),
    ('bert', {'is_decoder': True}, ['is_decoder=True']),
    ('distilbert', {'tie_word_embeddings': False},
     ['tie_word_embeddings=False', 'supported: True']),
    ('bert', {'architectures': ['BertForQuestionAnswering']},
     ['BertForQuestionAnswering', 'BertForMaskedLM']),
])
def test_refuses_unsupported_options(family, config, patterns, tmp_path,
                                     capsys):
  _refused(capsys, tmp_path, _folder(tmp_path, family, config), *patterns)


def test_a_classifier_without_the_masked_lm_head_is_a_cls_head(tmp_path,
                                                                 capsys):
  """A BertForSequenceClassification checkpoint from transformers has no
  masked-LM head: it converts to head='cls' (pad_token_id the pad_id), its
  logits the classifier of the tanh pooler of the [CLS] hidden state."""
  rng = np.random.default_rng(0)
  head = {'bert.pooler.dense.weight': rng.normal(0, 0.3, (48, 48)),
          'bert.pooler.dense.bias': rng.normal(0, 0.3, 48),
          'classifier.weight': rng.normal(0, 0.3, (3, 48)),
          'classifier.bias': rng.normal(0, 0.3, 3)}
  src = _folder(tmp_path, config={
      'architectures': ['BertForSequenceClassification'],
      'id2label': {'0': 'a', '1': 'b', '2': 'c'}, 'pad_token_id': 0},
      drop=[n for n in hf.Weights(os.path.join(HF, 'bert')).entries
            if n.startswith('cls.')],
      add={k: v.astype(np.float32) for k, v in head.items()})
  assert hf_checks.convert(capsys, src, tmp_path / 'run')[0] == 0
  config, model, variables, _ = runs.load_run(str(tmp_path / 'run'))
  assert (model.head, model.num_labels, model.vocab_size, model.pad_id,
          config.data.task) == ('cls', 3, 128, 0, 'classify')
  assert 'mlm' not in variables['params']
  # --describe reads the weight headers: no masked-LM head counted.
  assert cli.main(['--from=hf', '--describe', str(src)]) == 0
  n = sum(np.size(x) for x in jax.tree.leaves(variables['params']))
  assert f'parameters: {n:,}\n' in capsys.readouterr().out
  assert hf_checks.convert(capsys, os.path.join(HF, 'bert'),
                           tmp_path / 'mlm')[0] == 0
  fn, mlm_variables = _load(tmp_path / 'mlm')
  tokens = np.array([[2, 9, 10, 11, 3, 0, 0]], np.int32)
  _, feats = fn(mlm_variables, tokens, tokens != 0)
  pooled = np.tanh(feats['embedding'][:, 0] @ head['bert.pooler.dense.weight'].T
                   + head['bert.pooler.dense.bias'])
  want = pooled @ head['classifier.weight'].T + head['classifier.bias']
  got = np.asarray(model.apply(variables, tokens)[0])  # Mask from pad_id.
  np.testing.assert_allclose(got, want, atol=1e-4)


@pytest.mark.parametrize('kwargs, model_type, pattern', [
    (dict(norm='pre'), None, "norm='pre'"),
    (dict(type_vocab_size=0, norm_eps=1e-5), None, 'norm_eps=1e-05'),
    (dict(type_vocab_size=0), 'bert', 'type_vocab_size=0'),
    (dict(num_labels=2, pooler_activation='relu'), None,
     "pooler_activation='relu'"),
])
def test_export_refuses_an_option_without_hf_equivalent(kwargs, model_type,
                                                        pattern):
  kwargs = dict(d_model=16, num_layers=1, num_heads=2, **kwargs)
  with pytest.raises(hf.UnsupportedError, match=pattern):
    hf.to_hf_config('transformer_encoder', kwargs, 40, model_type=model_type)


def _wordpiece(folder):
  """BERT's kind of tokenizer (WordPiece, lower-cased, [CLS] ... [SEP];
  no eos, and it does not keep every byte) in `folder`, 128 ids."""
  specials = ['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]']
  pieces = specials + [p for c in 'abcdefghijklmnopqrstuvwxyz'
                       for p in (c, '##' + c)]
  pieces += [f'[unused{i}]' for i in range(128 - len(pieces))]
  tok = tk.Tokenizer(tk.models.WordPiece(
      {p: i for i, p in enumerate(pieces)}, unk_token='[UNK]'))
  tok.normalizer = tk.normalizers.BertNormalizer(lowercase=True)
  tok.pre_tokenizer = tk.pre_tokenizers.BertPreTokenizer()
  tok.post_processor = tk.processors.TemplateProcessing(
      single='[CLS] $A [SEP]', special_tokens=[('[CLS]', 2), ('[SEP]', 3)])
  tok.save(os.path.join(folder, 'tokenizer.json'))
  with open(os.path.join(folder, 'tokenizer_config.json'), 'w') as f:
    json.dump({'tokenizer_class': 'BertTokenizer', 'cls_token': '[CLS]',
               'sep_token': '[SEP]', 'pad_token': '[PAD]',
               'mask_token': '[MASK]', 'unk_token': '[UNK]'}, f)


def test_a_converted_bert_with_its_tokenizer_exports_as_it_came(tmp_path,
                                                                capsys):
  """--from=hf then kd.export --format=hf: the same tensors, the tokenizer
  files as they were (never read by kd's text pipeline, which cannot read
  a WordPiece tokenizer), the folder's pad id, no generation_config."""
  src = _folder(tmp_path)
  _wordpiece(src)
  assert hf_checks.convert(capsys, src, tmp_path / 'run')[0] == 0
  export_hf.export(str(tmp_path / 'run'), str(tmp_path / 'out'))
  out = tmp_path / 'out'
  assert sorted(os.listdir(out)) == ['config.json', 'model.safetensors',
                                     'tokenizer.json', 'tokenizer_config.json']
  for name in ('tokenizer.json', 'tokenizer_config.json'):
    assert (out / name).read_bytes() == (src / name).read_bytes()
  config = json.load(open(out / 'config.json'))
  assert (config['model_type'], config['architectures'],
          config['pad_token_id']) == ('bert', ['BertForMaskedLM'], 0)
  got, want = (load_file(str(d / 'model.safetensors')) for d in (out, src))
  assert sorted(got) == sorted(want)
  for name in want:
    np.testing.assert_array_equal(got[name], want[name])
