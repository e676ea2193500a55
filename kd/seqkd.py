"""Sequence-level knowledge distillation (Kim & Rush, EMNLP 2016): the
teacher continues prompts from the training corpus, and the student trains
with plain cross-entropy on those continuations, learning the teacher's
outputs as labels.

A data directory holds `tokens.npy` [N, seq_len + 1] int32 (each row its
prompt of `prompt_len` tokens, then the teacher's continuation, then
padding after an eos), `mask.npy` [N, seq_len] float32 (1 on the targets
the teacher generated: the loss ignores the prompt) and `meta.json` (what
produced it: teacher run and checkpoint step, sampling settings, corpus,
tokenizer), written last, so a directory without it is unfinished. The
prompts are the first `prompt_len` tokens of the packed training rows in
file order (`kd.data.text.windows`), or `num_prompts` of them evenly spaced
over the corpus (a run of S steps of B rows reads S * B).
"""
import functools
import hashlib
import json
import os

import jax
import jax.numpy as jnp
import numpy as np

from kd import runs
from kd import sampling
from kd.data import text
from kd.data.seqkd import read_meta

FORMAT = 1


class SeqKDMismatchError(ValueError):
  pass


def provenance(teacher_run_dir: str, teacher_step: int, tok, *, dataset: str,
               split: str, data_dir: str, seq_len: int, prompt_len: int,
               temperature: float, top_k: int, seed: int, num_prompts: int,
               batch_size: int) -> dict:
  """What a data directory for these settings must record (through JSON, as
  a stored one is read back). A sample's random draws depend on the
  generation `batch_size` (one key per batch) as well as the seed."""
  return json.loads(json.dumps({
      'format': FORMAT,
      'teacher': {'workdir': os.path.abspath(teacher_run_dir),
                  'step': teacher_step},
      'data': {'name': str(dataset), 'split': split,
               'data_dir': os.path.abspath(data_dir) if data_dir else ''},
      'tokenizer': {'kind': type(tok).__name__, 'vocab_size': tok.vocab_size,
                    'sha256': hashlib.sha256(
                        getattr(tok, 'to_str', lambda: '')().encode()
                    ).hexdigest()},
      'sampling': {'seq_len': seq_len, 'prompt_len': prompt_len,
                   'new_tokens': seq_len + 1 - prompt_len,
                   'temperature': temperature, 'top_k': top_k, 'seed': seed,
                   'num_prompts': num_prompts, 'batch_size': batch_size},
  }))


def check_meta(out_dir: str, want: dict) -> bool:
  """True if `out_dir` holds finished data for `want`, False if it holds
  none; raises SeqKDMismatchError listing the differences otherwise."""
  found = read_meta(out_dir)
  if found is None:
    return False
  found = {k: v for k, v in found.items() if k in want}
  diff = runs.differences(want, found)
  if diff:
    raise SeqKDMismatchError(
        f'{out_dir} holds sequence-level KD data of other settings:\n  '
        + '\n  '.join(diff) + '\nuse another directory '
        '(config.distill.seqkd.dir), or delete this one to regenerate')
  return True


def prompts(dataset: str, split: str, seq_len: int, tok,
            data_dir: str | None, num_prompts: int) -> np.ndarray:
  """[N, seq_len + 1] packed rows in file order: all when `num_prompts` is
  0, else that many evenly spaced ones (every file's share, not the first
  files')."""
  rows = text.windows(text.pack(text._encoded(dataset, split, tok, data_dir),  # pylint: disable=protected-access
                                tok), seq_len)
  if 0 < num_prompts < len(rows):
    rows = rows[np.linspace(0, len(rows) - 1, num_prompts).round().astype(int)]
  return np.asarray(rows, np.int32)


def build(teacher_run_dir: str, out_dir: str, *, seq_len: int,
          prompt_len: int, temperature: float = 0.0, top_k: int = 0,
          seed: int = 0, num_prompts: int = 0, batch_size: int = 64,
          dataset: str | None = None, split: str = 'train',
          data_dir: str | None = None) -> dict:
  """Generates (or finds) the teacher's continuations in `out_dir`; returns
  its meta. The teacher is the latest checkpoint of `teacher_run_dir`, its
  corpus `dataset` unless given. Refuses a directory of other settings."""
  if not 0 < prompt_len <= seq_len:
    raise ValueError(f'prompt_len={prompt_len} must be in [1, seq_len='
                     f'{seq_len}]: the rest of each row is generated')
  config, model, variables, step = runs.load_run(teacher_run_dir)
  tok = text.run_tokenizer(config, teacher_run_dir)
  dataset = dataset or text.source(config.data)
  want = provenance(teacher_run_dir, step, tok, dataset=dataset, split=split,
                    data_dir=data_dir or '', seq_len=seq_len,
                    prompt_len=prompt_len, temperature=temperature,
                    top_k=top_k, seed=seed, num_prompts=num_prompts,
                    batch_size=batch_size)
  if check_meta(out_dir, want):
    return read_meta(out_dir)
  rows = prompts(dataset, split, seq_len, tok, data_dir, num_prompts)
  n, new_tokens = len(rows), seq_len + 1 - prompt_len
  sample = jax.jit(functools.partial(
      sampling.generate, model, max_new_tokens=new_tokens,
      temperature=temperature, top_k=top_k, pad_id=tok.pad_id,
      eos_id=tok.eos_id))
  os.makedirs(out_dir, exist_ok=True)
  tokens = np.lib.format.open_memmap(os.path.join(out_dir, 'tokens.npy'),
                                     'w+', np.int32, (n, seq_len + 1))
  mask = np.lib.format.open_memmap(os.path.join(out_dir, 'mask.npy'), 'w+',
                                   np.float32, (n, seq_len))
  lengths = jnp.full((batch_size,), prompt_len, jnp.int32)
  for i, start in enumerate(range(0, n, batch_size)):
    chunk = rows[start:start + batch_size, :prompt_len]
    k = len(chunk)
    chunk = np.pad(chunk, ((0, batch_size - k), (0, 0)))  # One shape.
    out, generated = sample(variables, jnp.asarray(chunk), lengths,
                            jax.random.fold_in(jax.random.key(seed), i))
    tokens[start:start + k] = np.asarray(out)[:k]
    mask[start:start + k] = np.asarray(generated)[:k, 1:]
    print(f'[seqkd] {start + k}/{n} rows', end='\r', flush=True)
  print()
  tokens.flush()
  mask.flush()
  meta = dict(want, num_rows=n)
  runs.write_json(os.path.join(out_dir, 'meta.json'), meta)
  return meta
