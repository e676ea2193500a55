"""The Hugging Face language-model distillation step in transformers + PyTorch.

  PYTHON -m experiments.benchmark.peer_transformers --make=DIR
  PYTHON -m experiments.benchmark.peer_transformers --teacher=DIR/teacher \\
      --student=DIR/student [--batch=8] [--seq_len=128] [--iters=10] \\
      [--tokens=TOKENS.npy] [--logits_out=LOGITS.npy] [--threads=N]

`--make` writes two Llama-family folders as `save_pretrained` does
(`SIZES`: a 4-layer d=256 teacher and a 2-layer d=128 student, GQA, SwiGLU,
tied embeddings, vocabulary 512; random init, seed 0), the folders
`experiments.benchmark.hf` converts with `python -m kd.convert --from=hf`,
so kd and PyTorch time the same weights.

The timing prints one JSON object: examples/s and milliseconds of the
student's step (forward, cross-entropy on the next tokens, backward, AdamW),
the teacher's forward pass (eval mode, no_grad) and the distillation step
(the teacher's no_grad forward, then the student's step on CE + forward KL,
KL(p_teacher || q_student) summed over the vocabulary and averaged over the
tokens, as kd's `forward_kl` term with a CE weight of 1), float32 on the
CPU, random tokens (or `--tokens`' ids; `--logits_out` saves the teacher's
logits of them), transformers' default attention (sdpa), the median of
`--iters` timed calls after two warm-up calls, the three steps' calls
interleaved (as `peer_pytorch.py`).

Needs torch and transformers, which kd never imports: run it with the
Python of a virtual environment that has them (`hf.py --peer_python`).
"""
import argparse
import json
import os

from experiments.benchmark.peer_pytorch import _import_torch, time_interleaved

VOCAB = 512
COMMON = dict(vocab_size=VOCAB, max_position_embeddings=512, rms_norm_eps=1e-5,
              rope_theta=10000.0, hidden_act='silu', tie_word_embeddings=True,
              bos_token_id=0, eos_token_id=1)
SIZES = {
    'teacher': dict(COMMON, hidden_size=256, intermediate_size=768,
                    num_hidden_layers=4, num_attention_heads=4,
                    num_key_value_heads=2),
    'student': dict(COMMON, hidden_size=128, intermediate_size=384,
                    num_hidden_layers=2, num_attention_heads=4,
                    num_key_value_heads=2),
}
LR, WEIGHT_DECAY = 1e-3, 0.01


def make(out: str) -> dict:
  """Writes `out`/teacher and `out`/student; {name: parameter count}."""
  torch = _import_torch()
  import transformers  # pylint: disable=import-outside-toplevel
  counts = {}
  for i, (name, kwargs) in enumerate(SIZES.items()):
    torch.manual_seed(i)
    config = transformers.LlamaConfig(**kwargs)
    model = transformers.LlamaForCausalLM(config)
    model.save_pretrained(os.path.join(out, name))
    counts[name] = sum(p.numel() for p in model.parameters())
  return counts


def bench(teacher_dir: str, student_dir: str, batch: int, seq_len: int,
          iters: int, tokens_path: str = '', logits_out: str = '',
          threads: int = 0) -> dict:
  torch = _import_torch()
  if threads:
    torch.set_num_threads(threads)
  import transformers  # pylint: disable=import-outside-toplevel
  f = torch.nn.functional
  load = lambda d: transformers.AutoModelForCausalLM.from_pretrained(  # pylint: disable=unnecessary-lambda-assignment
      d, dtype=torch.float32)
  teacher, student = load(teacher_dir).eval(), load(student_dir).train()
  vocab = student.config.vocab_size
  if tokens_path:  # kd's tokens, so both sides see the same batch
    import numpy as np  # pylint: disable=import-outside-toplevel
    tokens = torch.from_numpy(np.load(tokens_path).astype(np.int64))
  else:
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, vocab, (batch, seq_len + 1), generator=g)
  batch, seq_len = tokens.shape[0], tokens.shape[1] - 1
  x, y = tokens[:, :-1], tokens[:, 1:].reshape(-1)
  opt = torch.optim.AdamW(student.parameters(), lr=LR,
                          weight_decay=WEIGHT_DECAY)

  def student_step(t_logits=None):
    logits = student(input_ids=x).logits.reshape(-1, vocab)
    loss = f.cross_entropy(logits, y)
    if t_logits is not None:  # forward KL(p || q), mean over tokens
      loss = loss + f.kl_div(f.log_softmax(logits, -1),
                             f.log_softmax(t_logits.reshape(-1, vocab), -1),
                             reduction='batchmean', log_target=True)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()

  @torch.no_grad()
  def teacher_forward():
    return teacher(input_ids=x).logits

  def distill_step():
    student_step(teacher_forward())

  if logits_out:
    import numpy as np  # pylint: disable=import-outside-toplevel
    np.save(logits_out, teacher_forward().numpy())
  out = {'batch': batch, 'seq_len': seq_len, 'torch': torch.__version__,
         'transformers': transformers.__version__,
         'threads': torch.get_num_threads(),
         'attn_implementation': student.config._attn_implementation,  # pylint: disable=protected-access
         'teacher_params': sum(p.numel() for p in teacher.parameters()),
         'student_params': sum(p.numel() for p in student.parameters())}
  for name, sec in time_interleaved(
      {'student_step': student_step, 'teacher_forward': teacher_forward,
       'distill_step': distill_step}, iters).items():
    out[f'{name}_ms'] = 1000 * sec
    out[f'{name}_ex_per_s'] = batch / sec
  return out


def main():
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--make', help='write the teacher and student folders here')
  p.add_argument('--teacher')
  p.add_argument('--student')
  p.add_argument('--batch', type=int, default=8)
  p.add_argument('--seq_len', type=int, default=128)
  p.add_argument('--iters', type=int, default=10)
  p.add_argument('--tokens', default='', help='a .npy of [batch, seq_len + 1] '
                 'int token ids to use (default: random, seed 0)')
  p.add_argument('--threads', type=int, default=0,
                 help="torch's intra-op threads (default: torch's own choice)")
  p.add_argument('--logits_out', default='', help="write the teacher's "
                 'logits of the batch to this .npy')
  a = p.parse_args()
  import transformers  # pylint: disable=import-outside-toplevel
  transformers.utils.logging.disable_progress_bar()
  if a.make:
    print(json.dumps(make(a.make)))
  elif a.teacher and a.student:
    print(json.dumps(bench(a.teacher, a.student, a.batch, a.seq_len, a.iters,
                           a.tokens, a.logits_out, a.threads)))
  else:
    p.error('pass --make=DIR, or --teacher=DIR and --student=DIR')


if __name__ == '__main__':
  main()
