"""What to prune to: `--width=heads:0.5,mlp:0.5,embed:0.75` and
`--depth=keep:4,by:cosine`, read into sizes checked against the model."""
from typing import NamedTuple

WIDTH_UNITS = ('heads', 'mlp', 'embed')
DEPTH_BY = ('cosine', 'loss')


class Depth(NamedTuple):
  keep: int | None  # None: every layer.
  by: str


def _pairs(text: str, flag: str, valid: tuple) -> dict[str, str]:
  out = {}
  for item in filter(None, (s.strip() for s in (text or '').split(','))):
    key, sep, value = item.partition(':')
    if not sep or not value:
      raise ValueError(f'{flag}={text!r}: {item!r} is not KEY:VALUE; e.g. '
                       f'{flag}={valid[0]}:...')
    if key not in valid:
      raise ValueError(f'{flag}={text!r}: unknown key {key!r}; valid: '
                       f'{", ".join(valid)}')
    if key in out:
      raise ValueError(f'{flag}={text!r} names {key!r} twice')
    out[key] = value
  return out


def width(text: str, units: tuple = WIDTH_UNITS,
          by: dict | None = None) -> dict[str, float | int | str]:
  """{unit: a fraction (a number with a point, in (0, 1]) or a size (a
  whole number)}; units left out keep their size. With `by` ({criterion:
  what it is}), 'by' holds the importance criterion named (the first by
  default)."""
  out = {}
  pairs = _pairs(text, '--width', units + (('by',) if by else ()))
  if by:
    out['by'] = pairs.pop('by', next(iter(by)))
    if out['by'] not in by:
      raise ValueError(f'--width by:{out["by"]}: unknown; valid: ' + '; '.join(
          f'{name} ({what})' for name, what in by.items()))
  for key, value in pairs.items():
    try:
      number = float(value) if '.' in value else int(value)
    except ValueError:
      raise ValueError(f'--width {key}:{value}: expected a fraction such as '
                       f'0.5 or a size such as 64') from None
    if number <= 0 or (isinstance(number, float) and number > 1):
      raise ValueError(f'--width {key}:{value}: a fraction is in (0, 1] and '
                       'a size is 1 or more')
    out[key] = number
  return out


def depth(text: str) -> Depth:
  pairs = _pairs(text, '--depth', ('keep', 'by'))
  by = pairs.get('by', 'cosine')
  if by not in DEPTH_BY:
    raise ValueError(f'--depth by:{by}: unknown; valid: {", ".join(DEPTH_BY)}'
                     ' (cosine: ShortGPT\'s block influence; loss: the '
                     'held-out loss increase without the block)')
  if 'keep' not in pairs:
    if 'by' in pairs:
      raise ValueError(f'--depth={text!r} names no keep:N (the layers kept)')
    return Depth(None, by)
  if not pairs['keep'].isdigit() or int(pairs['keep']) < 1:
    raise ValueError(f'--depth keep:{pairs["keep"]}: expected the number of '
                     'layers kept, 1 or more')
  return Depth(int(pairs['keep']), by)


def size(unit: str, target, full: int, valid=None, of: str = '') -> int:
  """The kept count of `unit` (of `full` `of`, default `unit`) for a
  fraction or size; `valid` (sorted sizes) restricts it, e.g. head counts
  that fill every kv group."""
  n = round(target * full) if isinstance(target, float) else target
  choices = valid or range(1, full + 1)
  if n not in choices:
    shown = (', '.join(map(str, choices)) if len(choices) <= 16 else
             f'1 .. {full}')
    raise ValueError(f'--width {unit}:{target} keeps {n} of {full} '
                     f'{of or unit}; valid sizes: {shown}' + (
                         '' if n <= full else ' (a target larger than the '
                         'model cannot be pruned to)'))
  return n
