"""kd against transformers + PyTorch on the same Hugging Face weights.

  python -m experiments.benchmark.hf --peer_python=/work/wt/hfvenv/bin/python \\
      [--batch=8] [--seq_len=128] [--iters=5] [--rounds=2] [--out=DIR]

In one run, side by side:
1. `peer_transformers.py --make` (run by `--peer_python`, a Python with torch
   and transformers) writes a Llama-family teacher (4 layers, d=256) and
   student (2 layers, d=128), vocabulary 512, as `save_pretrained` does;
2. `python -m kd.convert --from=hf` converts both into kd runs;
3. kd times, on the converted runs: the student's step (CE on the next
   tokens, AdamW), the teacher's forward pass and the distillation step
   (teacher forward + student step on CE + forward KL per token, one jitted
   call), float32, random tokens (seed 0) on the device, the median of `--iters`
   interleaved calls after two warm-up calls (`run.time_interleaved`);
4. `peer_transformers.py` times the same three steps on the same folders,
   batch and tokens with transformers + PyTorch, with each of
   `--peer_threads` torch threads (the fastest is compared), and saves its
   teacher's logits of them, which kd's are compared with (same weights,
   same math);
3 and 4 take turns `--rounds` times; each figure is the median of its
rounds' medians.
Prints examples/s of both and kd / PyTorch; writes hf_results.json to --out.
"""
import json
import os
import statistics
import subprocess
import sys

from absl import app
from absl import flags
import jax
import numpy as np
import optax

from experiments.benchmark import run
from kd import runs, steps
from kd.parallel import DataParallel

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))
STEPS = ('student_step', 'teacher_forward', 'distill_step')
LR, WEIGHT_DECAY = 1e-3, 0.01  # as peer_transformers


def _run(cmd: list) -> str:
  done = subprocess.run(cmd, capture_output=True, text=True, check=False,
                        cwd=ROOT)
  if done.returncode:
    raise RuntimeError(f'{" ".join(cmd)} failed:\n{done.stderr.strip()}')
  return done.stdout


def _peer(python: str, *args) -> dict:
  out = _run([python, '-m', 'experiments.benchmark.peer_transformers', *args])
  return json.loads(out.strip().splitlines()[-1])


def convert(hf_dir: str, run_dir: str):
  """(model, variables) of `hf_dir` converted as a user does."""
  _run([sys.executable, '-m', 'kd.convert', '--from=hf', hf_dir,
        f'--out={run_dir}'])
  _, model, variables, _ = runs.load_run(run_dir)
  return model, variables


def compile_steps(teacher_run, student_run, tokens: np.ndarray) -> tuple:
  """(configs, figures so far) of kd's three steps for converted (model,
  variables) pairs on `tokens` [batch, seq_len + 1] (inputs and their next
  tokens); `configs()` gives {step: (compiled, args)} with a fresh student
  state (a step donates the one it is given)."""
  (teacher, t_vars), (student, s_vars) = teacher_run, student_run
  parallel = DataParallel('pmap')
  batch, seq_len = tokens.shape[0], tokens.shape[1] - 1
  if batch % parallel.local_devices:
    raise ValueError(f'--batch={batch} does not split over '
                     f'{parallel.local_devices} devices')
  x, y = tokens[:, :-1], tokens[:, 1:]
  data = parallel.shard({'image': x, 'label': y,
                         'mask': np.ones(y.shape, np.float32)})
  tx = optax.adamw(LR, weight_decay=WEIGHT_DECAY)
  state = steps.create_state(student, tx, jax.random.key(0), x[:1])
  params = s_vars['params']  # the converted student, not a fresh init
  state = state.replace(params=params, opt_state=tx.init((params, {})))

  def fresh():  # Each step donates the state it is given.
    return parallel.replicate(state)
  rep_t = parallel.replicate(t_vars)
  terms = (steps.Term('forward_kl', 'forward_kl', 1.0),)
  fns = {
      'student_step': parallel.wrap(steps.make_supervised_step(student, tx),
                                    1),
      'teacher_forward': parallel.wrap(
          lambda v, b: teacher.apply(v, b['image'], train=False)[0], 1,
          donate_first=False),
      'distill_step': parallel.wrap(steps.make_distill_step(
          student, teacher, tx, terms, 1.0), 2),
  }

  def args():
    return {'student_step': (fresh(), data), 'teacher_forward': (rep_t, data),
            'distill_step': (fresh(), rep_t, data)}
  out = {'batch': batch, 'seq_len': seq_len,
         'device': jax.devices()[0].device_kind,
         'devices': parallel.local_devices, 'jax': jax.__version__}
  compiled = {}
  for name, a in args().items():
    out[f'{name}_compile_s'], _, compiled[name] = run.compiled_figures(
        fns[name], a)

  def configs():
    return {name: (compiled[name], a) for name, a in args().items()}
  return configs, out


def add_times(row: dict, seconds: dict, batch: int) -> dict:
  """`row` with ms and examples/s of each step's median of `seconds`
  ({step: [seconds of a round]})."""
  for step, secs in seconds.items():
    sec = statistics.median(secs)
    row[f'{step}_ms'] = 1000 * sec
    row[f'{step}_ex_per_s'] = batch / sec
  return row


def add_peer(row: dict, peers: dict) -> dict:
  """`row` with the PyTorch figures of its fastest thread count (by the
  distillation step; `peers`: {threads: peer_transformers' output}), each
  count's figures, and the kd / PyTorch ratios."""
  _, p = max(peers.items(), key=lambda kv: kv[1]['distill_step_ex_per_s'])
  for key in ('torch', 'transformers', 'threads', 'attn_implementation'):
    row[f'peer_{key}'] = p[key]
  row['peer_by_threads'] = {
      t: {s: q[f'{s}_ex_per_s'] for s in STEPS} for t, q in peers.items()}
  for step in STEPS:
    row[f'peer_{step}_ex_per_s'] = p[f'{step}_ex_per_s']
    row[f'kd_vs_peer_{step}'] = row[f'{step}_ex_per_s'] / p[f'{step}_ex_per_s']
  return row


def markdown(r: dict) -> str:
  head = ['teacher -> student (params)', 'batch x tokens', 'torch threads']
  cells = [f"{r['teacher_params']:,} -> {r['student_params']:,}",
           f"{r['batch']} x {r['seq_len']}", str(r['peer_threads'])]
  for step, label in zip(STEPS, ('student step', 'teacher fwd',
                                 'distill step')):
    head += [f'kd {label} ex/s', f'PyTorch {label} ex/s',
             f'kd / PyTorch {label}']
    cells += [f"{r[f'{step}_ex_per_s']:.2f}",
              f"{r[f'peer_{step}_ex_per_s']:.2f}",
              f"{r[f'kd_vs_peer_{step}']:.2f}"]
  return '\n'.join(['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head),
                    '| ' + ' | '.join(cells) + ' |'])


def define_flags():
  flags.DEFINE_string('peer_python', sys.executable, 'A Python with torch '
                      'and transformers (runs peer_transformers.py).')
  flags.DEFINE_list('peer_threads', ['1', '2'], "torch's thread counts to "
                    'time the peer with; its fastest is compared (on a busy '
                    "machine torch's spinning threads lose to one thread).")
  flags.DEFINE_integer('batch', 8, 'Sequences per step.')
  flags.DEFINE_integer('seq_len', 128, 'Tokens per sequence.')
  flags.DEFINE_integer('iters', 5, 'Timed calls of each step in a round.')
  flags.DEFINE_integer('rounds', 2, 'Rounds of kd then PyTorch; each figure '
                       "is the median of the rounds' medians.")
  flags.DEFINE_string('out', 'benchmark_results', 'Output folder (the HF '
                      'folders and kd runs go under it too).')


def main(argv):
  del argv
  f = flags.FLAGS
  hf_dir, kd_dir = os.path.join(f.out, 'hf'), os.path.join(f.out, 'kd')
  if os.path.exists(hf_dir) or os.path.exists(kd_dir):
    sys.exit(f'{hf_dir} or {kd_dir} exists: pass an empty --out')
  counts = _peer(f.peer_python, f'--make={hf_dir}')
  print(f'wrote {hf_dir}: {counts}', file=sys.stderr, flush=True)
  loaded = {name: convert(os.path.join(hf_dir, name),
                          os.path.join(kd_dir, name))
            for name in ('teacher', 'student')}
  with open(os.path.join(hf_dir, 'student', 'config.json')) as fh:
    vocab = json.load(fh)['vocab_size']
  tokens = np.random.default_rng(0).integers(
      0, vocab, size=(f.batch, f.seq_len + 1)).astype(np.int32)
  tokens_path = os.path.join(f.out, 'tokens.npy')
  np.save(tokens_path, tokens)
  configs, row = compile_steps(loaded['teacher'], loaded['student'], tokens)
  row.update(vocab=vocab, teacher_params=counts['teacher'],
             student_params=counts['student'], rounds=f.rounds,
             iters=f.iters)
  logits_path = os.path.join(f.out, 'peer_teacher_logits.npy')
  kd_secs = {step: [] for step in STEPS}
  peer_secs = {t: {step: [] for step in STEPS} for t in f.peer_threads}
  peers = {}
  for r in range(f.rounds):  # kd, then the peer: a change of load hits both
    for step, sec in run.time_interleaved(configs(), f.iters).items():
      kd_secs[step].append(sec)
    for threads in f.peer_threads[::1 if r % 2 == 0 else -1]:
      peers[threads] = _peer(
          f.peer_python, f'--teacher={hf_dir}/teacher',
          f'--student={hf_dir}/student', f'--tokens={tokens_path}',
          f'--logits_out={logits_path}', f'--iters={f.iters}',
          f'--threads={threads}')
      for step in STEPS:
        peer_secs[threads][step].append(peers[threads][f'{step}_ms'] / 1000)
    print(f'round {r + 1}/{f.rounds}: kd distill '
          f'{1000 * kd_secs["distill_step"][-1]:.0f} ms, PyTorch distill ' +
          ', '.join(f'{1000 * peer_secs[t]["distill_step"][-1]:.0f} ms '
                    f'(torch threads: {t})' for t in f.peer_threads),
          file=sys.stderr, flush=True)
  add_times(row, kd_secs, row['batch'])
  for threads, p in peers.items():
    add_times(p, peer_secs[threads], row['batch'])
  add_peer(row, peers)
  # The same weights and tokens: kd's teacher logits against PyTorch's.
  teacher, t_vars = loaded['teacher']
  ours = np.asarray(jax.jit(lambda v, a: teacher.apply(v, a, train=False)[0])(
      t_vars, tokens[:, :-1]))
  row['teacher_logits_max_abs_diff'] = float(
      np.abs(ours - np.load(logits_path)).max())
  runs.write_json(os.path.join(f.out, 'hf_results.json'), row)
  print(f"{row['device']}, {row['devices']} device(s), jax {row['jax']}; "
        f"torch {row['peer_torch']} (threads: {row['peer_threads']}, the "
        f"fastest of {','.join(map(str, f.peer_threads))}), transformers "
        f"{row['peer_transformers']} ({row['peer_attn_implementation']}); "
        f"teacher logits "
        f"kd vs PyTorch: max |diff| {row['teacher_logits_max_abs_diff']:.2e}\n"
        f"{markdown(row)}")


if __name__ == '__main__':
  define_flags()
  app.run(main)
