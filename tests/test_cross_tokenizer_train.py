"""A byte-level student distilled from a BPE teacher: the paired batches
(both tokenizations of each row, aligned), a term's value against NumPy on
them, a few training steps through kd.train, and the errors met before any
work."""
import json
import os

import jax
import numpy as np
import pytest

from configs.lm import cross_tokenizer, distill
from experiments.cross_tokenizer import table
from kd import config as kd_config
from kd import fields, losses, main, steps, train
from kd.data import paired, text
from launch import sweep
from tests.lm_run_fixture import write_lm_run

TEACHER = {'d_model': 32, 'num_layers': 1, 'num_heads': 2, 'max_len': 64}
NAME = 'kd_pystdlib/tiny'
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='module')
def root(tmp_path_factory):
  root = str(tmp_path_factory.mktemp('xtok'))
  for tok in ('bpe', 'byte'):
    write_lm_run(f'{root}/{tok}_teacher', f'{root}/tfds', train_steps=0,
                 seq_len=32, tokenizer=tok, vocab_size=300 if tok == 'bpe'
                 else 0, sizes=TEACHER)
  return root


def student_config(root, teacher='bpe', **terms):
  c = distill.get_config(
      'dataset=kd_pystdlib/tiny,seq_len=32,batch=8,student_size=tiny,'
      'method=forward_kl,steps=2').stages.student
  c.data.data_dir = f'{root}/tfds'
  c.distill.teacher.update(workdir=f'{root}/{teacher}_teacher',
                           model='transformer_lm', kwargs=TEACHER)
  c.distill.terms = {k: kd_config.term(v, 1.0) for k, v in terms.items()}
  c.log_every, c.wandb.mode = 1, 'disabled'
  return c


def test_paired_batches_pair_the_students_rows_with_the_teachers_tokens(
    root):
  byte = text.ByteTokenizer()
  bpe = text.tokenizer('bpe', path=f'{root}/bpe_teacher/tokenizer.json')
  where = dict(batch_size=4, seq_len=32, seed=3, data_dir=f'{root}/tfds')
  got = paired.paired_batches(NAME, teacher_seq_len=20, tok=byte,
                              teacher_tok=bpe, start_step=5, **where)
  want = map(text.model_batch, text.packed_batches(NAME, tok=byte,
                                                   start_step=5, **where))
  strings = (byte.token_strings(), bpe.token_strings())
  for _ in range(2):
    b, w = next(got), next(want)
    for k in w:  # The student's part is the plain packed batch.
      np.testing.assert_array_equal(b[k], w[k])
    assert b['teacher_image'].shape == b['teacher_label'].shape == (4, 20)
    a = b['align']
    assert all(v.shape == (4, 32) for v in a.values())
    assert 0.2 < a['aligned'].mean() < 1 and a['span'].sum() > 10
    assert not (a['aligned'] * (1 - b['mask'])).any()
    for r, p in zip(*np.nonzero(a['span'])):
      q, ps, qs = a['teacher_pos'][r, p], a['student_next'][r, p], a[
          'teacher_next'][r, p]
      # The same text on both sides, from the same input byte on.
      s_span = b''.join(strings[0][i] for i in b['label'][r, p:ps])
      t_span = b''.join(strings[1][i] for i in b['teacher_label'][r, q:qs])
      assert s_span == t_span and s_span
      assert strings[0][b['image'][r, p]][-1:] == strings[1][
          b['teacher_image'][r, q]][-1:] or b['image'][r, p] >= 256


def test_a_term_reads_the_teacher_at_the_aligned_positions(root):
  byte = text.ByteTokenizer()
  bpe = text.tokenizer('bpe', path=f'{root}/bpe_teacher/tokenizer.json')
  b = next(paired.paired_batches(
      NAME, batch_size=2, seq_len=32, teacher_seq_len=32, seed=0, tok=byte,
      teacher_tok=bpe, data_dir=f'{root}/tfds'))
  rng = np.random.default_rng(0)
  s = rng.normal(size=(2, 32, 259)).astype(np.float32)
  t = rng.normal(size=(2, 32, 300)).astype(np.float32)
  a = b['align']
  term = steps.Term('x', 'uld', 1.0, kwargs={'temperature': 2.0})
  value, _ = term({'logits': s}, {'logits': t}, b)
  at = t[np.arange(2)[:, None], a['teacher_pos']]
  per = np.asarray(losses.cross_tokenizer.uld(s, at, 2.0))
  np.testing.assert_allclose(
      float(value), (per * a['aligned']).sum() / a['aligned'].sum(),
      rtol=1e-5)
  chunked = steps.Term('x', 'uld', 1.0, kwargs={'temperature': 2.0,
                                                'chunk_size': 16})
  np.testing.assert_allclose(
      float(chunked({'logits': s}, {'logits': t}, b)[0]), float(value),
      rtol=1e-6)
  # The hybrid's span term: each side's log-prob of its own tokens.
  ms, mt = [np.arange(3)] * 2
  term = steps.Term('h', 'hybrid_kl', 1.0, kwargs={
      'matched_student': ms, 'matched_teacher': mt})
  value, _ = term({'logits': s}, {'logits': t}, b)
  log_s = jax.nn.log_softmax(s)
  log_t = jax.nn.log_softmax(t)
  pick = lambda lp, y: np.take_along_axis(np.asarray(lp), y[..., None],
                                          -1)[..., 0]
  ls, lt = pick(log_s, b['label']), pick(log_t, b['teacher_label'])
  lq = np.array([[ls[r, p:a['student_next'][r, p]].sum() for p in range(32)]
                 for r in range(2)])
  lp = np.array([[lt[r, a['teacher_pos'][r, p]:a['teacher_next'][r, p]].sum()
                  for p in range(32)] for r in range(2)])
  per = np.asarray(losses.cross_tokenizer.hybrid_kl(s, at, ms, mt,
                                                    (lq, lp, a['span'])))
  np.testing.assert_allclose(
      float(value), (per * a['aligned']).sum() / a['aligned'].sum(),
      rtol=1e-4)
  with pytest.raises(ValueError, match="distill term 'h': chunk_size does "
                     'not split the spans; remove it'):
    steps.Term('h', 'hybrid_kl', 1.0, kwargs={
        'matched_student': ms, 'matched_teacher': mt, 'chunk_size': 8})(
            {'logits': s}, {'logits': t}, b)
  with pytest.raises(ValueError, match="distill term 'h' compares two "
                     'tokenizations: its batches need both'):
    term({'logits': s}, {'logits': t}, {'label': b['label']})


def test_a_byte_student_trains_from_a_bpe_teacher(root):
  c = student_config(root, uld='uld', hybrid='hybrid_kl')
  summary = train.train_and_evaluate(c, f'{root}/student')
  assert summary['steps'] == 2 and summary['test_bits_per_byte'] > 0
  # No teacher figures on the test split: the teacher reads other tokens.
  assert not any('kl' in k or 'agree' in k for k in summary)
  with open(f'{root}/student/metrics.jsonl') as f:
    rows = [json.loads(line) for line in f if '"loss"' in line]
  assert len(rows) == 2
  for r in rows:
    assert 0 < r['uld'] < 2 and 0 < r['hybrid'] < 20
    assert np.isfinite(r['loss'])
  # The student's own tokenizer, not the teacher's.
  assert not os.path.exists(f'{root}/student/tokenizer.json')


def test_a_cross_tokenizer_term_on_one_tokenizer_is_refused(root, tmp_path):
  c = student_config(root, teacher='byte', uld='uld')
  with pytest.raises(kd_config.ConfigError, match=(
      r"^the cross-tokenizer terms uld \(uld\) pair two tokenizations, but "
      r"the teacher \(.*byte_teacher\) and the student read the same byte "
      r"tokenizer of 259 tokens: plain KL is exact there; use "
      r"loss='forward_kl'")):
    train.train_and_evaluate(c, str(tmp_path / 's'))
  assert not os.path.exists(tmp_path / 's' / 'metrics.jsonl')


def test_a_same_vocabulary_term_on_a_bpe_teacher_names_the_way_across(
    root, tmp_path):
  c = student_config(root, kl='forward_kl')
  with pytest.raises(kd_config.ConfigError, match=(
      r"reads a vocabulary of 300 tokens \(bpe\), the student 259 \(byte\): "
      r".* or distill across tokenizers with a 'uld' or 'hybrid_kl' term")):
    train.train_and_evaluate(c, str(tmp_path / 's'))
  c = student_config(root, uld='uld')
  c.distill.on_policy.update(lmbda=0.5, prompt_len=8)
  with pytest.raises(kd_config.ConfigError, match=(
      r'^config.distill.on_policy.lmbda is set, but the cross-tokenizer terms '
      r'uld \(uld\) feed the teacher its own tokens of each row')):
    train.train_and_evaluate(c, str(tmp_path / 's2'))
  c = student_config(root, hybrid='hybrid_kl')
  c.distill.terms.hybrid.kwargs.chunk_size = 8
  with pytest.raises(kd_config.ConfigError, match=(
      r'^config.distill.terms.hybrid.kwargs.chunk_size=8: hybrid_kl reads '
      r'whole spans of positions, which chunks would cut; remove')):
    train.train_and_evaluate(c, str(tmp_path / 's4'))
  c = student_config(root, uld='uld')
  c.data.teacher_seq_len = 65
  with pytest.raises(kd_config.ConfigError, match=(
      r"config.data.teacher_seq_len=65 exceeds the teacher's context")):
    train.train_and_evaluate(c, str(tmp_path / 's3'))


def test_the_sweep_and_its_table_pair_each_method_with_scratch(tmp_path):
  """The spec's runs (configs as the sweep writes them, summaries made up):
  the table's student rows, each method against scratch seed by seed."""
  spec = sweep.load_spec(os.path.join(ROOT, 'launch', 'specs',
                                      'lm_cross_tokenizer.py'))
  bpb = {'scratch': [2.80, 2.78, 2.82], 'uld': [2.81, 2.80, 2.83],
         'hybrid': [2.70, 2.72, 2.71], 'forward_kl': [2.60, 2.62, 2.64]}
  for run in sweep.expand(spec, str(tmp_path)):
    config = cross_tokenizer.get_config(run.arg)
    kd_config.validate(config)
    student = config.stages.student
    args = dict(fields.pairs(run.arg))
    method = args['method']
    teacher_tok = config.stages.teacher.data.tokenizer
    assert teacher_tok == ('byte' if method == 'forward_kl' else 'bpe')
    assert list(student.distill.terms) == ([] if method == 'scratch'
                                           else [method])
    sweep.describe(run)
    with open(os.path.join(run.workdir, 'config.json'), 'w') as f:
      f.write(config.to_json())
    with open(os.path.join(run.workdir, 'summary.json'), 'w') as f:
      json.dump({'student/test_bits_per_byte': bpb[method][int(args['seed'])],
                 'teacher/test_bits_per_byte': {'byte': 1.9, 'bpe': 2.1}[
                     teacher_tok], 'teacher/steps': 1000,
                 'student/steps': 300}, f)
  assert table.markdown(str(tmp_path / spec.NAME)).splitlines() == [
      '| method | teacher | seeds | bits per byte | minus scratch (same seed) '
      '| lower than scratch |', '|---|---|---|---|---|---|',
      '| scratch | - | 3 | 2.800 ± 0.020 | - | - |',
      '| uld | BPE-4096 | 3 | 2.813 ± 0.015 | +0.013 ± 0.006 | 0 of 3 |',
      '| hybrid | BPE-4096 | 3 | 2.710 ± 0.010 | -0.090 ± 0.026 | 3 of 3 |',
      '| forward_kl | byte | 3 | 2.620 ± 0.020 | -0.180 ± 0.020 | 3 of 3 |',
      '', '| teacher | bits per byte |', '|---|---|',
      '| BPE-4096 | 2.100 |', '| byte | 1.900 |']


def test_a_pipeline_refuses_one_tokenizer_before_its_teacher_trains(
    root, tmp_path):
  c = cross_tokenizer.get_config(
      'method=uld,dataset=kd_pystdlib/tiny,seq_len=32,batch=8,'
      'teacher_size=tiny,student_size=tiny,teacher_steps=2,steps=2')
  for stage in c.stages.values():
    stage.data.data_dir = f'{root}/tfds'
  c.stages.teacher.data.update(tokenizer='byte', vocab_size=0)
  with pytest.raises(kd_config.ConfigError, match=(
      r"^the cross-tokenizer terms uld \(uld\) pair two tokenizations, but "
      r"the teacher \(stage 'teacher'\) and the student read the same byte "
      r'tokenizer: plain KL is exact there')):
    main.run_pipeline(c, str(tmp_path))
  assert not os.path.exists(tmp_path / 'teacher' / 'checkpoints')
  c.stages.teacher.data.update(tokenizer='bpe', vocab_size=300)
  c.stages.student.distill.seqkd.update(prompt_len=8, num_prompts=8)
  with pytest.raises(kd_config.ConfigError, match=(
      r'^config.distill.seqkd.prompt_len is set, but the cross-tokenizer '
      r'terms uld \(uld\) feed the teacher its own tokens')):
    main.run_pipeline(c, str(tmp_path))
  assert not os.path.exists(tmp_path / 'teacher' / 'checkpoints')


def test_the_cross_tokenizer_benchmark_reports_consistent_figures():
  from experiments.benchmark import cross_tokenizer as bench  # pylint: disable=import-outside-toplevel
  r = bench.bench_steps('tiny_half', 'tiny_half', batch=2, seq_len=16,
                        teacher_vocab=300, iters=1,
                        which=('student_step', 'hybrid_step'))
  assert r['hybrid_step_ms'] > 0 and r['student_step_ms'] > 0
  assert r['hybrid_step_vs_student'] == pytest.approx(
      r['hybrid_step_ms'] / r['student_step_ms'])
  assert 'uld_step_ms' not in r and 'hybrid_step_vs_forward_kl' not in r
  assert 0.1 < r['aligned'] < 0.6  # Teacher tokens of 3.5 bytes on average.
  assert '| hybrid_step |' in bench.markdown(r)
  b = bench.synthetic_batch(2, 16, 300)
  assert b['teacher_image'].shape == (2, 16) and b['teacher_image'].min() >= 3
