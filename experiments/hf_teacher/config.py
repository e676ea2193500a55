"""The end-to-end example of experiments/hf_teacher/README.md: a BPE
teacher trained by kd on JSONL files (`kd_text`), exported to a Hugging
Face folder, converted back (`kd.convert --from=hf`) and distilled into a
student of 4x fewer parameters that reads the converted run's tokenizer
(`data.tokenizer='hf'`).

  python -m kd.main --config=experiments/hf_teacher/config.py:method=teacher \
      --workdir=runs/hf_teacher/teacher
  python -m kd.main --config=experiments/hf_teacher/config.py:method=forward_kl \
      --workdir=runs/hf_teacher/forward_kl_s0

`method`:
  teacher     the teacher alone (one run): d 128, 4 layers, 4 heads, BPE of
              `vocab` tokens trained on the files; 1,053,824 parameters
  scratch     the student from the corpus alone: d 64, 3 layers, 4 query /
              2 key-value heads; 269,760 parameters (3.9x fewer)
  forward_kl  the student with CE + KL(teacher || student) per token, the
              teacher read from `hf_teacher` (the converted run: its weights
              and tokenizer; its settings are the teacher's, which the
              export / convert round trip keeps)
The students are pipelines whose first stage is the teacher run in
`teacher_dir` (finished before, so reused: `kd.tables` reports it beside
them). Other arguments: files (a glob of JSONL files), vocab, seq_len,
batch, teacher_steps, steps, seed.
"""
from configs.lm import train as recipes
from kd.config import parse_args, pipeline_config, term

METHODS = ('teacher', 'scratch', 'forward_kl')
STUDENT = dict(d_model=64, num_layers=3, num_heads=4, num_kv_heads=2)


def get_config(arg: str | None = None):
  a = parse_args(arg, method='forward_kl', files='data/bbcnews_jsonl/*.jsonl',
                 vocab=2048, seq_len=128, batch=16, teacher_steps=600,
                 steps=300, seed=0, teacher_dir='runs/hf_teacher/teacher',
                 hf_teacher='runs/hf/kd-teacher')
  if a['method'] not in METHODS:
    raise ValueError(f'unknown method {a["method"]!r}; valid: {METHODS}')
  shared = dict(seq_len=a['seq_len'], batch=a['batch'], dataset='kd_text',
                files=a['files'])
  teacher = recipes.recipe('teacher', 0, a['teacher_steps'], tokenizer='bpe',
                           vocab=a['vocab'], **shared)
  teacher.wandb.project = 'kd-hf'
  if a['method'] == 'teacher':
    return teacher
  student = recipes.recipe('student', a['seed'], a['steps'], tokenizer='hf',
                           vocab=a['vocab'], **shared)
  student.model.kwargs.update(STUDENT)
  student.data.tokenizer_path = a['hf_teacher']
  student.wandb.project = 'kd-hf'
  if a['method'] == 'forward_kl':
    student.distill.teacher.update(workdir=a['hf_teacher'],
                                   model=teacher.model.name,
                                   kwargs=teacher.model.kwargs)
    student.distill.terms.forward_kl = term('forward_kl', 1.0)
  c = pipeline_config(teacher=teacher, student=student)
  c.stage_dirs = {'teacher': a['teacher_dir']}
  return c
