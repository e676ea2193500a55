"""The "omitted class" experiment of Hinton et al. 2015, on MNIST-1D.

The teacher (CNN) learns all ten classes; the MLP students never see an
example of class `omit`: one distilled (KD at T=4 on mixed-up signals, the
setting that transfers best on MNIST-1D), one from labels. Afterwards
`analyze.py` reports the omitted class's test accuracy before and after the
bias correction the paper describes.

  python -m kd.main --config=experiments/omitted_class/config.py:omit=3,seed=0 \
      --workdir=runs/omitted/seed0
  python -m experiments.omitted_class.analyze runs/omitted/seed*
"""
from configs.mnist1d import train as recipes
from kd.config import parse_args, pipeline_config, term


def get_config(arg: str | None = None):
  a = parse_args(arg, omit=3, seed=0, teacher_dir='')
  omit, seed = a['omit'], a['seed']
  teacher = recipes.recipe('cnn1d', 0)
  stages = {'teacher': teacher}
  for name, distil in (('student_kd', True), ('student_scratch', False)):
    s = recipes.recipe('mlp', seed)
    s.data.exclude_classes = (omit,)
    s.mixup_alpha = 1.0
    if distil:
      s.distill.teacher.update(workdir='teacher', model='cnn1d')
      s.distill.terms.kd = term('kd', 1.0, temperature=4.0)
    stages[name] = s
  c = pipeline_config(**stages)
  if a['teacher_dir']:
    c.stage_dirs = {'teacher': a['teacher_dir']}
  return c
