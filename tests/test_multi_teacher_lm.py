"""Several LM teachers in one run (kd.teachers, kd.data.mixed): the mixture
against NumPy, a routed step equal to the single-teacher step on batches of
one source, the mixed corpus's rows, each bad input's error before any
work, and a few steps end to end."""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from kd import config as kd_config
from kd import cache, losses, models, steps, teachers
from kd import main, train
from configs.lm import multi_teacher
from experiments.multi_teacher_lm import table
from launch import sweep
from kd.data import mixed, select, text
from tests.lm_run_fixture import write_lm_run

MIX = 'kd_pystdlib/tiny+kd_bbcnews/tiny'
SIZES = {'d_model': 16, 'num_layers': 1, 'num_heads': 2, 'max_len': 32}
SEQ = 16


def _softmax(x):
  e = np.exp(x - x.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


@pytest.mark.parametrize('per_example', [False, True])
def test_mixture_is_the_weighted_sum_of_tempered_softmaxes(per_example):
  rng = np.random.default_rng(0)
  t = rng.normal(0, 3, (3, 2, 5, 7)).astype(np.float32)  # [K, B, T, V]
  w = (rng.dirichlet(np.ones(3), 2).T if per_example
       else np.array([0.5, 0.3, 0.2]))
  w = w.astype(np.float32)
  temp = 2.0
  wb = w if per_example else np.broadcast_to(w[:, None], (3, 2))
  want = np.einsum('kb,kbtv->btv', wb, _softmax(t / temp))
  np.testing.assert_allclose(teachers.mixture(w, t, temp), want, rtol=1e-5)
  # The terms read T log p: their softmax(. / T) is the mixture itself.
  logits = np.asarray(teachers.mixture_logits(w, t, temp))
  np.testing.assert_allclose(_softmax(logits / temp), want, rtol=1e-5,
                             atol=1e-7)


def test_zero_weight_drops_a_teacher_and_route_picks_rows():
  rng = np.random.default_rng(1)
  t = rng.normal(0, 2, (2, 3, 4, 6)).astype(np.float32)
  # Weights (1, 0) at T: T log_softmax(t_0 / T), teacher 1 ignored.
  got = np.asarray(teachers.mixture_logits(np.array([1.0, 0.0]), t, 3.0))
  want = 3.0 * np.log(_softmax(t[0] / 3.0))
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  routed = np.asarray(teachers.route(t, jnp.array([1, 0, 1])))
  np.testing.assert_array_equal(routed, np.stack([t[1, 0], t[0, 1], t[1, 2]]))


def _in_axis(pmapped, *args):
  """A 1-device pmap of a step (its collectives bound) on unstacked args."""
  stacked = jax.tree.map(lambda a: jnp.asarray(a)[None], args)
  return jax.tree.map(lambda x: np.asarray(x[0]), pmapped(*stacked))


@pytest.fixture(scope='module')
def models_and_batch():
  make = lambda: models.create('transformer_lm', 259, **SIZES)
  student, t_a, t_b = make(), make(), make()
  x = jnp.zeros((1, SEQ), jnp.int32)
  v_a, v_b = (t.init(jax.random.key(i), x, train=False)
              for i, t in ((1, t_a), (2, t_b)))
  batches = mixed.packed_batches(MIX, batch_size=4, seq_len=SEQ, seed=0)
  batch = text.model_batch(next(batches))
  return student, (t_a, t_b), (v_a, v_b), batch


def test_routed_step_equals_the_single_teacher_step_on_one_source(
    models_and_batch):
  student, (t_a, t_b), (v_a, v_b), batch = models_and_batch
  tx = optax.adam(1e-2)
  state = steps.create_state(student, tx, jax.random.key(0), batch['image'])
  terms = (steps.Term('kl', 'forward_kl', 1.0),
           steps.Term('rkl', 'reverse_kl', 0.5))
  routed = teachers.Teachers((t_a, t_b), routes=(1, 0))  # Source 0 -> B.
  # One program each (t_a and t_b are the same module, other variables).
  compiled = {t: jax.pmap(steps.make_distill_step(student, t, tx, terms, 1.0),
                          axis_name='batch') for t in (routed, t_a)}
  run = lambda teacher, variables, b: _in_axis(
      compiled[teacher], state, variables, b)
  for source, variables in ((0, v_b), (1, v_a)):
    one = {**batch, 'source': np.full(4, source, np.int32)}
    got_state, got = run(routed, (v_a, v_b), one)
    want_state, want = run(t_a, variables, one)
    for key in ('loss', 'kl', 'rkl', 'ce'):
      np.testing.assert_allclose(got[key], want[key], rtol=1e-6, err_msg=key)
    jax.tree.map(lambda g, w: np.testing.assert_allclose(g, w, rtol=1e-5,
                                                         atol=1e-7),
                 got_state.params, want_state.params)
  # A batch of both sources: each row's KL to its own teacher, in NumPy.
  source = np.arange(4) % 2
  _, both = run(routed, (v_a, v_b), {**batch, 'source': source})
  x = batch['image']
  q = _softmax(np.asarray(student.apply(
      {'params': state.params}, x, train=False)[0], np.float64))
  p_a, p_b = (_softmax(np.asarray(t.apply(v, x, train=False)[0], np.float64))
              for t, v in ((t_a, v_a), (t_b, v_b)))
  p = np.where((source == 0)[:, None, None], p_b, p_a)
  kl = np.sum(p * (np.log(p) - np.log(q)), -1)
  mask = batch['mask']
  np.testing.assert_allclose(both['kl'], np.sum(kl * mask) / mask.sum(),
                             rtol=1e-4)


def test_mixed_corpus_rows_are_one_source_each():
  b = next(mixed.packed_batches(MIX, batch_size=8, seq_len=SEQ, seed=3))
  assert b['source'].shape == (8,) and set(b['source']) <= {0, 1}
  # Every row is a window of its own source's packing (byte tokens).
  streams = [text.pack(text.ByteTokenizer().encode(text.documents(p, 'train')),
                       text.ByteTokenizer()).tobytes()
             for p in mixed.parts(MIX)]
  checked = 0
  for row, s in zip(b['tokens'], b['source']):
    # The longest run of text tokens (a row may straddle documents).
    runs = np.split(row, np.flatnonzero(row >= 256))
    piece = max(runs, key=len)
    piece = piece[piece < 256].astype(np.uint16).tobytes()
    if len(piece) >= 24:  # 12 bytes: code and news share none this long.
      assert piece in streams[s] and piece not in streams[1 - s]
      checked += 1
  assert checked >= 4
  again = mixed.packed_batches(MIX, batch_size=8, seq_len=SEQ, seed=3,
                               start_step=2)
  it = mixed.packed_batches(MIX, batch_size=8, seq_len=SEQ, seed=3)
  next(it), next(it)
  np.testing.assert_array_equal(next(again)['tokens'], next(it)['tokens'])
  evals = list(mixed.eval_batches(MIX, batch_size=8, seq_len=SEQ))
  assert [int(e['source'][0]) for e in evals] == sorted(
      int(e['source'][0]) for e in evals)
  assert all(len(set(e['source'])) == 1 for e in evals)


@pytest.fixture(scope='module')
def pipeline(tmp_path_factory):
  """configs/lm/multi_teacher.py's routed pipeline, tiny: two teachers of
  2 steps (code, prose), the student 4 steps on their mixed corpus."""
  root = str(tmp_path_factory.mktemp('multi'))
  c = multi_teacher.get_config(
      'method=route,code=kd_pystdlib/tiny,prose=kd_bbcnews/tiny,seq_len=16,'
      'batch=4,teacher_size=tiny_half,student_size=tiny_half,'
      'teacher_steps=2,steps=4')
  for stage in c.stages.values():
    stage.update(log_every=2, eval_batch_size=64)
    stage.wandb.mode = 'disabled'
  return root, main.run_pipeline(c, root)


@pytest.fixture(scope='module')
def teacher_runs(pipeline):
  root, _ = pipeline
  return (root, os.path.join(root, 'code_teacher'),
          os.path.join(root, 'prose_teacher'))


def _config(teacher_dirs, **distill):
  c = kd_config.run_config()
  c.model.update(name='transformer_lm', kwargs=SIZES)
  c.data.update(name=MIX, seq_len=SEQ, augment=False)
  c.steps, c.batch_size, c.eval_batch_size, c.log_every = 4, 4, 64, 2
  c.evaluate.latency, c.wandb.mode = False, 'disabled'
  c.distill.teachers = ','.join(teacher_dirs)
  c.distill.terms.kl = kd_config.term('forward_kl', 1.0)
  c.distill.update(distill)
  return c


def test_routed_pipeline_end_to_end(pipeline):
  root, summary = pipeline
  # The stage names in distill.teachers became the teachers' directories.
  assert summary['student/teacher_step'] == [2, 2]
  assert np.isfinite(summary['student/test_bits_per_byte'])
  # Every held-out token of both sources is a target once.
  count = sum(e['mask'].sum() for e in mixed.eval_batches(
      MIX, batch_size=64, seq_len=SEQ, split='test[:20]'))
  assert summary['student/test_examples'] == count
  assert summary['student/kl_to_teacher'] > 0
  # Each source's figures, which add up to the whole's.
  parts = [f'student/{p.replace("/", "_")}/' for p in mixed.parts(MIX)]
  assert sum(summary[p + 'test_examples'] for p in parts) == count
  nats = sum(summary[p + 'test_loss'] * summary[p + 'test_examples']
             for p in parts)
  np.testing.assert_allclose(nats / count, summary['student/test_loss'],
                             rtol=1e-6)


def test_a_mixed_corpus_student_exports_to_hf_not_litert(pipeline, tmp_path):
  from absl import flags  # pylint: disable=import-outside-toplevel
  from absl.testing import flagsaver  # pylint: disable=import-outside-toplevel
  from kd.export import __main__ as export_cli  # pylint: disable=import-outside-toplevel
  root, _ = pipeline

  def export(*args):
    with flagsaver.flagsaver():
      flags.FLAGS(['kd.export', f'--workdir={root}/student', *args])
      try:
        export_cli.cli_main([])
      except SystemExit as e:
        return str(e.code)
    return None

  assert export(f'--out={tmp_path}/s.tflite') == (
      f'kd.export: {root}/student trained on the mixed corpus '
      "kd_pystdlib/tiny+kd_bbcnews/tiny, but a --format=tflite sidecar's "
      'held-out figures read one corpus: export a Hugging Face folder '
      '(--format=hf), or a run of one corpus')
  assert not os.path.exists(tmp_path / 's.tflite')
  assert export('--format=hf', f'--out={tmp_path}/hf') is None
  assert os.path.isfile(tmp_path / 'hf' / 'model.safetensors')


@pytest.mark.parametrize('distill, message', [
    (dict(teacher_weights='0.5,0.3,0.2'),
     "config.distill.teacher_weights='0.5,0.3,0.2': 3 weights for the 2 "
     'teachers of distill.teachers; give 2 weights'),
    (dict(teacher_weights='1,1', route_by='source'),
     "route_by='source' routes each row to one teacher; weight the teachers "
     'or route by a column, not both'),
])
def test_config_errors_before_any_work(teacher_runs, tmp_path, distill,
                                       message):
  _, code, prose = teacher_runs
  with pytest.raises(kd_config.ConfigError, match=message):
    train.train_and_evaluate(_config((code, prose), **distill),
                             str(tmp_path / 'run'))
  assert not os.path.exists(tmp_path / 'run' / 'checkpoints')


def test_data_errors_name_both_sides(teacher_runs, tmp_path):
  root, code, prose = teacher_runs
  c = _config((code, prose), route_by='source')
  c.data.name = 'kd_pystdlib/tiny'
  with pytest.raises(kd_config.ConfigError, match=(
      r"route_by='source': the data \(kd_pystdlib/tiny\) has no column "
      r"'source' \(its columns: none\); route over a mixed corpus")):
    train.train_and_evaluate(c, str(tmp_path / 'a'))
  with pytest.raises(kd_config.ConfigError, match=(
      r"the data's source 'kd_bbcnews/tiny' \(data.name=.*\) has no teacher "
      r"\(the teachers' sources: kd_pystdlib/tiny \(.*code_teacher\)\); add a teacher")):
    train.train_and_evaluate(_config((code,), route_by='source'),
                             str(tmp_path / 'b'))
  with pytest.raises(kd_config.ConfigError, match='both teach source'):
    train.train_and_evaluate(_config((code, prose), route_by='source',
                                     teacher_sources='x,x'),
                             str(tmp_path / 'c'))
  for name in 'abc':
    assert not os.path.exists(tmp_path / name / 'checkpoints')
  # A pipeline's routing is checked before its teacher stages train.
  c = multi_teacher.get_config('method=route,code=kd_pystdlib/tiny,'
                               'prose=kd_bbcnews/tiny,seq_len=16')
  c.stages.student.distill.teacher_sources = 'kd_pystdlib/tiny,kd_english'
  with pytest.raises(kd_config.ConfigError, match=(
      r"the data's source 'kd_bbcnews/tiny' .* has no teacher \(the "
      r"teachers' sources: kd_pystdlib/tiny \(stage 'code_teacher'\), "
      r"kd_english \(stage 'prose_teacher'\)\)")):
    main.run_pipeline(c, str(tmp_path / 'pipe'))
  assert not os.path.exists(tmp_path / 'pipe' / 'code_teacher')


def test_a_teacher_of_another_vocabulary_is_refused(teacher_runs, tmp_path):
  root, code, _ = teacher_runs
  bpe = write_lm_run(os.path.join(root, 'bpe'), os.environ['TFDS_DATA_DIR'],
                     train_steps=0, seq_len=SEQ, sizes=SIZES,
                     name='kd_pystdlib/tiny', tokenizer='bpe', vocab_size=300)
  with pytest.raises(kd_config.ConfigError, match=(
      r'the teacher \(.*bpe\) reads a vocabulary of 300 tokens \(bpe\), the '
      r"student 259 \(byte\): use the teacher's tokenizer: set "
      r"config.data.tokenizer='bpe' \(and data.vocab_size=300\), or route "
      r"the teachers \(distill.route_by='source'\) with a 'uld' or "
      r"'hybrid_kl' term for those of another tokenizer$")):
    train.train_and_evaluate(_config((code, bpe)), str(tmp_path / 'run'))
  c = _config((code, code))
  c.distill.terms.kl.loss = 'uld'
  with pytest.raises(kd_config.ConfigError, match=(
      r'cross-tokenizer terms \(kl \(uld\)\): a weighted mixture of '
      'distributions over different vocabularies is not defined; route each '
      'row to one teacher')):
    train.train_and_evaluate(c, str(tmp_path / 'run'))
  assert not os.path.exists(tmp_path / 'run' / 'checkpoints')


def test_exporting_a_student_of_a_mixed_corpus_is_refused():
  c = _config(('a', 'b'))
  c.export.formats = ('float32',)
  with pytest.raises(kd_config.ConfigError, match=(
      r"config.export.formats=\('float32',\): the export's held-out figures "
      r'read one corpus, not a mix \(kd_pystdlib/tiny\+kd_bbcnews/tiny\)')):
    kd_config.validate(c)


def test_mixture_terms_of_two_temperatures_are_refused():
  c = _config(('a', 'b'))
  c.distill.terms.soft = kd_config.term('forward_kl', 1.0, temperature=4.0)
  with pytest.raises(kd_config.ConfigError, match=(
      r"config.distill.terms='kl: T=1, soft: T=4': the mixture .* at one "
      'temperature; give every term the same one')):
    kd_config.validate(c)


def test_table_of_the_sweep(tmp_path):
  """The spec's runs as launch.sweep leaves them, with made-up summaries:
  the table's cells are their means and stds per source."""
  spec = sweep.load_spec(os.path.join(os.path.dirname(os.path.dirname(
      os.path.abspath(__file__))), 'launch/specs/lm_multi_teacher.py'))
  bpb = {'scratch': 3.0, 'code': 2.6, 'prose': 2.7, 'mean': 2.5, 'route': 2.4}
  for run in sweep.expand(spec, str(tmp_path)):
    config = multi_teacher.get_config(run.arg)
    sweep.describe(run)
    a = dict(kv.split('=', 1) for kv in run.arg.split(','))
    v = bpb[a['method']] + 0.1 * int(a['seed'])
    summary = {f'{n}/steps': config.stages[n].steps
               for n in config.stage_order}
    summary.update({'student/test_bits_per_byte': v,
                    'student/kd_pystdlib/test_bits_per_byte': v - 0.5,
                    'student/kd_bbcnews/test_bits_per_byte': v + 0.5,
                    'code_teacher/test_bits_per_byte': 2.0,
                    'prose_teacher/test_bits_per_byte': 2.2})
    for name, content in (('config.json', config.to_json()),
                          ('summary.json', json.dumps(summary))):
      (tmp_path / spec.NAME / run.name / name).write_text(content)
  lines = table.markdown(str(tmp_path / spec.NAME)).splitlines()
  assert lines[0] == ('| student on the mix | seeds | bits per byte, '
                      'kd_pystdlib | bits per byte, kd_bbcnews | bits per '
                      'byte, both |')
  assert lines[2:7] == [
      '| scratch | 3 | 2.600 ± 0.100 | 3.600 ± 0.100 | 3.100 ± 0.100 |',
      '| code (best single) | 3 | 2.200 ± 0.100 | 3.200 ± 0.100 | '
      '2.700 ± 0.100 |',
      '| prose | 3 | 2.300 ± 0.100 | 3.300 ± 0.100 | 2.800 ± 0.100 |',
      '| mean | 3 | 2.100 ± 0.100 | 3.100 ± 0.100 | 2.600 ± 0.100 |',
      '| route | 3 | 2.000 ± 0.100 | 3.000 ± 0.100 | 2.500 ± 0.100 |']
  assert lines[-2:] == ['| code_teacher (kd_pystdlib) | 2.000 |',
                        '| prose_teacher (kd_bbcnews) | 2.200 |']
  assert table.main([str(tmp_path / 'none')]) == 1


def test_routed_teachers_from_their_top_k_caches(teacher_runs):
  root, code, prose = teacher_runs
  c = _config((code, prose), route_by='source')
  c.steps = 2
  c.distill.teacher.update(cache=True, cache_topk=8)
  c.distill.terms.kl = kd_config.term('topk_kl', 1.0, k=8)
  workdir = os.path.join(root, 'cached')
  kd_config.validate(c)
  b = train.build(c, workdir, 'train')
  src = train.teacher_source(c, workdir, b)  # Builds the caches.
  # Each teacher cached the rows of its source that the run reads.
  read = mixed.rows_read(MIX, batch_size=4, seq_len=SEQ, seed=0, steps=2)
  _, source = mixed.training_rows(MIX, seq_len=SEQ, seed=0)
  for k, t_dir in enumerate((code, prose)):
    with open(os.path.join(workdir, 'teacher_cache', str(k),
                           'meta.json')) as f:
      assert json.load(f)['teacher']['workdir'] == t_dir
    np.testing.assert_array_equal(
        np.load(os.path.join(workdir, 'teacher_cache', str(k),
                             'row_numbers.npy')), read[source[read] == k])
  # A batch's teacher outputs: each row's own teacher's top 8, live.
  batch = next(select.train_batches(c, b.parallel, 0, b.tok))
  got = src.extend_batch(batch)['teacher']
  assert set(batch['source']) == {0, 1}
  for k, t_dir in enumerate((code, prose)):
    rows = batch['source'] == (0 if t_dir == code else 1)
    logits = b.teacher.models[k].apply(src.variables[k],
                                       batch['image'][rows])[0]
    values, indices = cache.topk_log_probs(logits, 8)[:2]
    np.testing.assert_allclose(got['topk_values'][rows], values, rtol=1e-5,
                               atol=1e-6)
    np.testing.assert_array_equal(got['topk_indices'][rows], indices)


def test_a_mixture_of_the_teachers_top_k_caches(teacher_runs):
  root, code, prose = teacher_runs
  c = _config((code, prose), teacher_weights='0.7,0.3')
  c.steps = 2
  c.distill.teacher.update(cache=True, cache_topk=8)
  c.distill.terms.kl = kd_config.term('topk_kl', 1.0, k=8)
  workdir = os.path.join(root, 'mixture_cached')
  kd_config.validate(c)
  b = train.build(c, workdir, 'train')
  assert [(t.loss, t.kwargs['weights']) for t in b.terms] == [
      ('topk_mixture_kl_cached', (0.7, 0.3))]
  src = train.teacher_source(c, workdir, b)  # Builds the caches.
  # Each teacher cached every row the run reads.
  read = mixed.rows_read(MIX, batch_size=4, seq_len=SEQ, seed=0, steps=2)
  for k in range(2):
    np.testing.assert_array_equal(np.load(os.path.join(
        workdir, 'teacher_cache', str(k), 'row_numbers.npy')), read)
  # A batch's teacher outputs: both teachers' live top 8, side by side.
  batch = next(select.train_batches(c, b.parallel, 0, b.tok))
  got = src.extend_batch(batch)['teacher']
  assert sorted(got) == ['topk_indices', 'topk_values']
  for k in range(2):
    logits = b.teacher.models[k].apply(src.variables[k], batch['image'])[0]
    values, indices = cache.topk_log_probs(logits, 8)[:2]
    np.testing.assert_allclose(got['topk_values'][..., 8 * k:8 * k + 8],
                               values, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(got['topk_indices'][..., 8 * k:8 * k + 8],
                                  indices)
  # The term reads them as the mixture's KL.
  s = b.model.apply({'params': b.state.params}, batch['image'])[0]
  value, _ = b.terms[0]({'logits': s}, got, batch)
  per = losses.divergences.topk_mixture_kl_cached(
      s, (got['topk_values'], got['topk_indices']), (0.7, 0.3))
  np.testing.assert_allclose(value, np.sum(per * batch['mask'])
                             / batch['mask'].sum(), rtol=1e-5)
  # Those caches at an explicit cache_dir, read with another k: refused
  # before any work, naming a teacher's cache.
  c.distill.teacher.update(cache_topk=4,
                           cache_dir=os.path.join(workdir, 'teacher_cache'))
  c.distill.terms.kl.kwargs.k = 4
  with pytest.raises(cache.CacheMismatchError, match=(
      r'^teacher cache .*teacher_cache/0: topk: cache has 8, this run needs '
      '4')):
    train.preflight(c)
  # Only topk_kl without the tail bucket mixes caches.
  c.distill.terms.kl = kd_config.term('topk_kl', 1.0, k=4, tail=True)
  with pytest.raises(kd_config.ConfigError, match=(
      r"^config.distill.teacher.cache=True: a mixture of several teachers' "
      r'top-k caches is the forward KL to sum_k w_k softmax\(top k of t_k / '
      r'T\) on the union of their top k \(topk_kl; their tails differ, so no '
      r'tail bucket\); make every term topk_kl without tail, route the '
      r"teachers")):
    kd_config.validate(c)
