"""Language models from scratch on real offline text: the Python standard
library's source (`kd_pystdlib`, PSF licence), byte-level tokens by default.

  python -m kd.main --config=configs/lm/train.py:size=teacher --workdir=runs/lm/teacher

Sizes (decoder-only, RMSNorm, RoPE, SwiGLU, tied embeddings; context 256):
  teacher  d 128, 4 layers, 4 heads: 0.82M parameters (byte-level)
  student  d 64, 2 layers, 4 query / 2 key-value heads: 0.11M
  distil   d 128, 2 layers, 4 heads: the teacher's width at half its depth,
           for a student initialised from every other teacher layer
  tiny, tiny_half   d 32, 2 and 1 layers, 2 heads (tests)
A step is `batch` sequences of `seq_len` tokens (32 x 128 = 4,096).
Arguments: size, seed, steps, seq_len, batch, dataset (kd_pystdlib,
kd_bbcnews, kd_gensim; '/tiny' for tests; kd_text: your files), files
(kd_text's glob of .txt / .jsonl / .parquet files; more globs,
comma-separated, through --config.data.files), tokenizer (byte, bpe, hf),
vocab (BPE size), tokenizer_path (hf: the tokenizer.json, or the folder
holding it).

  python -m kd.main --config=configs/lm/train.py:dataset=kd_text,files=corpus/*.jsonl \
      --workdir=runs/lm/mine
"""
from kd.config import parse_args, run_config

SIZES = {
    'teacher': dict(d_model=128, num_layers=4, num_heads=4),
    'student': dict(d_model=64, num_layers=2, num_heads=4, num_kv_heads=2),
    'distil': dict(d_model=128, num_layers=2, num_heads=4),
    'tiny': dict(d_model=32, num_layers=2, num_heads=2),
    'tiny_half': dict(d_model=32, num_layers=1, num_heads=2),
}
DEFAULTS = dict(size='student', seed=0, steps=2000, seq_len=128, batch=32,
                dataset='kd_pystdlib', tokenizer='byte', vocab=0, files='',
                tokenizer_path='')


def data_args(a: dict) -> dict:
  """The arguments of `recipe` that every stage of a pipeline shares (the
  data, its tokens and the batch), from a config's parsed arguments."""
  return {k: a[k] for k in ('seq_len', 'batch', 'dataset', 'tokenizer',
                            'vocab', 'files', 'tokenizer_path')}


def recipe(size: str, seed: int, steps: int, seq_len: int, batch: int,
           dataset: str, tokenizer: str, vocab: int, files: str = '',
           tokenizer_path: str = ''):
  if size not in SIZES:
    raise ValueError(f'unknown LM size {size!r}; valid: {sorted(SIZES)}')
  c = run_config()
  c.seed = seed
  c.data.update(name=dataset, augment=False, seq_len=seq_len,
                tokenizer=tokenizer, vocab_size=vocab, files=files,
                tokenizer_path=tokenizer_path,
                # 20 held-out files of the stdlib, 0.4M bytes; all of yours.
                eval_split='test' if dataset == 'kd_text' else 'test[:20]')
  c.model.name = 'transformer_lm'
  c.model.kwargs.update(SIZES[size], max_len=2 * seq_len)
  c.batch_size, c.eval_batch_size = batch, 64
  c.steps, c.log_every = steps, 100
  c.checkpoint_every = max(steps // 4, 1)
  c.optimizer.update(name='adam', lr=3e-3, schedule='cosine',
                     warmup_steps=min(100, steps // 10), grad_clip=1.0)
  c.wandb.project = 'kd-lm'
  c.evaluate.latency = False
  return c


def get_config(arg: str | None = None):
  return recipe(**parse_args(arg, **DEFAULTS))
