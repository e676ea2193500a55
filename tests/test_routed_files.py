"""Routing your own JSONL files by a field (data.source_field, kd.data.mixed
over kd_text): each packed row of one source, a routed run end to end with
the teachers named per source, and each bad input's error before any
work."""
import json
import os

import numpy as np
import pytest

from configs.lm import routed_files
from kd import config as kd_config
from kd import train
from kd.data import corpus, mixed, text
from tests.lm_run_fixture import write_lm_run

SIZES = {'d_model': 16, 'num_layers': 1, 'num_heads': 2, 'max_len': 32}
SEQ = 16


def _write(path, rows):
  with open(path, 'w') as f:
    f.writelines(json.dumps(r) + '\n' for r in rows)
  return str(path)


@pytest.fixture(scope='module')
def files(tmp_path_factory):
  """train.jsonl and test.jsonl: Python code (kind 'code') and news
  (kind 'prose'), 12 and 2 documents of each."""
  root = tmp_path_factory.mktemp('routed_files')
  code = text.documents('kd_pystdlib/tiny', 'train')
  prose = text.documents('kd_bbcnews/tiny', 'train')
  rows = lambda a, b: [r for i in range(a, b) for r in (
      {'kind': 'code', 'text': code[i]}, {'text': prose[i], 'kind': 'prose'})]
  return (root, _write(root / 'train.jsonl', rows(0, 12)),
          _write(root / 'test.jsonl', rows(12, 14)))


@pytest.fixture(scope='module')
def teacher_dirs(files):
  root = files[0]
  return tuple(write_lm_run(str(root / name), os.environ['TFDS_DATA_DIR'],
                            train_steps=0, seq_len=SEQ, sizes=SIZES,
                            name=corpus_name)
               for name, corpus_name in (('code_t', 'kd_pystdlib/tiny'),
                                         ('prose_t', 'kd_bbcnews/tiny')))


def _config(files, teacher_dirs=(), **data):
  _, train_file, test_file = files
  c = kd_config.run_config()
  c.model.update(name='transformer_lm', kwargs=SIZES)
  c.data.update(name='kd_text', files=train_file, files_test=test_file,
                source_field='kind', seq_len=SEQ, augment=False)
  c.data.update(data)
  c.steps, c.batch_size, c.eval_batch_size, c.log_every = 2, 4, 64, 1
  c.evaluate.latency, c.wandb.mode = False, 'disabled'
  if teacher_dirs:
    c.distill.update(teachers=','.join(teacher_dirs), route_by='source',
                     teacher_sources='code,prose')
    c.distill.terms.kl = kd_config.term('forward_kl', 1.0)
  return c


def test_each_row_is_of_one_source_of_your_files(files):
  d = _config(files).data
  assert mixed.is_mixed_data(d) and mixed.labels(d) == ('code', 'prose')
  with open(files[1]) as f:
    docs = [json.loads(line) for line in f]
  streams = [''.join(r['text'] for r in docs if r['kind'] == k).encode()
             for k in ('code', 'prose')]
  b = next(mixed.packed_batches(mixed.sources(d), batch_size=16,
                                seq_len=SEQ, seed=0))
  assert set(b['source']) == {0, 1}
  checked = 0
  for row, s in zip(b['tokens'], b['source']):
    piece = max(np.split(row, np.flatnonzero(row >= 256)), key=len)
    piece = piece[piece < 256].astype(np.uint8).tobytes()
    if len(piece) >= 12:
      assert piece in streams[s] and piece not in streams[1 - s]
      checked += 1
  assert checked >= 4
  evals = list(mixed.eval_batches(mixed.sources(d), batch_size=8,
                                  seq_len=SEQ, split='test'))
  assert sorted({int(e['source'][0]) for e in evals}) == [0, 1]


def test_a_run_routed_by_the_field_of_your_files(files, teacher_dirs):
  root = files[0]
  c = _config(files, teacher_dirs)
  b = train.build(c, str(root / 'student'), 'train')
  assert b.teacher.routes == (0, 1)  # code -> code_t, prose -> prose_t.
  summary = train.train_and_evaluate(c, str(root / 'student'))
  assert summary['teacher_step'] == [0, 0]
  for source in ('code', 'prose'):
    assert np.isfinite(summary[f'{source}/test_bits_per_byte'])
  # The teachers named the other way round route the other way.
  c.distill.teacher_sources = 'prose,code'
  assert train.lm_teachers(c, b.spec, b.tok).routes == (1, 0)


@pytest.mark.parametrize('case, message', [
    ('missing', r"^.*train_bad.jsonl:2: no field 'kind' \(found \['text'\]\); "
     r'set config.data.source_field to the field that names each '
     "document's source, or add it to every document$"),
    ('not_text', r"^.*train_bad.jsonl:2: field 'kind' holds int 3, not text; "
     'name each source with a string$'),
    ('unknown', r"^the data's source 'poetry' \(data.name='kd_text'\) has no "
     r"teacher \(the teachers' sources: code \(.*code_t\), prose "
     r"\(.*prose_t\)\); add a teacher of 'poetry' to distill.teachers"),
    ('no_test', r"^config.data.source_field='kind': the source 'poetry' of "
     r'your files has no document in the test split \(documents per split: '
     r".*\); add documents of 'poetry', or give the split files"),
    ('builtin', r"^config.data.source_field='kind': names the field of your "
     r"files \(data.name='kd_text'\) that holds each document's source for "
     r'a language model, not a field of kd_pystdlib/tiny'),
    ('no_field', r"^config.distill.route_by='source': the data \(kd_text\) "
     r"has no column 'source' \(its columns: none\); route over a mixed "
     r'corpus .*or your files with data.source_field'),
    ('txt', r"^.*a.txt: a .txt file has no fields, but "
     r"config.data.source_field='kind' reads each document's source from "
     'one; give .jsonl or .parquet files'),
])
def test_errors_before_any_work(files, teacher_dirs, tmp_path, case,
                                message):
  root, train_file, _ = files
  with open(train_file) as f:
    rows = [json.loads(line) for line in f]
  bad = tmp_path / 'train_bad.jsonl'
  c = _config(files, teacher_dirs)
  if case in ('missing', 'not_text'):
    rows[1] = ({'text': 'x'} if case == 'missing' else
               {'text': 'x', 'kind': 3})
    c.data.files = _write(bad, rows)
  elif case == 'unknown':  # A third source: in training and test.
    c.data.files = _write(bad, rows + [{'kind': 'poetry', 'text': 'a' * 99}])
    c.data.files_test = _write(tmp_path / 'test_bad.jsonl', [
        {'kind': 'poetry', 'text': 'b' * 99}, {'kind': 'code', 'text': 'c'},
        {'kind': 'prose', 'text': 'd'}])
  elif case == 'no_test':
    c.data.files = _write(bad, rows + [{'kind': 'poetry', 'text': 'a' * 99}])
  elif case == 'builtin':
    c.data.update(name='kd_pystdlib/tiny', files='', files_test='')
  elif case == 'no_field':
    c.data.source_field = ''
  elif case == 'txt':
    (tmp_path / 'a.txt').write_text('some text')
    c.data.files = str(tmp_path / 'a.txt')
  with pytest.raises((kd_config.ConfigError, corpus.CorpusError),
                     match=message):
    train.train_and_evaluate(c, str(tmp_path / 'run'))
  assert not os.path.exists(tmp_path / 'run' / 'checkpoints')


def test_the_routed_files_config(files, teacher_dirs):
  _, train_file, test_file = files
  c = routed_files.get_config(f'files={train_file},files_test={test_file},'
                              'field=kind,xtok=hybrid_kl,seq_len=16')
  c.distill.update(teachers=','.join(teacher_dirs),
                   teacher_sources='code,prose')
  kd_config.validate(c)
  train.preflight(c)
  assert (c.data.name, c.data.source_field, c.distill.route_by) == (
      'kd_text', 'kind', 'source')
  assert {k: t.loss for k, t in c.distill.terms.items()} == {
      'forward_kl': 'forward_kl', 'hybrid_kl': 'hybrid_kl'}
