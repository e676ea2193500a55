"""Your own files as a dataset: which files a config's globs name, the
record of them a run keeps (names, sizes, sha256 of the contents), and the
documents in them, read strictly (every bad input an error naming the file
and the line, byte or row).

Text (`kd_text`): `.txt` (a file is one document), `.jsonl` (one JSON
object a line, the document in its `text_field`) or `.parquet` (one
document a row of the `text_field` column; read with pyarrow, which
tensorflow-datasets requires). With a `source_field` (JSONL field or
parquet column) every document names its source, and the corpus is mixed
(`kd.data.mixed`): one dataset per source value (`source_files`).
"""
import dataclasses
import glob
import hashlib
import json
import os

TEXT_SUFFIXES = ('.txt', '.jsonl', '.parquet')


class CorpusError(RuntimeError):
  """Bad input files: the message names the file and what is wrong."""


_DIGESTS = {}  # (path, size, mtime_ns) -> sha256: a file is hashed once.


class MadeConfigs:
  """Mixed into a TFDS builder whose configs are made at run time, one per
  content (named by its sha256): `made(config)` registers one, so that TFDS
  opens it by name (and warns of no unknown custom config)."""
  BUILDER_CONFIGS = []

  def __init_subclass__(cls, **kwargs):
    cls.configs_made = {}
    super().__init_subclass__(**kwargs)

  @classmethod
  def get_builder_config(cls, name, version=None):
    del version
    return cls.configs_made.get(name)

  @classmethod
  def made(cls, config):
    cls.configs_made[config.name] = config
    return config


def file_digest(path: str) -> str:
  st = os.stat(path)
  key = (os.path.abspath(path), st.st_size, st.st_mtime_ns)
  if key not in _DIGESTS:
    h = hashlib.sha256()
    with open(path, 'rb') as f:
      for chunk in iter(lambda: f.read(1 << 20), b''):
        h.update(chunk)
    _DIGESTS[key] = h.hexdigest()
  return _DIGESTS[key]


def expand(globs: str, field: str, suffixes=TEXT_SUFFIXES) -> list[str]:
  """The files (sorted, each once) that the comma-separated `globs` of
  config field `field` match; a glob matching no file, or a file of
  another kind than `suffixes`, is an error naming it."""
  out = []
  for pattern in (g.strip() for g in globs.split(',')):
    if not pattern:
      continue
    found = sorted(p for p in glob.glob(os.path.expanduser(pattern),
                                        recursive=True) if os.path.isfile(p))
    if not found:
      raise CorpusError(
          f'config.{field}: {pattern!r} matches no file (from {os.getcwd()});'
          ' fix the glob, e.g. corpus/*.jsonl or corpus/**/*.txt')
    for p in found:
      if not p.endswith(suffixes):
        raise CorpusError(
            f'{p} (from config.{field}={pattern!r}): not a '
            f'{"/".join(suffixes)} file; narrow the glob to those')
    out += [os.path.abspath(p) for p in found]
  return sorted(set(out))


@dataclasses.dataclass(frozen=True)
class Files:
  """Files by group ('all': split by document hash; or 'train',
  'validation', 'test'), and the record of them: paths relative to
  `root`, the deepest folder holding them all, so that moving the corpus
  as a whole keeps its identity."""
  name: str  # The dataset name: 'kd_text' or 'image_folder'.
  groups: tuple  # ((group, (absolute path, ...)), ...)
  root: str
  options: tuple = ()  # ((key, value), ...) that change the dataset.

  @property
  def record(self) -> dict:
    files = {g: [{'path': os.path.relpath(p, self.root),
                  'bytes': os.path.getsize(p), 'sha256': file_digest(p)}
                 for p in paths] for g, paths in self.groups}
    return {'dataset': self.name,  # Through JSON: as read back.
            'options': json.loads(json.dumps(dict(self.options))),
            'files': files}

  @property
  def sha256(self) -> str:
    return hashlib.sha256(json.dumps(self.record, sort_keys=True).encode()
                          ).hexdigest()

  def __str__(self):
    o = dict(self.options)
    of = f'[{o["source_field"]}={o["source"]}]' if 'source' in o else ''
    return f'{self.name}:{self.sha256[:12]}{of}'


def text_files(d) -> Files:
  """kd_text's files from config.data `d`: `files` (comma-separated globs),
  split 90/5/5 by document hash unless `files_validation` or `files_test`
  give those splits (then `files` is the training split)."""
  if not d.get('files'):
    raise CorpusError("config.data.files is empty: kd_text reads your files;"
                      " set --config.data.files='corpus/*.jsonl' (globs of "
                      '.txt, .jsonl or .parquet, comma-separated)')
  split = {g: d.get(f'files_{g}', '') for g in ('validation', 'test')}
  if any(split.values()):
    groups = [('train', expand(d.files, 'data.files'))] + [
        (g, expand(v, f'data.files_{g}') if v else []) for g, v in
        split.items()]
    seen = {}
    for g, paths in groups:
      for p in paths:
        if p in seen:
          raise CorpusError(f'{p} is in two splits ({seen[p]} and {g}): '
                            'give each file to one of data.files, '
                            'data.files_validation, data.files_test')
        seen[p] = g
  else:
    groups = [('all', expand(d.files, 'data.files'))]
  return make_files('kd_text', groups,
                (('text_field', d.get('text_field') or 'text'),))


def make_files(name: str, groups, options=()) -> Files:
  """`Files` of `groups` ((group, paths), ...), rooted at their deepest
  common folder."""
  paths = [p for _, ps in groups for p in ps]
  root = os.path.commonpath([os.path.dirname(p) for p in paths])
  return Files(name, tuple((g, tuple(ps)) for g, ps in groups), root,
               tuple(options))


def _decoded(path: str, data: bytes) -> str:
  try:
    return data.decode('utf-8')
  except UnicodeDecodeError as e:
    line = data[:e.start].count(b'\n') + 1
    raise CorpusError(
        f'{path}: not UTF-8 at byte {e.start} (line {line}: '
        f'{data[e.start:e.start + 4]!r}); convert the file to UTF-8, e.g. '
        f'`iconv -f latin1 -t utf-8`') from None


def documents(path: str, text_field: str = 'text', source=None):
  """(line or row number, text) of every document of one file: a `.txt`
  file is one (number 0); a `.jsonl` file one per non-blank line (1-based);
  a `.parquet` file one per row (0-based). `source` (field, value): only
  the documents whose `field` holds `value` (`field_values`)."""
  if source is not None:
    field, value = source
    docs = list(documents(path, text_field))
    keep = {n for n, v in field_values(path, field) if v == value}
    yield from ((n, t) for n, t in docs if n in keep)
    return
  if path.endswith('.parquet'):
    yield from _parquet(path, text_field)
    return
  with open(path, 'rb') as f:
    content = _decoded(path, f.read())
  if path.endswith('.txt'):
    yield 0, content
    return
  for number, line in enumerate(content.split('\n'), 1):
    if not line.strip():
      continue
    try:
      obj = json.loads(line)
    except json.JSONDecodeError as e:
      raise CorpusError(f'{path}:{number}: not JSON ({e.msg}); each line of '
                        'a .jsonl file holds one JSON object') from None
    if not isinstance(obj, dict) or text_field not in obj:
      keys = sorted(obj) if isinstance(obj, dict) else type(obj).__name__
      raise CorpusError(f'{path}:{number}: no field {text_field!r} (found '
                        f'{keys}); set config.data.text_field to the field '
                        'that holds the text')
    if not isinstance(obj[text_field], str):
      raise CorpusError(f'{path}:{number}: field {text_field!r} holds '
                        f'{type(obj[text_field]).__name__}, not text')
    yield number, obj[text_field]


def field_values(path: str, field: str):
  """(line or row number, value) of `field` (a JSONL field or parquet
  column: text) in every document of one file, numbered as `documents`
  numbers them. A `.txt` file, a document without the field, or a value
  that is not text is an error naming the file, the line and the fix."""
  fix = (f'set config.data.source_field to the field that names each '
         "document's source, or add it to every document")
  if path.endswith('.txt'):
    raise CorpusError(f'{path}: a .txt file has no fields, but '
                      f'config.data.source_field={field!r} reads each '
                      "document's source from one; give .jsonl or .parquet "
                      'files, or unset data.source_field')
  if path.endswith('.parquet'):
    import pyarrow.parquet as pq  # pylint: disable=import-outside-toplevel
    names = pq.read_schema(path).names
    if field not in names:
      raise CorpusError(f'{path}: no column {field!r} (found {names}); '
                        + fix)
    rows = enumerate(pq.read_table(path, columns=[field]).column(0)
                     .to_pylist())
  else:
    with open(path, 'rb') as f:
      content = _decoded(path, f.read())
    rows = []
    for number, line in enumerate(content.split('\n'), 1):
      if line.strip():
        obj = json.loads(line)  # `documents` names a bad line first.
        if not isinstance(obj, dict) or field not in obj:
          keys = sorted(obj) if isinstance(obj, dict) else type(obj).__name__
          raise CorpusError(f'{path}:{number}: no field {field!r} (found '
                            f'{keys}); {fix}')
        rows.append((number, obj[field]))
  for number, value in rows:
    if not isinstance(value, str):
      raise CorpusError(f'{path}:{number}: field {field!r} holds '
                        f'{type(value).__name__} {value!r}, not text; name '
                        'each source with a string')
    yield number, value


def source_values(files: 'Files', field: str) -> tuple[str, ...]:
  """The sorted distinct values of `field` over every document of
  `files` (`field_values`): the sources of a mixed corpus of your files."""
  return tuple(sorted({v for _, paths in files.groups for p in paths
                       for _, v in field_values(p, field)}))


def source_files(files: 'Files', field: str, value: str) -> 'Files':
  """`files` as the dataset of the documents whose `field` is `value`."""
  return dataclasses.replace(files, options=files.options + (
      ('source_field', field), ('source', value)))


def _parquet(path: str, text_field: str):
  try:
    import pyarrow.parquet as pq  # pylint: disable=import-outside-toplevel
  except ImportError:
    raise CorpusError(f'{path}: reading .parquet needs pyarrow, which is not '
                      'installed: `pip install pyarrow`, or convert the file '
                      'to .jsonl') from None
  try:
    schema = pq.read_schema(path)
  except Exception as e:  # pylint: disable=broad-except
    raise CorpusError(f'{path}: not a readable parquet file ({e})') from None
  if text_field not in schema.names:
    raise CorpusError(f'{path}: no column {text_field!r} (found '
                      f'{schema.names}); set config.data.text_field to the '
                      'column that holds the text')
  column = pq.read_table(path, columns=[text_field]).column(0).to_pylist()
  for row, value in enumerate(column):
    if not isinstance(value, str):
      raise CorpusError(f'{path}: row {row} of column {text_field!r} holds '
                        f'{type(value).__name__}, not text')
    yield row, value


def record_diff(old: dict, new: dict) -> list[str]:
  """What differs between two `Files.record`s, one line per file: added,
  removed, or changed (its size and sha256)."""
  out = [f'{k}: {old.get(k)!r} -> {new.get(k)!r}' for k in ('dataset',
                                                            'options')
         if old.get(k) != new.get(k)]
  groups = sorted(set(old.get('files', {})) | set(new.get('files', {})))
  for g in groups:
    a = {f['path']: f for f in old.get('files', {}).get(g, [])}
    b = {f['path']: f for f in new.get('files', {}).get(g, [])}
    where = '' if g == 'all' else f' ({g})'
    out += [f'removed{where}: {p}' for p in sorted(a.keys() - b.keys())]
    out += [f'added{where}: {p}' for p in sorted(b.keys() - a.keys())]
    out += [f'changed{where}: {p} ({a[p]["bytes"]} bytes, sha256 '
            f'{a[p]["sha256"][:12]} -> {b[p]["bytes"]} bytes, '
            f'{b[p]["sha256"][:12]})' for p in sorted(a.keys() & b.keys())
            if a[p] != b[p]]
  return out
