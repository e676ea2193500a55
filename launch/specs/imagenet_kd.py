"""ImageNet ResNet-34 -> ResNet-18 with KD and DKD, and the student from
labels; one seed (a cluster job of 100 epochs each, one shared teacher).

  KD_IMAGENET_DIR=/data/tfds python -m launch.sweep launch/specs/imagenet_kd.py \
      --workdir=runs --mode=slurm --gpus_per_node=8
  python -m kd.tables runs/imagenet_kd --group-by=student,method
"""
import os

NAME = 'imagenet_kd'
CONFIG = 'configs/imagenet/distill.py'
ARGS = [f'teacher=resnet34_imagenet,student=resnet18_imagenet,method={m},'
        'teacher_dir={root}/teacher_resnet34' for m in ('scratch', 'kd', 'dkd')]
_DATA = os.environ.get('KD_IMAGENET_DIR')
GRID = ({'config.stages.teacher.data.data_dir': [_DATA],
         'config.stages.student.data.data_dir': [_DATA]} if _DATA else {})
SEEDS = [0]
TAGS = ['imagenet']
