"""The exported student on transformers' side: its logits there against
kd's on the same tokens, and the tokens transformers' own tokenizer gives.

  python -m experiments.hf_teacher.parity \
      --run=runs/hf_teacher/method=forward_kl__seed=0/student \
      --hf=hf/kd-student --torch_python=/work/wt/hfvenv/bin/python

kd's side (this interpreter): the first `--docs` held-out documents of the
run's data (its test split), each as bos + the run's tokens cut to `--len`,
and the run's float32 logits on them (`kd.runs.load_run`). transformers'
side (`--torch_python`: an environment with torch and transformers, never
a kd requirement; this file run as a script there, kd not imported):
`AutoModelForCausalLM.from_pretrained(HF)` in float32, eval, on the same
token ids, and `AutoTokenizer.from_pretrained(HF)` on the same texts.
Prints the largest absolute logit difference, the largest |logit|, and
whether the two tokenizations and greedy next tokens agree.
"""
import json
import os
import subprocess
import sys
import tempfile


def transformers_side(hf_dir: str, inputs: str, out: str) -> None:
  """In the torch environment: logits of `inputs`' tokens, and the token
  ids of its texts by the folder's tokenizer, into `out`."""
  import numpy as np  # pylint: disable=import-outside-toplevel
  import torch  # pylint: disable=import-outside-toplevel
  import transformers  # pylint: disable=import-outside-toplevel
  data = np.load(inputs)
  model = transformers.AutoModelForCausalLM.from_pretrained(
      hf_dir, dtype=torch.float32).eval()
  tok = transformers.AutoTokenizer.from_pretrained(hf_dir)
  tokens = torch.tensor(data['tokens'].astype(np.int64))
  with torch.no_grad():
    logits = model(tokens).logits.numpy().astype(np.float32)
  length = tokens.shape[1]
  ids = np.array([tok(str(t), truncation=True, max_length=length)['input_ids']
                  for t in data['texts']],
                 np.int32)
  np.savez(out, logits=logits, tokens=ids, model=type(model).__name__,
           versions=f'torch {torch.__version__}, transformers '
                    f'{transformers.__version__}')


def main(argv):
  del argv
  import numpy as np  # pylint: disable=import-outside-toplevel
  from absl import flags  # pylint: disable=import-outside-toplevel
  from kd import runs  # pylint: disable=import-outside-toplevel
  from kd.data import text  # pylint: disable=import-outside-toplevel
  f = flags.FLAGS
  config, model, variables, step = runs.load_run(f.run)
  d = config.data
  tok = text.run_tokenizer(config, f.run)
  texts = text.documents(text.source(d), 'test', d.data_dir or None)[:f.docs]
  rows = [np.concatenate([[tok.bos_id], ids])[:f.len]
          for ids in tok.encode(texts)]
  if min(map(len, rows)) < f.len:
    raise SystemExit(f'a held-out document is shorter than --len={f.len} '
                     'tokens; pass a smaller --len')
  tokens = np.stack(rows).astype(np.int32)
  ours = np.asarray(model.apply(variables, tokens, train=False)[0],
                    np.float32)
  with tempfile.TemporaryDirectory() as tmp:
    inputs, out = os.path.join(tmp, 'in.npz'), os.path.join(tmp, 'out.npz')
    np.savez(inputs, tokens=tokens, texts=np.array(texts))
    subprocess.run([f.torch_python, os.path.abspath(__file__),
                    '--transformers', f.hf, inputs, out], check=True)
    theirs = dict(np.load(out))
  diff = float(np.abs(ours - theirs['logits']).max())
  print(f'{f.run} (step {step}, {config.data.name}) -> {f.hf} '
        f'({theirs["model"]}; {theirs["versions"]})')
  print(f'tokens: {tokens.shape[0]} held-out documents x {tokens.shape[1]} '
        f'(bos + the run\'s tokenizer); transformers\' tokenizer gives the '
        f'same ids: {np.array_equal(theirs["tokens"], tokens)}')
  print(f'logits {ours.shape}: max |kd - transformers| = {diff:.3g}, '
        f'max |logit| = {float(np.abs(ours).max()):.3g}; greedy next tokens '
        f'equal: {np.array_equal(ours.argmax(-1), theirs["logits"].argmax(-1))}')


if __name__ == '__main__':
  if sys.argv[1:2] == ['--transformers']:
    transformers_side(*sys.argv[2:5])
  else:
    from absl import app  # pylint: disable=g-import-not-at-top
    from absl import flags as absl_flags  # pylint: disable=g-import-not-at-top
    absl_flags.DEFINE_string('run', None, 'The kd run (one stage) exported.')
    absl_flags.DEFINE_string('hf', None, 'Its Hugging Face folder.')
    absl_flags.DEFINE_string('torch_python', sys.executable,
                             'A Python with torch and transformers.')
    absl_flags.DEFINE_integer('docs', 4, 'Held-out documents.')
    absl_flags.DEFINE_integer('len', 128, 'Tokens of each, bos first.')
    absl_flags.mark_flags_as_required(['run', 'hf'])
    app.run(main)
