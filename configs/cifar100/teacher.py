"""CIFAR-100 teacher (or scratch student) with the CRD benchmark recipe.

240 epochs of SGD (momentum 0.9, weight decay 5e-4), batch 64, lr 0.05
(0.01 for MobileNetV2 / ShuffleNet), x0.1 at epochs 150, 180 and 210; random
crop + flip.

  python -m kd.main --config=configs/cifar100/teacher.py:model=resnet32x4 \
      --workdir=runs/cifar100/teacher_resnet32x4 --config.data.data_dir=DIR

`epochs=N` shortens the schedule proportionally (smoke tests).
"""
from kd.config import parse_args, run_config

TRAIN_EXAMPLES = 50_000
BATCH = 64
SMALL_LR_MODELS = ('MobileNetV2', 'ShuffleV1', 'ShuffleV2')


def recipe(model: str, epochs: int = 240):
  c = run_config()
  c.data.name = 'cifar100'
  c.model.name = model
  c.batch_size = BATCH
  steps_per_epoch = TRAIN_EXAMPLES // BATCH
  c.steps = epochs * steps_per_epoch
  c.optimizer.update(
      name='sgd', lr=0.01 if model in SMALL_LR_MODELS else 0.05,
      momentum=0.9, weight_decay=5e-4, schedule='step',
      boundaries=tuple(round(e * epochs / 240) * steps_per_epoch
                       for e in (150, 180, 210)), decay_factor=0.1)
  c.eval_batch_size = 500
  c.log_every = 200
  c.checkpoint_every = 5 * steps_per_epoch
  c.wandb.project = 'kd-cifar100'
  return c


def get_config(arg: str | None = None):
  return recipe(**parse_args(arg, model='resnet32x4', epochs=240))
