"""DeiT-S with a distillation token, distilled from a ResNet on ImageNet
(Touvron et al., ICML 2021), for a GPU/TPU cluster.

One run: the teacher is a finished (or converted, e.g. from torchvision's
weights) run directory, `teacher_dir=DIR` (the same as
`--config.distill.teacher.workdir=DIR`), of model `teacher=` (default
resnet50_imagenet; the paper's best teacher is a RegNetY-16GF, which kd does
not have). `method`:
  deit_hard  CE(cls head, labels)/2 + CE(dist head, argmax teacher)/2
  deit_soft  CE(cls head, labels)/2 + KL(teacher || dist head)/2 at T=1
  scratch    DeiT-S without distillation token, from labels
Recipe (DeiT's): AdamW, lr 5e-4 per 512 examples, weight decay 0.05, cosine
with 5 warm-up epochs, 300 epochs, batch 1024, label smoothing 0.1 (class
head only), inception crop + flip. Not reproduced: RandAugment, mixup /
cutmix, random erasing, repeated augmentation, stochastic depth 0.1 and
no weight decay on norms and biases; expect lower than the paper's 81.2%
(DeiT-S distilled, 300 epochs).

  python -m kd.main --config=configs/imagenet/deit.py:method=deit_hard,teacher_dir=/runs/imagenet/resnet50 \
      --workdir=/runs/imagenet/deit_s-hard --config.data.data_dir=DIR

`epochs=`, `batch=`, `image_size=`, `seed=` shorten or resize it (smoke
tests).
"""
from configs.imagenet.distill import TRAIN_EXAMPLES
from kd.config import parse_args, run_config, term

METHODS = ('deit_hard', 'deit_soft', 'scratch')


def get_config(arg: str | None = None):
  a = parse_args(arg, method='deit_hard', epochs=300, batch=1024,
                 image_size=224, seed=0, teacher_dir='',
                 teacher='resnet50_imagenet')
  method = a['method']
  if method not in METHODS:
    raise ValueError(f'unknown method {method!r}; valid: {METHODS}')
  epochs, batch = a['epochs'], a['batch']
  c = run_config()
  c.seed = a['seed']
  c.data.update(name='imagenet2012', eval_split='validation',
                image_size=a['image_size'])
  c.model.name = 'deit_small' if method == 'scratch' else 'deit_small_distilled'
  c.batch_size, c.eval_batch_size = batch, batch
  per_epoch = TRAIN_EXAMPLES // batch
  c.steps = epochs * per_epoch
  c.optimizer.update(name='adamw', lr=5e-4 * batch / 512, weight_decay=0.05,
                     schedule='cosine', warmup_steps=5 * per_epoch)
  c.log_every, c.checkpoint_every, c.eval_every = 500, per_epoch, 5 * per_epoch
  c.wandb.project = 'kd-imagenet'
  if method == 'scratch':
    c.label_smoothing = 0.1
    return c
  c.distill.ce_weight = 0.0
  c.distill.teacher.update(workdir=a['teacher_dir'], model=a['teacher'])
  c.distill.terms.cls_ce = term('label_cross_entropy', 0.5, 'cls_logits',
                                label_smoothing=0.1)
  c.distill.terms.deit = (
      term('hard_distillation', 0.5, 'dist_logits') if method == 'deit_hard'
      else term('kd', 0.5, 'dist_logits', temperature=1.0))
  return c
