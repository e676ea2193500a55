"""Test-session environment: CPU only, offline, data in a temporary TFDS dir."""
import gc
import os
import tempfile

import pytest

os.environ.setdefault('JAX_PLATFORMS', 'cpu')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
os.environ.setdefault('WANDB_SILENT', 'true')
os.environ.setdefault('WANDB_MODE', 'offline')
# The offline builders (kd_digits, mnist1d) prepare themselves here once; a
# folder per pytest-xdist worker, which would otherwise inherit the
# controller's and race to prepare the same dataset.
if os.environ.get('PYTEST_XDIST_WORKER'):
  os.environ['TFDS_DATA_DIR'] = tempfile.mkdtemp(
      prefix=f'kd_tfds_{os.environ["PYTEST_XDIST_WORKER"]}_')
os.environ.setdefault('TFDS_DATA_DIR', tempfile.mkdtemp(prefix='kd_tfds_'))
# The same programs compile in many modules (each clears JAX's caches after
# it) and in the processes tests start (CLI runs, resumes, multi-host
# workers): XLA's persistent cache, one folder for the session (set by the
# controller, inherited by the workers and their processes), compiles each
# once.
os.environ.setdefault('JAX_COMPILATION_CACHE_DIR',
                      tempfile.mkdtemp(prefix='kd_jax_cache_'))
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0')
# Compiling, not running, is most of the suite's time (tiny models, few
# steps): LLVM's optimisations cost more than they save, and XLA:CPU's
# older loop emitters compile a quarter faster than its fusion emitters
# (tests/test_vit.py 46 s -> 34 s). Tests that set XLA_FLAGS for a process
# they start add theirs to this.
for _flag in ('--xla_backend_optimization_level=0',
              '--xla_cpu_use_fusion_emitters=false'):
  if _flag.split('=')[0] not in os.environ.get('XLA_FLAGS', ''):
    os.environ['XLA_FLAGS'] = ' '.join(filter(None, (
        os.environ.get('XLA_FLAGS'), _flag)))


@pytest.fixture(autouse=True, scope='module')
def _free_compiled_programs():
  """Drops a module's compiled programs after it: one process runs the whole
  suite, and without this its memory grows with every module's programs."""
  yield
  import jax  # pylint: disable=import-outside-toplevel
  jax.clear_caches()
  gc.collect()


def starts_process(func, namespace: dict, seen=None) -> bool:
  """Whether `func` uses the `subprocess` module, itself or through a
  function of its test module (`namespace`) that it names, however deep."""
  seen = set() if seen is None else seen
  if func in seen or not hasattr(func, '__code__'):
    return False
  seen.add(func)
  names, codes = set(), [func.__code__]
  while codes:  # Nested functions and lambdas have code objects of their own.
    code = codes.pop()
    names.update(code.co_names)
    codes += [c for c in code.co_consts if hasattr(c, 'co_names')]
  if 'subprocess' in names:
    return True
  return any(starts_process(namespace[n], namespace, seen) for n in names
             if getattr(namespace.get(n), '__module__', None)
             == namespace.get('__name__'))


def pytest_collection_modifyitems(config, items):
  """Marks `subprocess` each test that starts another process (a CLI run, a
  resume after a kill, multi-host workers), in its body or in a fixture it
  uses: `-m "not subprocess"` is the quick local run; CI runs all."""
  del config
  for item in items:
    if not isinstance(item, pytest.Function):
      continue
    namespace = vars(item.module)
    fixtures = [defs[-1].func for defs in
                item._fixtureinfo.name2fixturedefs.values()]  # pylint: disable=protected-access
    if any(starts_process(f, namespace) for f in [item.function] + fixtures):
      item.add_marker(pytest.mark.subprocess)
