"""Datasets through tensorflow-datasets (see `input_pipeline`; text corpora
for language models: `text`, for encoders: `mlm` (masked-LM pretraining)
and `classify` (labelled documents); your own files: `corpus` (text, kd_text) and
`image_folder`; an HF tokenizer.json: `hf_tokenizer`)."""
import dataclasses
import types

from kd.data.input_pipeline import (DatasetNotPreparedError, DatasetSpec,
                                    OFFLINE, builder, eval_batches,
                                    example_batches, indexed_batches,
                                    load_split, names, num_examples, spec)
from kd.data import align
from kd.data import classify
from kd.data import corpus
from kd.data import hf_tokenizer
from kd.data import image_folder
from kd.data import mixed
from kd.data import mlm
from kd.data import paired
from kd.data import text
from kd.names import ENCODER_TASKS


def datasets() -> list[str]:
  """Every dataset kd reads: the image and signal datasets (`names`), and
  the text corpora (each also as '<name>/tiny')."""
  return sorted(names() + list(text.TEXT))


def known(name: str) -> bool:
  return name in names() or text.is_text(name)


def files_of(config) -> 'corpus.Files | None':
  """The files of a dataset of your own (kd_text, image_folder); None for
  the others."""
  d = config.data
  if d.name == 'kd_text':
    return corpus.text_files(d)
  if d.name == input_pipeline.IMAGE_FOLDER:
    return image_folder.folder_files(d.data_dir, d.image_size)
  return None


def dataset_record(config) -> dict | None:
  """What a run of your own files records of them (`kd.runs.check_dataset`):
  their names, sizes and sha256, and your images' normalisation."""
  files = files_of(config)
  if files is None:
    return None
  record = files.record
  if config.data.name == input_pipeline.IMAGE_FOLDER:
    s = run_spec(config)
    record['normalisation'] = {'mean': list(s.mean), 'std': list(s.std)}
  return record


def encoder_task(config) -> bool:
  """Whether a run trains an encoder on text (data.task 'mlm' or
  'classify', WordPiece tokens)."""
  return (text.is_text(config.data.name)
          and config.data.get('task', 'lm') in ENCODER_TASKS)


def run_tokenizer(config, run_dir: str | None = None,
                  from_teacher: bool = True):
  """A text run's tokenizer (kept in `run_dir`): the encoder tasks'
  WordPiece (`mlm.run_tokenizer`), else `text.run_tokenizer`'s."""
  if encoder_task(config):
    return mlm.run_tokenizer(config, run_dir)
  return text.run_tokenizer(config, run_dir, from_teacher)


def run_spec(config, tok=None) -> DatasetSpec:
  """The spec of `config.data`: for a text dataset, of `tok`'s tokens at
  `config.data.seq_len` (`run_tokenizer` gives `tok`); an encoder task's
  needs no tokenizer: its vocabulary is data.vocab_size, and a classifier's
  classes are model.kwargs.num_labels, else its dataset's labels
  (`classify.classes`; `kd.train.build` checks the two agree)."""
  d = config.data
  if not known(d.name):
    raise ValueError(f'unknown dataset {d.name!r}; valid: '
                     f'{", ".join(datasets())}')
  if encoder_task(config):
    vocab = types.SimpleNamespace(vocab_size=d.vocab_size)
    s = text.spec(d.name, d.seq_len, vocab)
    if d.task == 'mlm':
      return s
    # A run's classifier has its labels; a new one takes its dataset's.
    labels = config.model.kwargs.get('num_labels') or len(classify.classes(
        text.source(d), d.data_dir or None))
    return dataclasses.replace(s, num_classes=labels)
  if text.is_text(d.name):
    return text.spec(d.name, d.seq_len, tok or text.run_tokenizer(config))
  return spec(d.name, image_size=d.image_size or None,
              data_dir=d.data_dir or None)
