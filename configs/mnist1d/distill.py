"""MNIST-1D distillation: a CNN teacher, MLP students (Hinton-style table).

A pipeline: the teacher (reference recipe, seed 0; `teacher_dir=PATH` shares
one trained teacher between runs), then the student by `method`:
  scratch            labels only
  kd                 CE + T^2 KL at `temperature` (Hinton et al. 2015)
  dkd, dist, rkd, pkt, logit_mse   from the zoo, default hyper-parameters
`mixup=ALPHA`: teacher and student see the same mixed-up signals
(consistent teaching, Beyer et al. 2022). `qat=1`: quantization-aware
distillation (simulated int8). `export=1`: TFLite float32 and int8 exports.

  python -m kd.main \
      --config=configs/mnist1d/distill.py:method=kd,temperature=4,seed=0 \
      --workdir=runs/mnist1d/kd_T4_s0
"""
from configs.mnist1d import train as recipes
from kd.config import parse_args, pipeline_config, term

METHODS = ('scratch', 'kd', 'dkd', 'dist', 'rkd', 'pkt', 'logit_mse')


def _terms(method: str, temperature: float) -> tuple[float, dict]:
  """(cross-entropy weight, terms)."""
  return {
      'scratch': (1.0, {}),
      'kd': (1.0, {'kd': term('kd', 1.0, temperature=temperature)}),
      'dkd': (1.0, {'dkd': term('dkd', 1.0, temperature=temperature)}),
      'dist': (1.0, {'dist': term('dist', 1.0, beta=2.0, gamma=2.0,
                                  temperature=temperature)}),
      'rkd': (1.0, {'rkd': term('rkd', 1.0, 'embedding', 'embedding')}),
      'pkt': (1.0, {'pkt': term('pkt', 30000.0, 'embedding', 'embedding')}),
      'logit_mse': (1.0, {'logit_mse': term('logit_mse', 0.1)}),
  }[method]


def get_config(arg: str | None = None):
  a = parse_args(arg, method='kd', steps=6000, teacher='cnn1d', student='mlp',
                 seed=0, temperature=4.0, mixup=0.0, qat=False, export=False,
                 teacher_dir='')
  method = a['method']
  if method not in METHODS:
    raise ValueError(f'unknown method {method!r}; valid: {METHODS}')
  teacher = recipes.recipe(a['teacher'], 0, a['steps'])
  student = recipes.recipe(a['student'], a['seed'], a['steps'])
  ce_weight, terms = _terms(method, a['temperature'])
  student.distill.ce_weight = ce_weight
  if terms:
    student.distill.teacher.update(workdir='teacher', model=teacher.model.name,
                                   kwargs=teacher.model.kwargs)
    for name, t in terms.items():
      student.distill.terms[name] = t
  student.mixup_alpha = a['mixup']
  student.distill.quantization_aware = a['qat']
  if a['export']:
    student.export.formats = ('float32', 'int8')
  c = pipeline_config(teacher=teacher, student=student)
  if a['teacher_dir']:
    c.stage_dirs = {'teacher': a['teacher_dir']}
  return c
