"""`python -m kd.export --workdir=RUN_DIR --quantize=none|fp16|dynamic|int8|int4`
`python -m kd.export --workdir=RUN_DIR --format=onnx`

Loads a run's config and newest readable checkpoint (`kd.runs.load_run`) and
writes the student as a builtin-ops-only `.tflite` file with a JSON sidecar
(see `kd.export.student`: int8 is full-integer); a language model
(`transformer_lm`) gets `prefill` and `decode` signatures and weight-only
quantization, int4 included (see `kd.export.lm`). `--format=onnx` writes a
float32 `.onnx` file instead (three graphs for a language model; see
`kd.export.onnx`), run by onnxruntime for the sidecar's figures.
"""
import json
import os

from absl import app
from absl import flags
from absl import logging

from kd import runs
from kd.export import lm, onnx, student, tflite

_WORKDIR = flags.DEFINE_string('workdir', None, 'A run directory (one stage).')
_FORMAT = flags.DEFINE_enum('format', 'tflite', list(student.FORMATS),
                            'tflite (LiteRT) or onnx (float32 only).')
_QUANTIZE = flags.DEFINE_enum('quantize', 'none', list(lm.QUANTIZATIONS),
                              'Weights/activations format (int4: language '
                              'models).')
_OUT = flags.DEFINE_string('out', None, 'Output file (default: '
                           'RUN_DIR/student_<quantize>.tflite, '
                           'RUN_DIR/student_float32.onnx).')
_BATCH = flags.DEFINE_string('batch', '1', "Fixed batch size, or 'dynamic'.")
_SOFTMAX = flags.DEFINE_bool('softmax', False, 'Output probabilities.')
_REPRESENTATIVE = flags.DEFINE_integer(
    'representative', None, 'int8 calibration examples from the train split '
    '(default: the config\'s export.representative_examples).')
_PROMPT_LEN = flags.DEFINE_integer(
    'prompt_len', None, 'LM: prompt length of the prefill signature '
    '(default: half the cache).')
_CACHE_LEN = flags.DEFINE_integer(
    'cache_len', None, 'LM: key/value cache slots, prompt + new tokens '
    '(default: the training sequence length).')
_PARITY_PROMPTS = flags.DEFINE_integer(
    'parity_prompts', 20, 'LM: held-out prompts generated greedily by JAX '
    'and LiteRT (0: skip the measurements).')
_PARITY_TOKENS = flags.DEFINE_integer('parity_tokens', 64,
                                      'LM: new tokens per parity prompt.')
_BPB_ROWS = flags.DEFINE_integer('bpb_rows', 8, 'LM: held-out rows of '
                                 'prompt_len tokens for bits per byte.')
flags.mark_flag_as_required('workdir')


def export_lm(out: str | None) -> dict:
  run = lm.load_run(_WORKDIR.value)
  kw = dict(quantize=_QUANTIZE.value, prompt_len=_PROMPT_LEN.value,
            cache_len=_CACHE_LEN.value, prompts=_PARITY_PROMPTS.value,
            new_tokens=_PARITY_TOKENS.value, bpb_rows=_BPB_ROWS.value)
  if _FORMAT.value == 'onnx':
    out = out or os.path.join(_WORKDIR.value, 'lm_float32.onnx')
    sidecar = onnx.export_lm(run, out, **kw)
    written = ', '.join(onnx.lm_paths(out).values())
  else:
    out = out or os.path.join(_WORKDIR.value, f'lm_{_QUANTIZE.value}.tflite')
    sidecar = lm.export(run, out, **kw)
    written = out
  print(json.dumps(sidecar, indent=2))
  print(f'wrote {written} and {out}.json')
  return sidecar


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  if _FORMAT.value == 'onnx' and _QUANTIZE.value not in onnx.QUANTIZATIONS:
    raise app.UsageError(f'--format=onnx exports float32 only: --quantize='
                         f'{_QUANTIZE.value} is not supported; valid: '
                         f'--quantize={"|".join(onnx.QUANTIZATIONS)}, or '
                         '--format=tflite for quantized files')
  if runs.load_config(_WORKDIR.value).model.name == 'transformer_lm':
    if _BATCH.value != '1' or _SOFTMAX.value or _REPRESENTATIVE.value:
      raise app.UsageError('--batch, --softmax and --representative are for '
                           'classifiers; a language model exports batch 1 '
                           'logits and quantizes weights only')
    export_lm(_OUT.value)
    return
  if _QUANTIZE.value not in tflite.QUANTIZATIONS:
    raise app.UsageError(f'--quantize={_QUANTIZE.value} is for language '
                         f'models; a classifier takes one of '
                         f'{", ".join(tflite.QUANTIZATIONS)}')
  config, model, variables, step = runs.load_run(_WORKDIR.value)
  if _REPRESENTATIVE.value:
    config.export.representative_examples = _REPRESENTATIVE.value
  default = ('student_float32.onnx' if _FORMAT.value == 'onnx' else
             f'student_{_QUANTIZE.value}.tflite')
  out = _OUT.value or os.path.join(_WORKDIR.value, default)
  batch = None if _BATCH.value == 'dynamic' else int(_BATCH.value)
  sidecar = student.export(config, model, variables, out,
                           quantize=_QUANTIZE.value, batch_size=batch,
                           softmax=_SOFTMAX.value, step=step,
                           format=_FORMAT.value)
  print(json.dumps(sidecar, indent=2))
  if 'warning' in sidecar:
    print('WARNING:', sidecar['warning'])
  print(f'wrote {out} and {out}.json')


if __name__ == '__main__':
  app.run(main)
