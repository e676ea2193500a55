"""ImageNet distillation (e.g. ResNet-34 -> ResNet-18, the CRD / DKD
ImageNet pair), for a GPU/TPU cluster.

A pipeline: the teacher (skipped when `teacher_dir` holds a finished run),
then the student with `method` (kd: CE 0.5 + KD 0.5 at T=1 as in the
ImageNet experiments of CRD; dkd: DKD's ImageNet setting alpha 0.5,
beta 0.5, T=1; ofd and reviewkd with mdistiller's settings; scratch).
Recipe: SGD momentum 0.9, lr 0.1 per 256 examples, weight decay 1e-4, 100
epochs, x0.1 at 30/60/90; inception crop + flip; evaluation on the
'validation' split.

  python -m kd.main --config=configs/imagenet/distill.py:teacher=resnet34_imagenet,student=resnet18_imagenet,method=kd \
      --workdir=/runs/imagenet/r34-r18-kd \
      --config.stages.teacher.data.data_dir=DIR --config.stages.student.data.data_dir=DIR

`epochs=`, `batch=`, `image_size=` and `seed=` arguments shorten or resize
it (smoke tests).
"""
import copy

from kd.config import parse_args, pipeline_config, run_config, term

TRAIN_EXAMPLES = 1_281_167
_PREACT = ','.join(f'preact_stage-{k}' for k in range(4, 0, -1))
METHODS = {
    'scratch': (1.0, {}),
    'kd': (0.5, {'kd': term('kd', 0.5, temperature=1.0)}),
    'dkd': (1.0, {'dkd': term('dkd', 1.0, alpha=0.5, beta=0.5,
                              temperature=1.0)}),
    # OFD: mdistiller's ImageNet weight 1e-4, halved per stage back.
    'ofd': (1.0, {f'ofd{k}': term('ofd', 1e-4 / 2**(k - 1),
                                  f'preact_stage-{k}', f'preact_stage-{k}',
                                  adapter='ofd') for k in range(1, 5)}),
    # Review KD (mdistiller's r34_r18/reviewkd.yaml): the student's pre-ReLU
    # stages and embedding, weight 1 warmed up over the first epoch.
    'reviewkd': (1.0, {'reviewkd': term(
        'hcl', 1.0, _PREACT + ',embedding', _PREACT + ',embedding',
        adapter='review_kd', warmup_steps=1)}),
}


def recipe(model: str, epochs: int, batch: int, image_size: int):
  c = run_config()
  c.data.update(name='imagenet2012', eval_split='validation',
                image_size=image_size)
  c.model.name = model
  c.batch_size, c.eval_batch_size = batch, batch
  per_epoch = TRAIN_EXAMPLES // batch
  c.steps = epochs * per_epoch
  c.optimizer.update(name='sgd', lr=0.1 * batch / 256, momentum=0.9,
                     weight_decay=1e-4, schedule='step', decay_factor=0.1,
                     boundaries=tuple(int(e * epochs / 100) * per_epoch
                                      for e in (30, 60, 90)))
  c.log_every, c.checkpoint_every, c.eval_every = 500, per_epoch, 5 * per_epoch
  c.wandb.project = 'kd-imagenet'
  return c


def get_config(arg: str | None = None):
  a = parse_args(arg, method='kd', epochs=100, batch=256, image_size=224,
                 teacher='resnet34_imagenet', student='resnet18_imagenet',
                 seed=0, teacher_dir='')
  method = a['method']
  if method not in METHODS:
    raise ValueError(f'unknown method {method!r}; valid: {sorted(METHODS)}')
  size = {k: a[k] for k in ('epochs', 'batch', 'image_size')}
  t_name = a['teacher']
  teacher = recipe(t_name, **size)
  student = recipe(a['student'], **size)
  student.seed = a['seed']
  ce_weight, terms = METHODS[method]
  student.distill.ce_weight = ce_weight
  if terms:
    student.distill.teacher.update(workdir='teacher', model=t_name)
    for name, t in terms.items():
      student.distill.terms[name] = copy.deepcopy(t)  # Keeps METHODS.
      if 'warmup_steps' in t.kwargs:  # In epochs above.
        student.distill.terms[name].kwargs.warmup_steps = (
            t.kwargs.warmup_steps * TRAIN_EXAMPLES // size['batch'])
  c = pipeline_config(teacher=teacher, student=student)
  if a['teacher_dir']:
    c.stage_dirs = {'teacher': a['teacher_dir']}
  return c
