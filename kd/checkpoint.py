"""Orbax checkpoints of train states, and loading a frozen teacher from them."""
import logging
import os

import jax
import numpy as np
import orbax.checkpoint as ocp

log = logging.getLogger(__name__)


class CorruptCheckpointError(RuntimeError):
  pass


class ArchitectureMismatchError(ValueError):
  pass


def manager(directory: str, max_to_keep: int = 2) -> ocp.CheckpointManager:
  return ocp.CheckpointManager(
      os.path.abspath(directory),
      options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep,
                                           create=True))


def save(mngr: ocp.CheckpointManager, step: int, state) -> None:
  mngr.save(step, args=ocp.args.StandardSave(state), force=True)


def restore_latest(mngr: ocp.CheckpointManager, abstract_state):
  """Restores the newest readable checkpoint, or returns None if there is none.

  A checkpoint that cannot be read is skipped (with a warning naming it) in
  favour of the one before, so a crash while saving loses only that save.
  """
  errors = []
  for step in sorted(mngr.all_steps(), reverse=True):
    try:
      return mngr.restore(step, args=ocp.args.StandardRestore(abstract_state))
    except Exception as e:  # pylint: disable=broad-except
      where = os.path.join(str(mngr.directory), str(step))
      log.warning('checkpoint %s is unreadable (%s); trying an older one',
                  where, e)
      errors.append(f'{where}: {type(e).__name__}: {e}')
  if errors:
    raise CorruptCheckpointError(
        'no readable checkpoint in ' + str(mngr.directory) + ':\n  ' +
        '\n  '.join(errors) + '\nDelete the broken step folders (or the '
        'whole checkpoints/ folder to start over).')
  return None


def flat_shapes(tree) -> dict[str, tuple]:
  return {jax.tree_util.keystr(path): tuple(np.shape(leaf))
          for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


def check_same_structure(expected, found, what: str) -> None:
  """Raises ArchitectureMismatchError naming parameters that differ."""
  want, got = flat_shapes(expected), flat_shapes(found)
  problems = [f'missing in checkpoint: {k} {want[k]}'
              for k in sorted(want.keys() - got.keys())]
  problems += [f'unexpected in checkpoint: {k} {got[k]}'
               for k in sorted(got.keys() - want.keys())]
  problems += [f'shape mismatch: {k} model {want[k]} vs checkpoint {got[k]}'
               for k in sorted(want.keys() & got.keys()) if want[k] != got[k]]
  if problems:
    shown = problems[:20] + ([f'... and {len(problems) - 20} more']
                             if len(problems) > 20 else [])
    raise ArchitectureMismatchError(
        f'{what} does not match the configured architecture:\n  ' +
        '\n  '.join(shown))


def latest_step(run_dir: str) -> int | None:
  mngr = ocp.CheckpointManager(os.path.abspath(os.path.join(run_dir,
                                                            'checkpoints')))
  step = mngr.latest_step()
  mngr.close()
  return step


def load_state(run_dir: str, what: str):
  """(raw train-state tree of the latest checkpoint of a run, its step)."""
  ckpt_dir = os.path.join(run_dir, 'checkpoints')
  mngr = ocp.CheckpointManager(os.path.abspath(ckpt_dir))
  step = mngr.latest_step()
  if step is None:
    mngr.close()
    raise FileNotFoundError(
        f'{what}: no checkpoint found in {ckpt_dir}; train that run first '
        f'(or point the config at a finished run directory)')
  found = mngr.restore(step, args=ocp.args.StandardRestore())
  mngr.close()
  return found, step


def load_variables(run_dir: str, abstract_variables, what: str = 'teacher'):
  """Loads `{'params', ...model_state}` from the latest checkpoint of a run.

  `abstract_variables` (e.g. from `jax.eval_shape(model.init, ...)`) is the
  architecture the config asks for; a checkpoint with other parameter names
  or shapes raises an error listing them.
  """
  found, step = load_state(run_dir, what)
  found_vars = {'params': found['params'], **found['model_state']}
  check_same_structure(dict(abstract_variables), found_vars,
                       f'{what} checkpoint {run_dir}/checkpoints (step {step})')
  return jax.tree.map(np.asarray, found_vars)
