"""Config fields as text: dotted paths into nested configs (ml_collections
or JSON dicts), e.g. 'distill.teacher.workdir', and `key=value,...` lists
(the argument after `:` in `--config=file.py:ARGS`)."""

MISSING = object()  # A default that marks a missing field.
_RAISE = object()


def get(tree, path: str, default=_RAISE):
  """tree[a][b][c] for `path` 'a.b.c'. Where a key is missing (or a value on
  the way is not a mapping): `default`, or KeyError(path) if none is given."""
  for key in path.split('.'):
    if not hasattr(tree, 'keys') or key not in tree:
      if default is _RAISE:
        raise KeyError(path)
      return default
    tree = tree[key]
  return tree


def has(tree, path: str) -> bool:
  """Whether `get(tree, path)` finds a value."""
  return get(tree, path, MISSING) is not MISSING


def pairs(text: str | None) -> list[tuple[str, str | None]]:
  """'a=1,b=x=y,c' -> [('a', '1'), ('b', 'x=y'), ('c', None)]: items split
  at commas, each at its first '='; empty items are skipped."""
  out = []
  for item in (text or '').split(','):
    if item:
      key, sep, value = item.partition('=')
      out.append((key, value if sep else None))
  return out
