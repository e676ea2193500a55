"""Language-model distillation: the byte-level teacher of `configs/lm/train.py`
-> the 0.11M student, by `method`:
  scratch      the student from the corpus alone (cross-entropy)
  forward_kl   CE + KL(teacher || student) per token (word-level KD;
               DistilBERT's soft targets at T = 1)
  reverse_kl   CE + KL(student || teacher) (MiniLLM's direction)
  jsd          CE + generalized JSD, beta 0.5 (GKD)
  skew_kl      CE + skew KL, alpha 0.1 (DistiLLM)
  tvd          CE + total variation
  gkd          on-policy GKD: JSD(0.5) alone, and with probability `lmbda`
               (0.5) the batch's text after `prompt` tokens is the
               student's own sample (temperature 1), scored by the teacher
  seqkd        sequence-level KD (Kim & Rush 2016): cross-entropy on the
               teacher's greedy continuations of the training rows' first
               `prompt` tokens (steps x batch of them, evenly spaced over
               the corpus), generated once (kd.seqkd)
  topk         CE + KL to the teacher's top-k (`k`, default 32, of the
               vocabulary, renormalised; `tail=1`: with the tail bucket),
               read from a cache of the teacher's top-k log-probabilities
               per token built once (kd.cache), stored as `quantize` says
               ('none': float32; 'q8' ... 'q4': kd.topk_codec records)
`teacher_dir=PATH` shares one trained teacher between runs. `export=1`
exports the student to LiteRT (float32 and int8 weights; prefill and decode
signatures). `init=1` starts
the student from every other teacher layer (DistilBERT; needs a student of
the teacher's width: `student_size=distil`).

  python -m kd.main --config=configs/lm/distill.py:method=forward_kl,seed=0 \
      --workdir=runs/lm/forward_kl_s0
"""
from configs.lm import train as recipes
from kd.config import parse_args, pipeline_config, term

METHODS = ('scratch', 'forward_kl', 'reverse_kl', 'jsd', 'skew_kl', 'tvd',
           'gkd', 'seqkd', 'topk')
TOPK = 32


def _terms(method: str, k: int = TOPK, tail: bool = False
           ) -> tuple[float, dict]:
  """(cross-entropy weight, terms)."""
  return {
      'scratch': (1.0, {}),
      'forward_kl': (1.0, {'forward_kl': term('forward_kl', 1.0)}),
      'reverse_kl': (1.0, {'reverse_kl': term('reverse_kl', 1.0)}),
      'jsd': (1.0, {'jsd': term('generalized_jsd', 1.0, beta=0.5)}),
      'skew_kl': (1.0, {'skew_kl': term('skew_kl', 1.0, alpha=0.1)}),
      'tvd': (1.0, {'tvd': term('tvd', 1.0)}),
      'gkd': (0.0, {'jsd': term('generalized_jsd', 1.0, beta=0.5)}),
      'seqkd': (1.0, {}),
      'topk': (1.0, {'topk': term('topk_kl_cached', 1.0, tail=True) if tail
                     else term('topk_kl', 1.0, k=k)}),
  }[method]


def get_config(arg: str | None = None):
  a = parse_args(arg, method='forward_kl', teacher_dir=str, lmbda=0.5,
                 prompt=32, init=False, export=False, teacher_size='teacher',
                 student_size='student',
                 teacher_steps=2000, k=TOPK, quantize='none', tail=False,
                 **recipes.DEFAULTS)
  method = a.pop('method')
  if method not in METHODS:
    raise ValueError(f'unknown method {method!r}; valid: {METHODS}')
  shared = recipes.data_args(a)
  teacher = recipes.recipe(a['teacher_size'], 0, a['teacher_steps'], **shared)
  student = recipes.recipe(a['student_size'], a['seed'], a['steps'], **shared)
  ce_weight, terms = _terms(method, a['k'], a['tail'])
  student.distill.ce_weight = ce_weight
  if terms or method == 'seqkd':
    student.distill.teacher.update(workdir='teacher', model=teacher.model.name,
                                   kwargs=teacher.model.kwargs)
    for name, t in terms.items():
      student.distill.terms[name] = t
  if a['export']:
    student.export.formats = ('float32', 'int8')
  if a['init']:
    student.update(init_from='teacher', init_from_layers='strided')
  if method == 'gkd':
    student.distill.on_policy.update(lmbda=a['lmbda'], prompt_len=a['prompt'])
  if method == 'seqkd':  # Continuations of the rows the run reads once.
    student.distill.seqkd.update(prompt_len=a['prompt'],
                                 num_prompts=a['steps'] * a['batch'])
  if method == 'topk':
    student.distill.teacher.update(cache=True, cache_topk=a['k'],
                                   cache_quantize=a['quantize'])
  c = pipeline_config(teacher=teacher, student=student)
  if a['teacher_dir']:
    c.stage_dirs = {'teacher': a['teacher_dir']}
  return c
