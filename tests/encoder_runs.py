"""Tiny kd encoder runs for the HF export tests: a DistilBERT-shaped [CLS]
classifier (or masked-LM encoder) with seeded weights and a WordPiece
tokenizer, written as kd writes a finished run."""
import jax
import numpy as np

from kd import config as kd_config
from kd.convert import common, hf
from kd.data import mlm

VOCAB, T = 60, 16
TEXTS = ['the market rose as shares in tech firms gained',
         'the team won the cup final after extra time',
         'parliament voted on the new budget for schools'] * 4
CLASSIFIER = dict(head='cls', vocab_size=VOCAB, num_labels=3, pad_id=0,
                  d_model=16, num_layers=2, num_heads=2, mlp_hidden=32,
                  max_len=T, type_vocab_size=0, pooler_activation='relu')


def write_run(workdir: str, kwargs: dict, task: str = 'classify',
              class_names=None, seed: int = 0) -> str:
  """A finished kd encoder run with seeded N(0, 0.3) weights (every one, a
  mapping bug shows) and a WordPiece tokenizer.json trained on TEXTS."""
  c = kd_config.run_config()
  c.data.update(name='kd_bbcnews/tiny', task=task, tokenizer='wordpiece',
                vocab_size=VOCAB, seq_len=T, augment=False)
  if class_names:
    c.data.class_names = class_names
  c.model.update(name='transformer_encoder', kwargs=kwargs)
  c.steps = 0
  shapes = hf.abstract_params('transformer_encoder', kwargs, VOCAB)
  rng = np.random.default_rng(seed)
  params = jax.tree.map(
      lambda x: rng.normal(0, 0.3, x.shape).astype(np.float32), shapes)
  tok_path = workdir + '.tokenizer.json'
  mlm.WordPieceTokenizer.train(TEXTS, VOCAB).save(tok_path)
  common.write_run(workdir, {'params': params}, c, {'steps': 0},
                   extra_files={'tokenizer.json': tok_path})
  return workdir


