"""Methods the CRD sweep lacks: OFD and ReviewKD (DKD paper, Table 1), FSP
(CRD paper, Table 1) and logit standardisation (kd_std, dkd_std; Sun et al.,
CVPR 2024), on the pairs of `cifar100_crd`, 3 seeds. Same cluster workflow:

  python -m launch.sweep launch/specs/cifar100_dkd.py --workdir=runs \
      --mode=slurm
  python -m kd.tables runs/cifar100_dkd --paper=experiments/paper_tables/crd.py

Point `teacher_dir` at the CRD sweep's teachers to reuse them (the default
below trains one per pair inside this sweep). FSP's 'init' stage reads the
TFDS default data dir (KD_CIFAR_DIR sets the teacher's and student's only).
"""
import os

from configs.cifar100.distill import PAIRS

NAME = 'cifar100_dkd'
_PAIRS = [p for p in PAIRS if p[1] not in ('ShuffleV2', 'MobileNetV2')]
CONFIG = 'configs/cifar100/distill.py'
METHODS = ('fsp', 'ofd', 'reviewkd', 'kd_std', 'dkd_std')
ARGS = [f'teacher={t},student={s},method={m},'
        f'teacher_dir={{root}}/teacher_{t}'
        for t, s in _PAIRS for m in METHODS]
_DATA = os.environ.get('KD_CIFAR_DIR')
GRID = ({'config.stages.teacher.data.data_dir': [_DATA],
         'config.stages.student.data.data_dir': [_DATA]} if _DATA else {})
SEEDS = [0, 1, 2]
TAGS = ['cifar100', 'dkd-table']
