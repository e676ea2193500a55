"""Quickstart: CNN teacher -> MLP student on scikit-learn's handwritten digits.

Trains the teacher, the student from labels alone, and the student distilled
from the teacher (Hinton et al. 2015: CE + T^2 KL at temperature T), then
exports the distilled student to TFLite (float32 and int8) and compares all.

  python -m kd.main --config=configs/quickstart.py --workdir=/tmp/kd_quickstart
"""
from kd.config import parse_args, pipeline_config, run_config, term


def _base(model: str, steps: int, augment: bool, **model_kwargs):
  c = run_config()
  c.data.name = 'kd_digits'
  c.data.augment = augment  # One-pixel random shifts.
  c.model.name = model
  c.model.kwargs.update(model_kwargs)
  c.batch_size = 64
  c.steps = steps
  c.optimizer.name = 'adam'
  c.optimizer.lr = 3e-3
  c.log_every = 100
  c.checkpoint_every = 300
  return c


def get_config(arg: str | None = None):
  parse_args(arg)  # It takes none.
  # The CNN gains from shifted digits; the small MLP loses, so it sees the
  # plain images, with and without the teacher.
  teacher = _base('cnn', 1200, True, channels=(32, 64), dense=128)
  scratch = _base('mlp', 1200, False, hidden=(32,))
  student = _base('mlp', 1200, False, hidden=(32,))
  student.distill.teacher.workdir = 'teacher'  # The stage above.
  student.distill.teacher.model = 'cnn'
  student.distill.teacher.kwargs.update(channels=(32, 64), dense=128)
  student.distill.ce_weight = 1.0
  student.distill.terms.kd = term('kd', weight=1.0, temperature=4.0)
  student.export.formats = ('float32', 'int8')
  return pipeline_config(teacher=teacher, student_scratch=scratch,
                         student_kd=student)
