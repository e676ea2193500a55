"""A Hugging Face teacher distilled into a small student on your own text.

The teacher is a run directory written by `python -m kd.convert --from=hf`
(its model, settings and tokenizer are read from there); the student reads
the same tokens (`data.tokenizer='hf'`: the teacher's tokenizer.json is
copied into the student's run) from your JSONL / text / parquet files
(`data.name='kd_text'`, split 90/5/5 by a hash of each document).

SmolLM2-135M into a ~30M student, on a machine with internet access for the
download (everything after it runs offline):

  pip install -U "huggingface_hub[cli]"
  huggingface-cli download HuggingFaceTB/SmolLM2-135M --local-dir hf/SmolLM2-135M
  python -m kd.convert --from=hf --describe hf/SmolLM2-135M --student_params=31M
  python -m kd.convert --from=hf hf/SmolLM2-135M --out=runs/hf/smollm2-135m
  python -m kd.main \
      --config=configs/lm/hf_distill.py:teacher_dir=runs/hf/smollm2-135m,files=corpus/*.jsonl \
      --workdir=runs/hf/student-30m
  python -m kd.export --workdir=runs/hf/student-30m --format=hf --out=hf/student-30m

`corpus/*.jsonl` holds one JSON object per line with the document in
`text` (another field: `text_field=NAME`; more globs, comma-separated,
through `--config.data.files`). The exported folder loads with
`transformers.AutoModelForCausalLM.from_pretrained('hf/student-30m')`.

Arguments:
  teacher_dir  the converted teacher's run directory (runs/hf/smollm2-135m)
  files     your documents (a glob); text_field: their JSONL field / column
  method    forward_kl (CE + KL(teacher || student) per token, default),
            scratch (the student from your files alone, the teacher's
            tokenizer, no teacher),
            reverse_kl, jsd, gkd (on-policy: the student's own samples after
            `prompt` tokens with probability `lmbda`, scored by the teacher),
            seqkd (CE on the teacher's greedy continuations, generated once),
            topk (KL to the teacher's top-32 logits from a cache built once)
  size      30m: d 384, 8 layers, 6 query / 2 key-value heads, MLP 1024,
            tied embeddings: 31,463,808 parameters at SmolLM2's vocabulary of
            49,152 (4.3x fewer than its 134,515,008); half: the teacher's
            settings at half its depth (15 layers, 81,413,568 for
            SmolLM2), which `init=1` starts from every other teacher layer
            (DistilBERT);
            tiny: d 16, 1 layer (tests)
  seed, steps (5000), seq_len (512), batch (32), lr (1e-3), prompt (64),
  lmbda (0.5)
The teacher runs in bfloat16 on accelerators, float32 on CPUs
(`distill.teacher.dtype='auto'`); on several devices add
`--config.parallel=sharded --config.mesh.data=1 --config.mesh.fsdp=-1`
(FSDP over all of them), which reads the teacher
straight onto the mesh.
"""
import os

from configs.lm import distill as lm_distill
from kd import runs
from kd.config import parse_args, run_config

SIZES = {
    '30m': dict(d_model=384, num_layers=8, num_heads=6, num_kv_heads=2,
                mlp_hidden=1024),
    'tiny': dict(d_model=16, num_layers=1, num_heads=2),
}
METHODS = ('scratch', 'forward_kl', 'reverse_kl', 'jsd', 'gkd', 'seqkd',
           'topk')


def teacher_config(teacher: str):
  """The converted teacher run's config (its model and vocabulary)."""
  if not os.path.isfile(os.path.join(teacher, 'config.json')):
    raise FileNotFoundError(
        f'teacher_dir={teacher}: no converted run there; convert the '
        f'Hugging Face folder first: python -m kd.convert --from=hf HF_DIR '
        f'--out={teacher}')
  return runs.load_config(teacher)


def get_config(arg: str | None = None):
  a = parse_args(arg, teacher_dir='runs/hf/smollm2-135m',
                 files='corpus/*.jsonl', text_field='text',
                 method='forward_kl', size='30m', init=False, seed=0,
                 steps=5000, seq_len=512, batch=32, lr=1e-3, prompt=64,
                 lmbda=0.5)
  if a['method'] not in METHODS:
    raise ValueError(f'unknown method {a["method"]!r}; valid: {METHODS}')
  t = teacher_config(a['teacher_dir'])
  if a['size'] == 'half':
    shape = dict(t.model.kwargs.to_dict(),
                 num_layers=max(t.model.kwargs.num_layers // 2, 1))
  elif a['size'] in SIZES:
    shape = dict(SIZES[a['size']], max_len=t.model.kwargs.max_len)
  else:
    raise ValueError(f'unknown size {a["size"]!r}; valid: '
                     f'{sorted(SIZES) + ["half"]}')
  if a['init'] and a['size'] != 'half':
    raise ValueError('init=1 copies every other teacher layer: it needs a '
                     "student of the teacher's width, size=half")
  c = run_config()
  c.seed = a['seed']
  c.data.update(name='kd_text', files=a['files'], text_field=a['text_field'],
                augment=False, seq_len=a['seq_len'], tokenizer='hf',
                vocab_size=t.data.vocab_size, eval_split='test')
  c.model.name = 'transformer_lm'
  c.model.kwargs.update(shape)
  c.batch_size, c.eval_batch_size = a['batch'], 2 * a['batch']
  c.steps, c.log_every = a['steps'], 50
  c.checkpoint_every = max(a['steps'] // 10, 1)
  c.optimizer.update(name='adamw', lr=a['lr'], schedule='cosine',
                     warmup_steps=min(200, a['steps'] // 10), grad_clip=1.0,
                     weight_decay=0.01)
  c.wandb.project = 'kd-hf'
  c.evaluate.latency = False
  method = a['method']
  if method == 'scratch':  # The teacher's tokenizer, no teacher.
    c.data.tokenizer_path = a['teacher_dir']
  else:
    c.distill.teacher.update(workdir=a['teacher_dir'], model=t.model.name,
                             kwargs=t.model.kwargs.to_dict())
  c.distill.ce_weight, terms = lm_distill._terms(method)  # pylint: disable=protected-access
  for name, term in terms.items():
    c.distill.terms[name] = term
  if method == 'gkd':
    c.distill.on_policy.update(lmbda=a['lmbda'], prompt_len=a['prompt'])
  if method == 'seqkd':
    c.distill.seqkd.update(prompt_len=a['prompt'],
                           num_prompts=a['steps'] * a['batch'])
  if method == 'topk':
    c.distill.teacher.update(cache=True, cache_topk=lm_distill.TOPK)
  if a['init']:
    c.update(init_from=a['teacher_dir'], init_from_layers='strided')
  return c
