"""`python -m kd.export` of a transformer_encoder run (a DistilBERT-shaped
[CLS] classifier; a masked-LM encoder): TFLite and ONNX files of token ids,
their sidecar and tokenizer, parity with JAX on padded rows."""
import json
import os
import shutil

import numpy as np
import pytest
from absl import flags
from absl.testing import flagsaver

from kd import runs
from kd.data import mlm
from kd.export import __main__ as export_cli
from kd.export import encoder
from tests.encoder_runs import CLASSIFIER, TEXTS, T, VOCAB, write_run


def export(workdir, out, *more):
  """`python -m kd.export --workdir=... --out=... MORE`: None, or the
  one-line refusal it exits with."""
  with flagsaver.flagsaver():
    flags.FLAGS(['kd.export', f'--workdir={workdir}', f'--out={out}', *more])
    try:
      export_cli.cli_main([])
    except SystemExit as e:
      return str(e.code)
  return None


@pytest.fixture(scope='module')
def classifier(tmp_path_factory):
  tmp = tmp_path_factory.mktemp('classifier')
  return write_run(str(tmp / 'run'), CLASSIFIER,
                   class_names=['business', 'sport', 'politics'])


@pytest.mark.parametrize('fmt, quantize, tolerance', [
    ('tflite', 'none', 1e-4), ('onnx', 'none', 1e-4),
    ('tflite', 'dynamic', 0.5)])
def test_the_classifier_file_takes_token_ids_and_matches_jax(
    classifier, tmp_path, fmt, quantize, tolerance):
  out = str(tmp_path / f'clf_{quantize}.{fmt}')
  assert export(classifier, out, f'--format={fmt}',
                f'--quantize={quantize}') is None
  with open(out + '.json') as f:
    side = json.load(f)
  assert (side['kind'], side['head'], side['num_labels'], side['format'],
          side['bytes']) == ('transformer_encoder', 'cls', 3, fmt,
                             os.path.getsize(out))
  assert side['class_names'] == ['business', 'sport', 'politics']
  assert side['input']['shape'] == [1, T] and side['input']['dtype'] == 'int32'
  assert side['output']['shape'] == [1, 3]
  assert 'tokens != 0' in side['input']['attention_mask']
  assert side['input']['format'].startswith('[CLS] (id 2)')
  # The tokenizer shipped beside the file is the run's.
  tok_file = os.path.join(tmp_path, side['tokenizer']['file'])
  with open(tok_file) as f, open(os.path.join(classifier,
                                              'tokenizer.json')) as g:
    assert f.read() == g.read()
  tok = mlm.WordPieceTokenizer.load(tok_file)
  assert (side['tokenizer']['pad_id'], side['tokenizer']['cls_id'],
          side['tokenizer']['sep_id']) == (tok.pad_id, tok.cls_id, tok.sep_id)
  # An app: the documented row of a real text, run by the file alone.
  ids = tok.encode([TEXTS[0]])[0][:T - 2]
  row = np.full((1, T), tok.pad_id, np.int32)
  row[0, :len(ids) + 2] = [tok.cls_id, *ids, tok.sep_id]
  got = encoder.Runner(open(out, 'rb').read(), fmt).predict(row)
  _, model, variables, _ = runs.load_run(classifier)
  # The mask is inside the file: the padded row gives the model's logits
  # of the unpadded ids.
  want = np.asarray(model.apply(variables, row[:, :len(ids) + 2])[0])
  assert got.shape == (1, 3)
  assert np.max(np.abs(got - want)) < tolerance
  assert side['parity']['max_abs_diff_vs_jax'] < tolerance
  if quantize == 'none':
    assert side['parity']['top1_agreement_with_jax'] == 1.0
  else:  # int8 weights: the same class on most rows.
    assert side['parity']['top1_agreement_with_jax'] >= 0.75


def test_a_masked_lm_encoder_exports_its_vocabulary_logits(tmp_path):
  kwargs = {k: v for k, v in CLASSIFIER.items()
            if k not in ('head', 'vocab_size', 'num_labels',
                         'pooler_activation')}
  workdir = write_run(str(tmp_path / 'run'), kwargs, task='mlm')
  out = str(tmp_path / 'mlm.tflite')
  assert export(workdir, out) is None
  with open(out + '.json') as f:
    side = json.load(f)
  assert side['head'] == 'mlm' and side['output']['shape'] == [1, T, VOCAB]
  assert 'class_names' not in side and 'num_labels' not in side
  assert side['parity']['max_abs_diff_vs_jax'] < 1e-4


def test_refusals_are_one_line(classifier, tmp_path):
  out = str(tmp_path / 'x.tflite')
  err = export(classifier, out, '--quantize=int8')
  assert err == f'kd.export: {encoder.INT8_REFUSED}'
  with pytest.raises(Exception, match='--batch, --softmax and '
                     '--representative are for image'):
    export(classifier, out, '--batch=2')
  bare = str(tmp_path / 'bare')
  shutil.copytree(classifier, bare)
  os.remove(os.path.join(bare, 'tokenizer.json'))
  err = export(bare, out)
  assert err == (f'kd.export: {bare}/tokenizer.json not found: an encoder '
                 "export ships the run's WordPiece tokenizer; copy the "
                 'tokenizer.json the run was trained with into the run '
                 'directory')
  assert not os.path.exists(out)
