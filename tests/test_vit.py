"""ViT / DeiT: timm's parameter counts, the two heads, the DeiT losses,
every method of configs/vit/distill.py for a few steps, the ImageNet DeiT
config on mock data, and TFLite parity."""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow_datasets as tfds

from configs.vit import distill
from kd import data, losses, main, models, train
from kd import runs as kd_runs
from kd.export import tflite
from kd.losses import deit
from tests.mock_tfds import metadata_dir

# timm 1.0's VisionTransformer with 1000 classes at 224x224
# (sum(p.numel() for p in model.parameters())).
TIMM = {'deit_tiny': 5_717_416, 'deit_tiny_distilled': 5_910_800,
        'deit_small': 22_050_664, 'deit_base': 86_567_656,
        'vit_tiny': 5_717_416, 'vit_small': 22_050_664,
        'vit_base': 86_567_656}
TINY = {'depth': 2, 'width': 16, 'heads': 2}


def _count(name, **kwargs):
  m = models.create(name, 1000, **kwargs)
  v = jax.eval_shape(lambda: m.init(jax.random.key(0),
                                    jnp.zeros((1, 224, 224, 3))))
  return sum(int(np.prod(p.shape)) for p in jax.tree.leaves(v['params']))


@pytest.mark.parametrize('name', sorted(TIMM))
def test_parameter_counts_are_timms(name):
  assert _count(name) == TIMM[name]


def test_parameter_count_by_hand():
  """Patch conv + class token + positions, per block two LayerNorms, qkv,
  proj, fc1, fc2 (all with bias), final norm, head: at width D, 196 patches
  of 16x16x3."""
  d, depth, classes = 32, 2, 1000
  block = 4 * d + (3 * d * d + 3 * d) + (d * d + d) + 2 * (4 * d * d) + 4 * d + d
  total = (768 * d + d) + d + 197 * d + depth * block + 2 * d + d * classes + classes
  assert _count('vit_base', width=d, depth=depth, heads=4) == total


@pytest.fixture(scope='module')
def distilled():
  m = models.create('deit_tiny_distilled', 10, patch_size=2, **TINY)
  x = np.random.default_rng(0).normal(size=(4, 8, 8, 1)).astype(np.float32)
  return m, m.init(jax.random.key(0), x[:1]), x


def test_logits_are_the_mean_of_both_heads_in_train_and_eval(distilled):
  m, v, x = distilled
  for train in (True, False):
    logits, f = m.apply(v, x, train=train)
    assert logits.shape == (4, 10) and logits.dtype == jnp.float32
    np.testing.assert_allclose(logits, (f['cls_logits'] + f['dist_logits']) / 2,
                               rtol=1e-6)
    assert not np.allclose(f['cls_logits'], f['dist_logits'])


def test_features(distilled):
  m, v, x = distilled
  _, f = m.apply(v, x)
  # 16 patches of 2x2, a class and a distillation token.
  assert [f[f'hidden{i}'].shape for i in range(2)] == [(4, 18, 16)] * 2
  assert f['stage2'].shape == (4, 4, 4, 16)  # The patch tokens as a map.
  np.testing.assert_array_equal(f['stage2'].reshape(4, 16, 16),
                                f['hidden1'][:, 2:])
  assert f['embedding'].shape == (4, 16)
  assert 'hidden2' not in f


def test_signals_and_bfloat16():
  m = models.create('deit_tiny', 10, patch_size=4, dtype=jnp.bfloat16, **TINY)
  x = jnp.ones((3, 40, 1))
  v = m.init(jax.random.key(0), x)
  logits, f = m.apply(v, x)
  assert logits.dtype == jnp.float32 and f['hidden0'].dtype == jnp.bfloat16
  assert f['hidden0'].shape == (3, 11, 16) and f['stage1'].shape == (3, 10, 16)
  assert v['params']['pos_embed'].shape == (1, 11, 16)
  assert 'cls_logits' not in f


def test_bad_input_sizes_are_explained():
  m = models.create('deit_tiny', 10, patch_size=3, **TINY)
  with pytest.raises(ValueError, match=r'\(40,\) is not a multiple of '
                     'patch_size 3'):
    m.init(jax.random.key(0), jnp.ones((1, 40, 1)))
  with pytest.raises(ValueError, match='width 16 is not a multiple of heads 3'):
    models.create('deit_tiny', 10, patch_size=4, depth=1, width=16,
                  heads=3).init(jax.random.key(0), jnp.ones((1, 40, 1)))


def test_hard_distillation_is_ce_to_the_teachers_argmax():
  rng = np.random.default_rng(0)
  s, t = rng.normal(size=(2, 5, 7)).astype(np.float32)
  log_q = s - np.log(np.exp(s).sum(-1, keepdims=True))
  expected = -np.mean(log_q[np.arange(5), t.argmax(-1)])
  np.testing.assert_allclose(losses.get('hard_distillation')(s, t), expected, rtol=1e-5)
  y = rng.integers(0, 7, 5)
  np.testing.assert_allclose(losses.get('label_cross_entropy')(s, t, y),
                             -np.mean(log_q[np.arange(5), y]), rtol=1e-5)
  # The teacher's logits change neither: no gradient, labels only.
  assert np.all(jax.grad(losses.get('hard_distillation'), 1)(s, t) == 0)
  np.testing.assert_array_equal(losses.get('label_cross_entropy')(s, 2 * t + 1, y),
                                losses.get('label_cross_entropy')(s, t, y))
  # Per example underneath, as every loss (kd.losses.deit).
  assert deit.hard_distillation(s, t).shape == (5,)
  assert losses.spec('label_cross_entropy').labels


def test_tflite_float32_matches_jax():
  shape = (40, 1)  # MNIST-1D, as configs/vit/distill.py's students.
  m = models.create('deit_tiny_distilled', 10, patch_size=4, **TINY)
  v = m.init(jax.random.key(1), jnp.zeros((1, *shape)))
  predict = lambda x: m.apply(v, x, train=False)[0]
  x = np.random.default_rng(0).normal(size=(8, *shape)).astype(np.float32)
  out = tflite.TFLiteModel(tflite.convert(predict, shape)).predict(x)
  assert np.max(np.abs(out - np.asarray(jax.jit(predict)(x)))) <= 1e-4


def _small(stage):
  stage.steps, stage.log_every, stage.checkpoint_every = 3, 1, 3
  stage.eval_every, stage.eval_batch_size = 0, 500
  stage.wandb.mode, stage.evaluate.latency = 'disabled', False


@pytest.fixture(scope='module')
def teacher_dir(tmp_path_factory):
  c = distill.get_config('method=kd')
  c.stages.teacher.model.kwargs = {'channels': (4, 8), 'dense': 16}
  _small(c.stages.teacher)
  with c.unlocked():
    c.stage_order = ('teacher',)
  workdir = str(tmp_path_factory.mktemp('vit'))
  main.run_pipeline(c, workdir)
  return os.path.join(workdir, 'teacher')


@pytest.mark.parametrize('method', distill.METHODS)
def test_method_runs_a_few_steps(method, teacher_dir, tmp_path):
  c = distill.get_config(f'method={method},depth=1,width=8,heads=2')
  s = c.stages.student
  _small(s)
  if s.distill.terms:
    s.distill.teacher.workdir = teacher_dir
    s.distill.teacher.kwargs = {'channels': (4, 8), 'dense': 16}
  with c.unlocked():
    c.stage_order = ('student',)
  summary = main.run_pipeline(c, str(tmp_path))
  rows = [r for r in map(json.loads, open(tmp_path / 'student' / 'metrics.jsonl'))
          if 'loss' in r]
  assert len(rows) == 3
  for name in s.distill.terms:
    assert all(np.isfinite(r[name]) for r in rows), name
  if method.startswith('deit'):
    for r in rows:  # 'ce' (the averaged logits') is logged, not trained.
      assert r['loss'] == pytest.approx(0.5 * r['cls_ce'] + 0.5 * r['deit'])
    # Each head's accuracy, reported beside the mean's, counted here again.
    _, model, variables, _ = kd_runs.load_run(str(tmp_path / 'student'))
    correct, count = {'cls': 0.0, 'dist': 0.0}, 0.0
    for batch in data.eval_batches('mnist1d', batch_size=500):
      _, feats = model.apply(variables, batch['image'], train=False)
      for head in correct:
        correct[head] += float(np.sum(batch['mask'] * (np.argmax(
            feats[f'{head}_logits'], -1) == batch['label'])))
      count += float(np.sum(batch['mask']))
    for head, value in correct.items():
      assert summary[f'student/test_accuracy_{head}'] == pytest.approx(
          value / count, abs=1e-6)
  else:
    assert s.model.name == 'deit_tiny'
    assert 'student/test_accuracy_cls' not in summary


def test_unknown_method_is_named():
  with pytest.raises(ValueError, match="unknown method 'deit'.*deit_hard"):
    distill.get_config('method=deit')


def test_imagenet_deit_smoke_on_mock_data(tmp_path):
  from configs.imagenet import deit  # pylint: disable=import-outside-toplevel
  from configs.imagenet import distill as imagenet  # pylint: disable=import-outside-toplevel
  root = metadata_dir(str(tmp_path / 'tfds'),
                      {'imagenet2012': ('train', 'validation')}, 16)
  size = 'batch=8,epochs=1,image_size=32'
  # A small CNN stands in for the ResNet teacher (a run dir like any other).
  small_cnn = {'channels': (4, 8), 'dense': 16}
  teacher = imagenet.get_config(f'teacher=cnn,{size}').stages.teacher
  teacher.model.kwargs = small_cnn
  c = deit.get_config(f'method=deit_hard,teacher=cnn,'
                      f'teacher_dir={tmp_path / "teacher"},{size}')
  assert c.model.name == 'deit_small_distilled' and c.distill.ce_weight == 0
  assert c.distill.terms.cls_ce.kwargs.label_smoothing == 0.1
  c.distill.teacher.kwargs = small_cnn
  c.model.kwargs = {'depth': 1, 'width': 32, 'heads': 2}
  for stage in (teacher, c):
    stage.data.data_dir = root
    stage.steps, stage.log_every, stage.checkpoint_every = 2, 1, 2
    stage.eval_every, stage.wandb.mode, stage.evaluate.latency = 0, 'disabled', False
  with tfds.testing.mock_data(num_examples=16, data_dir=root):
    train.train_and_evaluate(teacher, str(tmp_path / 'teacher'))
    summary = train.train_and_evaluate(c, str(tmp_path / 'student'))
  assert summary['test_examples'] == 16 and np.isfinite(summary['test_loss'])
  assert 'teacher_agreement' in summary
