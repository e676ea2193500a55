"""What every exported format shares, free of TensorFlow: its error and
the write of a model file with its JSON sidecar `<file>.json` beside it."""
import os

import jax

from kd import files


class ExportError(RuntimeError):
  pass


def write(out_path: str, blob: bytes, sidecar: dict):
  """Writes the model and its JSON sidecar `out_path + '.json'` (on process 0
  only), each atomically."""
  os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
  files.write_bytes(out_path, blob)
  if jax.process_index() == 0:
    files.write_json(out_path + '.json', sidecar)
