"""Language-model distillation on the stdlib corpus (byte-level): the 0.82M
teacher (shared by every run), the 0.11M student from the corpus alone and
distilled with each objective, sequence-level KD and on-policy GKD; 3
seeds.

  python -m launch.sweep launch/specs/lm_distill.py --workdir=runs
  python -m kd.tables runs/lm_distill --group-by=method \
      --metric=test_bits_per_byte,teacher_agreement

A GPU runs larger sizes and longer schedules with the same spec, e.g.
  --config.stages.student.batch_size=256 --config.stages.student.steps=20000
through GRID, or configs/lm/distill.py's seq_len/batch/steps arguments.
"""
NAME = 'lm_distill'
CONFIG = 'configs/lm/distill.py'
_T = 'teacher_dir={root}/teacher,teacher_steps=1000,steps=300'
# tvd is in the config too, left out here to fit 2 CPU cores. topk builds
# its top-k teacher cache of the rows each run reads (kd.cache) first.
ARGS = [f'method={m},{_T}' for m in ('scratch', 'forward_kl', 'reverse_kl',
                                     'jsd', 'skew_kl', 'seqkd', 'gkd',
                                     'topk')]
SEEDS = [0, 1, 2]
TAGS = ['lm', 'pystdlib']
