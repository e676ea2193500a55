"""`python -m kd.export --workdir=RUN_DIR --quantize=none|fp16|dynamic|int8|int4`
`python -m kd.export --workdir=RUN_DIR --format=onnx`
`python -m kd.export --workdir=RUN_DIR --format=hf --out=DIR`

Loads a run's config and newest readable checkpoint (`kd.runs.load_run`) and
writes the student as a builtin-ops-only `.tflite` file with a JSON sidecar
(see `kd.export.student`: int8 is full-integer); a language model
(`transformer_lm`) gets `prefill` and `decode` signatures and weight-only
quantization, int4 included (see `kd.export.lm`). `--format=onnx` writes a
float32 `.onnx` file instead (three graphs for a language model; see
`kd.export.onnx`), run by onnxruntime for the sidecar's figures.
`--format=hf` writes a folder that transformers loads (`kd.export.hf`).

Only a finished run exports unless `--allow_unfinished`; the run directory
is only read, so a read-only run exports with `--out` elsewhere.
"""
import importlib.util
import json
import os
import sys

from absl import app
from absl import flags
from absl import logging

from kd import runs
from kd.data import mixed
from kd.export import encoder, hf, lm, onnx, student, tflite

_WORKDIR = flags.DEFINE_string('workdir', None, 'A run directory (one stage).')
_FORMAT = flags.DEFINE_enum('format', 'tflite', [*student.FORMATS, 'hf'],
                            'tflite (LiteRT), onnx (float32 only) or hf (a '
                            'Hugging Face folder, float32).')
_QUANTIZE = flags.DEFINE_enum('quantize', 'none', list(lm.QUANTIZATIONS),
                              'Weights/activations format (int4: language '
                              'models).')
_OUT = flags.DEFINE_string('out', None, 'Output file (default: '
                           'RUN_DIR/student_<quantize>.tflite, '
                           'RUN_DIR/student_float32.onnx), or folder for '
                           '--format=hf (default RUN_DIR/hf; an existing one '
                           'must be empty).')
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
_ALLOW_UNFINISHED = flags.DEFINE_bool(
    'allow_unfinished', False, 'Export the newest checkpoint of a run that '
    'has not reached its configured steps (with a warning).')
flags.mark_flag_as_required('workdir')

ONNX_INSTALL = 'pip install --no-deps jax2onnx==0.17.1'


class Refused(ValueError):
  """A request the command refuses before any work, in one line."""


def _newest_step(workdir: str) -> int | None:
  ckpt = os.path.join(workdir, 'checkpoints')
  found = [int(n) for n in (os.listdir(ckpt) if os.path.isdir(ckpt) else ())
           if n.isdigit()]
  return max(found) if found else None


def check_request(workdir: str, out: str, default: bool):
  """Refuses, before loading anything: an unfinished run (unless
  --allow_unfinished, which warns), ONNX without jax2onnx, and an output
  directory that cannot be written."""
  config = runs.load_config(workdir)  # A pipeline's top folder: refused.
  if not runs.is_finished(workdir):
    step = _newest_step(workdir)
    reached = (f'its newest checkpoint is step {step}' if step is not None
               else 'it has no checkpoint')
    msg = (f'{workdir} is unfinished: {reached} of the configured '
           f'{config.steps} steps' + (
               ', and summary.json (the final evaluation) is missing'
               if step == config.steps else ''))
    if not _ALLOW_UNFINISHED.value:
      raise Refused(f'{msg}; finish it by rerunning its training command, or '
                    'pass --allow_unfinished to export its newest checkpoint')
    print(f'WARNING: {msg}; exporting it (--allow_unfinished)',
          file=sys.stderr)
  if _FORMAT.value == 'onnx':
    for module in ('jax2onnx', 'onnx', 'onnxruntime'):
      if importlib.util.find_spec(module) is None:
        fix = (ONNX_INSTALL if module == 'jax2onnx' else
               f'pip install {module} (version: requirements.txt)')
        raise Refused(f'--format=onnx needs {module}, which is not '
                      f'installed: {fix}')
  target = os.path.dirname(os.path.abspath(out))
  while not os.path.isdir(target):  # Created by the export: its parent.
    target = os.path.dirname(target)
  if not os.access(target, os.W_OK):
    raise Refused(f'cannot write {out}: {target} is not writable' + (
        ' (the export goes into the run directory by default)' if default
        else '') + '; pass --out=PATH in a writable directory')


def export_lm(out: str) -> dict:
  run = lm.load_run(_WORKDIR.value)
  if mixed.is_mixed_data(run.config.data):
    raise Refused(
        f'{_WORKDIR.value} trained on the mixed corpus '
        f'{run.config.data.name}, but a --format={_FORMAT.value} sidecar\'s '
        'held-out figures read one corpus: export a Hugging Face folder '
        '(--format=hf), or a run of one corpus')
  kw = dict(quantize=_QUANTIZE.value, prompt_len=_PROMPT_LEN.value,
            cache_len=_CACHE_LEN.value, prompts=_PARITY_PROMPTS.value,
            new_tokens=_PARITY_TOKENS.value, bpb_rows=_BPB_ROWS.value)
  if _FORMAT.value == 'onnx':
    sidecar = onnx.export_lm(run, out, **kw)
    written = ', '.join(onnx.lm_paths(out).values())
  else:
    sidecar = lm.export(run, out, **kw)
    written = out
  print(json.dumps(sidecar, indent=2))
  print(f'wrote {written} and {out}.json')
  return sidecar


def export_encoder(config, out):
  """A fine-tuned encoder classifier (`kd.export.encoder`)."""
  if _BATCH.value != '1' or _SOFTMAX.value or _REPRESENTATIVE.value:
    raise app.UsageError('--batch, --softmax and --representative are for '
                         'image and signal classifiers; an encoder exports '
                         'batch-1 logits of token ids')
  try:
    encoder.check(config, _QUANTIZE.value, _FORMAT.value)
  except encoder.artifact.ExportError as e:
    raise Refused(f'{_WORKDIR.value}: {e}') from None
  sidecar = encoder.export(_WORKDIR.value, out, quantize=_QUANTIZE.value,
                           format=_FORMAT.value)
  print(json.dumps(sidecar, indent=2))
  print(f'wrote {out}, {out}.json and tokenizer.json beside them')


def export_hf():
  """--format=hf: the run as a Hugging Face folder (`kd.export.hf`)."""
  given = [f'--{f.name}' for f in (_QUANTIZE, _BATCH, _SOFTMAX,
                                   _REPRESENTATIVE, _PROMPT_LEN, _CACHE_LEN)
           if f.present]
  if given:
    raise app.UsageError(f'--format=hf writes the float32 weights as they '
                         f'are: {", ".join(given)} do not apply')
  out = _OUT.value or os.path.join(_WORKDIR.value, 'hf')
  check_request(_WORKDIR.value, out, default=_OUT.value is None)
  hf_config = hf.export(_WORKDIR.value, out)
  print(f'wrote {out}: {hf_config["model_type"]} '
        f'({", ".join(hf_config["architectures"])}), '
        f'{", ".join(sorted(os.listdir(out)))}')


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  if _FORMAT.value == 'onnx' and _QUANTIZE.value not in onnx.QUANTIZATIONS:
    raise app.UsageError(f'--format=onnx exports float32 only: --quantize='
                         f'{_QUANTIZE.value} is not supported; valid: '
                         f'--quantize={"|".join(onnx.QUANTIZATIONS)}, or '
                         '--format=tflite for quantized files')
  if _FORMAT.value == 'hf':
    export_hf()
    return
  config = runs.load_config(_WORKDIR.value)
  lm_run = config.model.name == 'transformer_lm'
  prefix = 'lm' if lm_run else 'student'
  out = _OUT.value or os.path.join(
      _WORKDIR.value, f'{prefix}_float32.onnx' if _FORMAT.value == 'onnx'
      else f'{prefix}_{_QUANTIZE.value}.tflite')
  check_request(_WORKDIR.value, out, default=_OUT.value is None)
  if config.model.name == 'transformer_encoder':
    export_encoder(config, out)
    return
  if lm_run:
    if _BATCH.value != '1' or _SOFTMAX.value or _REPRESENTATIVE.value:
      raise app.UsageError('--batch, --softmax and --representative are for '
                           'classifiers; a language model exports batch 1 '
                           'logits and quantizes weights only')
    export_lm(out)
    return
  if _QUANTIZE.value not in tflite.QUANTIZATIONS:
    raise app.UsageError(f'--quantize={_QUANTIZE.value} is for language '
                         f'models; a classifier takes one of '
                         f'{", ".join(tflite.QUANTIZATIONS)}')
  config, model, variables, step = runs.load_run(_WORKDIR.value)
  if _REPRESENTATIVE.value:
    config.export.representative_examples = _REPRESENTATIVE.value
  batch = None if _BATCH.value == 'dynamic' else int(_BATCH.value)
  sidecar = student.export(config, model, variables, out,
                           quantize=_QUANTIZE.value, batch_size=batch,
                           softmax=_SOFTMAX.value, step=step,
                           format=_FORMAT.value)
  print(json.dumps(sidecar, indent=2))
  if 'warning' in sidecar:
    print('WARNING:', sidecar['warning'])
  print(f'wrote {out} and {out}.json')


def cli_main(argv):
  """`main` with the refusals as one line (`kd.export: ...`), exit 1."""
  try:
    main(argv)
  except (Refused, hf.Refused, runs.PipelineDirError,
          FileNotFoundError) as e:
    sys.exit(f'kd.export: {e}')


if __name__ == '__main__':
  app.run(cli_main)
