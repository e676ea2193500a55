"""CIFAR-100 distillation benchmark (CRD, Tian et al. 2020; DKD, DIST).

A pipeline: the teacher with the benchmark recipe (skipped when its stage is
already finished, or point `--config.stages.student.distill.teacher.workdir`
at a trained teacher run), then the student distilled by `method`, same
recipe. Loss weights are those of the reference implementations
(RepDistiller; mdistiller for DKD; the DIST paper's CIFAR setting).

  python -m kd.main \
      --config=configs/cifar100/distill.py:teacher=resnet32x4,student=resnet8x4,method=crd \
      --workdir=runs/cifar100/resnet32x4-resnet8x4-crd --config.stages.teacher.data.data_dir=DIR \
      --config.stages.student.data.data_dir=DIR

Arguments: teacher, student, method (one of METHODS), epochs (default 240),
seed, teacher_dir (share one trained teacher between runs). Feature names 'stage-k' count stages from the last, so every pair of
the zoo takes the same method definition.
"""
from configs.cifar100 import teacher as teacher_config
from kd.config import pipeline_config, term

PAIRS = (('wrn_40_2', 'wrn_16_2'), ('resnet56', 'resnet20'),
         ('resnet110', 'resnet32'), ('resnet32x4', 'resnet8x4'),
         ('vgg13', 'vgg8'), ('resnet32x4', 'ShuffleV2'),
         ('vgg13', 'MobileNetV2'))

_STAGES = ('stage-3', 'stage-2', 'stage-1')  # The three last stages.

# method -> (cross-entropy weight, {term name: term config})
METHODS = {
    'kd': (0.1, {'kd': term('kd', 0.9, temperature=4.0)}),
    'fitnet': (1.0, {'hint': term('hint', 100.0, 'stage-2', 'stage-2',
                                  adapter='regressor')}),
    'at': (1.0, {f'at{i}': term('attention_transfer', 1000.0, s, s, p=2)
                 for i, s in enumerate(_STAGES)}),
    'sp': (1.0, {'sp': term('similarity_preserving', 3000.0, 'stage-1',
                            'stage-1')}),
    'cc': (1.0, {'cc': term('correlation_congruence', 0.02, 'embedding',
                            'embedding', adapter='regressor')}),
    'vid': (1.0, {f'vid{i}': term('vid', 1.0, s, s, adapter='vid')
                  for i, s in enumerate(_STAGES)}),
    'rkd': (1.0, {'rkd': term('rkd', 1.0, 'embedding', 'embedding')}),
    'pkt': (1.0, {'pkt': term('pkt', 30000.0, 'embedding', 'embedding')}),
    'nst': (1.0, {f'nst{i}': term('nst', 50.0, s, s)
                  for i, s in enumerate(_STAGES)}),
    'crd': (1.0, {'crd': term('crd', 0.8, 'embedding', 'embedding',
                              adapter='crd', adapter_kwargs=dict(
                                  feat_dim=128, num_negatives=16384,
                                  temperature=0.07, momentum=0.5))}),
    'crd_kd': (1.0, {'crd': term('crd', 0.8, 'embedding', 'embedding',
                                 adapter='crd'),
                     'kd': term('kd', 1.0, temperature=4.0)}),
    'dkd': (1.0, {'dkd': term('dkd', 1.0, alpha=1.0, beta=8.0,
                              temperature=4.0)}),
    'dist': (1.0, {'dist': term('dist', 1.0, beta=2.0, gamma=2.0,
                                temperature=4.0)}),
    'logit_mse': (1.0, {'logit_mse': term('logit_mse', 1.0)}),
}


def get_config(arg: str | None = None):
  a = teacher_config.parse(arg)
  t_name, s_name = a.get('teacher', 'resnet32x4'), a.get('student', 'resnet8x4')
  method = a.get('method', 'kd')
  if method not in METHODS:
    raise ValueError(f'unknown method {method!r}; valid: {sorted(METHODS)}')
  epochs, seed = int(a.get('epochs', 240)), int(a.get('seed', 0))
  teacher = teacher_config.recipe(t_name, epochs)
  student = teacher_config.recipe(s_name, epochs)
  student.seed = seed
  ce_weight, terms = METHODS[method]
  student.distill.teacher.update(workdir='teacher', model=t_name)
  student.distill.ce_weight = ce_weight
  for name, t in terms.items():
    student.distill.terms[name] = t
  student.wandb.group = f'{t_name}-{s_name}-{method}'
  student.wandb.tags = (method, t_name, s_name)
  c = pipeline_config(teacher=teacher, student=student)
  if a.get('teacher_dir'):
    c.stage_dirs = {'teacher': a['teacher_dir']}
  return c
