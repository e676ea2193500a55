"""`python -m kd.export --workdir=RUN_DIR --quantize=none|fp16|dynamic|int8`

Loads a run's config and newest readable checkpoint (`kd.runs.load_run`) and writes the student as a
builtin-ops-only `.tflite` file with a JSON sidecar (see `kd.export.student`).
"""
import json
import os

from absl import app
from absl import flags
from absl import logging

from kd import runs
from kd.export import student, tflite

_WORKDIR = flags.DEFINE_string('workdir', None, 'A run directory (one stage).')
_QUANTIZE = flags.DEFINE_enum('quantize', 'none', list(tflite.QUANTIZATIONS),
                              'Weights/activations format.')
_OUT = flags.DEFINE_string('out', None, 'Output file (default: '
                           'RUN_DIR/student_<quantize>.tflite).')
_BATCH = flags.DEFINE_string('batch', '1', "Fixed batch size, or 'dynamic'.")
_SOFTMAX = flags.DEFINE_bool('softmax', False, 'Output probabilities.')
_REPRESENTATIVE = flags.DEFINE_integer(
    'representative', None, 'int8 calibration examples from the train split '
    '(default: the config\'s export.representative_examples).')
flags.mark_flag_as_required('workdir')


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  config, model, variables, step = runs.load_run(_WORKDIR.value)
  if _REPRESENTATIVE.value:
    config.export.representative_examples = _REPRESENTATIVE.value
  out = _OUT.value or os.path.join(_WORKDIR.value,
                                   f'student_{_QUANTIZE.value}.tflite')
  batch = None if _BATCH.value == 'dynamic' else int(_BATCH.value)
  sidecar = student.export(config, model, variables, out,
                           quantize=_QUANTIZE.value, batch_size=batch,
                           softmax=_SOFTMAX.value, step=step)
  print(json.dumps(sidecar, indent=2))
  if 'warning' in sidecar:
    print('WARNING:', sidecar['warning'])
  print(f'wrote {out} and {out}.json')


if __name__ == '__main__':
  app.run(main)
