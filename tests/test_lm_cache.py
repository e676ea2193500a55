"""A language model's top-k teacher cache: its rows are the teacher's top k
at the student's training rows, a student trained from it matches one
taught live by `topk_kl`, its compressed form (cache_quantize) decodes
within the codec's bound and trains alike, and a cache made for another k
or storage is refused."""
import json
import os

import jax
import numpy as np
import pytest

from configs.lm import train as lm_configs
from kd import cache, config as kd_config, models, train
from kd import topk_codec as codec
from kd.data import text
from tests.lm_run_fixture import write_lm_run

SIZES = dict(lm_configs.SIZES['tiny'], max_len=64)
SEQ, K = 32, 4


@pytest.fixture(scope='module')
def teacher_dir(tmp_path_factory):
  return write_lm_run(str(tmp_path_factory.mktemp('teacher')), None,
                      train_steps=20, seq_len=SEQ, sizes=SIZES)


def _student(teacher_dir, use_cache, cache_dir='', k=K, quantize='none'):
  c = lm_configs.recipe('tiny_half', 0, 4, seq_len=SEQ, batch=8,
                        dataset='kd_pystdlib/tiny', tokenizer='byte', vocab=0)
  c.log_every, c.checkpoint_every = 1, 4
  c.wandb.mode = 'disabled'
  t = c.distill.teacher
  t.update(workdir=teacher_dir, model='transformer_lm', kwargs=SIZES,
           allow_unfinished_teacher=True, cache=use_cache, cache_dir=cache_dir,
           cache_topk=k if use_cache else 0, cache_quantize=quantize)
  c.distill.terms.topk = kd_config.term('topk_kl', 1.0, k=k, temperature=2.0)
  return c


def _losses(workdir):
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    rows = [json.loads(line) for line in f]
  return [(r['step'], r['loss'], r['topk']) for r in rows if 'topk' in r]


@pytest.fixture(scope='module')
def runs(teacher_dir, tmp_path_factory):
  root = tmp_path_factory.mktemp('runs')
  cache_dir = str(root / 'cache')
  for name, use in (('live', False), ('cached', True)):
    train.train_and_evaluate(_student(teacher_dir, use, cache_dir),
                             str(root / name))
  train.train_and_evaluate(_student(teacher_dir, True, str(root / 'q8'),
                                    quantize='q8'), str(root / 'cached_q8'))
  return root, cache_dir


def test_cached_student_trains_like_the_live_topk_teacher(runs):
  root, _ = runs
  live, cached = _losses(str(root / 'live')), _losses(str(root / 'cached'))
  assert [r[0] for r in live] == [1, 2, 3, 4]
  np.testing.assert_allclose(np.array(cached)[:, 1:], np.array(live)[:, 1:],
                             rtol=1e-5, atol=1e-6)


def test_cached_rows_are_the_teachers_topk(runs, teacher_dir):
  _, cache_dir = runs
  with open(os.path.join(cache_dir, 'meta.json')) as f:
    meta = json.load(f)
  c = cache.TeacherCache(cache_dir, {'topk': K}, cache.TOPK_OUTPUTS)
  rows = text.training_rows('kd_pystdlib/tiny', seq_len=SEQ, seed=0)
  # Only the rows the run's 4 batches of 8 read, not all of them.
  it = text.packed_batches('kd_pystdlib/tiny', batch_size=8, seq_len=SEQ,
                          seed=0, fixed_packing=True)
  read = np.unique(np.concatenate([next(it)['index'] for _ in range(4)]))
  assert meta['data']['rows_read_by'] == {'steps': 4, 'batch_size': 8}
  assert c.num_examples == meta['num_examples'] == 32 < len(rows)
  np.testing.assert_array_equal(c.numbers, read)
  teacher = models.create('transformer_lm', 259, **SIZES)
  variables, _ = train.runs.load_variables(
      teacher_dir, jax.eval_shape(lambda: teacher.init(
          jax.random.key(0), rows[:1, :-1])), 'teacher')
  picked = read[[0, 5, -1]]
  logits = np.asarray(teacher.apply(variables, rows[picked, :-1])[0],
                      np.float64)
  log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  indices = np.argsort(-log_p, -1)[..., :K]
  values = np.take_along_axis(log_p, indices, -1)
  got = c.lookup(picked)
  assert got['topk_indices'].dtype == np.int32
  assert got['topk_values'].shape == (3, SEQ, K)
  np.testing.assert_allclose(got['topk_values'], values, rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(got['topk_indices'], indices)
  # The tail: the mass of the other 255 tokens.
  np.testing.assert_allclose(np.exp(got['topk_log_tail']),
                             1 - np.exp(values).sum(-1), rtol=1e-4)
  unread = np.setdiff1d(np.arange(len(rows)), read)[:1]
  with pytest.raises(cache.CacheMismatchError,
                     match=rf'holds the 32 rows its run reads .*not rows '
                     rf'\[{unread[0]}\]'):
    c.lookup(np.concatenate([read[:2], unread]))


def test_a_cache_of_another_k_is_refused_naming_it(runs, teacher_dir,
                                                   tmp_path):
  _, cache_dir = runs
  c = _student(teacher_dir, True, cache_dir, k=3)
  with pytest.raises(cache.CacheMismatchError,
                     match=r'topk: cache has 4, this run needs 3: read it as '
                     r'it is with distill.teacher.cache_topk=4 \(and its '
                     r"terms' k\), or delete"):
    train.train_and_evaluate(c, str(tmp_path))
  # In a pipeline, before its teacher stage would train.
  pipe = kd_config.pipeline_config(teacher=_student(teacher_dir, False),
                                   student=c)
  with pytest.raises(cache.CacheMismatchError, match='topk: cache has 4'):
    train.preflight(pipe)


@pytest.mark.parametrize('change, field', [
    (lambda c: c.distill.teacher.update(cache_topk=0),
     'distill.teacher.cache_topk'),
    (lambda c: c.distill.terms.topk.kwargs.update(k=K + 1),
     r"distill\.terms\.topk\.loss='topk_kl': a top-k cache serves only "
     'topk_kl terms of k=distill.teacher.cache_topk=4'),
    (lambda c: c.distill.on_policy.update(lmbda=0.5, prompt_len=8),
     'distill.on_policy.lmbda'),
    (lambda c: c.distill.teacher.update(cache_quantize='q7'),
     r"cache_quantize='q7': unknown name; valid: none, q8, q6, q5, q4"),
    (lambda c: c.distill.teacher.update(cache=False, cache_quantize='q8'),
     "cache_quantize='q8': compresses a text dataset's top-k cache"),
    (lambda c: c.distill.update(terms={'jsd': kd_config.term(
        'topk_jsd_cached', 1.0, tail=True)}) or c.distill.teacher.update(
            cache=False), 'topk_jsd_cached reads the teacher.s top-k cache'),
])
def test_text_cache_needs_topk_terms_of_its_k(change, field):
  c = _student('teacher', True)
  change(c)
  with pytest.raises(ValueError, match=field):
    kd_config.validate(c)


@pytest.mark.parametrize('steps', [5, 172, 175, 517])
def test_rows_read_are_the_rows_of_the_runs_batches(steps):
  # 1380 rows, 172 batches of 8 an epoch: within, at and past epoch ends.
  kw = dict(batch_size=8, seq_len=SEQ, seed=1)
  it = text.packed_batches('kd_pystdlib/tiny', fixed_packing=True, **kw)
  seen = np.unique(np.concatenate([next(it)['index'] for _ in range(steps)]))
  np.testing.assert_array_equal(
      text.rows_read('kd_pystdlib/tiny', steps=steps, **kw), seen)


def test_fixed_packing_keeps_epoch_0_rows_and_names_them():
  kw = dict(batch_size=8, seq_len=SEQ, seed=1)
  rows = text.training_rows('kd_pystdlib/tiny', seq_len=SEQ, seed=1)
  per_epoch = len(rows) // 8
  fixed = text.packed_batches('kd_pystdlib/tiny', fixed_packing=True, **kw)
  first = next(fixed)
  # Epoch 0 is the default iterator's: a cache run sees the same data.
  np.testing.assert_array_equal(
      first['tokens'], next(text.packed_batches('kd_pystdlib/tiny', **kw))[
          'tokens'])
  later = next(text.packed_batches('kd_pystdlib/tiny', fixed_packing=True,
                                  start_step=per_epoch + 3, **kw))
  for b in (first, later):
    np.testing.assert_array_equal(b['tokens'], rows[b['index']])
  assert 'index' in text.model_batch(later)


def test_a_compressed_cache_decodes_to_the_float_one_and_trains_alike(runs):
  root, cache_dir = runs
  with open(root / 'q8' / 'meta.json') as f:
    meta = json.load(f)
  record = codec.record_bytes(259, K, 8)
  assert (meta['quantize'], meta['topk'], meta['vocab_size']) == ('q8', K, 259)
  assert meta['bytes_per_token'] == record
  assert meta['bytes_per_stored_logit'] == round(record / K, 4)
  assert meta['outputs'] == {'topk_records': [SEQ, record]}
  assert os.path.getsize(root / 'q8' / 'topk_records.0.npy') < 200 + (
      32 * SEQ * record)
  # The run's provenance: the float cache differs in its storage only.
  want = {k: v for k, v in meta.items() if k not in (
      'outputs', 'bytes_per_token', 'bytes_per_stored_logit')}
  q8 = cache.TopkCache(str(root / 'q8'), want)
  floats = cache.TopkCache(cache_dir, dict(want, quantize='none'))
  picked = floats.numbers[[0, 7, -1]]
  a, b = floats.lookup(picked), q8.lookup(picked)
  order = np.argsort(a['topk_indices'], -1)  # Elias-Fano: token order.
  for name in ('topk_values', 'topk_indices'):
    a[name] = np.take_along_axis(a[name], order, -1)
  np.testing.assert_array_equal(b['topk_indices'], a['topk_indices'])
  d = lambda v: v.max(-1, keepdims=True) - v
  bound = codec.max_error(d(a['topk_values']).max(-1) * 1.001, 8, 'linear')
  assert (np.abs(d(b['topk_values']) - d(a['topk_values']))
          <= bound[..., None] + 1e-5).all()
  np.testing.assert_allclose(b['topk_log_tail'], a['topk_log_tail'],
                             rtol=2 ** -10, atol=1e-6)
  with open(root / 'cached_q8' / 'summary.json') as f:
    summary = json.load(f)
  assert summary['teacher_cache_bytes_per_token'] == record
  assert summary['teacher_cache_bytes_per_stored_logit'] == round(record / K, 4)
  np.testing.assert_allclose(np.array(_losses(str(root / 'cached_q8')))[:, 1:],
                             np.array(_losses(str(root / 'cached')))[:, 1:],
                             rtol=2e-3)


def test_a_cache_of_other_storage_is_refused_before_any_step(
    runs, teacher_dir, tmp_path):
  root, _ = runs
  c = _student(teacher_dir, True, str(root / 'q8'), quantize='q4')
  with pytest.raises(cache.CacheMismatchError) as e:
    train.train_and_evaluate(c, str(tmp_path))
  assert str(e.value) == (
      f"teacher cache {root / 'q8'}: quantize: cache has 'q8', this run "
      "needs 'q4': read it as it is with distill.teacher.cache_quantize="
      f"'q8', or delete {root / 'q8'} (it is rebuilt) or set "
      'distill.teacher.cache_dir to another folder')
  assert not os.path.exists(tmp_path / 'checkpoints')
