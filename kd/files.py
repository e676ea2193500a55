"""Atomic file writes: a reader (or a run resumed after a kill) sees the old
file or the new one, never half of one."""
import json
import os


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
