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


@pytest.fixture(autouse=True, scope='module')
def _free_compiled_programs():
  """Drops a module's compiled programs after it: one process runs the whole
  suite, and without this its memory grows with every module's programs."""
  yield
  import jax  # pylint: disable=import-outside-toplevel
  jax.clear_caches()
  gc.collect()
