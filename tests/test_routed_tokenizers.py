"""Routed teachers of several tokenizers (kd.teachers, kd.data.mixed): a
BPE code teacher and a byte-level prose teacher of a byte-level student.
The mixed corpus's paired rows, the routed step equal to each single
teacher's step on rows of its source (and each row's loss on a batch of
both sources), the errors met before any work, and a run end to end."""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs.lm import multi_teacher
from kd import config as kd_config
from kd import models, steps, teachers, train
from kd.data import align, mixed, text
from tests.lm_run_fixture import write_lm_run

MIX = 'kd_pystdlib/tiny+kd_bbcnews/tiny'
SIZES = {'d_model': 16, 'num_layers': 1, 'num_heads': 2, 'max_len': 32}
SEQ = 16


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
  """(code teacher: BPE-300 on kd_pystdlib/tiny, prose teacher: byte on
  kd_bbcnews/tiny), untrained, and the data dir."""
  root = str(tmp_path_factory.mktemp('routed_tok'))
  data_dir = os.environ['TFDS_DATA_DIR']
  code = write_lm_run(f'{root}/code', data_dir, train_steps=0, seq_len=SEQ,
                      sizes=SIZES, name='kd_pystdlib/tiny', tokenizer='bpe',
                      vocab_size=300)
  prose = write_lm_run(f'{root}/prose', data_dir, train_steps=0, seq_len=SEQ,
                       sizes=SIZES, name='kd_bbcnews/tiny')
  return root, code, prose


def _bpe(code):
  return text.tokenizer('bpe', path=f'{code}/tokenizer.json')


def test_paired_rows_of_a_mixed_corpus(runs):
  _, code, _ = runs
  byte, bpe = text.ByteTokenizer(), _bpe(code)
  where = dict(batch_size=8, seq_len=SEQ, seed=2, start_step=3)
  got = mixed.paired_batches(MIX, teacher_seq_len=12, tok=byte,
                             teacher_toks=(bpe, None), **where)
  want = map(text.model_batch, mixed.packed_batches(MIX, tok=byte, **where))
  strings = (byte.token_strings(), bpe.token_strings())
  for _ in range(2):
    b, w = next(got), next(want)
    for k in w:  # The student's part is the mixed corpus's own.
      np.testing.assert_array_equal(b[k], w[k], err_msg=k)
    a = b['align']
    assert b['teacher_image'].shape == (8, 12)
    code_rows = b['source'] == 0
    assert code_rows.any() and (~code_rows).any()
    # The prose rows (the byte teacher's) hold no teacher tokens.
    assert not a['aligned'][~code_rows].any()
    assert not b['teacher_image'][~code_rows].any()
    assert a['aligned'][code_rows].mean() > 0.2
    for r, p in zip(*np.nonzero(a['span'])):
      q = a['teacher_pos'][r, p]
      s_span = b''.join(strings[0][i] for i in
                        b['label'][r, p:a['student_next'][r, p]])
      t_span = b''.join(strings[1][i] for i in
                        b['teacher_label'][r, q:a['teacher_next'][r, p]])
      assert s_span == t_span and s_span


def _in_axis(pmapped, *args):
  stacked = jax.tree.map(lambda a: jnp.asarray(a)[None], args)
  return jax.tree.map(lambda x: np.asarray(x[0]), pmapped(*stacked))


def test_routed_step_equals_each_teachers_own_step(runs):
  """The code rows' step is the BPE teacher's own; on a row of each source
  each term is half (the row's share) its teacher's value on its row, in
  NumPy for the byte teacher's KL."""
  _, code, _ = runs
  byte, bpe = text.ByteTokenizer(), _bpe(code)
  big = next(mixed.paired_batches(MIX, batch_size=16, seq_len=SEQ,
                                  teacher_seq_len=SEQ, seed=0, tok=byte,
                                  teacher_toks=(bpe, None)))
  rows = [np.flatnonzero(big['source'] == j)[:2] for j in (0, 1)]
  pick = lambda r: jax.tree.map(lambda x: x[r], big)
  student = models.create('transformer_lm', 259, **SIZES)
  t_code = models.create('transformer_lm', 300, **SIZES)
  t_prose = models.create('transformer_lm', 259, **SIZES)
  x = jnp.zeros((1, SEQ), jnp.int32)
  v_code, v_prose = (m.init(jax.random.key(i), x, train=False)
                     for i, m in ((1, t_code), (2, t_prose)))
  vmap = align.vocab_map(byte, bpe)
  kl = steps.Term('kl', 'forward_kl', 1.0)
  xt = steps.Term('xt', 'hybrid_kl', 0.5)
  routed = teachers.Teachers((t_code, t_prose), routes=(0, 1),
                             vocab_maps=(vmap, None))
  tx = optax.adam(1e-2)
  state = steps.create_state(student, tx, jax.random.key(0), x)
  step = lambda teacher, terms: jax.pmap(steps.make_distill_step(
      student, teacher, tx, terms, 1.0), axis_name='batch')
  run_routed = step(routed, (kl, xt))
  # Rows of the code teacher's source: its own cross-tokenizer step.
  code_rows = pick(rows[0])
  got_state, got = _in_axis(run_routed, state, (v_code, v_prose), code_rows)
  want_state, want = _in_axis(step(t_code, (teachers.with_vocab_map(
      xt, vmap),)), state, v_code, code_rows)
  assert got['kl'] == 0 and got['xt'] > 0
  for key in ('loss', 'ce', 'xt'):
    np.testing.assert_allclose(got[key], want[key], rtol=1e-5, err_msg=key)
  jax.tree.map(lambda g, w: np.testing.assert_allclose(g, w, rtol=1e-4,
                                                       atol=1e-6),
               got_state.params, want_state.params)
  # Rows of the prose teacher's source: no cross-tokenizer term.
  _, got = _in_axis(run_routed, state, (v_code, v_prose), pick(rows[1]))
  assert got['xt'] == 0 and got['kl'] > 0
  np.testing.assert_allclose(got['loss'], got['ce'] + got['kl'], rtol=1e-6)
  # A row of each source: each term half its teacher's value on its row.
  both = pick(np.array([rows[0][0], rows[1][0]]))
  _, got = _in_axis(run_routed, state, (v_code, v_prose), both)
  s_out = {'logits': student.apply({'params': state.params}, both['image'])[0]}
  row = lambda r: jax.tree.map(lambda v: v[r:r + 1], both)
  want_xt = teachers.with_vocab_map(xt, vmap)(
      jax.tree.map(lambda v: v[:1], s_out),
      {'logits': t_code.apply(v_code, both['teacher_image'][:1])[0]},
      row(0))[0]
  s = np.asarray(s_out['logits'][1], np.float64)
  t = np.asarray(t_prose.apply(v_prose, both['image'][1:])[0][0], np.float64)
  log_q = s - np.log(np.exp(s).sum(-1, keepdims=True))
  log_p = t - np.log(np.exp(t).sum(-1, keepdims=True))
  per = (np.exp(log_p) * (log_p - log_q)).sum(-1)
  mask = both['mask'][1]
  np.testing.assert_allclose(got['xt'], 0.5 * want_xt, rtol=1e-4)
  np.testing.assert_allclose(got['kl'], 0.5 * (per * mask).sum() / mask.sum(),
                             rtol=1e-4)
  np.testing.assert_allclose(got['loss'], got['ce'] + got['kl']
                             + 0.5 * got['xt'], rtol=1e-5)


def _config(root, teacher_dirs, **terms):
  c = kd_config.run_config()
  c.model.update(name='transformer_lm', kwargs=SIZES)
  c.data.update(name=MIX, seq_len=SEQ, augment=False)
  c.steps, c.batch_size, c.eval_batch_size, c.log_every = 2, 4, 64, 1
  c.evaluate.latency, c.wandb.mode = False, 'disabled'
  c.distill.update(teachers=','.join(teacher_dirs), route_by='source')
  c.distill.terms = {k: kd_config.term(v, 1.0) for k, v in terms.items()}
  return c


def test_a_byte_student_trains_from_routed_bpe_and_byte_teachers(runs):
  root, code, prose = runs
  summary = train.train_and_evaluate(
      _config(root, (code, prose), kl='forward_kl', xt='hybrid_kl'),
      f'{root}/student')
  assert summary['steps'] == 2 and summary['teacher_step'] == [0, 0]
  assert np.isfinite(summary['kd_pystdlib_tiny/test_bits_per_byte'])
  assert not any('kl_to_teacher' in k for k in summary)  # Other tokens.
  with open(f'{root}/student/metrics.jsonl') as f:
    rows = [json.loads(line) for line in f if '"loss"' in line]
  assert len(rows) == 2
  for r in rows:  # Weight 1 each.
    np.testing.assert_allclose(r['loss'], r['ce'] + r['kl'] + r['xt'],
                               rtol=1e-5)
  # Either teacher's rows: batches of 4 rows of 6,575 hold one source or
  # both.
  assert sum(r['kl'] for r in rows) > 0 and sum(r['xt'] for r in rows) > 0
  assert not os.path.exists(f'{root}/student/tokenizer.json')


@pytest.mark.parametrize('case, message', [
    ('mixture', r"^config.distill.teachers='.*code,.*prose' with "
     r'cross-tokenizer terms \(xt \(uld\)\): a weighted mixture of '
     r'distributions over different vocabularies is not defined; route each '
     r"row to one teacher \(distill.route_by='source'"),
    ('one_teacher', r"^config.distill.teacher.workdir='.*code', data.name="
     r"'kd_pystdlib/tiny\+kd_bbcnews/tiny': the cross-tokenizer terms .* "
     r'for a mixed corpus name a teacher per source in distill.teachers'),
    ('same', r'^the cross-tokenizer terms xt \(uld\) pair two tokenizations, '
     r'but the teacher \(every one of distill.teachers: .*prose, .*prose2\) '
     r'and the student read the same byte tokenizer of 259 tokens: plain KL '
     'is exact there'),
    ('no_plain', r"^the teacher \(.*prose\) reads the student's tokenizer "
     r'\(byte of 259 tokens\), but every term of distill.terms \(xt \(uld\)\) '
     r'compares two tokenizations: add a term over one vocabulary for it'),
    ('no_byte_teacher', r'^config.distill.terms kl \(forward_kl\) compare the '
     r'student with a teacher of its vocabulary, but every teacher of '
     r'distill.teachers reads another tokenizer \(.*code: bpe of 300 tokens, '
     r'.*code2: bpe of 300 tokens; the student byte of 259 tokens\): remove '
     r"them, or make them cross-tokenizer terms"),
])
def test_errors_before_any_work(runs, tmp_path, case, message):
  root, code, prose = runs
  for src, dst in ((code, 'code2'), (prose, 'prose2')):
    if not os.path.exists(f'{root}/{dst}'):
      os.symlink(src, f'{root}/{dst}')
  c = {'mixture': lambda: _config(root, (code, prose), kl='forward_kl',
                                  xt='uld'),
       'one_teacher': lambda: _config(root, (), xt='uld'),
       'same': lambda: _config(root, (prose, f'{root}/prose2'), xt='uld'),
       'no_plain': lambda: _config(root, (code, prose), xt='uld'),
       'no_byte_teacher': lambda: _config(root, (code, f'{root}/code2'),
                                          kl='forward_kl', xt='uld')}[case]()
  if case == 'mixture':
    c.distill.route_by = ''
  if case == 'one_teacher':
    c.distill.route_by = ''
    c.distill.teacher.update(workdir=code, model='transformer_lm',
                             kwargs=SIZES)
  if case == 'no_byte_teacher':  # Both code teachers: one source each.
    c.distill.teacher_sources = 'kd_pystdlib/tiny,kd_bbcnews/tiny'
  with pytest.raises(kd_config.ConfigError, match=message):
    train.train_and_evaluate(c, str(tmp_path / 'run'))
  assert not os.path.exists(tmp_path / 'run' / 'checkpoints')


def test_the_route_xtok_pipeline_config_passes_preflight():
  c = multi_teacher.get_config(
      'method=route_xtok,code=kd_pystdlib/tiny,prose=kd_bbcnews/tiny,'
      'seq_len=16,code_vocab=300')
  kd_config.validate(c)
  train.preflight(c)
  assert c.stages.code_teacher.data.tokenizer == 'bpe'
  assert c.stages.code_teacher.data.vocab_size == 300
  assert c.stages.prose_teacher.data.tokenizer == 'byte'
  s = c.stages.student
  assert s.data.tokenizer == 'byte' and s.distill.route_by == 'source'
  assert {k: t.loss for k, t in s.distill.terms.items()} == {
      'forward_kl': 'forward_kl', 'hybrid': 'hybrid_kl'}
