"""What a finished run must have changed and reported, read back from its
run directory: checks shared by the end-to-end tests, which fail when
training does nothing or the summary does not match the checkpoint."""
import json
import os
import subprocess
import sys

import jax
import numpy as np

from kd import config as kd_config, runs
from kd.data import select


def final_state(run_dir: str, steps: int):
  """The raw state tree of `run_dir`'s newest checkpoint, which must be the
  last step's."""
  state, step = runs.latest_state(run_dir, 'test')
  assert step == steps, (step, steps)
  return state


def assert_moved(initial, final, what: str = 'params',
                 every: bool = True) -> None:
  """Every array of `initial` (the state the run's seed gives before any
  step) changed in `final` (its restored counterpart), or with `every=False`
  one at least (a stage whose loss reaches only some of them). Leaves are
  compared in order: orbax restores tuples as lists, dicts stay sorted."""
  before, after = jax.tree.leaves(initial), jax.tree.leaves(final)
  assert len(before) == len(after), what
  assert [np.shape(b) for b in before] == [np.shape(a) for a in after], what
  moved = [not np.allclose(b, a) for b, a in zip(before, after)]
  assert all(moved) if every else any(moved), (
      f'{what}: unchanged arrays {[i for i, m in enumerate(moved) if not m]} '
      f'of {len(moved)}')


def initial_params(run_dir: str):
  """The parameters `kd.train` starts `run_dir`'s student from (no
  `init_from`): its model initialised with the config's seed."""
  config = runs.load_config(run_dir)
  model, spec = runs.model_of(config, run_dir)
  example = np.zeros((1, *spec.input_shape), spec.input_dtype)
  return model.init(jax.random.key(config.seed), example,
                    train=False)['params']


def assert_run_moved(run_dir: str, steps: int) -> None:
  """`run_dir`'s last checkpoint (step `steps`) moved every parameter of a
  `kd.train` run from its initialisation."""
  assert_moved(initial_params(run_dir), final_state(run_dir, steps)['params'],
               run_dir)


def accuracies(config, logits_fn) -> dict:
  """{name: test accuracy} over `config`'s test split, in numpy, of
  `logits_fn(image)` -> {name: logits}; padding (mask 0) left out."""
  correct, count = {}, 0.0
  for batch in select.eval_batches(config):
    mask = np.asarray(batch['mask'], np.float64)
    count += mask.sum()
    for name, logits in logits_fn(batch['image']).items():
      right = np.argmax(np.asarray(logits), -1) == np.asarray(batch['label'])
      correct[name] = correct.get(name, 0.0) + float(np.sum(mask * right))
  return {name: c / count for name, c in correct.items()}


def ensemble(logits_seq):
  """Logits of the mean of the members' softmax distributions."""
  probs = []
  for logits in logits_seq:
    z = np.asarray(logits, np.float64)
    e = np.exp(z - z.max(-1, keepdims=True))
    probs.append(e / e.sum(-1, keepdims=True))
  return np.log(np.mean(probs, 0))


def assert_accuracies(summary: dict, recomputed: dict,
                      suffix: str = '/test_accuracy') -> None:
  """Each `<name><suffix>` of `summary` equals the accuracy recomputed from
  the checkpoint (argmax ties aside, the same count of right answers)."""
  for name, acc in recomputed.items():
    np.testing.assert_allclose(summary[f'{name}{suffix}'], acc, atol=1e-6,
                               err_msg=name)


def latest_params(run_dir: str):
  """The parameters of `run_dir`'s newest checkpoint."""
  return runs.latest_state(run_dir, 'test')[0]['params']


def rows(run_dir: str) -> list[dict]:
  with open(os.path.join(run_dir, 'metrics.jsonl')) as f:
    return [json.loads(line) for line in f]


def assert_logged(run_dir: str, summary: dict, keys, train_keys=(),
                  log_every: int = 0) -> None:
  """The last step's row of metrics.jsonl holds `summary`'s value of each of
  `keys`; with `log_every`, the training rows come every `log_every` steps
  up to the last, each with finite `train_keys`."""
  log = rows(run_dir)
  last = {}
  for row in log:
    if row['step'] == summary['steps']:
      last.update(row)
  for key in keys:
    np.testing.assert_allclose(last[key], summary[key], rtol=1e-6,
                               err_msg=key)
  if log_every:
    train = [r for r in log if train_keys[0] in r]
    assert [r['step'] for r in train] == list(
        range(log_every, summary['steps'] + 1, log_every))
    for r in train:
      assert all(np.isfinite(r[k]) for k in train_keys), r


def pipeline_top_folder_refusal(top, *stages: str, command: list[str]):
  """Runs `python -m COMMAND --workdir=TOP` on a pipeline's top folder (its
  config.json naming `stages`, no run of its own); returns the process."""
  top.mkdir()
  stage = kd_config.run_config()
  config = kd_config.pipeline_config(**{name: stage for name in stages})
  (top / 'config.json').write_text(json.dumps(config.to_dict()))
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  return subprocess.run(
      [sys.executable, '-m', *command, f'--workdir={top}'], cwd=root,
      capture_output=True, text=True, timeout=300,
      env=dict(os.environ, PYTHONPATH=root))
