"""Cross-tokenizer distillation (`kd.losses.cross_tokenizer`): a byte-level
student of `configs/lm/train.py` (size `student_size`), by `method`:
  scratch     the student from the corpus alone (cross-entropy)
  uld         CE + ULD (Boizard et al. 2024) from a BPE teacher
              (`teacher_vocab` tokens, trained on the training split)
  hybrid      CE + the aligned hybrid KL (GOLD-style exact matches, ULD on
              the rest, the KL of each aligned span) from that BPE teacher
  forward_kl  CE + KL(teacher || student) from a byte-level teacher: the
              same tokenizer, where plain KL is exact (the reference)
The teacher is a pipeline stage (size `teacher_size`, `teacher_steps`
steps); `teacher_dir=PATH` shares one between runs (a BPE one for scratch,
uld and hybrid, a byte-level one for forward_kl). `teacher_seq_len` (0: seq_len)
is the teacher's tokens per row. Bits per byte compare across tokenizers.

  python -m kd.main --config=configs/lm/cross_tokenizer.py:method=hybrid,seed=0 \
      --workdir=runs/lm/xtok_hybrid_s0
"""
from configs.lm import train as recipes
from kd.config import parse_args, pipeline_config, term

METHODS = ('scratch', 'uld', 'hybrid', 'forward_kl')
LOSSES = {'uld': 'uld', 'hybrid': 'hybrid_kl', 'forward_kl': 'forward_kl'}


def get_config(arg: str | None = None):
  a = parse_args(arg, method='hybrid', teacher_dir=str, teacher_vocab=4096,
                 teacher_size='teacher', student_size='student',
                 teacher_steps=2000, teacher_seq_len=0, **recipes.DEFAULTS)
  method = a.pop('method')
  if method not in METHODS:
    raise ValueError(f'unknown method {method!r}; valid: {METHODS}')
  shared = {k: a[k] for k in ('seq_len', 'batch', 'dataset', 'files')}
  bpe = method != 'forward_kl'  # scratch: the stage shared with uld's.
  teacher = recipes.recipe(a['teacher_size'], 0, a['teacher_steps'],
                           tokenizer='bpe' if bpe else 'byte',
                           vocab=a['teacher_vocab'] if bpe else 0, **shared)
  student = recipes.recipe(a['student_size'], a['seed'], a['steps'],
                           tokenizer=a['tokenizer'], vocab=a['vocab'],
                           tokenizer_path=a['tokenizer_path'], **shared)
  student.data.teacher_seq_len = a['teacher_seq_len']
  if method != 'scratch':
    student.distill.teacher.update(workdir='teacher', model=teacher.model.name,
                                   kwargs=teacher.model.kwargs)
    student.distill.terms[method] = term(LOSSES[method], 1.0)
  c = pipeline_config(teacher=teacher, student=student)
  if a['teacher_dir']:
    c.stage_dirs = {'teacher': a['teacher_dir']}
  return c
