"""Quickstart: a 1-D CNN teacher -> MLP student on MNIST-1D, where distillation pays.

MNIST-1D (Greydanus 2020) is generated locally by the `mnist1d` package: 4,000
training and 1,000 test signals of 40 samples, 10 classes. Three stages, the
paper's recipe (Adam, lr 1e-2, batch 100), 3,000 steps each:
  teacher          the 1-D CNN, from labels
  student_scratch  the MLP (100-100) from labels: the honest baseline
  student_kd       the same MLP distilled with consistent teaching (Beyer et
                   al., CVPR 2022): CE + T^2 KL at T=4 (Hinton et al. 2015)
                   on one mixup (alpha 1) of every batch that teacher and
                   student both see, so the teacher labels signals the labels
                   never cover
then exports the distilled student to TFLite (float32 and int8) and compares
all of them.

  python -m kd.main --config=configs/quickstart.py --workdir=/tmp/kd_quickstart
"""
from configs.mnist1d import train as recipes
from kd.config import parse_args, pipeline_config, term

STEPS = 3000


def _stage(model: str):
  c = recipes.recipe(model, seed=0, steps=STEPS)
  c.log_every = 250
  c.evaluate.latency = True
  c.wandb.project = 'kd-quickstart'
  return c


def get_config(arg: str | None = None):
  parse_args(arg)  # It takes none.
  teacher, scratch, student = _stage('cnn1d'), _stage('mlp'), _stage('mlp')
  student.distill.teacher.update(workdir='teacher',  # The stage above.
                                 model=teacher.model.name,
                                 kwargs=teacher.model.kwargs)
  student.distill.ce_weight = 1.0
  student.distill.terms.kd = term('kd', weight=1.0, temperature=4.0)
  student.mixup_alpha = 1.0
  student.export.formats = ('float32', 'int8')
  return pipeline_config(teacher=teacher, student_scratch=scratch,
                         student_kd=student)
