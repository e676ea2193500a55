"""Shared by the Hugging Face conversion tests: the converter's CLI run in
this process, and logits parity with transformers' fixtures
(tests/fixtures/hf/<family>/logits.npz)."""
import os

import numpy as np

from kd.convert import __main__ as cli

HF = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'fixtures', 'hf')


def convert(capsys, src, out, *flags):
  """(exit code, stdout, stderr) of `python -m kd.convert --from=hf`."""
  code = cli.main(['--from=hf', str(src), f'--out={out}', *flags])
  captured = capsys.readouterr()
  return code, captured.out, captured.err


def assert_parity(logits, want, family: str, model_type: str):
  """|kd - transformers| <= 1e-4 max(1, max|logit|); prints the row of
  docs/convert.md's parity table (seen with pytest -s)."""
  assert logits.shape == want.shape
  scale = max(1.0, float(np.abs(want).max()))
  diff = float(np.abs(logits - want).max())
  print(f'\n| {family} | {model_type} | {diff:.1e} | {scale:.1f} |')
  assert diff <= 1e-4 * scale
