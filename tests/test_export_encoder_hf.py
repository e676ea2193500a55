"""`python -m kd.export --format=hf` of a kd-trained encoder: a [CLS]
classifier without token types is DistilBertForSequenceClassification, one
with them BertForSequenceClassification; the WordPiece tokenizer goes with
it; `kd.convert --from=hf` reads it back to the same logits (transformers'
own logits on such folders: tests/fixtures/hf/exported_encoder)."""
import json
import os

import numpy as np
import pytest
import tokenizers as tk
from absl import flags
from absl.testing import flagsaver

from kd import runs
from kd.convert import __main__ as convert_cli
from kd.export import __main__ as export_cli
from tests.encoder_runs import CLASSIFIER, TEXTS, T, write_run

BERT = dict(CLASSIFIER, type_vocab_size=2, pooler_activation='tanh')


def export(workdir, out):
  with flagsaver.flagsaver():
    flags.FLAGS(['kd.export', f'--workdir={workdir}', '--format=hf',
                 f'--out={out}'])
    try:
      export_cli.cli_main([])
    except SystemExit as e:
      return str(e.code)
  return None


@pytest.mark.parametrize('kwargs, model_type, architecture', [
    (CLASSIFIER, 'distilbert', 'DistilBertForSequenceClassification'),
    (BERT, 'bert', 'BertForSequenceClassification')])
def test_a_trained_classifier_exports_and_reads_back(tmp_path, kwargs,
                                                     model_type, architecture):
  workdir = write_run(str(tmp_path / 'run'), kwargs,
                      class_names=['business', 'sport', 'politics'])
  folder, back = str(tmp_path / 'hf'), str(tmp_path / 'back')
  assert export(workdir, folder) is None
  assert sorted(os.listdir(folder)) == [
      'config.json', 'model.safetensors', 'tokenizer.json',
      'tokenizer_config.json']
  with open(os.path.join(folder, 'config.json')) as f:
    config = json.load(f)
  assert (config['model_type'], config['architectures'], config['vocab_size'],
          config['pad_token_id']) == (model_type, [architecture], 60, 0)
  assert config['id2label'] == {'0': 'business', '1': 'sport',
                                '2': 'politics'}
  with open(os.path.join(folder, 'tokenizer_config.json')) as f:
    tok_config = json.load(f)
  assert {k: tok_config[f'{k}_token'] for k in
          ('pad', 'unk', 'cls', 'sep', 'mask')} == {
              'pad': '[PAD]', 'unk': '[UNK]', 'cls': '[CLS]', 'sep': '[SEP]',
              'mask': '[MASK]'}
  # transformers' tokenizer (tokenizers, as it runs it) makes kd's rows.
  fast = tk.Tokenizer.from_file(os.path.join(folder, 'tokenizer.json'))
  ids = fast.encode(TEXTS[1]).ids
  assert ids[0] == 2 and ids[-1] == 3
  assert ids[1:-1] == fast.encode(TEXTS[1], add_special_tokens=False).ids
  assert convert_cli.main(['--from=hf', folder, f'--out={back}']) == 0
  _, model, variables, _ = runs.load_run(workdir)
  _, model_back, variables_back, _ = runs.load_run(back)
  assert (model_back.head, model_back.num_labels, model_back.pad_id) == (
      'cls', 3, 0)
  tokens = np.zeros((2, T), np.int32)
  tokens[0, :len(ids)] = ids[:T]
  tokens[1, :4] = [2, 9, 10, 3]
  want = np.asarray(model.apply(variables, tokens)[0])
  got = np.asarray(model_back.apply(variables_back, tokens)[0])
  assert got.shape == (2, 3)
  np.testing.assert_allclose(got, want, atol=1e-5)


def test_a_classifier_head_without_hf_counterpart_is_refused(tmp_path):
  """A relu pre-classifier is DistilBERT's: with token types (BERT, whose
  pooler is tanh) it has no counterpart."""
  workdir = write_run(str(tmp_path / 'run'),
                      dict(CLASSIFIER, type_vocab_size=2))
  err = export(workdir, str(tmp_path / 'hf'))
  assert err.startswith('kd.export: ') and (
      "pooler_activation='relu' has no bert equivalent; supported: 'tanh'"
      in err), err
  assert sorted(os.listdir(tmp_path)) == ['run', 'run.tokenizer.json']


def test_a_run_without_its_tokenizer_is_refused(tmp_path):
  workdir = write_run(str(tmp_path / 'run'), CLASSIFIER)
  os.remove(os.path.join(workdir, 'tokenizer.json'))
  err = export(workdir, str(tmp_path / 'hf'))
  assert err == (f'kd.export: {workdir}/tokenizer.json not found: an encoder '
                 'goes out with the WordPiece tokenizer it was trained with; '
                 'copy that tokenizer.json into the run directory')
  assert not os.path.exists(tmp_path / 'hf')
