"""The committed Hugging Face fixtures (tests/fixtures/hf) are what they claim.

They are made by tests/fixtures/hf/make_fixtures.py with torch + transformers
outside kd; here they are read the way kd reads them (safetensors.numpy,
tokenizers), without torch.
"""
import json
import os

import numpy as np
import pytest
from safetensors import safe_open
from tokenizers import Tokenizer

HF = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'fixtures', 'hf')
FAMILIES = ('gpt2', 'llama', 'llama_tied', 'mistral', 'qwen2', 'qwen3', 'gemma2',
            'bert', 'distilbert', 'llama_sharded', 'llama_bf16')
EMBEDDING = {'gpt2': 'transformer.wte.weight',
             'bert': 'bert.embeddings.word_embeddings.weight',
             'distilbert': 'distilbert.embeddings.word_embeddings.weight'}


def _config(family):
  with open(os.path.join(HF, family, 'config.json')) as f:
    return json.load(f)


def _shapes(family):
  """{tensor name: (shape, dtype)} over the folder's one file or its shards."""
  folder = os.path.join(HF, family)
  index = os.path.join(folder, 'model.safetensors.index.json')
  if os.path.exists(index):
    with open(index) as f:
      files = sorted(set(json.load(f)['weight_map'].values()))
  else:
    files = ['model.safetensors']
  shapes = {}
  for name in files:
    with safe_open(os.path.join(folder, name), 'np') as f:
      for key in f.keys():
        s = f.get_slice(key)
        shapes[key] = (tuple(s.get_shape()), s.get_dtype())
  return shapes


@pytest.mark.parametrize('family', FAMILIES)
def test_logits_match_the_config_and_weights(family):
  config = _config(family)
  vocab = config['vocab_size']
  width = config.get('hidden_size') or config.get('n_embd') or config['dim']
  data = np.load(os.path.join(HF, family, 'logits.npz'))
  tokens, logits = data['tokens'], data['logits']
  assert tokens.dtype == np.int32 and logits.dtype == np.float32
  assert tokens.shape == (2, 16) and logits.shape == (2, 16, vocab)
  assert 0 <= tokens.min() and tokens.max() < vocab
  assert np.isfinite(logits).all() and np.abs(logits).max() > 1.0
  shapes = _shapes(family)
  embedding = EMBEDDING.get(family.split('_')[0], 'model.embed_tokens.weight')
  assert shapes[embedding][0] == (vocab, width)
  want = 'BF16' if family == 'llama_bf16' else 'F32'
  assert {dtype for _, dtype in shapes.values()} == {want}


def test_sharded_and_bf16_hold_the_llama_weights():
  llama = _shapes('llama')
  assert {k: s for k, (s, _) in _shapes('llama_sharded').items()} == {
      k: s for k, (s, _) in llama.items()}
  assert {k: s for k, (s, _) in _shapes('llama_bf16').items()} == {
      k: s for k, (s, _) in llama.items()}
  with open(os.path.join(HF, 'llama_sharded', 'model.safetensors.index.json')) as f:
    assert len(set(json.load(f)['weight_map'].values())) >= 2
  with safe_open(os.path.join(HF, 'llama', 'model.safetensors'), 'np') as a:
    want = a.get_tensor('model.norm.weight')
  shard = json.load(open(os.path.join(
      HF, 'llama_sharded', 'model.safetensors.index.json')))['weight_map']['model.norm.weight']
  with safe_open(os.path.join(HF, 'llama_sharded', shard), 'np') as b:
    np.testing.assert_array_equal(b.get_tensor('model.norm.weight'), want)
  # Norm weights were randomised: a mapping that drops one shows in the logits.
  assert np.abs(want - 1.0).max() > 0.1
  np.testing.assert_array_equal(
      np.load(os.path.join(HF, 'llama', 'logits.npz'))['logits'],
      np.load(os.path.join(HF, 'llama_sharded', 'logits.npz'))['logits'])


@pytest.mark.parametrize('family', ('gpt2', 'llama', 'bert', 'distilbert'))
def test_tokenizer_gives_transformers_ids(family):
  tok = Tokenizer.from_file(os.path.join(HF, family, 'tokenizer.json'))
  config = _config(family)
  assert tok.get_vocab_size() == config['vocab_size']
  with open(os.path.join(HF, family, 'tokenized.json')) as f:
    want = json.load(f)
  assert [tok.encode(t).ids for t in want['texts']] == want['ids']
  with open(os.path.join(HF, family, 'tokenizer_config.json')) as f:
    specials = json.load(f)
  if family in ('bert', 'distilbert'):  # bert-base-uncased's convention
    ids = {k: tok.token_to_id(specials[f'{k}_token'])
           for k in ('pad', 'unk', 'cls', 'sep', 'mask')}
    assert ids == {'pad': 0, 'unk': 1, 'cls': 2, 'sep': 3, 'mask': 4}
    assert config['pad_token_id'] == 0
    assert all(row[0] == 2 and row[-1] == 3 for row in want['ids'])
    assert 1 in want['ids'][1]  # '!' is not in the training text: [UNK]
  else:
    assert tok.token_to_id(specials['bos_token']) == config['bos_token_id']
    assert tok.token_to_id(specials['eos_token']) == config['eos_token_id']


def test_published_counts():
  with open(os.path.join(HF, 'counts.json')) as f:
    counts = json.load(f)
  assert counts['gpt2']['parameters'] == 124_439_808
  assert counts['Llama-3.2-1B']['parameters'] == 1_235_814_400
  assert counts['distilbert-base-uncased']['parameters'] == 66_985_530
  assert len(counts) == 9
  for entry in counts.values():
    assert entry['config']['model_type'] == entry['model_type']


@pytest.mark.parametrize('family', ('gpt2', 'llama', 'llama_tied', 'bert', 'distilbert'))
def test_names_are_the_folders_tensors(family):
  with open(os.path.join(HF, 'names', f'{family}.json')) as f:
    names = json.load(f)
  assert names['config'] == _config(family)
  assert {k: tuple(v) for k, v in names['tensors'].items()} == {
      k: s for k, (s, _) in _shapes(family).items()}
  assert ('lm_head.weight' in names['tied']) == (family in ('gpt2', 'llama_tied'))
