"""`kd.generate`'s bad flags: one-line errors; no new tokens (`kd.sampling`) is
the prompt."""
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kd import sampling
from kd import models

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_zero_new_tokens_is_the_prompt_and_a_negative_count_an_error():
  model = models.create('transformer_lm', 11, d_model=16, num_layers=1,
                        num_heads=2, max_len=8)
  prompts = jnp.array([[3, 4, 5], [6, 7, 0]], jnp.int32)
  variables = model.init(jax.random.key(0), prompts)
  tokens, generated = sampling.generate(
      model, variables, prompts, jnp.array([3, 2]), jax.random.key(0), 0,
      pad_id=0)
  np.testing.assert_array_equal(tokens, prompts)
  assert tokens.shape == (2, 3) and not np.asarray(generated).any()
  with pytest.raises(ValueError, match=r'--max_new_tokens=-1: give a number '
                     r'>= 0 of tokens to add \(0 returns the prompt\)'):
    sampling.generate(model, variables, prompts, jnp.array([3, 2]),
                      jax.random.key(0), -1, pad_id=0)


def test_cli_negative_max_new_tokens_names_the_flag(tmp_path):
  """Was a raw TypeError (a negative array size) after loading the run."""
  proc = subprocess.run(
      [sys.executable, '-m', 'kd.generate', f'--workdir={tmp_path}',
       '--prompt=def', '--max_new_tokens=-3'], cwd=ROOT, capture_output=True,
      text=True, timeout=120)
  assert proc.returncode == 1
  assert proc.stderr.strip().splitlines()[-1:] == [
      '--max_new_tokens=-3: give a number >= 0 of tokens to add (0 returns '
      'the prompt)'] and 'Traceback' not in proc.stderr
