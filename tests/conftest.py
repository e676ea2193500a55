"""Test-session environment: CPU only, offline, data in a temporary TFDS dir."""
import os
import tempfile

os.environ.setdefault('JAX_PLATFORMS', 'cpu')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
os.environ.setdefault('WANDB_SILENT', 'true')
os.environ.setdefault('WANDB_MODE', 'offline')
# The offline builders (kd_digits, mnist1d) prepare themselves here once.
os.environ.setdefault('TFDS_DATA_DIR', tempfile.mkdtemp(prefix='kd_tfds_'))
