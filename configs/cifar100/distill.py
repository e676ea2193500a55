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
seed, teacher_dir (share one trained teacher between runs), init (1: run
the method's `INIT` pre-training stage first; always on for ab, ft and
fsp). Feature names 'stage-k' count stages from the last, so every pair of
the zoo takes the same method definition.
"""
import copy

from configs.cifar100 import teacher as teacher_config
from kd.config import parse_args, pipeline_config, term

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
    # Logit standardisation (Sun et al., CVPR 2024): base temperature 2 and
    # the KD weight 9 of the paper's commands (for DKD, alpha and beta x 9).
    'kd_std': (0.1, {'kd': term('kd', 9.0, temperature=2.0,
                                standardize=True)}),
    'dkd_std': (1.0, {'dkd': term('dkd', 9.0, alpha=1.0, beta=8.0,
                                  temperature=2.0, standardize=True)}),
    # OFD (mdistiller): pre-ReLU stages, weight 1e-3 halved per stage back.
    'ofd': (1.0, {f'ofd{i}': term('ofd', 1e-3 / 2**(2 - i), f'preact_{s}',
                                  f'preact_{s}', adapter='ofd')
                  for i, s in enumerate(_STAGES)}),
    # Review KD (mdistiller): the student's stages and embedding fused by
    # ABFs against the teacher's pre-ReLU stages and embedding; the weight
    # warms up over 20 epochs (WARMUP below).
    'reviewkd': (1.0, {'reviewkd': term(
        'hcl', 1.0, ','.join(_STAGES + ('embedding',)),
        ','.join(f'preact_{s}' for s in _STAGES) + ',embedding',
        adapter='review_kd')}),
    # Initialisation methods: the adapters (and for AB and FSP the student)
    # first train alone in an 'init' stage (INIT), then the student from
    # labels (AB, FSP) or with the frozen paraphraser's factor (FT).
    'ab': (1.0, {}),
    'fsp': (1.0, {}),
    'ft': (1.0, {'ft': term('factor_transfer', 200.0, 'stage-1', 'stage-1',
                            adapter='ft', adapter_kwargs=dict(
                                stage='translator', rate=0.5))}),
}

# method -> (init epochs at 240 total, {term: config}) of the 'init' stage,
# cross-entropy weight 0. AB: connectors on the three last stages'
# pre-activations, weights 2^(i - 2) * 3e-3 as the CRD benchmark code.
# FitNets (`init=1`): stage 1 of Romero et al., the hint alone.
INIT = {
    'ab': (30, {f'ab{i}': term('activation_boundary', 2.0**(i - 2) * 3e-3,
                               f'preact_{s}', f'preact_{s}', adapter='ab',
                               margin=1.0)
                for i, s in enumerate(_STAGES)}),
    'ft': (30, {'ft': term('hint', 1.0, 'stage-1', 'stage-1', adapter='ft',
                           adapter_kwargs=dict(stage='paraphraser',
                                               rate=0.5))}),
    'fitnet': (30, {'hint': term('hint', 1.0, 'stage-2', 'stage-2',
                                 adapter='regressor')}),
    # FSP: the student alone matches the FSP matrices of consecutive stages.
    'fsp': (30, {'fsp': term('fsp', 1.0, ','.join(_STAGES),
                             ','.join(_STAGES))}),
}

# (teacher, student, method) -> {term: weight} where the reference config
# of that pair differs (mdistiller's reviewkd.yaml).
PAIR_WEIGHTS = {('resnet32x4', 'resnet8x4', 'reviewkd'): {'reviewkd': 5.0}}

# method -> {term: warm-up epochs of its weight} (mdistiller).
WARMUP = {'reviewkd': {'reviewkd': 20}, 'dkd_std': {'dkd': 20}}


def get_config(arg: str | None = None):
  a = parse_args(arg, teacher='resnet32x4', student='resnet8x4', method='kd',
                 epochs=240, seed=0, init=False, teacher_dir='')
  t_name, s_name, method = a['teacher'], a['student'], a['method']
  if method not in METHODS:
    raise ValueError(f'unknown method {method!r}; valid: {sorted(METHODS)}')
  epochs, seed = a['epochs'], a['seed']
  teacher = teacher_config.recipe(t_name, epochs)
  student = teacher_config.recipe(s_name, epochs)
  student.seed = seed
  ce_weight, terms = METHODS[method]
  student.distill.teacher.update(workdir='teacher', model=t_name)
  student.distill.ce_weight = ce_weight
  for name, t in terms.items():
    student.distill.terms[name] = copy.deepcopy(t)  # Keeps METHODS.
  for name, w in PAIR_WEIGHTS.get((t_name, s_name, method), {}).items():
    student.distill.terms[name].weight = w
  for name, warmup_epochs in WARMUP.get(method, {}).items():
    student.distill.terms[name].kwargs.warmup_steps = (
        warmup_epochs * student.steps // epochs)
  student.wandb.group = f'{t_name}-{s_name}-{method}'
  student.wandb.tags = (method, t_name, s_name)
  stages = {'teacher': teacher}
  if method in ('ab', 'ft', 'fsp') or (a['init'] and method in INIT):
    init_epochs, init_terms = INIT[method]
    init = teacher_config.recipe(s_name, max(1, init_epochs * epochs // 240))
    init.seed = seed
    init.distill.teacher.update(workdir='teacher', model=t_name)
    init.distill.ce_weight = 0.0
    for name, t in init_terms.items():
      init.distill.terms[name] = t
    init.wandb.group = student.wandb.group
    init.wandb.tags = student.wandb.tags + ('init',)
    stages['init'] = init
    student.init_from = 'init'
  stages['student'] = student
  c = pipeline_config(**stages)
  if a['teacher_dir']:
    c.stage_dirs = {'teacher': a['teacher_dir']}
  return c
