"""Sequence-level KD: the teacher's stored continuations, their provenance,
and a student trained on them."""
import itertools
import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs.lm import distill
from kd import config as kd_config
from kd import files
from kd import sampling
from kd import main
from kd import runs
from kd import seqkd
from kd.data import seqkd as data_seqkd
from kd.data import text

PROMPT, SEQ_LEN, ROWS = 8, 32, 48
TINY = (f'dataset=kd_pystdlib/tiny,seq_len={SEQ_LEN},batch=8,'
        f'teacher_size=tiny,student_size=tiny,prompt={PROMPT}')


@pytest.fixture(scope='module')
def seqkd_run(tmp_path_factory):
  root = str(tmp_path_factory.mktemp('seqkd'))
  c = distill.get_config(f'{TINY},method=seqkd,teacher_steps=30,steps=20')
  for stage in c.stages.values():
    stage.log_every = 4
    stage.wandb.mode = 'disabled'
    stage.evaluate.latency = False
  c.stages.student.distill.seqkd.update(num_prompts=ROWS, batch_size=16)
  main.run_pipeline(c, root)
  return root


def test_rows_are_the_teachers_greedy_continuations(seqkd_run):
  out_dir = os.path.join(seqkd_run, 'student', 'seqkd')
  with open(os.path.join(out_dir, 'meta.json')) as f:
    meta = json.load(f)
  assert meta['num_rows'] == ROWS and meta['teacher']['step'] == 30
  assert meta['sampling'] == {
      'seq_len': SEQ_LEN, 'prompt_len': PROMPT, 'new_tokens': SEQ_LEN + 1 -
      PROMPT, 'temperature': 0.0, 'top_k': 0, 'seed': 0, 'num_prompts': ROWS,
      'batch_size': 16}
  tokens = np.load(os.path.join(out_dir, 'tokens.npy'))
  mask = np.load(os.path.join(out_dir, 'mask.npy'))
  assert tokens.shape == (ROWS, SEQ_LEN + 1) and mask.shape == (ROWS, SEQ_LEN)
  config, model, variables, _ = runs.load_run(
      os.path.join(seqkd_run, 'teacher'))
  tok = text.run_tokenizer(config, os.path.join(seqkd_run, 'teacher'))
  rows = seqkd.prompts('kd_pystdlib/tiny', 'train', SEQ_LEN, tok, None, ROWS)
  np.testing.assert_array_equal(tokens[:, :PROMPT], rows[:, :PROMPT])
  # Row 5, continued again by the teacher on its own.
  again, generated = jax.jit(lambda v, p: sampling.generate(
      model, v, p, jnp.array([PROMPT]), jax.random.key(0),
      SEQ_LEN + 1 - PROMPT, pad_id=tok.pad_id, eos_id=tok.eos_id))(
          variables, jnp.asarray(rows[5:6, :PROMPT]))
  np.testing.assert_array_equal(tokens[5], np.asarray(again)[0])
  np.testing.assert_array_equal(mask[5], np.asarray(generated)[0, 1:])
  # The loss covers the generated targets only, never the prompt's.
  assert not mask[:, :PROMPT - 1].any() and mask[:, PROMPT - 1].all()


def test_other_settings_are_refused_naming_the_field(seqkd_run):
  out_dir = os.path.join(seqkd_run, 'student', 'seqkd')
  with pytest.raises(seqkd.SeqKDMismatchError,
                     match=r'sampling\.temperature: directory has 0\.0, '
                     r'this run needs 1\.0'):
    seqkd.build(os.path.join(seqkd_run, 'teacher'), out_dir,
                seq_len=SEQ_LEN, prompt_len=PROMPT, temperature=1.0,
                num_prompts=ROWS, batch_size=16)


def test_student_trains_on_them_and_its_loss_falls(seqkd_run):
  with open(os.path.join(seqkd_run, 'student', 'metrics.jsonl')) as f:
    rows = [r for r in map(json.loads, f) if 'loss' in r]
  assert rows[0]['loss'] > rows[-1]['loss'] + 0.3


def test_resume_yields_identical_batches(seqkd_run):
  out_dir = os.path.join(seqkd_run, 'student', 'seqkd')
  tok = text.ByteTokenizer()
  batches = lambda start: data_seqkd.generated_batches(
      out_dir, batch_size=8, seed=3, tok=tok, start_step=start)
  whole = list(itertools.islice(batches(0), 14))
  resumed = list(itertools.islice(batches(9), 5))
  for a, b in zip(whole[9:], resumed):
    for key in a:
      np.testing.assert_array_equal(a[key], b[key])
  # One epoch (6 batches) visits every row once; the next reorders them.
  firsts = [tuple(b['image'][:, 0]) for b in whole]
  assert sorted(sum(map(list, firsts[:6]), [])) == sorted(
      sum(map(list, firsts[6:12]), []))
  assert firsts[:6] != firsts[6:12]
  assert whole[0]['bytes'].sum() > 0 and set(whole[0]) == {
      'image', 'label', 'mask', 'bytes'}


def test_validate_rejects_bad_seqkd_settings():
  c = distill.get_config(f'{TINY},method=seqkd').stages.student
  c.distill.seqkd.prompt_len = SEQ_LEN + 1
  with pytest.raises(ValueError, match=r'distill\.seqkd\.prompt_len=33.*'
                     'must fit in data.seq_len'):
    kd_config.validate(c, 1)
  c.distill.seqkd.prompt_len = PROMPT
  c.distill.teacher.workdir = ''
  with pytest.raises(ValueError, match=r'distill\.teacher\.workdir.*needs '
                     'the teacher'):
    kd_config.validate(c, 1)


def test_truncated_tokens_file_is_named_with_the_fix(seqkd_run, tmp_path):
  out_dir = str(tmp_path / 'seqkd')
  shutil.copytree(os.path.join(seqkd_run, 'student', 'seqkd'), out_dir)
  tokens = os.path.join(out_dir, 'tokens.npy')
  np.save(tokens, np.load(tokens)[:ROWS // 2])  # Whole, but rows missing.
  with pytest.raises(files.DamagedFileError,
                     match=rf'{tokens} holds an array of shape '
                     rf'\({ROWS // 2}, {SEQ_LEN + 1}\), its meta.json says '
                     rf'\({ROWS}, {SEQ_LEN + 1}\); delete {out_dir} and rerun'):
    data_seqkd.generated_batches(out_dir, batch_size=8, seed=3,
                                 tok=text.ByteTokenizer())
  with open(tokens, 'r+b') as f:
    f.truncate(os.path.getsize(tokens) // 3)
  with pytest.raises(files.DamagedFileError, match=rf'{tokens} cannot be '
                     'read'):
    data_seqkd.generated_batches(out_dir, batch_size=8, seed=3,
                                 tok=text.ByteTokenizer())
