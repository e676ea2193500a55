"""The CRD benchmark table on CIFAR-100 (Tian et al. 2020, plus DKD): every
pair of the benchmark x {kd, crd, dkd}, 3 seeds, one shared teacher per pair.
For a GPU/TPU cluster (each run: 240 epochs, one accelerator):

  python -m launch.sweep launch/specs/cifar100_crd.py --workdir=runs --mode=slurm
  sbatch runs/cifar100_crd/sweep.slurm        # after the teachers' runs
  python -m kd.tables runs/cifar100_crd --paper=experiments/paper_tables/crd.py

Set the TFDS data dir with KD_CIFAR_DIR below (or prepare cifar100 in
~/tensorflow_datasets). Teachers train inside the first run of each pair;
run one seed first (or `--parallel=1` locally) so the others reuse them.
"""
import os

from configs.cifar100.distill import PAIRS

NAME = 'cifar100_crd'
CONFIG = 'configs/cifar100/distill.py'
_PAIRS = [p for p in PAIRS if p[1] not in ('ShuffleV2', 'MobileNetV2')]
ARGS = [f'teacher={t},student={s},method={m},'
        f'teacher_dir={{root}}/teacher_{t}'
        for t, s in _PAIRS for m in ('kd', 'crd', 'dkd')]
_DATA = os.environ.get('KD_CIFAR_DIR')
GRID = ({'config.stages.teacher.data.data_dir': [_DATA],
         'config.stages.student.data.data_dir': [_DATA]} if _DATA else {})
SEEDS = [0, 1, 2]
TAGS = ['cifar100', 'crd-benchmark']
