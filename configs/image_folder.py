"""Your images, quickstart-style: DIR holds train/<class>/* and test/<class>/*
(kd.data.image_folder); every image resized to `image_size` squared. Three
stages, as configs/quickstart.py:
  teacher          a small CNN (32-64 channels), from labels
  student_scratch  an MLP (128-128) from labels: the baseline
  student_kd       the same MLP distilled: CE + T^2 KL at T=4 (Hinton et al.
                   2015)
Adam, lr 1e-3, batch `batch`, `steps` steps each; random crops (4-pixel
padding) and flips.

  python -m kd.main --config=configs/image_folder.py:data_dir=DIR,image_size=32 \
      --workdir=runs/my_images
"""
from kd.config import parse_args, pipeline_config, run_config, term


def _stage(model: str, kwargs: dict, a: dict):
  c = run_config()
  c.data.update(name='image_folder', data_dir=a['data_dir'],
                image_size=a['image_size'])
  c.model.update(name=model, kwargs=kwargs)
  c.batch_size, c.eval_batch_size = a['batch'], 256
  c.steps, c.log_every = a['steps'], max(a['steps'] // 10, 1)
  c.checkpoint_every = a['steps']
  c.optimizer.update(name='adam', lr=1e-3, schedule='cosine')
  c.wandb.project = 'kd-image-folder'
  c.evaluate.latency = False
  return c


def get_config(arg: str | None = None):
  a = parse_args(arg, data_dir='', image_size=32, steps=2000, batch=64,
                 width=32)
  w = a['width']
  teacher = _stage('cnn', dict(channels=(w, 2 * w), dense=4 * w), a)
  scratch = _stage('mlp', dict(hidden=(4 * w, 4 * w)), a)
  student = _stage('mlp', dict(hidden=(4 * w, 4 * w)), a)
  student.distill.teacher.update(workdir='teacher', model=teacher.model.name,
                                 kwargs=teacher.model.kwargs)
  student.distill.terms.kd = term('kd', weight=1.0, temperature=4.0)
  return pipeline_config(teacher=teacher, student_scratch=scratch,
                         student_kd=student)
