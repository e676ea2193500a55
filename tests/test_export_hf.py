"""kd run -> Hugging Face folder (`python -m kd.export --format=hf`): the
tokenizer files against kd's tokenizers, the refusals."""
import json
import os

import numpy as np
import pytest
import tokenizers as tk

from kd.data import text
from kd.export import hf

TEXTS = ['def main():\n\treturn 0\n', 'héllo wörld, 日本語 🙂 \x00\x7f',
         '  leading and trailing  ', '', 'ÿ\u0100\u07ff\u0800\uffff\U0010ffff']


def test_the_byte_tokenizer_encodes_and_decodes_as_kds():
  fast, kd = hf.byte_tokenizer(), text.ByteTokenizer()
  assert [fast.token_to_id(s) for s in ('<pad>', '<bos>', '<eos>')] == [
      kd.pad_id, kd.bos_id, kd.eos_id]
  assert fast.get_vocab_size() == kd.vocab_size
  for t, want in zip(TEXTS, kd.encode(TEXTS)):
    assert fast.encode(t, add_special_tokens=False).ids == list(want)
    assert fast.encode(t).ids == [kd.bos_id, *want]
    assert fast.decode(fast.encode(t).ids) == t
  # Any ids, invalid UTF-8 and specials included, decode as kd's do.
  rng = np.random.default_rng(0)
  for n in (1, 3, 20, 200):
    ids = rng.integers(0, kd.vocab_size, n).tolist()
    assert fast.decode(ids) == kd.decode(ids)
  assert fast.decode(list(range(256))) == kd.decode(list(range(256)))


def test_every_byte_is_spelt_as_tokenizers_byte_level_alphabet():
  assert sorted(hf._byte_alphabet()) == sorted(  # pylint: disable=protected-access
      tk.pre_tokenizers.ByteLevel.alphabet())


def test_a_bpe_runs_tokenizer_file_is_kds_with_a_bos(tmp_path):
  workdir = tmp_path / 'bpe'
  workdir.mkdir()
  kd = text.BPETokenizer.train(TEXTS * 20, 300)
  kd.save(str(workdir / 'tokenizer.json'))
  files = hf.tokenizer_files('bpe', str(workdir), kd, 32)
  fast = tk.Tokenizer.from_str(files['tokenizer.json'])
  for t, want in zip(TEXTS, kd.encode(TEXTS)):
    assert fast.encode(t).ids == [kd.bos_id, *want]
    assert fast.decode(fast.encode(t).ids) == kd.decode(want) == t
  config = json.loads(files['tokenizer_config.json'])
  assert config == {'tokenizer_class': 'PreTrainedTokenizerFast',
                    'pad_token': '<pad>', 'bos_token': '<bos>',
                    'eos_token': '<eos>', 'model_max_length': 32,
                    'clean_up_tokenization_spaces': False}
  assert hf.generation_config(kd) == {'bos_token_id': 1, 'eos_token_id': 2,
                                      'pad_token_id': 0}


def test_an_out_dir_holding_anything_is_refused(tmp_path):
  out = tmp_path / 'out'
  out.mkdir()
  (out / 'keep.txt').write_text('mine')
  with pytest.raises(hf.Refused, match='exists and is not empty; remove it'):
    hf.write_folder(str(out), {'config.json': '{}'}, {})
  assert os.listdir(out) == ['keep.txt']
  (out / 'keep.txt').unlink()
  hf.write_folder(str(out), {'config.json': '{}'},
                  {'w': np.ones((2, 3), np.float32)})
  assert sorted(os.listdir(out)) == ['config.json', 'model.safetensors']
  assert sorted(os.listdir(tmp_path)) == ['out']  # No temporary folder left.
