"""Post-training int8 vs quantization-aware distillation on MNIST-1D: the
MLP student distilled with consistent teaching (KD, T=4, mixup 1), exported
to TFLite int8, with and without simulated int8 during training; 3 seeds.

  python -m launch.sweep launch/specs/mnist1d_qat.py --workdir=runs
  python -m kd.tables runs/mnist1d_qat --group-by=qat \
      --metric=test_accuracy,tflite_int8_accuracy
"""
NAME = 'mnist1d_qat'
CONFIG = 'configs/mnist1d/distill.py'
_BASE = ('method=kd,temperature=4,mixup=1.0,export=1,'
         'teacher_dir={root}/../mnist1d_hinton/teacher_cnn1d')
ARGS = [f'{_BASE},qat=0', f'{_BASE},qat=1']
SEEDS = [0, 1, 2]
TAGS = ['mnist1d', 'qat']
