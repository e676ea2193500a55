"""Building a top-k cache (kd.cache.build_topk) with a NumPy teacher: each
process writes its own shards, an interrupted build resumes to the same
files, progress is shown, and a leftover build for other settings is
refused."""
import filecmp
import os
import re

import numpy as np
import pytest

from kd import cache

V, K, T, N = 259, 8, 6, 10
ROWS = np.random.default_rng(0).integers(0, V, (14, T + 1))
NUMBERS = np.array([0, 1, 2, 4, 5, 6, 8, 9, 11, 13])
META = {'format': cache.TOPK_FORMAT, 'teacher': {'params_sha256': 'abc'},
        'topk': K, 'quantize': 'q8', 'vocab_size': V}


class Teacher:
  """Log-probabilities of a fixed function of the tokens, as
  `kd.cache.topk_log_probs` returns them; raises at call `fail_at`."""

  def __init__(self, fail_at=0):
    self.calls, self.fail_at = 0, fail_at

  def __call__(self, tokens):
    self.calls += 1
    if self.calls == self.fail_at:
      raise KeyboardInterrupt
    z = np.sin(tokens[..., None] * np.arange(V) * 0.37
               + np.arange(T)[:, None]) * 3
    lp = z - np.log(np.exp(z).sum(-1, keepdims=True))
    idx = np.argsort(-lp, -1)[..., :K]
    rest = lp.copy()
    np.put_along_axis(rest, idx, -np.inf, -1)
    return (np.take_along_axis(lp, idx, -1), idx,
            np.log(np.exp(rest).sum(-1)))


def build(path, teacher, meta=META, **kw):
  cache.build_topk(str(path), meta, teacher, ROWS, NUMBERS, batch_size=2,
                   shard_rows=4, **kw)


def same_files(a, b):
  names = sorted(os.listdir(a))
  assert names == sorted(os.listdir(b))
  match, mismatch, errors = filecmp.cmpfiles(a, b, names, shallow=False)
  assert not mismatch and not errors, (mismatch, errors)
  return names


@pytest.fixture(scope='module')
def whole(tmp_path_factory):
  path = tmp_path_factory.mktemp('whole')
  build(path, Teacher())
  return path


def test_an_interrupted_build_resumes_to_the_same_files(whole, tmp_path,
                                                        capsys):
  # 3 shards (4, 4, 2 rows) of 2 batches: killed in shard 1's second batch.
  with pytest.raises(KeyboardInterrupt):
    build(tmp_path, Teacher(fail_at=4), progress_every=0)
  left = sorted(os.listdir(tmp_path))
  assert 'meta.json' not in left and 'topk_records.0.npy' in left
  assert 'topk_records.1.npy.partial' in left
  out = capsys.readouterr().out
  assert re.search(r'\[teacher cache\] 4/10 rows, [\d.]+ rows/s, ETA (\d+m)?\d+s',
                   out), out
  again = Teacher()
  build(tmp_path, again, progress_every=0)
  assert again.calls == 3  # Shards 1 and 2 only.
  assert '[teacher cache] resuming: 4/10 rows already built' in (
      capsys.readouterr().out)
  assert same_files(tmp_path, whole) == [
      'meta.json', 'row_numbers.npy', 'topk_records.0.npy',
      'topk_records.1.npy', 'topk_records.2.npy']
  opened = cache.TopkCache(str(tmp_path), META)
  got = opened.lookup(NUMBERS[[0, 9]])
  want = Teacher()(ROWS[NUMBERS[[0, 9]], :-1])
  np.testing.assert_array_equal(got['topk_indices'], np.sort(want[1], -1))
  np.testing.assert_allclose(got['topk_log_tail'], want[2], rtol=1e-3)


def test_each_process_writes_its_own_shards(whole, tmp_path, monkeypatch):
  monkeypatch.setattr(cache, '_barrier', lambda name: None)
  monkeypatch.setattr(cache.jax, 'process_count', lambda: 2)
  monkeypatch.setattr(cache.jax, 'process_index', lambda: 1)
  build(tmp_path, Teacher())
  assert sorted(os.listdir(tmp_path)) == ['building.json',
                                          'topk_records.1.npy']
  monkeypatch.setattr(cache.jax, 'process_index', lambda: 0)
  teacher = Teacher()
  build(tmp_path, teacher)
  assert teacher.calls == 3  # Shards 0 and 2.
  same_files(tmp_path, whole)


def test_a_float_cache_stores_the_three_outputs(tmp_path):
  build(tmp_path, Teacher(), dict(META, quantize='none'))
  opened = cache.TopkCache(str(tmp_path), dict(META, quantize='none'))
  want = Teacher()(ROWS[NUMBERS[[3]], :-1])
  got = opened.lookup(NUMBERS[[3]])
  for name, value in zip(cache.TOPK_OUTPUTS, want):
    np.testing.assert_allclose(got[name], value, rtol=1e-6)
  assert opened.sizes == {'bytes_per_token': 8 * K + 4,
                          'bytes_per_stored_logit': 8.5}


def test_a_leftover_build_for_other_settings_is_refused(tmp_path):
  with pytest.raises(KeyboardInterrupt):
    build(tmp_path, Teacher(fail_at=2))
  teacher = Teacher()
  with pytest.raises(cache.CacheMismatchError,
                     match=r"quantize: cache has 'q8', this run needs 'q4': "
                     r'read it as it is with distill.teacher.cache_quantize'):
    build(tmp_path, teacher, dict(META, quantize='q4'))
  with pytest.raises(cache.CacheMismatchError, match=(
      r'vocab_size: cache has 259, this run needs 4096: read it as it is '
      r'with the tokenizer of 259 tokens it was built for, or delete')):
    build(tmp_path, teacher, dict(META, vocab_size=4096))
  with pytest.raises(cache.CacheMismatchError,
                     match=r"unfinished build for something else:\n  "
                     r"teacher.params_sha256: unfinished build has 'abc', "
                     r"this run needs 'xyz'"):
    build(tmp_path, teacher, dict(META, teacher={'params_sha256': 'xyz'}))
  assert teacher.calls == 0


def test_a_mismatch_is_one_line_on_the_command_line(tmp_path, capsys):
  from kd import main  # pylint: disable=g-import-not-at-top
  build(tmp_path, Teacher())

  def run(argv):
    del argv
    cache.TopkCache(str(tmp_path), dict(META, topk=16))

  with pytest.raises(SystemExit):
    main.one_line_errors(run)([])
  assert capsys.readouterr().err == (
      f'[kd.main] CacheMismatchError: teacher cache {tmp_path}: topk: cache '
      "has 8, this run needs 16: read it as it is with distill.teacher."
      "cache_topk=8 (and its terms' k), or delete "
      f'{tmp_path} (it is rebuilt) or set distill.teacher.cache_dir to '
      'another folder\n')
