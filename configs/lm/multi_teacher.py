"""Several language-model teachers on a mixed corpus (issue #23 item 3): a
code teacher trained on `code` (kd_pystdlib), a prose teacher on `prose`
(kd_bbcnews), both byte-level of size `teacher_size` for `teacher_steps`,
then the student on the mixed corpus `code+prose` (every packed row of one
source, `kd.data.mixed`) by `method`:
  scratch  cross-entropy alone
  code     CE + forward KL from the code teacher alone
  prose    CE + forward KL from the prose teacher alone
  mean     CE + forward KL to the teachers' average distribution
           (`weights`, default 0.5,0.5: the mixture sum_k w_k softmax(t_k))
  route    CE + forward KL, each row to the teacher of its source
           (`distill.route_by='source'`)
  route_xtok  route, the code teacher BPE-`code_vocab` (default 4096): its
           rows through the cross-tokenizer `hybrid_kl` (kd.teachers)
The held-out split is `test[:20]` of each source; the summary has bits per
byte over both and per source ('kd_pystdlib/test_bits_per_byte', ...).
`code_dir=PATH` / `prose_dir=PATH` share trained teachers between runs.

  python -m kd.main --config=configs/lm/multi_teacher.py:method=route,seed=0 \
      --workdir=runs/lm/multi_route_s0
"""
from configs.lm import train as recipes
from kd.config import parse_args, pipeline_config, term

METHODS = ('scratch', 'code', 'prose', 'mean', 'route', 'route_xtok')


def get_config(arg: str | None = None):
  a = parse_args(arg, method='route', seed=0, steps=2000, teacher_steps=2000,
                 seq_len=128, batch=32, teacher_size='teacher',
                 student_size='student', code='kd_pystdlib',
                 prose='kd_bbcnews', weights='0.5,0.5', code_dir=str,
                 prose_dir=str, code_vocab=4096)
  method = a['method']
  if method not in METHODS:
    raise ValueError(f'unknown method {method!r}; valid: {METHODS}')
  shared = dict(seq_len=a['seq_len'], batch=a['batch'], tokenizer='byte',
                vocab=0)
  stages = {
      'code_teacher': recipes.recipe(a['teacher_size'], 0, a['teacher_steps'],
                                     dataset=a['code'], **shared),
      'prose_teacher': recipes.recipe(a['teacher_size'], 0,
                                      a['teacher_steps'], dataset=a['prose'],
                                      **shared)}
  student = recipes.recipe(a['student_size'], a['seed'], a['steps'],
                           dataset=f'{a["code"]}+{a["prose"]}', **shared)
  teacher = stages['code_teacher'].model
  if method in ('code', 'prose'):
    student.distill.teacher.update(workdir=f'{method}_teacher',
                                   model=teacher.name, kwargs=teacher.kwargs)
  elif method != 'scratch':
    student.distill.teachers = 'code_teacher,prose_teacher'
    if method == 'mean':
      student.distill.teacher_weights = a['weights']
    else:
      student.distill.route_by = 'source'
  if method != 'scratch':
    student.distill.terms.forward_kl = term('forward_kl', 1.0)
  if method == 'route_xtok':
    stages['code_teacher'].data.update(tokenizer='bpe',
                                       vocab_size=a['code_vocab'])
    student.distill.terms.hybrid = term('hybrid_kl', 1.0)
  c = pipeline_config(**stages, student=student)
  c.stage_dirs = {f'{k}_teacher': a[f'{k}_dir'] for k in ('code', 'prose')
                  if a[f'{k}_dir']}
  return c
