"""Born-Again Networks (Furlanello et al., ICML 2018) on MNIST-1D: a chain of
same-architecture MLPs (100-100, reference recipe), generation 0 from labels
and generation k taught by generation k-1; each generation is a stage of one
`kd.main` pipeline, so every generation's checkpoint is kept.

  python -m kd.main \
      --config=experiments/born_again/config.py:variant=ban,seed=0 \
      --workdir=runs/born_again/ban_s0
  python -m experiments.born_again.score runs/born_again/ban_s0

Variants (generations >= 1; T = 1 as the paper):
  ban     KL to the teacher's distribution only
  ban_l   plus label cross-entropy
  cwtm    label cross-entropy weighted per example by the teacher's max
          probability (`losses.cwtm`)
  dkpp    as ban, with the teacher's non-argmax probabilities permuted per
          example (`losses.dkpp` adapter)
Arguments: `variant`, `seed`, `generations` (after gen0, default 3), `steps`,
`gen0_dir` (a folder for generation 0, so variants of one seed share it).
Generation k trains with seed + 10 k (its own initialisation and data order).
"""
from configs.mnist1d import train as recipes
from experiments.born_again import losses  # pylint: disable=unused-import
from kd.config import parse_args, pipeline_config, term

VARIANTS = ('ban', 'ban_l', 'cwtm', 'dkpp')


def _terms(variant: str) -> tuple[float, dict]:
  """(label cross-entropy weight, distillation terms)."""
  return {
      'ban': (0.0, {'kd': term('kd', 1.0, temperature=1.0)}),
      'ban_l': (1.0, {'kd': term('kd', 1.0, temperature=1.0)}),
      'cwtm': (0.0, {'cwtm': term('cwtm', 1.0)}),
      'dkpp': (0.0, {'kd': term('kd', 1.0, adapter='dkpp', temperature=1.0)}),
  }[variant]


def get_config(arg: str | None = None):
  a = parse_args(arg, variant='ban', seed=0, steps=6000, generations=3,
                 gen0_dir='')
  variant = a['variant']
  if variant not in VARIANTS:
    raise ValueError(f'unknown variant {variant!r}; valid: {VARIANTS}')
  seed, steps = a['seed'], a['steps']
  stages = {}
  for k in range(a['generations'] + 1):
    c = recipes.recipe('mlp', seed + 10 * k, steps)
    if k:
      ce_weight, terms = _terms(variant)
      c.distill.ce_weight = ce_weight
      c.distill.teacher.update(workdir=f'gen{k - 1}', model='mlp',
                               kwargs=recipes.MODELS['mlp'])
      for name, t in terms.items():
        c.distill.terms[name] = t
    stages[f'gen{k}'] = c
  c = pipeline_config(**stages)
  if a['gen0_dir']:
    c.stage_dirs = {'gen0': a['gen0_dir']}
  return c
