"""kd_gensim: gensim's English test data (Lee corpus, Wikipedia) as text."""
import bz2
import sys

import numpy as np
import pytest

from kd.data import mlm
from kd.data import text
from kd.data import text_builders as tb
from kd.data import wikitext

TINY = 'kd_gensim/tiny'
SPLITS = ('train', 'validation', 'test')


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp('tfds_gensim'))


@pytest.fixture(scope='module')
def every_document():
  return tb.gensim_documents(tb.gensim_data_dir())


def _page(title, body, ns=0, redirect=''):
  return (f'<page><title>{title}</title><ns>{ns}</ns><id>1</id>{redirect}'
          f'<revision><id>2</id><text xml:space="preserve">{body}</text>'
          f'</revision></page>')


def test_plain_strips_each_kind_of_markup():
  markup = (
      "{{Infobox|name={{nowrap|X}}|a=1}}\n'''Aa''' is a [[river|stream]] in "
      "[[France]] ({{lang|fr|Aa}}), {{convert|89|km|mi|abbr=on}} long.<ref>"
      "{{cite web|url=http://x}}</ref><ref name=b/> See [http://a.org the "
      "site].<!-- hidden -->\n[[File:Aa.jpg|thumb|The [[Aa]] at [1.1] "
      "km]]\n== Course ==\n* It&nbsp;flows <b>north</b>&ndash;west.\n"
      "{| class=wikitable\n|-\n| {{flag|France}} || 1\n|}\n\n\n__NOTOC__\n"
      "[[Category:Rivers]] [[de:Aa (Fluss)]] [[wikt:aa|Aa]] is "
      "[[:fr:Aa|French]] for [[Star Trek: Aa]].")
  assert wikitext.plain(markup) == (
      'Aa is a stream in France (Aa), 89 km long. See the site.\n\nCourse\n'
      'It flows north\u2013west.\n\nAa is French for Star Trek: Aa.')


def test_articles_are_main_namespace_pages_with_text(tmp_path):
  path = str(tmp_path / 'dump.xml.bz2')
  ns = 'http://www.mediawiki.org/xml/export-0.10/'
  xml = (f'<mediawiki xmlns="{ns}">'
         + _page('Aa', "'''Aa''' flows.")
         + _page('AA', '#REDIRECT [[Aa]]', redirect='<redirect title="Aa" />')
         + _page('Wikipedia:About', 'About.', ns=4)
         + _page('Empty', '') + _page('Ab', 'Ab &amp;lt;3.')
         + '</mediawiki>')
  with bz2.open(path, 'wt', encoding='utf-8') as f:
    f.write(xml)
  assert list(wikitext.articles(path)) == [('Aa', "'''Aa''' flows."),
                                           ('Ab', 'Ab &lt;3.')]


def test_documents_are_the_lee_lines_and_clean_wikipedia_articles(
    every_document):
  docs = every_document
  prefix = lambda p: p.rsplit('/', 1)[0] if p.startswith('lee/') else 'wiki'
  counts = {k: sum(prefix(p) == k for p in docs)
            for k in ('lee/background', 'lee/test', 'wiki')}
  assert counts == {'lee/background': 293, 'lee/test': 50, 'wiki': 106}
  assert docs['lee/background/0001'].startswith(
      'Hundreds of people have been forced to vacate their homes in the '
      'Southern Highlands of New South Wales')
  assert docs['lee/test/0001'].startswith(
      'The national executive of the strife-torn Democrats last night '
      'appointed little-known West Australian senator Brian Greig')
  rated = ' '.join(t for p, t in docs.items() if p.startswith('lee/test'))
  assert '\u00a3' in rated and '\ufffd' not in rated  # Latin-1 on disk.
  assert len(set(docs.values())) == len(docs)  # Repeated lines kept once.
  assert docs['wiki/Anarchism'].startswith(
      'Anarchism is a political philosophy that advocates self-governed '
      'societies based on voluntary institutions. These are often described '
      'as stateless societies, although')
  for path, doc in docs.items():
    if path.startswith('wiki/'):
      assert not any(m in doc for m in ('{{', '}}', '[[', ']]', '<ref',
                                        '&nbsp;', "'''")), path
      assert len(doc) > 300, path
  assert sum(len(t.encode()) for t in docs.values()) == pytest.approx(
      3.29e6, rel=0.01)


def test_tiny_splits_by_path_hash(data_dir, every_document):
  b = text.builder(TINY, data_dir)
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  got = {}
  for split in SPLITS:
    examples = list(tfds.as_numpy(b.as_dataset(split=split)))
    assert 0 < len(examples) <= 24
    got[split] = {e['path'].decode(): e['text'].decode() for e in examples}
    for path, doc in got[split].items():
      assert tb.split_of(path) == split
      assert doc == every_document[path] and len(doc.encode()) <= 8_000
  assert len(got['train']) == 24
  assert any(p.startswith('wiki/') for s in got.values() for p in s)
  # The same documents, in the same order, through kd.data.text.
  assert text.documents(TINY, 'test', data_dir) == list(got['test'].values())
  assert 'gensim' not in sys.modules  # Its data read in place, not imported.


def test_a_wordpiece_tokenizer_trains_on_it_and_batches_come(data_dir):
  tok = mlm.tokenizer(name=TINY, vocab_size=600, data_dir=data_dir)
  assert 300 < tok.vocab_size <= 600
  train = text.documents(TINY, 'train', data_dir)
  ids = np.concatenate(tok.encode(train))
  assert (ids == tok.unk_id).mean() < 0.002
  batch = next(mlm.mlm_batches(TINY, batch_size=2, seq_len=32, seed=0,
                               tok=tok, data_dir=data_dir))
  assert batch['image'].shape == (2, 32)
  assert (batch['image'][:, 0] == tok.cls_id).all()


def test_gensim_missing_names_the_pip_command(tmp_path, monkeypatch):
  monkeypatch.setattr(tb, 'gensim_data_dir', lambda: None)
  with pytest.raises(tb.CorpusError, match=r'^kd_gensim: gensim is not '
                     r'installed. It reads the test data of the gensim '
                     r'package: `pip install gensim==4.4.0`'):
    text.builder('kd_gensim', str(tmp_path / 'tfds'))
  monkeypatch.setattr(tb, 'gensim_data_dir', lambda: str(tmp_path))
  with pytest.raises(tb.CorpusError, match=r'lacks lee_background.cor, '
                     r'lee.cor, enwiki-.*-shortened.bz2 \(another gensim '
                     r'version\?\). .*pip install gensim==4.4.0'):
    text.builder('kd_gensim', str(tmp_path / 'tfds'))
