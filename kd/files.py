"""Atomic file writes: a reader (or a run resumed after a kill) sees the old
file or the new one, never half of one; and stored arrays read back checked
against the shape their meta.json records."""
import json
import os

import numpy as np


class DamagedFileError(ValueError):
  pass


def write_bytes(path: str, data: bytes | str) -> None:
  """Writes `data` to `path` through a temporary file beside it, synced
  to disk, then renamed over `path`."""
  tmp = f'{path}.tmp{os.getpid()}'
  with open(tmp, 'wb' if isinstance(data, bytes) else 'w') as f:
    f.write(data)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)


def write_json(path: str, obj) -> None:
  """`obj` as indented JSON with sorted keys, written atomically."""
  write_bytes(path, json.dumps(obj, indent=2, sort_keys=True))


def load_array(path: str, shape: tuple, fix: str) -> np.ndarray:
  """The array in .npy file `path`, memory-mapped, of `shape` (None: any
  size on that axis); a file cut short, unreadable or of another shape is an
  error naming it and `fix`."""
  try:
    found = np.load(path, mmap_mode='r')
  except (OSError, ValueError, EOFError) as e:
    raise DamagedFileError(f'{path} cannot be read ({e}): it was cut short '
                           f'or damaged; {fix}') from None
  if len(found.shape) != len(shape) or any(
      want is not None and want != got
      for want, got in zip(shape, found.shape)):
    raise DamagedFileError(f'{path} holds an array of shape {found.shape}, '
                           f'its meta.json says {shape}; {fix}')
  return found
