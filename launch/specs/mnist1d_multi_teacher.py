"""Multi-teacher distillation on MNIST-1D (experiments/multi_teacher): an
MLP student from the four baseline teachers (cnn1d seeds 0-2, gru seed 0 of
launch/specs/mnist1d_baselines.py, trained first) under each weighting mode,
and the mean with a FitNets hint from teacher 0; 3 seeds.

  python -m launch.sweep launch/specs/mnist1d_baselines.py --workdir=runs
  python -m launch.sweep launch/specs/mnist1d_multi_teacher.py --workdir=runs
  python -m kd.tables runs/mnist1d_multi_teacher --group-by=mode,weights,hint \
      --metric=student/test_accuracy,teacher_0/test_accuracy,teacher_1/test_accuracy,teacher_2/test_accuracy,teacher_3/test_accuracy,ensemble/test_accuracy
"""
NAME = 'mnist1d_multi_teacher'
CONFIG = 'experiments/multi_teacher/config.py'
PROGRAM = 'experiments.multi_teacher.train'
_ROOT = 'root={root}/../mnist1d_baselines'
ARGS = ([f'mode={m},{_ROOT}' for m in ('mean', 'confidence', 'entropy',
                                      'ae_kd')] +
        [f'mode=fixed,weights=2+2+2+1,{_ROOT}', f'mode=mean,hint=0,{_ROOT}'])
SEEDS = [0, 1, 2]
TAGS = ['mnist1d', 'multi_teacher']
