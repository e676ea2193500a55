"""Your own text (data.name='kd_text'): files a user writes, the quickstart-
style pipeline on them (a teacher, then a student distilled from it) with
an HF tokenizer.json (data.tokenizer='hf', a byte-level BPE the test
trains), the 90/5/5 split by document hash, the record of the files that
refuses a resume on a changed corpus, and each bad input as a one-line
error naming the file before any training."""
import hashlib
import json
import os
import random

import numpy as np
import pytest

from configs.lm import distill
from kd import config as kd_config
from kd import main
from kd import runs
from kd import train
from kd.data import corpus
from kd.data import text

WORDS = ('the teacher reads every line and the student learns to write as '
         'the teacher does from the files of its own corpus').split()


def _write_corpus(root, docs=90):
  """`docs` JSONL documents in two files, three .txt documents and an
  unrelated file the globs leave out."""
  rng = random.Random(0)
  root.mkdir(exist_ok=True)
  lines = [json.dumps({'text': ' '.join(rng.choice(WORDS) for _ in range(40))
                       + f' {i}.', 'id': i}) for i in range(docs)]
  (root / 'a.jsonl').write_text('\n'.join(lines[:docs // 2]) + '\n')
  (root / 'b.jsonl').write_text('\n'.join(lines[docs // 2:]) + '\n\n')
  for i in range(3):
    (root / f'note{i}.txt').write_text(f'Note {i}: naïve café ' * 20)
  (root / 'README.md').write_text('not a document')
  return f'{root}/*.jsonl,{root}/*.txt'


def _run_config(files, data_dir, **data):
  c = kd_config.run_config()
  c.data.update(name='kd_text', files=files, data_dir=data_dir, seq_len=32,
                augment=False, **data)
  c.model.update(name='transformer_lm', kwargs=dict(
      d_model=16, num_layers=1, num_heads=2, max_len=64))
  return c


def _gpt2_style_tokenizer(folder, texts):
  """A byte-level BPE as GPT-2's: <|endoftext|> is both bos and eos, no
  pad; tokenizer.json + tokenizer_config.json as an HF folder holds them."""
  import tokenizers as tk  # pylint: disable=import-outside-toplevel
  tok = tk.Tokenizer(tk.models.BPE())
  tok.pre_tokenizer = tk.pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = tk.decoders.ByteLevel()
  tok.train_from_iterator(texts, tk.trainers.BpeTrainer(
      vocab_size=320, special_tokens=['<|endoftext|>'], show_progress=False,
      initial_alphabet=tk.pre_tokenizers.ByteLevel.alphabet()))
  folder.mkdir()
  tok.save(str(folder / 'tokenizer.json'))
  (folder / 'tokenizer_config.json').write_text(json.dumps(
      {'bos_token': '<|endoftext|>', 'eos_token': '<|endoftext|>'}))
  return str(folder / 'tokenizer.json')


def _pipeline(files, data_dir, tokenizer_path):
  c = distill.get_config('dataset=kd_text,seq_len=32,batch=8,teacher_size='
                         'tiny,student_size=tiny_half,teacher_steps=20,'
                         'steps=10,method=forward_kl,tokenizer=hf')
  for stage in c.stages.values():
    stage.data.update(files=files, data_dir=data_dir)
    stage.log_every = 5
    stage.wandb.mode = 'disabled'
  # The student reads the teacher run's copy.
  c.stages.teacher.data.tokenizer_path = tokenizer_path
  return c


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp('tfds_kd_text'))


@pytest.fixture(scope='module')
def pipeline_run(tmp_path_factory, data_dir):
  root = tmp_path_factory.mktemp('kd_text')
  files = _write_corpus(root / 'corpus')
  tok_path = _gpt2_style_tokenizer(root / 'hf', [
      p.read_text() for p in (root / 'corpus').iterdir()])
  workdir = str(root / 'run')
  # run_pipeline changes the config it runs.
  config = lambda: _pipeline(files, data_dir, tok_path)
  return root, config, workdir, main.run_pipeline(config(), workdir)


def test_teacher_then_student_train_on_your_files(pipeline_run):
  root, _, workdir, summary = pipeline_run
  assert summary['teacher/test_bits_per_byte'] < 8  # Uniform bytes: 8.
  assert np.isfinite(summary['student/test_bits_per_byte'])
  assert summary['student/teacher_step'] == 20
  # Each stage records the files it read (relative to the corpus folder).
  for stage in ('teacher', 'student'):
    with open(os.path.join(workdir, stage, 'dataset.json')) as f:
      record = json.load(f)
    entries = {e['path']: e for e in record['files']['all']}
    assert sorted(entries) == ['a.jsonl', 'b.jsonl', 'note0.txt',
                               'note1.txt', 'note2.txt']
    data = (root / 'corpus' / 'a.jsonl').read_bytes()
    assert entries['a.jsonl'] == {'path': 'a.jsonl', 'bytes': len(data),
                                  'sha256': hashlib.sha256(data).hexdigest()}


def test_documents_split_90_5_5_by_the_hash_of_their_text(pipeline_run,
                                                          data_dir):
  root, config, _, _ = pipeline_run
  src = text.source(config().stages.teacher.data)
  got = {s: sorted(text.documents(src, s, data_dir))
         for s in ('train', 'validation', 'test')}
  docs = [json.loads(line)['text'] for name in ('a.jsonl', 'b.jsonl')
          for line in (root / 'corpus' / name).read_text().splitlines()
          if line]
  docs += [(root / 'corpus' / f'note{i}.txt').read_text() for i in range(3)]
  want = {s: [] for s in got}
  for d in docs:
    bucket = int.from_bytes(hashlib.sha256(d.encode()).digest()[:8],
                            'big') % 100
    want['train' if bucket < 90 else 'validation' if bucket < 95 else
         'test'].append(d)
  assert got == {s: sorted(v) for s, v in want.items()}
  assert all(got.values())  # This corpus has documents in every split.


def test_a_changed_corpus_refuses_to_resume_naming_the_file(pipeline_run):
  root, config, workdir, _ = pipeline_run
  path = root / 'corpus' / 'b.jsonl'
  before = path.read_text()
  try:
    path.write_text(before.replace(' 60.', ' sixty.'))
    with pytest.raises(runs.ConfigMismatchError, match=(
        r'holds a run of other files than config.data names now .*'
        r'dataset.json.*\n  changed: b.jsonl \(\d+ bytes, sha256 \w+ -> \d+ '
        r'bytes, \w+\)\nRestore those files, use a new --workdir')):
      main.run_pipeline(config(), workdir)
    (root / 'corpus' / 'c.txt').write_text('one more')
    path.write_text(before)
    with pytest.raises(runs.ConfigMismatchError, match=r'\n  added: c.txt\n'):
      main.run_pipeline(config(), workdir)
  finally:
    path.write_text(before)
    if (root / 'corpus' / 'c.txt').exists():
      os.remove(root / 'corpus' / 'c.txt')
  # The files as recorded: the finished stages are reused.
  assert main.run_pipeline(config(), workdir)['student/teacher_step'] == 20


def test_split_files_name_the_test_split(tmp_path, data_dir):
  (tmp_path / 'train').mkdir()
  (tmp_path / 'train' / 'a.txt').write_text('train text ' * 50)
  (tmp_path / 'held.jsonl').write_text(
      json.dumps({'body': 'held out'}) + '\n' + json.dumps({'body': 'too'}))
  c = _run_config(f'{tmp_path}/train/*.txt', data_dir, text_field='body',
                  files_test=f'{tmp_path}/held.jsonl')
  train.preflight(c)
  src = text.source(c.data)
  assert text.documents(src, 'train', data_dir) == ['train text ' * 50]
  # The text field applies to every split's JSONL files.
  assert sorted(text.documents(src, 'test', data_dir)) == ['held out', 'too']
  with pytest.raises(kd_config.ConfigError, match=(
      r"config.data.eval_split='validation': the validation split of your "
      r"files holds no document \(documents per split: \{'train': 1, "
      r"'validation': 0, 'test': 2\}\); add documents, or give the split "
      r'files of its own \(--config.data.files_validation=GLOB\)')):
    c.data.eval_split = 'validation'
    train.preflight(c)


def test_parquet_rows_are_documents(tmp_path, data_dir):
  pa = pytest.importorskip('pyarrow')
  import pyarrow.parquet as pq  # pylint: disable=import-outside-toplevel
  pq.write_table(pa.table({'text': ['first row', 'second row'],
                           'n': [1, 2]}), tmp_path / 'rows.parquet')
  assert list(corpus.documents(str(tmp_path / 'rows.parquet'))) == [
      (0, 'first row'), (1, 'second row')]
  with pytest.raises(corpus.CorpusError, match=(
      r"rows.parquet: no column 'body' \(found \['text', 'n'\]\); set "
      'config.data.text_field')):
    list(corpus.documents(str(tmp_path / 'rows.parquet'), 'body'))


def _bad(tmp_path, name, content: bytes):
  (tmp_path / name).write_bytes(content)
  return f'{tmp_path}/*'


@pytest.mark.parametrize('name,content,message', [
    ('a.txt', 'caf\u00e9 ok\nna'.encode() + b'\xefve', r'a.txt: not UTF-8 at '
     r"byte 11 \(line 2: b'\\xefve'\); convert the file to UTF-8"),
    ('a.jsonl', b'{"text": "fine"}\n{"body": "no text"}\n', r"a.jsonl:2: no "
     r"field 'text' \(found \['body'\]\); set config.data.text_field"),
    ('a.jsonl', b'{"text": "fine"}\n\n{"text": 3}\n', r"a.jsonl:3: field "
     r"'text' holds int, not text"),
    ('a.jsonl', b'{"text": "fine"}\n{"text": \n', r'a.jsonl:2: not JSON '
     r'\(Expecting value\)'),
    ('a.csv', b'text\n', r"a.csv \(from config.data.files='.*'\): not a "
     r'.txt/.jsonl/.parquet file'),
    ('a.jsonl', b'\n\n', r'kd_text: no document in the training split of '
     r'.* \(train 0, validation 0, test 0\); give more files'),
])
def test_bad_files_are_refused_at_preflight_naming_file_and_place(
    tmp_path, data_dir, name, content, message):
  with pytest.raises(corpus.CorpusError, match=message):
    train.preflight(_run_config(_bad(tmp_path, name, content), data_dir))


def test_an_empty_glob_is_refused_naming_it(tmp_path, data_dir):
  (tmp_path / 'a.txt').write_text('text')
  with pytest.raises(corpus.CorpusError, match=(
      r"config.data.files_test: '.*/held/\*.txt' matches no file \(from .*\);"
      ' fix the glob')):
    train.preflight(_run_config(f'{tmp_path}/a.txt', data_dir,
                                files_test=f'{tmp_path}/held/*.txt'))
  with pytest.raises(kd_config.ConfigError, match=(
      r"config.data.files='': kd_text reads your files; set "
      r"--config.data.files='corpus/\*.jsonl'")):
    kd_config.validate(_run_config('', data_dir))


def test_the_hf_tokenizer_is_kept_and_counts_the_bytes_by_hand(pipeline_run,
                                                               data_dir):
  root, config, workdir, summary = pipeline_run
  source = (root / 'hf' / 'tokenizer.json').read_bytes()
  for stage in ('teacher', 'student'):  # The student's copied from the teacher's.
    kept = os.path.join(workdir, stage)
    with open(os.path.join(kept, 'tokenizer.json'), 'rb') as f:
      assert f.read() == source
    assert os.path.exists(os.path.join(kept, 'tokenizer_config.json'))
  c = config().stages.teacher
  tok = text.run_tokenizer(c, os.path.join(workdir, 'teacher'))
  eot = tok.encode(['<|endoftext|>'])[0]
  assert (tok.bos_id, tok.eos_id, tok.pad_id) == (eot[0],) * 3
  src = text.source(c.data)
  docs = text.documents(src, 'test', data_dir)
  batches = list(text.eval_batches(src, batch_size=4, seq_len=32, tok=tok,
                                   data_dir=data_dir))
  # By hand: every byte of the test documents once; every token of them and
  # one eos each as a target (the bos after an eos, the same id, is not).
  assert sum(int(b['bytes'].sum()) for b in batches) == sum(
      len(d.encode('utf-8')) for d in docs)
  assert sum(int(b['mask'].sum()) for b in batches) == sum(
      len(t) + 1 for t in tok.encode(docs))
  targets = sum(len(t) + 1 for t in tok.encode(docs))
  assert summary['teacher/test_examples'] == targets
  # The run's bits per byte divides the same summed loss by those bytes.
  nll = summary['teacher/test_loss'] * targets
  assert summary['teacher/test_bits_per_byte'] == pytest.approx(
      nll / np.log(2) / sum(len(d.encode('utf-8')) for d in docs), rel=1e-5)
  # A student of another vocabulary is refused, as for kd's own tokenizers.
  student = config().stages.student
  student.distill.teacher.workdir = os.path.join(workdir, 'teacher')
  student.data.tokenizer = 'byte'
  with pytest.raises(kd_config.ConfigError, match=(
      r"the teacher \(.*teacher\) reads a vocabulary of 320 tokens \(hf\), "
      r"the student 259 \(byte\): use the teacher's tokenizer: set "
      r"config.data.tokenizer='hf'")):
    train.check_same_tokens(student, text.ByteTokenizer())


def test_sentencepiece_pieces_and_byte_fallback_count_their_bytes(tmp_path):
  """Llama 2 / Mistral style: '▁' is a space, put before every document
  (not a byte of the text), and <0xNN> pieces are one byte each."""
  import tokenizers as tk  # pylint: disable=import-outside-toplevel
  from tokenizers import decoders, normalizers  # pylint: disable=import-outside-toplevel
  vocab = {'<unk>': 0, '<s>': 1, '</s>': 2}
  vocab.update({f'<0x{b:02X}>': 3 + b for b in range(256)})
  for piece in ['\u2581', *'Hdelorw', '\u2581H', 'el']:
    vocab[piece] = len(vocab)
  tok = tk.Tokenizer(tk.models.BPE(vocab, [('\u2581', 'H'), ('e', 'l')],
                                   unk_token='<unk>', byte_fallback=True))
  tok.normalizer = normalizers.Sequence([normalizers.Prepend('\u2581'),
                                         normalizers.Replace(' ', '\u2581')])
  tok.decoder = decoders.Sequence([
      decoders.Replace('\u2581', ' '), decoders.ByteFallback(),
      decoders.Fuse(), decoders.Strip(' ', 1, 0)])
  # <s> and </s> as ordinary pieces (older files list them so): not text.
  tok.save(str(tmp_path / 'tokenizer.json'))
  (tmp_path / 'tokenizer_config.json').write_text(json.dumps(
      {'bos_token': '<s>', 'eos_token': {'content': '</s>'},
       'pad_token': None}))
  h = text.tokenizer('hf', path=str(tmp_path / 'tokenizer.json'))
  assert (h.bos_id, h.eos_id, h.pad_id) == (1, 2, 2)
  assert list(h.token_bytes[:3]) == [len('<unk>'), 0, 0]
  doc = 'Hello wörld'
  ids = h.encode([doc])[0]
  assert tok.encode(doc, add_special_tokens=False).tokens == [
      '\u2581H', 'el', 'l', 'o', '\u2581', 'w', '<0xC3>', '<0xB6>', 'r', 'l',
      'd']
  # By hand: 2 + 2 + 1 + 1 + 1 + 1 + 1 + 1 + 1 + 1 + 1, less the prefix.
  assert list(h.token_bytes[ids]) == [2, 2, 1, 1, 1, 1, 1, 1, 1, 1, 1]
  row = np.concatenate([[h.bos_id], ids, [h.eos_id]])[None]
  batch = text._batch(row, h)  # pylint: disable=protected-access
  assert batch['bytes'].sum() == len(doc.encode()) == 12
  assert batch['mask'].sum() == len(ids) + 1


def test_a_litert_sidecar_reloads_the_hf_tokenizer_with_its_ids(pipeline_run,
                                                                tmp_path):
  """kd.export's LiteRT file keeps an 'hf' run's tokenizer.json beside it;
  the special ids are the sidecar's (no tokenizer_config.json there)."""
  from kd.export import lm as lm_export  # pylint: disable=import-outside-toplevel
  root, _, _, _ = pipeline_run
  model = tmp_path / 'student.tflite'
  (tmp_path / 'student.tflite.tokenizer.json').write_bytes(
      (root / 'hf' / 'tokenizer.json').read_bytes())
  (tmp_path / 'student.tflite.json').write_text(json.dumps({'tokenizer': {
      'kind': 'hf', 'file': 'student.tflite.tokenizer.json',
      'vocab_size': 400, 'bos_id': 0, 'eos_id': 0, 'pad_id': 0}}))
  tok = lm_export.sidecar_tokenizer(str(model))
  assert (tok.vocab_size, tok.bos_id, tok.eos_id, tok.pad_id) == (400, 0, 0, 0)
  assert tok.decode(tok.encode(['naïve café'])[0]) == 'naïve café'


def test_a_tokenizer_that_drops_bytes_is_refused_at_preflight(tmp_path,
                                                              data_dir):
  """Bits per byte would be wrong: a byte-level BPE trained without the
  byte alphabet cannot spell 'ö' (nor any letter it never saw)."""
  import tokenizers as tk  # pylint: disable=import-outside-toplevel
  tok = tk.Tokenizer(tk.models.BPE())
  tok.pre_tokenizer = tk.pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = tk.decoders.ByteLevel()
  tok.train_from_iterator(['plain ascii text'], tk.trainers.BpeTrainer(
      vocab_size=40, special_tokens=['</s>'], show_progress=False))
  tok.save(str(tmp_path / 'tokenizer.json'))
  (tmp_path / 'tokenizer_config.json').write_text('{"eos_token": "</s>"}')
  (tmp_path / 'a.txt').write_text('plain ascii text')
  c = _run_config(f'{tmp_path}/a.txt', data_dir, tokenizer='hf',
                  tokenizer_path=str(tmp_path))
  with pytest.raises(kd_config.ConfigError, match=(
      r"config.data.tokenizer_path='.*': .*tokenizer.json: this tokenizer "
      r"does not keep every byte of the text \('Hello  wörld!.*' decodes to "
      r"'.*', its tokens count \d+ bytes, not 45\), so bits per byte cannot "
      'be counted')):
    train.preflight(c)


def test_your_text_resumes_exactly(pipeline_run, data_dir):
  """A resumed run's batches are those an uninterrupted one draws from the
  same step on (the prepared dataset is the files' own: same documents,
  same order)."""
  _, config, _, _ = pipeline_run
  src = text.source(config().stages.teacher.data)
  kw = dict(batch_size=4, seq_len=16, seed=3, data_dir=data_dir)
  whole = [b for _, b in zip(range(40), text.packed_batches(src, **kw))]
  later = text.packed_batches(src, start_step=33, **kw)
  for want in whole[33:]:
    got = next(later)
    for key in ('tokens', 'mask', 'bytes'):
      np.testing.assert_array_equal(got[key], want[key])


def test_a_bpe_tokenizer_trains_on_your_training_split(pipeline_run, data_dir,
                                                       tmp_path):
  _, config, _, _ = pipeline_run
  c = config().stages.teacher
  c.data.update(tokenizer='bpe', vocab_size=300, tokenizer_path='')
  tok = text.run_tokenizer(c, str(tmp_path))
  assert tok.vocab_size == 300 and (tmp_path / 'tokenizer.json').exists()
  train_docs = text.documents(text.source(c.data), 'train', data_dir)
  # Merges learnt from these documents: fewer tokens than bytes.
  ids = tok.encode(train_docs[:5])
  assert sum(map(len, ids)) < 0.6 * sum(len(d.encode()) for d in
                                        train_docs[:5])
  assert [tok.decode(i) for i in ids] == train_docs[:5]


def test_a_corpus_moved_with_its_globs_resumes(pipeline_run, tmp_path):
  """The files' content is their identity (dataset.json), not the globs:
  a corpus copied elsewhere reuses the finished stages."""
  import shutil  # pylint: disable=import-outside-toplevel
  root, config, workdir, summary = pipeline_run
  shutil.copytree(root / 'corpus', tmp_path / 'moved')
  moved = config()
  for stage in moved.stages.values():
    stage.data.files = f'{tmp_path}/moved/*.txt,{tmp_path}/moved/*.jsonl'
  assert main.run_pipeline(moved, workdir) == summary
