"""DeiT on MNIST-1D: a CNN teacher, a small ViT student (Touvron et al.,
ICML 2021, at toy scale: 40-sample signals cut into 10 patches of 4).

A pipeline: the teacher (the MNIST-1D `cnn1d` recipe, seed 0; share one
with `teacher_dir=PATH`), then the student by `method`:
  scratch    ViT from labels
  kd         ViT, CE/2 + T^2 KL/2 on its logits (usual distillation)
  deit_hard  ViT with a distillation token: CE(cls head, labels)/2 +
             CE(dist head, argmax teacher)/2 (`ce_weight=0`, two terms)
  deit_soft  the same with T^2 KL(teacher || dist head) for the second term
The distilled student predicts with the mean of its two heads; the summary
also has each head's accuracy (`test_accuracy_cls`, `test_accuracy_dist`). Recipe: AdamW lr 1e-3,
weight decay 0.05, cosine with 5% warm-up, batch 100 (DeiT's ImageNet recipe,
minus its augmentations). `temperature` (1, DeiT's default), `steps`,
`seed`, and the ViT's `depth`, `width`, `heads`, `patch_size` are arguments.
A student run trains in 70-150 s on 2 shared CPU cores (the teacher ~60 s).

  python -m kd.main \
      --config=configs/vit/distill.py:method=deit_hard,seed=0 \
      --workdir=runs/vit/deit_hard_s0
"""
from configs.mnist1d import train as recipes
from kd.config import parse_args, pipeline_config, term

METHODS = ('scratch', 'kd', 'deit_hard', 'deit_soft')
VIT = {'patch_size': 4, 'width': 32, 'depth': 4, 'heads': 4}


def _method(method: str, temperature: float) -> tuple[str, float, dict]:
  """(student model, cross-entropy weight, terms)."""
  cls_ce = term('label_cross_entropy', 0.5, 'cls_logits')
  return {
      'scratch': ('deit_tiny', 1.0, {}),
      'kd': ('deit_tiny', 0.5, {'kd': term('kd', 0.5,
                                           temperature=temperature)}),
      'deit_hard': ('deit_tiny_distilled', 0.0, {
          'cls_ce': cls_ce,
          'deit': term('hard_distillation', 0.5, 'dist_logits')}),
      'deit_soft': ('deit_tiny_distilled', 0.0, {
          'cls_ce': cls_ce,
          'deit': term('kd', 0.5, 'dist_logits', temperature=temperature)}),
  }[method]


def student_recipe(model: str, vit: dict, seed: int, steps: int):
  c = recipes.recipe('mlp', seed, steps)  # MNIST-1D data and logging.
  c.model.name = model
  c.model.kwargs = dict(vit)
  c.optimizer.update(name='adamw', lr=1e-3, weight_decay=0.05,
                     schedule='cosine', warmup_steps=steps // 20)
  return c


def get_config(arg: str | None = None):
  a = parse_args(arg, method='deit_hard', steps=2000, teacher_steps=6000,
                 temperature=1.0, seed=0, teacher_dir='', **VIT)
  method = a['method']
  if method not in METHODS:
    raise ValueError(f'unknown method {method!r}; valid: {METHODS}')
  teacher = recipes.recipe('cnn1d', 0, a['teacher_steps'])
  vit = {k: a[k] for k in VIT}
  model, ce_weight, terms = _method(method, a['temperature'])
  student = student_recipe(model, vit, a['seed'], a['steps'])
  student.distill.ce_weight = ce_weight
  if terms:
    student.distill.teacher.update(workdir='teacher', model=teacher.model.name,
                                   kwargs=teacher.model.kwargs)
    for name, t in terms.items():
      student.distill.terms[name] = t
  c = pipeline_config(teacher=teacher, student=student)
  if a['teacher_dir']:
    c.stage_dirs = {'teacher': a['teacher_dir']}
  return c
