"""Orbax checkpoints of train states: save, and restore the newest readable one.

Every step saved through `manager(..., config=...)` carries the run's config
in its orbax custom metadata (`saved_config`): a checkpoint names the config
that wrote it, so a rerun is checked even when config.json is gone.
"""
import json
import logging
import os
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp

log = logging.getLogger(__name__)


class CorruptCheckpointError(RuntimeError):
  pass


class ArchitectureMismatchError(ValueError):
  pass


class Manager(ocp.CheckpointManager):
  """An orbax CheckpointManager whose saves record `config` (a run's config
  as a dict, or None) in each step's custom metadata."""

  def __init__(self, directory, options, config: dict | None = None):
    super().__init__(directory, options=options)
    # JSON's types: what the metadata file holds and gives back.
    self.config = None if config is None else json.loads(json.dumps(config))


def manager(directory: str, max_to_keep: int = 2,
            config: dict | None = None) -> Manager:
  if max_to_keep < 1:
    raise ValueError(f'keep_checkpoints={max_to_keep} would delete every '
                     'checkpoint; keep at least 1 (the default is 2)')
  return Manager(
      os.path.abspath(directory),
      ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True),
      config)


def save(mngr: ocp.CheckpointManager, step: int, state) -> None:
  config = getattr(mngr, 'config', None)
  mngr.save(step, args=ocp.args.StandardSave(state), force=True,
            custom_metadata=None if config is None else {'config': config})


STEP_METADATA = '_CHECKPOINT_METADATA'  # Orbax's per-step metadata file.


def saved_config(directory: str) -> tuple[dict, int] | None:
  """(config, step) recorded by the newest step of checkpoint `directory`
  whose metadata names one (`Manager`), or None (no checkpoint, or saved
  without a config). Reads files only: nothing is created or locked."""
  if not os.path.isdir(directory):
    return None
  steps = sorted((int(n) for n in os.listdir(directory) if n.isdigit()),
                 reverse=True)
  for step in steps:
    try:
      with open(os.path.join(directory, str(step), STEP_METADATA)) as f:
        found = json.load(f).get('custom_metadata') or {}
    except (OSError, ValueError, AttributeError):
      continue  # Cut short by a kill: an older step may tell.
    if isinstance(found.get('config'), dict):
      return found['config'], step
  return None


def quiet_abandoned_reads() -> None:
  """After a failed restore: a broken step leaves tensorstore reads running
  whose callbacks reach orbax's event loop, closed by then, and each would
  print an 'Event loop is closed' traceback (through sys.unraisablehook)
  while the run goes on from an older step. The step is already reported;
  those are dropped, anything else still goes to the previous hook."""
  previous = sys.unraisablehook
  if getattr(previous, 'kd_quiet', False):
    return

  def hook(unraisable):
    if not (isinstance(unraisable.exc_value, RuntimeError) and
            str(unraisable.exc_value) == 'Event loop is closed'):
      previous(unraisable)

  hook.kd_quiet = True
  sys.unraisablehook = hook


def _readable(mngr: ocp.CheckpointManager, step: int):
  """The raw tree of a step, or None if its files cannot be read."""
  try:
    return mngr.restore(step, args=ocp.args.StandardRestore())
  except Exception:  # pylint: disable=broad-except
    return None


def _move_aside(mngr: ocp.CheckpointManager, steps: list[int]) -> None:
  """Renames broken step folders to `<step>.corrupt-<time>` (orbax ignores
  them), so that the resumed run can save those steps again."""
  if jax.process_index() == 0:
    stamp = time.strftime('%Y%m%d-%H%M%S')
    for step in steps:
      where = os.path.join(str(mngr.directory), str(step))
      log.warning('moving unreadable checkpoint %s to %s.corrupt-%s', where,
                  where, stamp)
      os.rename(where, f'{where}.corrupt-{stamp}')
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
    multihost_utils.sync_global_devices('kd-corrupt-checkpoints')
  mngr.reload()


def restore_latest(mngr: ocp.CheckpointManager, abstract_state):
  """Restores the newest readable checkpoint, or returns None if there is none.

  A checkpoint whose files cannot be read is skipped (with a warning naming
  it) in favour of the one before and then moved aside, so a crash while
  saving loses only that save. A readable checkpoint of another structure
  (the model changed) raises ArchitectureMismatchError naming the parameters.
  """
  errors, broken = [], []
  for step in sorted(mngr.all_steps(), reverse=True):
    try:
      restored = mngr.restore(step,
                              args=ocp.args.StandardRestore(abstract_state))
    except Exception as e:  # pylint: disable=broad-except
      quiet_abandoned_reads()
      found = _readable(mngr, step)
      where = os.path.join(str(mngr.directory), str(step))
      if found is not None:
        check_same_structure(abstract_state, found, f'checkpoint {where}')
        raise  # Same names and shapes: not a question of architecture.
      log.warning('checkpoint %s is unreadable (%s); trying an older one',
                  where, e)
      errors.append(f'{where}: {type(e).__name__}: {e}')
      broken.append(step)
      continue
    if broken:
      _move_aside(mngr, broken)
    return restored
  if errors:
    raise CorruptCheckpointError(
        'no readable checkpoint in ' + str(mngr.directory) + ':\n  ' +
        '\n  '.join(errors) + '\nDelete the broken step folders (or the '
        'whole checkpoints/ folder to start over).')
  return None


def _name(key) -> str:
  """`['a']` for a dict key or attribute (orbax restores a train state's
  fields and named tuples as dicts), `[0]` for a sequence index."""
  if isinstance(key, jax.tree_util.SequenceKey):
    return f'[{key.idx}]'
  name = getattr(key, 'key', getattr(key, 'name', key))
  return f'[{name!r}]'


def flat_shapes(tree) -> dict[str, tuple]:
  return {''.join(map(_name, path)): tuple(np.shape(leaf))
          for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


def check_same_structure(expected, found, what: str) -> None:
  """Raises ArchitectureMismatchError naming parameters that differ (the
  optimizer state's differences only when nothing else differs)."""
  want, got = flat_shapes(expected), flat_shapes(found)
  problems = [f'missing in checkpoint: {k} {want[k]}'
              for k in sorted(want.keys() - got.keys())]
  problems += [f'unexpected in checkpoint: {k} {got[k]}'
               for k in sorted(got.keys() - want.keys())]
  problems += [f'shape mismatch: {k} model {want[k]} vs checkpoint {got[k]}'
               for k in sorted(want.keys() & got.keys()) if want[k] != got[k]]
  model_only = [p for p in problems if "['opt_state']" not in p]
  problems = model_only or problems
  if problems:
    shown = problems[:20] + ([f'... and {len(problems) - 20} more']
                             if len(problems) > 20 else [])
    raise ArchitectureMismatchError(
        f'{what} does not match the configured architecture:\n  ' +
        '\n  '.join(shown))
