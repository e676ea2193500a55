"""BERT -> DistilBERT in miniature (experiments/distilbert/README.md): a
4-layer, 128-wide BERT pretrained with masked-LM on BBC News's training
articles, its DistilBERT student (2 layers) and an MLM-only student, shared
by every seed (pretrained_dir={root}/pretrained: the first seed trains them,
the others reuse them), then the five fine-tunes on the 5 topics; 3 seeds.
Runs one after another (the pretraining stages are shared).

  python -m launch.sweep launch/specs/distilbert.py --workdir=runs
  python -m experiments.distilbert.table runs/distilbert \
      --out=experiments/distilbert
"""
NAME = 'distilbert'
CONFIG = 'configs/bert/distilbert.py'
ARGS = ['pretrained_dir={root}/pretrained,layers=4,d_model=128,heads=4,'
        'vocab=4096,seq_len=128,batch=32,pretrain_steps=2000,'
        'finetune_steps=300']
SEEDS = [0, 1, 2]
TAGS = ['bert', 'distilbert', 'bbcnews']
