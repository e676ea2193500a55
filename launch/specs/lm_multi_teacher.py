"""Several LM teachers on a mixed corpus (issue #23 item 3): a code teacher
(kd_pystdlib) and a prose teacher (kd_bbcnews), 0.82M byte-level, 1,000
steps each, shared by every run; the 0.11M student on the mixed corpus
kd_pystdlib+kd_bbcnews from scratch, from either teacher alone, from their
average and routed by each row's source; 300 steps, 3 seeds. Measured:
experiments/multi_teacher_lm/README.md.

  python -m launch.sweep launch/specs/lm_multi_teacher.py --workdir=runs
  python -m experiments.multi_teacher_lm.table runs/lm_multi_teacher
"""
NAME = 'lm_multi_teacher'
CONFIG = 'configs/lm/multi_teacher.py'
_SHARED = ('code_dir={root}/code_teacher,prose_dir={root}/prose_teacher,'
           'teacher_steps=1000,steps=300')
ARGS = [f'method={m},{_SHARED}'
        for m in ('scratch', 'code', 'prose', 'mean', 'route')]
SEEDS = [0, 1, 2]
TAGS = ['lm', 'multi_teacher']
