"""BERT -> DistilBERT (Sanh et al. 2019) in miniature: masked-LM pretraining
of a BERT teacher, its distillation into a student of half its depth, and
fine-tunes on BBC News topics (5 classes) comparing the students.

Stages, in order (each in WORKDIR/<stage>):
  teacher_mlm       the teacher (BERT: post-LN, token types) pretrained with
                    masked-LM alone on `dataset`'s training split, with a
                    WordPiece tokenizer of `vocab` entries trained there
  student_distil    DistilBERT: the teacher's every other layer (no token
                    types: their type-0 row folded into the positions; no
                    pooler), then L = 5 T^2 KL(teacher || student) at T = 2
                    + 2 MLM + 1 (1 - cos) of the last hidden states, the
                    paper's weights (its code's alpha_ce, alpha_mlm,
                    alpha_cos); the KL counts the masked positions
                    (`soft_over=all`: every token, the code's default
                    restrict_ce_to_mask=False), the cosine every token
  student_mlm_only  the same student architecture pretrained with MLM alone,
                    from random weights
  teacher_ft, distil_ft, mlm_only_ft, scratch_ft
                    fine-tunes on kd_bbcnews's labels (train split; tested
                    on its test split) of the teacher, the DistilBERT
                    student, the MLM-only student and the student with no
                    pretraining: [CLS] head (BERT's tanh pooler for the
                    teacher, DistilBERT's ReLU pre-classifier for the
                    students), cross-entropy
  distil_kd_ft      the DistilBERT student fine-tuned with task distillation
                    too: CE + T^2 KL at T = 2 from teacher_ft's class logits

  python -m kd.main --config=configs/bert/distilbert.py --workdir=runs/distilbert

`dataset` is the pretraining text: kd_bbcnews (its training split) by
default; `dataset=kd_english` adds kd_gensim's Lee corpus and Wikipedia
articles (the BBC News training articles only, as here). `seed` seeds the
fine-tunes (`task_dataset`: kd_bbcnews, or its '/tiny'
subset for tests); `pretrained_dir=DIR` reuses the three pretraining
stages of an earlier run in DIR (another seed's fine-tunes share them).
Sizes: `layers` (the student has half), `d_model`, `heads`, `vocab`,
`seq_len`, `batch`, `pretrain_steps`, `finetune_steps`.

At full size, with your weights: `teacher=RUN` is a converted Hugging Face
BERT (`python -m kd.convert --from=hf bert-base-uncased/ --out=RUN`); it
replaces teacher_mlm, the student is its width at half its depth (6 layers
of bert-base's 12: DistilBERT's shape), the tokenizer is the teacher's, and
`dataset=kd_text,files=GLOB` distils on your text:

  python -m kd.main --config=configs/bert/distilbert.py:teacher=runs/bert-base,dataset=kd_text,files=corpus/*.txt \\
      --workdir=runs/distilbert_full
"""
import json
import os

from kd.config import parse_args, pipeline_config, run_config, term

DEFAULTS = dict(seed=0, dataset='kd_bbcnews', files='', seq_len=128, batch=32,
                vocab=8192, layers=4, d_model=256, heads=4,
                pretrain_steps=2000, finetune_steps=500, pretrain_lr=1e-3,
                finetune_lr=3e-4, soft_over='masked', teacher='',
                pretrained_dir='', task_dataset='kd_bbcnews')
# DistilBERT's loss weights and temperature (its training command).
ALPHA_CE, ALPHA_MLM, ALPHA_COS, TEMPERATURE = 5.0, 2.0, 1.0, 2.0
PRETRAINING = ('teacher_mlm', 'student_distil', 'student_mlm_only')


def _run(a, *, task: str, kwargs: dict, steps: int, lr: float, seed: int):
  c = run_config()
  c.seed = seed
  tokenizer = 'hf' if a['teacher'] else 'wordpiece'
  c.data.update(
      name=a['dataset'] if task == 'mlm' else a['task_dataset'], augment=False,
      task=task, seq_len=a['seq_len'], tokenizer=tokenizer,
      vocab_size=a['vocab'], files=a['files'] if task == 'mlm' else '',
      # Every stage reads the pretraining tokenizer.
      tokenizer_path=a['teacher'] or 'teacher_mlm')
  if task == 'mlm' and a['dataset'] != 'kd_text':
    c.data.eval_split = 'test'
  c.model.name = 'transformer_encoder'
  head = {'head': 'cls', 'vocab_size': a['vocab']} if task == 'classify' else {}
  c.model.kwargs.update(kwargs, **head)
  c.batch_size, c.eval_batch_size = a['batch'], 64
  c.steps, c.log_every = steps, max(steps // 20, 1)
  c.checkpoint_every = max(steps // 4, 1)
  c.optimizer.update(name='adamw', lr=lr, weight_decay=0.01,
                     schedule='cosine', warmup_steps=steps // 10,
                     grad_clip=1.0)
  c.wandb.project = 'kd-distilbert'
  c.evaluate.latency = task == 'classify'
  return c


def _teacher_kwargs(a) -> tuple[dict, int]:
  """(the teacher's model kwargs, its vocabulary)."""
  if a['teacher']:  # A converted BERT's, from its run's config.
    with open(os.path.join(a['teacher'], 'config.json')) as f:
      saved = json.load(f)
    kwargs = dict(saved['model']['kwargs'], pad_id=0)
    return kwargs, saved['data']['vocab_size']
  return dict(d_model=a['d_model'], num_layers=a['layers'],
              num_heads=a['heads'], max_len=a['seq_len'], type_vocab_size=2,
              pad_id=0), a['vocab']


def _teach(c, teacher_stage: str, teacher):
  c.distill.teacher.update(workdir=teacher_stage, model=teacher.model.name,
                           kwargs=teacher.model.kwargs)


def get_config(arg: str | None = None):
  a = parse_args(arg, **DEFAULTS)
  if a['soft_over'] not in ('masked', 'all'):
    raise ValueError(f"soft_over={a['soft_over']!r}; valid: masked, all")
  teacher_kw, a['vocab'] = _teacher_kwargs(a)
  teacher_kw.pop('head', None)
  teacher_kw.update(num_labels=0)
  student_kw = dict(teacher_kw, num_layers=teacher_kw['num_layers'] // 2,
                    type_vocab_size=0)
  pre = dict(task='mlm', steps=a['pretrain_steps'], lr=a['pretrain_lr'],
             seed=0)
  teacher_mlm = _run(a, kwargs=teacher_kw, **pre)
  teacher_mlm.data.tokenizer_path = a['teacher']  # '': trains its own.
  distil = _run(a, kwargs=student_kw, **pre)
  distil.update(init_from='teacher_mlm', init_from_layers='strided')
  _teach(distil, 'teacher_mlm', teacher_mlm)
  distil.distill.ce_weight = ALPHA_MLM
  distil.distill.terms.soft = term(
      'kd', ALPHA_CE, temperature=TEMPERATURE,
      **({'average_over': 'attention_mask'} if a['soft_over'] == 'all'
         else {}))
  distil.distill.terms.cos = term('hidden_cosine', ALPHA_COS,
                                  student='embedding', teacher='embedding',
                                  average_over='attention_mask')
  mlm_only = _run(a, kwargs=student_kw, **pre)

  ft = dict(task='classify', steps=a['finetune_steps'], lr=a['finetune_lr'],
            seed=a['seed'])
  # DistilBERT's classifier: pre_classifier + ReLU (kd's pooler).
  # num_labels: the classify task's classes.
  teacher_ft_kw = {k: v for k, v in teacher_kw.items() if k != 'num_labels'}
  student_ft_kw = dict(teacher_ft_kw, num_layers=student_kw['num_layers'],
                       type_vocab_size=0, pooler_activation='relu')
  teacher_ft = _run(a, kwargs=teacher_ft_kw, **ft)
  teacher_ft.init_from = 'teacher_mlm'
  stages = dict(teacher_ft=teacher_ft)
  for name, start in (('distil_ft', 'student_distil'),
                      ('mlm_only_ft', 'student_mlm_only'),
                      ('scratch_ft', ''), ('distil_kd_ft', 'student_distil')):
    stages[name] = _run(a, kwargs=student_ft_kw, **ft)
    stages[name].init_from = start
  kd_ft = stages['distil_kd_ft']
  _teach(kd_ft, 'teacher_ft', teacher_ft)
  kd_ft.distill.terms.kd = term('kd', 1.0, temperature=TEMPERATURE)

  c = pipeline_config(teacher_mlm=teacher_mlm, student_distil=distil,
                      student_mlm_only=mlm_only, **stages)
  kept = {}
  if a['pretrained_dir']:
    kept = {n: os.path.join(a['pretrained_dir'], n) for n in PRETRAINING}
  if a['teacher']:
    kept['teacher_mlm'] = a['teacher']
  c.stage_dirs = kept
  return c
