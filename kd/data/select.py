"""The batches a run's config selects: its training stream (an image or
signal dataset, a text corpus, or stored sequence-level KD data) and its
test split."""
import itertools
import json
from typing import Callable

import jax
import numpy as np

from kd.data import classify
from kd.data import input_pipeline
from kd.data import mixed
from kd.data import mlm
from kd.data import paired
from kd.data import seqkd
from kd.data import text


def data_args(config) -> dict:
  """The arguments every `kd.data` loader takes from `config.data`."""
  d = config.data
  return dict(data_dir=d.data_dir or None, image_size=d.image_size or None,
              download=d.download)


def stream_key(config) -> str:
  """Everything of `config` that `train_batches` reads: runs of equal keys
  draw the same batches."""
  return json.dumps([config.data.to_dict(), config.batch_size, config.seed,
                     config.steps, bool(config.distill.teacher.cache)],
                    sort_keys=True)


def train_batches(config, parallel, start_step: int, tok=None,
                  seqkd_dir: str = '', teacher_tok=None):
  """This process's training batches of steps `start_step + 1` to
  `config.steps` (for a text dataset, packed sequences of `tok`'s tokens;
  with `seqkd_dir`, the teacher's generations stored there by
  `kd.seqkd.build`; with `teacher_tok`, a teacher's other tokenizer, each
  row in both tokenizations, `kd.data.paired`; a tuple of them, one per
  source of a mixed corpus or None, each row with its source's,
  `kd.data.mixed.paired_batches`). None past the last step, so
  reading ahead (prefetch) never asks a teacher cache for rows the run does
  not train on."""
  return itertools.islice(_endless_batches(config, parallel, start_step, tok,
                                           seqkd_dir, teacher_tok),
                          max(config.steps - start_step, 0))


def _endless_batches(config, parallel, start_step: int, tok, seqkd_dir: str,
                     teacher_tok=None):
  d = config.data
  batch_size = parallel.check_batch_size(config.batch_size)
  if isinstance(teacher_tok, tuple):  # Routed teachers of several.
    return mixed.paired_batches(
        mixed.sources(d), batch_size=batch_size, seq_len=d.seq_len,
        teacher_seq_len=paired.teacher_seq_len(config), seed=config.seed,
        tok=tok, teacher_toks=teacher_tok, data_dir=d.data_dir or None,
        start_step=start_step)
  if teacher_tok is not None:
    return paired.paired_batches(
        text.source(d), batch_size=batch_size, seq_len=d.seq_len,
        teacher_seq_len=paired.teacher_seq_len(config),
        seed=config.seed, tok=tok, teacher_tok=teacher_tok,
        data_dir=d.data_dir or None, start_step=start_step)
  if seqkd_dir:
    return seqkd.generated_batches(seqkd_dir, batch_size=batch_size,
                               seed=config.seed, tok=tok,
                               start_step=start_step)
  task = d.get('task', 'lm') if text.is_text(d.name) else ''
  if task in ('mlm', 'classify'):
    make = mlm.mlm_batches if task == 'mlm' else classify.classify_batches
    return make(text.source(d), batch_size=batch_size, seq_len=d.seq_len,
                seed=config.seed, tok=tok, start_step=start_step,
                data_dir=d.data_dir or None)
  if task and mixed.is_mixed_data(d):
    return map(text.model_batch, mixed.packed_batches(
        mixed.sources(d), batch_size=batch_size, seq_len=d.seq_len, seed=config.seed,
        tok=tok, data_dir=d.data_dir or None, start_step=start_step,
        fixed_packing=bool(config.distill.teacher.cache)))
  if task:
    return map(text.model_batch, text.packed_batches(
        text.source(d), batch_size=batch_size, seq_len=d.seq_len, seed=config.seed,
        tok=tok, data_dir=d.data_dir or None, start_step=start_step,
        fixed_packing=bool(config.distill.teacher.cache)))
  return input_pipeline.example_batches(
      d.name, batch_size=batch_size, seed=config.seed, augment=d.augment,
      start_step=start_step, shuffle_buffer=d.shuffle_buffer,
      process_split=d.process_split,
      exclude_classes=tuple(d.exclude_classes), **data_args(config))


def eval_batches(config, tok=None):
  """This process's part of the test split, once."""
  d = config.data
  task = d.get('task', 'lm') if text.is_text(d.name) else ''
  if task == 'mlm':  # The same masked positions at every evaluation.
    return mlm.mlm_eval_batches(
        text.source(d), batch_size=config.eval_batch_size, seq_len=d.seq_len,
        tok=tok, split=d.eval_split, seed=config.seed,
        data_dir=d.data_dir or None)
  if task == 'classify':
    return classify.classify_eval_batches(
        text.source(d), batch_size=config.eval_batch_size, seq_len=d.seq_len,
        tok=tok, split=d.eval_split, data_dir=d.data_dir or None)
  if task:
    mix = mixed.is_mixed_data(d)
    return map(text.model_batch, (
        mixed.eval_batches if mix else text.eval_batches)(
        mixed.sources(d) if mix else text.source(d),
        batch_size=config.eval_batch_size, seq_len=d.seq_len, tok=tok,
        split=d.eval_split, data_dir=d.data_dir or None))
  return input_pipeline.eval_batches(
      d.name, batch_size=config.eval_batch_size, split=d.eval_split,
      **data_args(config))


EVAL_HELD_BYTES = 256 * 2**20


def test_split(config, tok=None) -> Callable:
  """`batches()`: the batches of `eval_batches(config, tok)`, read afresh
  on the first call and held in memory after it when they fit in
  EVAL_HELD_BYTES (MNIST-1D, CIFAR; not ImageNet). A run tests every
  `eval_every` steps and a vectorized group tests each of its runs:
  building the tf.data pipeline again each time cost more than the test."""
  held = None

  def holding(batches):
    nonlocal held
    kept, size = [], 0
    for batch in batches:
      size += sum(np.asarray(x).nbytes for x in jax.tree.leaves(batch))
      if size <= EVAL_HELD_BYTES:
        kept.append(batch)
      yield batch
    if size <= EVAL_HELD_BYTES:
      held = kept

  def batches():
    if held is not None:
      return iter(held)
    return holding(eval_batches(config, tok))

  return batches
