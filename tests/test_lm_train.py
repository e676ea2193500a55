"""Language models through kd's engine: a byte-level teacher trained on the
stdlib corpus, a student distilled on- and off-policy, the held-out figures,
and the errors a user meets (other vocabulary, too long a sequence)."""
import json
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs.lm import distill
from kd import sampling
from kd import main
from kd import runs as kd_runs
from kd import steps as steps_lib
from kd import models
from kd import train
from kd.data import text
from kd.models import lm
from tests.test_train import _teacher_stats

TINY = ('dataset=kd_pystdlib/tiny,seq_len=32,batch=8,teacher_size=tiny,'
        'student_size=tiny,prompt=8')


def _pipeline(arg, teacher_steps=30, student_steps=10):
  c = distill.get_config(f'{TINY},{arg},teacher_steps={teacher_steps},'
                         f'steps={student_steps}')
  for stage in c.stages.values():
    stage.log_every = 5
    stage.wandb.mode = 'disabled'
  return c


def _rows(run_dir):
  with open(os.path.join(run_dir, 'metrics.jsonl')) as f:
    return [json.loads(line) for line in f]


@pytest.fixture(scope='module')
def gkd_run(tmp_path_factory):
  root = str(tmp_path_factory.mktemp('lm'))
  return root, main.run_pipeline(_pipeline('method=gkd'), root)


def test_teacher_learns_the_corpus_and_reports_bits_per_byte(gkd_run):
  root, summary = gkd_run
  rows = [r for r in _rows(os.path.join(root, 'teacher')) if 'loss' in r]
  assert rows[0]['loss'] > rows[-1]['loss'] + 0.5
  # Uniform over 259 byte-level tokens is log2(259) = 8.02 bits a byte.
  assert summary['teacher/test_bits_per_byte'] < math.log2(259) - 1.5
  assert summary['teacher/test_perplexity'] == pytest.approx(
      math.exp(summary['teacher/test_loss']))
  # Every held-out target token counted once, by both models.
  assert summary['teacher/test_examples'] == summary['student/test_examples']


def test_on_policy_student_mixes_its_own_samples(gkd_run):
  root, summary = gkd_run
  rows = [r for r in _rows(os.path.join(root, 'student')) if 'loss' in r]
  # lmbda = 0.5: some steps of each logged interval were on-policy, not all.
  assert 0 < np.mean([r['on_policy'] for r in rows]) < 1
  assert summary['student/teacher_step'] == 30
  # The student and the teacher are compared on the same held-out tokens:
  # agreement and KL(teacher || student) per token, recomputed in NumPy.
  want = _teacher_stats(_pipeline('method=gkd').stages.student,
                        os.path.join(root, 'student'),
                        os.path.join(root, 'teacher'))
  for key, value in want.items():
    np.testing.assert_allclose(summary[f'student/{key}'], value, rtol=1e-4,
                               err_msg=key)


def test_on_policy_batch_keeps_the_prompt_and_masks_it():
  tok = text.ByteTokenizer()
  model = models.create('transformer_lm', tok.vocab_size, d_model=16,
                        num_layers=1, num_heads=2, max_len=64)
  batch = text.model_batch(next(text.packed_batches(
      'kd_pystdlib/tiny', batch_size=4, seq_len=16, seed=0, tok=tok)))
  variables = model.init(jax.random.key(0), batch['image'])
  out = jax.jit(lambda v, b: sampling.on_policy_batch(
      model, v, b, jax.random.key(1), prompt_len=5, temperature=1.0,
      top_k=0, pad_id=tok.pad_id, eos_id=tok.eos_id))(variables, batch)
  np.testing.assert_array_equal(out['image'][:, :5], batch['image'][:, :5])
  np.testing.assert_array_equal(out['label'][:, :-1], out['image'][:, 1:])
  mask = np.asarray(out['mask'])
  assert not mask[:, :4].any()  # Targets inside the prompt are context.
  assert mask[:, 4].all()  # The first sampled token is always learnt from.
  # Without an eos, the rest of every row is the model's greedy-free sample.
  assert out['image'].dtype == jnp.int32 and mask.shape == (4, 16)


def test_forward_kl_student_from_a_shared_teacher(gkd_run, tmp_path):
  root, _ = gkd_run
  c = _pipeline(f'method=forward_kl,teacher_dir={root}/teacher',
                student_steps=10)
  c.stage_order = ('student',)
  summary = main.run_pipeline(c, str(tmp_path))
  rows = [r for r in _rows(str(tmp_path / 'student')) if 'loss' in r]
  assert rows[-1]['forward_kl'] < rows[0]['forward_kl']
  assert 'on_policy' not in rows[0]
  assert summary['student/test_bits_per_byte'] > 0


def test_other_vocabulary_than_the_teacher_is_an_error(gkd_run, tmp_path):
  root, _ = gkd_run
  c = _pipeline(f'method=forward_kl,teacher_dir={root}/teacher,'
                'tokenizer=bpe,vocab=300').stages.student
  c.distill.teacher.workdir = f'{root}/teacher'
  with pytest.raises(ValueError, match=r'vocabulary of 259 tokens \(byte\), '
                     r'the student 300 \(bpe\)'):
    train.train_and_evaluate(c, str(tmp_path / 's'))
  assert not os.path.exists(tmp_path / 's' / 'metrics.jsonl')


def test_a_sequence_longer_than_the_context_is_an_error(tmp_path):
  c = _pipeline('method=scratch').stages.student
  c.model.kwargs.max_len = 16  # seq_len is 32.
  with pytest.raises(ValueError, match='sequence length 32 exceeds the model '
                     'context max_len=16'):
    train.train_and_evaluate(c, str(tmp_path))
  assert not os.path.exists(tmp_path / 'config.json')


def test_a_sequence_longer_than_the_teachers_context_says_teacher(
    gkd_run, tmp_path):
  root, _ = gkd_run
  c = _pipeline(f'method=forward_kl,teacher_dir={root}/teacher'
                ).stages.student
  c.distill.teacher.workdir = f'{root}/teacher'
  c.data.seq_len, c.model.kwargs.max_len = 80, 128  # The teacher's is 64.
  with pytest.raises(ValueError, match=r"config\.data\.seq_len=80 exceeds "
                     r"the teacher's context length \(max_len=64, the "
                     r'teacher in .*; set --config\.data\.seq_len to 64 or '
                     r'less'):
    train.train_and_evaluate(c, str(tmp_path / 's'))
  assert not os.path.exists(tmp_path / 's' / 'config.json')


@pytest.mark.parametrize('field,value,match', [
    ('mixup_alpha', 1.0, 'token ids cannot be mixed'),
    ('data.seq_len', 0, 'needs the training sequence length'),
])
def test_text_fields_are_checked_before_any_work(tmp_path, field, value,
                                                 match):
  c = _pipeline('method=scratch').stages.student
  section, _, key = field.rpartition('.')
  (c[section] if section else c)[key] = value
  with pytest.raises(ValueError, match=match):
    train.train_and_evaluate(c, str(tmp_path))


def test_on_policy_needs_a_text_dataset():
  from configs.mnist1d import train as mnist1d  # pylint: disable=import-outside-toplevel
  c = mnist1d.get_config('steps=10')
  c.distill.on_policy.update(lmbda=0.5, prompt_len=4)
  from kd import config as kd_config  # pylint: disable=import-outside-toplevel
  with pytest.raises(ValueError, match='needs a text dataset'):
    kd_config.validate(c)


def test_the_lm_param_count_of_the_configured_sizes():
  from configs.lm import train as lm_configs  # pylint: disable=import-outside-toplevel
  for size, want in (('teacher', 830_000), ('student', 110_000)):
    kw = lm_configs.SIZES[size]
    model = models.create('transformer_lm', 259, **kw)
    count = sum(np.size(p) for p in jax.tree.leaves(jax.eval_shape(
        lambda m=model: m.init(jax.random.key(0),
                               jnp.zeros((1, 8), jnp.int32)))['params']))
    assert count == lm.lm_param_count(
        259, kw['d_model'], kw['num_layers'], kw['num_heads'],
        kw.get('num_kv_heads') or kw['num_heads'],
        lm.default_mlp_hidden(kw['d_model'], 'swiglu'), 'swiglu', True)
    assert abs(count - want) < 0.05 * want, (size, count)


def test_sharded_parallel_distils_like_pmap(gkd_run, tmp_path):
  """`parallel='sharded'` (kd.sharding) runs the same step as 'pmap', its
  teacher read straight onto the mesh (kd.runs.load_variables)."""
  root, _ = gkd_run
  losses = {}
  for kind in ('pmap', 'sharded'):
    c = _pipeline('method=forward_kl', student_steps=4).stages.student
    c.distill.teacher.workdir = f'{root}/teacher'
    c.parallel, c.log_every = kind, 2
    train.train_and_evaluate(c, str(tmp_path / kind))
    losses[kind] = [r['loss'] for r in _rows(str(tmp_path / kind))
                    if 'loss' in r]
  np.testing.assert_allclose(losses['sharded'], losses['pmap'], rtol=1e-5)


def test_student_starts_from_every_other_teacher_layer(gkd_run):
  root, _ = gkd_run
  c = _pipeline(f'method=forward_kl,init=1,student_size=tiny_half').stages
  student = c.student
  model = models.from_config(student.model.name, student.model.kwargs, 259,
                             'float32')
  state = steps_lib.create_state(
      model, optax.sgd(0.1), jax.random.key(0), np.zeros((1, 32), np.int32))
  warm = train.warm_start(state, f'{root}/teacher', 'student', 'strided')
  teacher, _ = kd_runs.latest_state(f'{root}/teacher', 'teacher')
  # 2 teacher layers -> 1: the student's only layer is the teacher's first.
  jax.tree.map(np.testing.assert_array_equal, dict(warm.params),
               {'embed': teacher['params']['embed'],
                'final_norm': teacher['params']['final_norm'],
                'blocks_0': teacher['params']['blocks_0']})
  with pytest.raises(ValueError, match="valid: '' .* or 'strided'"):
    train.warm_start(state, f'{root}/teacher', 'student', 'every_other')
