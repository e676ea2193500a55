"""A converted Hugging Face teacher (`python -m kd.convert --from=hf`) works
wherever a kd-trained one does: forward KL, the top-k cache, sequence-level
KD and on-policy GKD, the student reading the teacher's own tokenizer
(data.tokenizer='hf') on your JSONL files (configs/lm/hf_distill.py);
generation through the teacher's KV cache keeps mistral's sliding window
and gemma2's soft-caps; a strided student starts from its layers.

The teachers are HF folders of the fixtures' llama, mistral and gemma2
configs (tests/fixtures/hf, made by transformers) at kd's byte vocabulary
(259: a tokenizer that keeps every byte, which bits per byte needs; the
fixtures' own tokenizers drop bytes), with seeded random weights, written
as save_pretrained lays them out (kd.convert.hf's tables) and converted."""
import json
import os
import random

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs.lm import hf_distill
from kd import runs
from kd import seqkd
from kd import train
from kd.convert import hf
from kd.data import text
from kd.export import hf as hf_export
from tests.test_train import _teacher_stats

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, 'tests', 'fixtures', 'hf')
VOCAB = 259  # kd's byte tokenizer as an HF tokenizer.json.
SENTENCES = [
    'The teacher reads the whole book before the lesson.',
    'A small model learns from the soft answers of a larger one.',
    'Seven cats sat on the wall at noon; three of them slept.',
    'She wrote the numbers 0 1 2 3 4 5 6 7 8 9 on the board.',
    'Good weights, like good bread, take time: mix, wait, shape, bake.',
]


def hf_folder(family: str, out: str, seed: int = 0) -> str:
  """An HF folder of the fixture `family`'s config at VOCAB tokens, seeded
  random weights (norm scales and biases too) large enough that greedy
  choices are clear, and kd's byte tokenizer as tokenizer.json."""
  with open(os.path.join(FIXTURES, family, 'config.json')) as f:
    cfg = dict(json.load(f), vocab_size=VOCAB, bos_token_id=257,
               eos_token_id=258, pad_token_id=256)
  name, kwargs, vocab = hf.kd_config(cfg)
  rng = np.random.default_rng(seed)  # No init program to compile.
  params = jax.tree.map(lambda a: rng.normal(0, 0.5, a.shape).astype(
      np.float32), hf.abstract_params(name, kwargs, vocab))
  tok = text.ByteTokenizer()
  files = hf_export.tokenizer_files('byte', out, tok, kwargs['max_len'])
  files['config.json'] = json.dumps(cfg)
  files['generation_config.json'] = json.dumps(
      hf_export.generation_config(tok))
  hf_export.write_folder(out, files, dict(hf.hf_tensors(name, kwargs, params,
                                                        vocab)))
  return out


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
  """(root, teachers {family: converted run}, your JSONL files)."""
  root = tmp_path_factory.mktemp('hf_teacher')
  teachers = {}
  for family in ('llama', 'mistral', 'gemma2'):
    folder = hf_folder(family, str(root / f'hf_{family}'))
    hf.convert(folder, str(root / family))
    teachers[family] = str(root / family)
  rng = random.Random(0)
  docs = [{'text': ' '.join(rng.sample(SENTENCES, 3)), 'id': i}
          for i in range(80)]
  (root / 'docs.jsonl').write_text(
      '\n'.join(json.dumps(d) for d in docs) + '\n')
  return root, teachers, str(root / 'docs.jsonl')


def _config(setup, teacher='llama', **args):
  root, teachers, files = setup
  arg = ','.join(f'{k}={v}' for k, v in {
      'teacher_dir': teachers[teacher], 'files': files, 'size': 'tiny',
      'steps': 2, 'seq_len': 32, 'batch': 4, 'prompt': 8, **args}.items())
  c = hf_distill.get_config(arg)
  c.update(log_every=1, eval_batch_size=8)
  c.wandb.mode = 'disabled'
  c.data.data_dir = str(root / 'tfds')
  return c


def _rows(run_dir):
  with open(os.path.join(run_dir, 'metrics.jsonl')) as f:
    return [json.loads(line) for line in f]


def test_forward_kl_from_a_converted_teacher(setup, tmp_path):
  c = _config(setup, method='forward_kl')
  summary = train.train_and_evaluate(c, str(tmp_path))
  assert summary['teacher_step'] == 0  # The converted run's one checkpoint.
  rows = [r for r in _rows(str(tmp_path)) if 'forward_kl' in r]
  assert len(rows) == 2 and all(np.isfinite(r['forward_kl']) for r in rows)
  # The student reads the teacher's tokenizer, copied into its run.
  with open(os.path.join(setup[1]['llama'], 'tokenizer.json')) as f, open(
      tmp_path / 'tokenizer.json') as g:
    assert f.read() == g.read()
  # Agreement with the teacher and KL(teacher || student) on the held-out
  # tokens, recomputed in NumPy from the converted teacher.
  want = _teacher_stats(c, str(tmp_path), setup[1]['llama'])
  for key, value in want.items():
    np.testing.assert_allclose(summary[key], value, rtol=1e-4, err_msg=key)


def test_topk_cache_of_a_converted_teacher(setup, tmp_path):
  c = _config(setup, method='topk')
  train.train_and_evaluate(c, str(tmp_path))
  cache = tmp_path / 'teacher_cache'
  meta = json.loads((cache / 'meta.json').read_text())
  assert meta['topk'] == 32 and meta['data']['vocab_size'] == VOCAB
  rows = [r for r in _rows(str(tmp_path)) if 'topk' in r]
  assert rows and all(np.isfinite(r['topk']) for r in rows)
  # The cached values are the teacher's top 32 log-probabilities of the
  # rows it holds.
  _, teacher, variables, _ = runs.load_run(setup[1]['llama'])
  tok = text.run_tokenizer(c, str(tmp_path))
  numbers = np.load(cache / 'row_numbers.npy')
  rows = text.training_rows(text.source(c.data), seq_len=c.data.seq_len,
                            seed=c.seed, tok=tok, data_dir=c.data.data_dir)
  values = np.load(sorted(cache.glob('topk_values.*.npy'))[0])
  logits = jax.jit(lambda x: teacher.apply(variables, x, train=False)[0])(
      rows[numbers[:2], :-1])
  np.testing.assert_allclose(
      values[:2], jax.lax.top_k(jax.nn.log_softmax(logits), 32)[0], atol=1e-4)


def greedy_gaps(run_dir: str, seqkd_dir) -> tuple[np.ndarray, float]:
  """For every token a teacher generated into `seqkd_dir` (kd.seqkd, through
  its KV cache), how far its logit is below the largest one of the
  teacher's full forward pass on the same row: 0 for a greedy choice."""
  tokens = np.load(os.path.join(seqkd_dir, 'tokens.npy'))
  mask = np.load(os.path.join(seqkd_dir, 'mask.npy'))
  assert mask.sum() > len(mask) * 16 and not mask[:, :7].any()
  _, model, variables, _ = runs.load_run(run_dir)
  logits = np.asarray(jax.jit(lambda x: model.apply(
      variables, x, train=False)[0])(tokens[:, :-1]))
  chosen = np.take_along_axis(logits, tokens[:, 1:, None], -1)[..., 0]
  return (logits.max(-1) - chosen)[mask > 0], np.abs(logits).max()


def test_mistral_generates_through_its_window(setup, tmp_path):
  """24 new tokens past mistral's window of 4 through the KV cache: the
  greedy choices of its full forward pass (to float rounding, or a tie)."""
  c = _config(setup, teacher='mistral', method='seqkd')
  meta = seqkd.build(setup[1]['mistral'], str(tmp_path), seq_len=32,
                     prompt_len=8, num_prompts=4, batch_size=4,
                     dataset=text.source(c.data), data_dir=c.data.data_dir)
  assert meta['num_rows'] == 4
  gaps, _ = greedy_gaps(setup[1]['mistral'], tmp_path)
  assert gaps.max() < 1e-3, gaps.max()


def test_seqkd_from_a_converted_gemma2(setup, tmp_path):
  """The student trains on gemma2's greedy continuations, generated through
  its KV cache with its alternate sliding windows and its soft-caps."""
  c = _config(setup, teacher='gemma2', method='seqkd')
  summary = train.train_and_evaluate(c, str(tmp_path))
  assert np.isfinite(summary['test_loss'])
  assert json.loads((tmp_path / 'seqkd' / 'meta.json').read_text(
      ))['num_rows'] == c.steps * c.batch_size
  gaps, largest = greedy_gaps(setup[1]['gemma2'], tmp_path / 'seqkd')
  assert gaps.max() < 1e-3, gaps.max()
  # The final soft-cap (4 in the fixture's config) bounds every logit
  # (without it they reach 8.3 here).
  cap = runs.load_config(setup[1]['gemma2']).model.kwargs.final_softcap
  assert cap == 4.0 and largest < cap


def test_on_policy_gkd_from_a_converted_teacher(setup, tmp_path):
  c = _config(setup, teacher='mistral', method='gkd', lmbda=1.0)
  train.train_and_evaluate(c, str(tmp_path))
  rows = [r for r in _rows(str(tmp_path)) if 'jsd' in r]
  assert [r['on_policy'] for r in rows] == [1.0, 1.0]
  assert all(np.isfinite(r['jsd']) for r in rows)


def test_strided_student_from_a_converted_teacher(setup, tmp_path):
  """size=half, init=1: the teacher's settings at half its depth, started
  from every other layer (gemma2: 3 layers -> 1, its layer 0)."""
  c = _config(setup, teacher='gemma2', size='half', init=1)
  assert c.init_from_layers == 'strided'
  b = train.build(c, str(tmp_path), 'student')
  teacher, _ = runs.latest_state(setup[1]['gemma2'], 'teacher')
  jax.tree.map(np.testing.assert_array_equal, dict(b.state.params),
               {k: teacher['params'][k] for k in
                ('embed', 'final_norm', 'blocks_0')})


def test_the_recipe_for_smollm2_135m(tmp_path):
  """configs/lm/hf_distill.py on a teacher converted from SmolLM2-135M's
  config.json (counts.json, transformers' count): the student sizes its
  docstring states, and no teacher run is a one-line error naming the
  conversion."""
  with open(os.path.join(FIXTURES, 'counts.json')) as f:
    smol = json.load(f)['SmolLM2-135M']
  name, kwargs, vocab = hf.kd_config(smol['config'])
  p = {'model': name, 'kwargs': kwargs, 'vocab': vocab}
  (tmp_path / 'config.json').write_text(json.dumps(hf.run_config(p).to_dict()))
  count = lambda c: hf.parameter_count(c.model.name, c.model.kwargs.to_dict(),
                                       c.data.vocab_size)
  c = hf_distill.get_config(f'teacher_dir={tmp_path}')
  assert (c.data.tokenizer, c.data.vocab_size) == ('hf', 49_152)
  assert count(runs.load_config(str(tmp_path))) == smol['parameters'] == (
      134_515_008)
  assert count(c) == 31_463_808
  half = hf_distill.get_config(f'teacher_dir={tmp_path},size=half,init=1')
  assert half.model.kwargs.num_layers == 15 and count(half) == 81_413_568
  assert half.init_from == str(tmp_path)
  scratch = hf_distill.get_config(f'teacher_dir={tmp_path},method=scratch')
  assert not scratch.distill.teacher.workdir and not scratch.distill.terms
  assert scratch.data.tokenizer_path == str(tmp_path)  # Its tokenizer.
  with pytest.raises(FileNotFoundError, match=r'teacher_dir=nowhere: no '
                     r'converted run there; convert the Hugging Face folder first: '
                     r'python -m kd.convert --from=hf HF_DIR --out=nowhere'):
    hf_distill.get_config('teacher_dir=nowhere')


def test_a_student_of_another_tokenizer_is_refused(setup, tmp_path):
  """The byte tokenizer has the converted teacher's 259 tokens, but not its
  tokenizer: refused before any step, naming both and the fix."""
  c = _config(setup, method='forward_kl')
  c.data.update(tokenizer='byte', vocab_size=0)
  with pytest.raises(ValueError, match=r"vocabulary of 259 tokens \(hf\), "
                     r"the student 259 \(byte\): use the teacher's "
                     r"tokenizer: set config.data.tokenizer='hf'"):
    train.train_and_evaluate(c, str(tmp_path))
  assert not os.path.exists(tmp_path / 'metrics.jsonl')
