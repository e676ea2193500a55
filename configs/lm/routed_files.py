"""A language-model student on your JSONL (or parquet) files whose
`field` names each document's source (`data.source_field`, a mixed corpus:
kd.data.mixed), distilled from several teachers routed by that source
(`distill.route_by='source'`): name the teachers' run directories and the
source each teaches, one per teacher, with flags. `method`: the loss of
the teachers of the student's (byte-level) tokenizer; `xtok`: a
cross-tokenizer loss ('uld' or 'hybrid_kl') for teachers of another
tokenizer ('': none). `files_test`: the test split's files (else 5% of
the documents by hash).

  python -m kd.main --config=configs/lm/routed_files.py:files=corpus/train.jsonl,field=kind \
      --config.distill.teachers=runs/code_teacher,runs/prose_teacher \
      --config.distill.teacher_sources=code,prose --workdir=runs/mine/routed
"""
from configs.lm import train as recipes
from kd.config import parse_args, term


def get_config(arg: str | None = None):
  a = parse_args(arg, files='', files_test='', field='kind',
                 size='student', seed=0, steps=2000, seq_len=128, batch=32,
                 method='forward_kl', xtok='')
  c = recipes.recipe(a['size'], a['seed'], a['steps'], a['seq_len'],
                     a['batch'], dataset='kd_text', tokenizer='byte', vocab=0,
                     files=a['files'])
  c.data.update(source_field=a['field'], files_test=a['files_test'])
  c.distill.route_by = 'source'
  c.distill.terms[a['method']] = term(a['method'], 1.0)
  if a['xtok']:
    c.distill.terms[a['xtok']] = term(a['xtok'], 1.0)
  return c
