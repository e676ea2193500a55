"""A run directory: the files a run leaves, and how to open them safely.

  WORKDIR/config.json     the config, written once the run is accepted
  WORKDIR/run.lock        {"pid", "host", "started"} while a process runs it
  WORKDIR/checkpoints/    orbax steps; a broken one is moved to <step>.corrupt-*
  WORKDIR/metrics.jsonl   one JSON object per line
  WORKDIR/summary.json    written last: the run is finished when its "steps"
                          equals the config's
  WORKDIR/dataset.json    your own files' names, sizes and sha256 (kd_text,
                          image_folder), recorded when the run starts

Training code (`kd.train`, `kd.loop`, `kd.main`) locks the directory and checks
that a rerun asks for the same run (`check_identity`); everything that reads a
finished run (the exporter, experiments, a teacher, `init_from`) opens it here.
"""
import contextlib
import datetime
import errno
import json
import logging
import os
import shutil
import socket
import time
import types
import warnings

import jax
import ml_collections as mc
import numpy as np

from kd import checkpoint
from kd import config as kd_config
from kd import data
from kd import files
from kd import models

log = logging.getLogger(__name__)

LOCK = 'run.lock'

# Config fields a rerun may change: they decide when to log, test, save or
# report, never what is trained. Any other difference refuses the rerun.
# A dotted path names the field and everything under it; in a pipeline the
# same paths apply inside every stage (`stages.<name>.`).
NEUTRAL_FIELDS = (
    'log_every', 'checkpoint_every', 'keep_checkpoints', 'eval_every',
    'steps_per_dispatch',  # The same steps, k to a call (kd.steps.multi_step).
    'eval_batch_size',  # Masked sums: the same test figures in any batch size.
    'wandb', 'evaluate.latency', 'export', 'data.download',
    'distill.teacher.cache_dir', 'distill.teacher.allow_unfinished_teacher',
    'distill.teacher.fold_bn',  # The same teacher outputs (kd.fold, 1e-5).
    # Where your files are: what they hold is checked by dataset.json
    # (`check_dataset`), so a corpus moved with its globs resumes.
    'data.files', 'data.files_validation', 'data.files_test',
)


# Fields that decide only how a run is tested: an unfinished run may change
# them (with a warning: its earlier test rows used the old value); a
# finished run's summary holds the old value's figures, so there they refuse.
EVAL_FIELDS = ('data.eval_split',)


# Fields holding a directory: equal when they name the same one (a pipeline
# writes its stages' teacher directories from --workdir, relative or not).
PATH_FIELDS = ('distill.teacher.workdir', 'init_from', 'data.data_dir',
               'prune.source')


class RunLockedError(RuntimeError):
  pass


class ConfigMismatchError(ValueError):
  pass


class RunDirError(OSError):
  """--workdir cannot hold a run: a file, or not writable."""


class CorruptFileError(ValueError):
  pass


class UnfinishedTeacherError(RuntimeError):
  pass


class PipelineDirError(ValueError):
  pass


def write_json(path: str, obj) -> None:
  """`kd.files.write_json` on process 0; the other processes write nothing."""
  if jax.process_index() == 0:
    files.write_json(path, obj)


def read_json(path: str, fix: str):
  """The JSON object in `path`; a file that does not parse is an error naming
  it and `fix`."""
  with open(path) as f:
    text = f.read()
  try:
    return json.loads(text)
  except json.JSONDecodeError as e:
    raise CorruptFileError(f'{path} is not valid JSON ({e}); {fix}') from e


def saved_config(run_dir: str) -> dict | None:
  path = os.path.join(run_dir, 'config.json')
  if not os.path.exists(path):
    return None
  return read_json(path, 'restore it, or start this run over with '
                   '`python -m kd.main ... --overwrite` (or a new --workdir)')


def load_config(run_dir: str) -> mc.ConfigDict:
  """The config of one run; a pipeline's top folder is an error listing its
  stages' directories."""
  found = saved_config(run_dir)
  if found is None:
    raise FileNotFoundError(
        f'{os.path.join(run_dir, "config.json")} not found: {run_dir} must be '
        'a run (or pipeline stage) directory written by kd.main')
  if 'stages' in found:
    dirs = kd_config.stage_dirs(found, run_dir)
    dirs = {name: dirs[name] for name in found['stage_order']}
    raise PipelineDirError(
        f'{run_dir} is a pipeline\'s top folder, not one run; its stages: '
        + ', '.join(f'{n} ({d})' for n, d in dirs.items()) + '. Pass one '
        f'stage\'s directory, e.g. --workdir={list(dirs.values())[-1]} (the '
        'last stage)')
  return mc.ConfigDict(found)


def summary(run_dir: str) -> dict | None:
  path = os.path.join(run_dir, 'summary.json')
  if not os.path.exists(path):
    return None
  return read_json(path, 'delete it and rerun the same command: the run '
                   'resumes from its last checkpoint and writes it again')


def finished_summary(run_dir: str, total_steps: int) -> dict | None:
  """The summary of a run finished at `total_steps`, else None."""
  found = summary(run_dir)
  return found if found is not None and found.get('steps') == total_steps \
      else None


def is_finished(run_dir: str) -> bool:
  config = saved_config(run_dir)
  return config is not None and finished_summary(
      run_dir, config.get('steps')) is not None


# Identity.


def _flat(tree, prefix: str = '') -> dict:
  if isinstance(tree, dict):
    out = {}
    for k, v in tree.items():
      out.update(_flat(v, f'{prefix}{k}.'))
    return out if out or not prefix else {prefix[:-1]: {}}
  return {prefix[:-1]: tree}


def _in_run(path: str) -> str:
  """`path` inside one run: a pipeline's `stages.<name>.` prefix removed."""
  parts = path.split('.')
  return '.'.join(parts[2:] if parts[0] == 'stages' and len(parts) > 2
                  else parts)


def _neutral(path: str) -> bool:
  path = _in_run(path)
  return any(path == f or path.startswith(f + '.') for f in NEUTRAL_FIELDS)


def _same(path: str, a, b) -> bool:
  if _in_run(path) in PATH_FIELDS and a and b and isinstance(a, str) and (
      isinstance(b, str)):
    return os.path.realpath(a) == os.path.realpath(b)
  return a == b


def config_diff(old: dict, new: dict) -> list[str]:
  """`path: old -> new` for every field that differs and could change the
  result (see NEUTRAL_FIELDS). A field the saved config lacks counts as its
  default (`kd.config.run_config`): kd added it later, keeping the old
  behaviour as the default."""
  old, new = _flat(old), _flat(json.loads(json.dumps(new)))
  defaults = _flat(json.loads(json.dumps(kd_config.run_config().to_dict())))
  missing = object()
  out = []
  for k in sorted(old.keys() | new.keys()):
    a = old.get(k, defaults.get(_in_run(k), missing))
    b = new.get(k, missing)
    if not _same(k, a, b) and not _neutral(k):
      show = lambda v: '<absent>' if v is missing else json.dumps(v)
      out.append(f'{k}: {show(a)} -> {show(b)}')
  return out


def recorded_config(run_dir: str) -> tuple[dict, str] | None:
  """(config, where it was read) of the run in `run_dir`: its config.json,
  else the config its newest checkpoint records (`kd.checkpoint.Manager`),
  so that deleting config.json does not let another config resume."""
  found = saved_config(run_dir)
  if found is not None:
    return found, os.path.join(run_dir, 'config.json')
  ckpt_dir = os.path.join(run_dir, 'checkpoints')
  found = checkpoint.saved_config(ckpt_dir)
  if found is not None:
    return found[0], os.path.join(ckpt_dir, str(found[1]))
  return None


def started(run_dir: str) -> bool:
  """Whether a run began in `run_dir`: it has a config.json or a
  checkpoint."""
  ckpts = os.path.join(run_dir, 'checkpoints')
  return os.path.exists(os.path.join(run_dir, 'config.json')) or (
      os.path.isdir(ckpts) and any(n.isdigit() for n in os.listdir(ckpts)))


def check_identity(run_dir: str, config: mc.ConfigDict,
                   stage_dirs: dict | None = None) -> None:
  """Refuses to continue `run_dir` with a config other than the one it was
  started with: resumed or reused results would belong to neither. For a
  pipeline, `stage_dirs` (stage -> directory): a stage that has not started
  there may change (a typo fixed in a stage that never ran)."""
  found = recorded_config(run_dir)
  if found is None:
    return
  old, where = found
  fresh = {n for n, d in (stage_dirs or {}).items() if not started(d)}
  diff = [line for line in config_diff(old, config.to_dict())
          if not (line.startswith('stages.') and
                  line.split(':')[0].split('.')[1] in fresh)]
  tested = []  # Fields of EVAL_FIELDS that may change, as unfinished.
  for line in diff:
    path = line.split(':')[0]
    if _in_run(path) not in EVAL_FIELDS:
      continue
    stage = path.split('.')[1] if path.startswith('stages.') else None
    where, run = ((stage_dirs or {}).get(stage), config.stages[stage]) \
        if stage else (run_dir, config)
    if where and 'steps' in run and finished_summary(where, run.steps) is None:
      tested.append(line)
  if tested:
    warnings.warn(f'{run_dir}: the run resumes with a change that affects '
                  'only its tests (' + '; '.join(tested) + '): the test rows '
                  'of metrics.jsonl written before it used the old value')
  diff = [line for line in diff if line not in tested]
  if diff:
    raise ConfigMismatchError(
        f'{run_dir} holds a run of another config (recorded in {where}); the '
        'fields that differ (saved -> now):\n  ' + '\n  '.join(diff) +
        '\nUse a new --workdir, or pass --overwrite to kd.main to delete that '
        'run and start over.')


DATASET_RECORD = 'dataset.json'


def check_dataset(run_dir: str, config: mc.ConfigDict) -> None:
  """A run of your own files (`kd.data.files_of`) records them in
  WORKDIR/dataset.json (names, sizes, sha256; `kd.data.dataset_record`)
  when it starts; a rerun on files that changed since is refused, naming
  them."""
  now = data.dataset_record(config)
  if now is None:
    return
  path = os.path.join(run_dir, DATASET_RECORD)
  if os.path.exists(path):
    old = read_json(path, 'delete it to record the files as they are now')
    diff = data.corpus.record_diff(old, now)
    if diff:
      raise ConfigMismatchError(
          f'{run_dir} holds a run of other files than config.data names now '
          f'(recorded in {path}; saved -> now):\n  ' + '\n  '.join(diff) +
          '\nRestore those files, use a new --workdir, or pass --overwrite '
          'to kd.main to delete that run and start over.')
  else:
    write_json(path, now)


# The lock.

_held: dict[str, int] = {}  # Lock path -> depth: one process nests them.


def _alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True


def _make_dir(run_dir: str) -> None:
  """Creates `run_dir`, or says in one line why it cannot hold a run."""
  try:
    os.makedirs(run_dir, exist_ok=True)
  except (FileExistsError, NotADirectoryError):
    raise RunDirError(
        f'--workdir {run_dir} is a file (or lies under one), not a directory;'
        ' pass a directory: a new one, or one kd.main wrote') from None
  except OSError as e:
    _not_writable(run_dir, e)


def _not_writable(run_dir: str, e: OSError):
  if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
    raise RunDirError(
        f'{run_dir} is not writable ({e.strerror}): a run writes its lock, '
        'checkpoints, metrics and summary there. Use a writable --workdir '
        '(or copy the run to one); a finished run there can still be read by '
        'kd.tables and kd.report.') from None
  raise e


def _take(path: str) -> bool:
  try:
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
  except FileExistsError:
    return False
  except OSError as e:
    _not_writable(os.path.dirname(path), e)
  with os.fdopen(fd, 'w') as f:
    json.dump({'pid': os.getpid(), 'host': socket.gethostname(),
               'started': datetime.datetime.now(datetime.timezone.utc)
               .isoformat(timespec='seconds')}, f)
  return True


def _holder(path: str) -> dict | None:
  """The lock's {"pid", "host", "started"}; {} if it is gone, None if it
  cannot be read (empty or cut short: its writer was killed between
  creating and writing it, or is writing it now)."""
  try:
    with open(path) as f:
      found = json.loads(f.read())
  except FileNotFoundError:
    return {}
  except (ValueError, OSError):
    return None
  return found if isinstance(found, dict) and isinstance(
      found.get('pid'), int) else None


# An unreadable lock older than this is stale: its writer, which writes it
# right after creating it, is gone.
UNREADABLE_LOCK_SECONDS = 60


def differences(want: dict, found: dict, what: str = 'directory',
                prefix: str = '') -> list[str]:
  """'field: <what> has X, this run needs Y' for every differing leaf of two
  nested provenance dicts (a cache's or stored generations' meta.json)."""
  out = []
  for key in sorted(set(want) | set(found)):
    a, b = want.get(key), found.get(key)
    if isinstance(a, dict) and isinstance(b, dict):
      out += differences(a, b, what, f'{prefix}{key}.')
    elif a != b:
      out.append(f'{prefix}{key}: {what} has {b!r}, this run needs {a!r}')
  return out


@contextlib.contextmanager
def accepted(run_dir: str, config: mc.ConfigDict, name: str):
  """Holds `run_dir`'s lock for a run of `config` (a rerun must ask for the
  same config); yields the run's summary if it already finished, else None."""
  with lock(run_dir):
    check_identity(run_dir, config)
    check_dataset(run_dir, config)
    done = finished_summary(run_dir, config.steps)
    if done is not None:
      print(f'[{name}] already finished in {run_dir}; reusing its results')
    yield done


@contextlib.contextmanager
def lock(run_dir: str):
  """Holds `run_dir/run.lock` for the block: a second process on the same
  directory is refused, naming the holder. A lock whose holder died on this
  host is taken over with a warning. Only process 0 of a multi-process run
  takes it, so the processes of one run never refuse each other."""
  path = os.path.abspath(os.path.join(run_dir, LOCK))
  if jax.process_index() != 0:
    yield
    return
  if path in _held:
    _held[path] += 1
    try:
      yield
    finally:
      _held[path] -= 1
    return
  _make_dir(run_dir)
  unreadable = 0  # Reads of a lock not yet written.
  while not _take(path):
    h = _holder(path)
    if h == {}:  # Released meanwhile.
      continue
    if h is None:
      try:
        age = time.time() - os.path.getmtime(path)
      except FileNotFoundError:
        continue
      if age < UNREADABLE_LOCK_SECONDS and unreadable < 10:
        unreadable += 1  # Its writer may be writing it now.
        time.sleep(0.1)
        continue
      if age < UNREADABLE_LOCK_SECONDS:
        raise RunLockedError(
            f'{path} exists but cannot be read (written {age:.0f} s ago: a '
            'process may be starting in this directory); rerun in a minute, '
            'when an unreadable lock counts as stale, or use another '
            '--workdir')
      warnings.warn(f'{path} cannot be read and is {age:.0f} s old (its '
                    'writer was killed while creating it); taking over')
    pid, host = (h or {}).get('pid'), (h or {}).get('host')
    if h is None or host == socket.gethostname() and isinstance(pid, int) and (
        not _alive(pid)):
      if h is not None:
        warnings.warn(f'{path}: its holder (pid {pid}) is gone; taking over')
      # A rename: of two processes taking over, one wins; a lock taken
      # meanwhile by another process is put back.
      stale = f'{path}.stale{os.getpid()}'
      try:
        os.rename(path, stale)
      except FileNotFoundError:
        continue
      if _holder(stale) == h:
        os.remove(stale)
      else:
        os.rename(stale, path)
      continue
    raise RunLockedError(
        f'{run_dir} is in use by pid {pid} on host {host} (since '
        f'{h.get("started")}): two runs in one directory would mix their '
        f'metrics, checkpoints and summary. Wait for it, stop it, or use '
        f'another --workdir; if that process is gone (its machine died), '
        f'delete {path}.')
  _held[path] = 1
  try:
    yield
  finally:
    del _held[path]
    if (_holder(path) or {}).get('pid') == os.getpid():
      os.remove(path)


def _sync(name: str) -> None:
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
    multihost_utils.sync_global_devices(name)


# Starting over.

RUN_FILES = ('checkpoints', 'metrics.jsonl', 'summary.json', 'config.json',
             DATASET_RECORD)


def clear(run_dir: str) -> list[str]:
  """`--overwrite`: deletes what a run wrote (checkpoints, metrics, summary,
  config, exported students) so that it starts over; keeps other files
  (wandb's offline runs, a teacher cache, which checks its own provenance).
  Returns the deleted paths."""
  if not os.path.isdir(run_dir):
    return []
  gone = [os.path.join(run_dir, f) for f in sorted(os.listdir(run_dir))
          if f in RUN_FILES or (f.startswith('student_') and '.tflite' in f)]
  if jax.process_index() == 0:
    for p in gone:
      shutil.rmtree(p) if os.path.isdir(p) else os.remove(p)
  _sync('kd-overwrite')
  return gone


# Checkpoints of finished (or running) runs, opened read-only.


def latest_state(run_dir: str, what: str):
  """(raw train-state tree, step) of the newest readable checkpoint of
  `run_dir`; an unreadable one is skipped with a warning. Creates nothing."""
  return _newest_readable(
      run_dir, what, lambda mngr, step: mngr.restore(
          step, args=checkpoint.ocp.args.StandardRestore()))


class _Refused(Exception):
  """Raised from the error a caller's check raised (`read_onto`)."""


def _newest_readable(run_dir: str, what: str, read, handler=None):
  """(`read(manager, step)`, step) of the newest step of `run_dir`'s
  checkpoints that `read` can read (opened read-only with `handler`); an
  unreadable one is skipped with a warning, an architecture mismatch
  raised."""
  ckpt_dir = os.path.abspath(os.path.join(run_dir, 'checkpoints'))
  if not os.path.isdir(ckpt_dir):
    raise FileNotFoundError(
        f'{what}: {ckpt_dir} does not exist; train that run first (or point '
        f'the config at a run directory written by kd.main)')
  mngr = checkpoint.ocp.CheckpointManager(
      ckpt_dir, item_handlers=handler,
      options=checkpoint.ocp.CheckpointManagerOptions(
          create=False, read_only=True))
  try:
    errors = []
    for step in sorted(mngr.all_steps(), reverse=True):
      try:
        return read(mngr, step), step
      except checkpoint.ArchitectureMismatchError:
        raise
      except _Refused as e:
        raise e.__cause__ from None
      except Exception as e:  # pylint: disable=broad-except
        checkpoint.quiet_abandoned_reads()
        log.warning('%s/%d is unreadable (%s); trying an older one',
                    ckpt_dir, step, e)
        errors.append(f'{ckpt_dir}/{step}: {type(e).__name__}: {e}')
  finally:
    mngr.close()
  if errors:
    raise checkpoint.CorruptCheckpointError(
        f'{what}: no readable checkpoint in {ckpt_dir}:\n  ' +
        '\n  '.join(errors))
  raise FileNotFoundError(
      f'{what}: no checkpoint in {ckpt_dir}; train that run first')


def load_variables(run_dir: str, abstract_variables, what: str,
                   shardings=None):
  """(`{'params', ...model_state}`, step) of `run_dir`'s newest readable
  checkpoint, checked against `abstract_variables` (the architecture asked
  for): other parameter names or shapes raise an error listing them.

  Without `shardings`: NumPy arrays on the host (a data-parallel run then
  replicates them). With `shardings` (a `NamedSharding` per leaf of
  `abstract_variables`, `kd.sharding.ShardedParallel.shardings`): each
  array is read straight onto the mesh, every device reading its own slice
  of the files (orbax with a sharded target), and only the variables (no
  optimizer state), so the host never holds the whole model: a teacher too
  large for one host's memory loads split over the mesh. The names and
  shapes are checked against the files' metadata before any is read."""
  if shardings is None:
    found, step = latest_state(run_dir, what)
    variables = {'params': found['params'], **found['model_state']}
    checkpoint.check_same_structure(
        dict(abstract_variables), variables,
        f'{what} checkpoint {run_dir}/checkpoints (step {step})')
    return jax.tree.map(np.asarray, variables), step

  def target_of(saved, step):
    stored = {'params': saved['params'], **saved['model_state']}
    checkpoint.check_same_structure(
        dict(abstract_variables), stored,
        f'{what} checkpoint {run_dir}/checkpoints (step {step})')
    placed = on_devices(stored, dict(shardings))
    return {'params': placed['params'],
            'model_state': {k: v for k, v in placed.items() if k != 'params'}}

  found, step = read_onto(run_dir, what, target_of)
  return {'params': found['params'], **found['model_state']}, step


def on_devices(abstract, shardings):
  """`abstract` (ShapeDtypeStructs) with `shardings` (one per leaf)."""
  return jax.tree.map(
      lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
      abstract, shardings)


def read_onto(run_dir: str, what: str, target_of):
  """(tree, step): part of `run_dir`'s newest readable checkpoint, read
  straight onto devices. `target_of(saved, step)` gets the step's tree of
  `jax.ShapeDtypeStruct`s (names, shapes and dtypes from the files'
  metadata: nothing read yet, so it may refuse first) and returns the part
  to read, its leaves carrying their shardings (`on_devices`); each device
  reads its own slice of each array (orbax with a sharded target, a
  partial restore), so the host never holds more than one slice of it."""
  def read(mngr, step):
    saved = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype),
                         mngr.item_metadata(step).tree)
    try:
      target = target_of(saved, step)
    except Exception as e:  # pylint: disable=broad-except
      raise _Refused() from e  # Not a broken step: said as it is.
    ocp = checkpoint.ocp
    return mngr.restore(step, args=ocp.args.PyTreeRestore(
        target, restore_args=ocp.checkpoint_utils.construct_restore_args(
            target), partial_restore=True))

  return _newest_readable(run_dir, what, read,
                          checkpoint.ocp.PyTreeCheckpointHandler())


def check_teacher(run_dir: str, allow_unfinished: bool = False) -> None:
  """A teacher run must exist, and be finished unless `allow_unfinished`."""
  if not os.path.isdir(run_dir):
    raise FileNotFoundError(
        f'teacher directory {run_dir} does not exist; train the teacher '
        'first (kd.main with its config and that --workdir)')
  if not allow_unfinished and not is_finished(run_dir):
    config, done = saved_config(run_dir), summary(run_dir)
    raise UnfinishedTeacherError(
        f'teacher {run_dir} is not finished (its config asks for '
        f'{(config or {}).get("steps", "?")} steps; summary.json '
        + (f'has steps {done.get("steps")}' if done else 'is missing') +
        '): finish it by rerunning its command, or set '
        'config.distill.teacher.allow_unfinished_teacher=True to distill '
        'from its latest checkpoint.')


def load_teacher(run_dir: str, abstract_variables,
                 allow_unfinished: bool = False, shardings=None):
  """(variables, step) of a teacher run (`check_teacher`), on the host or
  read onto a mesh by `shardings` (`load_variables`)."""
  check_teacher(run_dir, allow_unfinished)
  return load_variables(run_dir, abstract_variables, 'teacher', shardings)


def model_of(config, run_dir: str | None = None):
  """(The float32 model `config` trains, its data spec); a text run's
  tokenizer is read from `run_dir`."""
  d = config.data
  if data.encoder_task(config):  # Its vocabulary is data.vocab_size.
    spec = data.run_spec(config)
  elif d.tokenizer == 'hf' and d.vocab_size:
    # A converted HF model (kd.convert.hf): its vocabulary is its embedding's
    # rows, data.vocab_size (at least its tokenizer's count): no tokenizer
    # is needed to build it, and a folder without tokenizer.json loads.
    spec = data.text.spec(d.name, d.seq_len,
                          types.SimpleNamespace(vocab_size=d.vocab_size))
  else:
    tok = (data.run_tokenizer(config, run_dir)
           if data.text.is_text(d.name) else None)
    spec = data.run_spec(config, tok)
  model = models.from_config(config.model.name, config.model.kwargs,
                             spec.num_classes)
  return model, spec


def load_run(run_dir: str):
  """(config, model, variables, step) of a finished or running run."""
  config = load_config(run_dir)
  model, spec = model_of(config, run_dir)
  example = jax.numpy.zeros((1, *spec.input_shape), spec.input_dtype)
  abstract = jax.eval_shape(
      lambda: model.init(jax.random.key(0), example, train=False))
  variables, step = load_variables(run_dir, abstract, 'student')
  return config, model, variables, step
