"""Cross-tokenizer distillation on the stdlib corpus (issue #23 item 1): the
0.11M byte-level student of `lm_distill` from the corpus alone, with ULD and
with the aligned hybrid KL from a 0.8M BPE-4096 teacher, and with forward KL
from the byte-level teacher (the same tokenizer, for reference); each
teacher shared by its runs; 3 seeds; bits per byte compare across
tokenizers. Measured: experiments/cross_tokenizer/README.md.

  python -m launch.sweep launch/specs/lm_cross_tokenizer.py --workdir=runs
  python -m experiments.cross_tokenizer.table runs/lm_cross_tokenizer
"""
NAME = 'lm_cross_tokenizer'
CONFIG = 'configs/lm/cross_tokenizer.py'
_STEPS = 'teacher_steps=1000,steps=300'
ARGS = [f'method=scratch,teacher_dir={{root}}/bpe_teacher,{_STEPS}',
        f'method=uld,teacher_dir={{root}}/bpe_teacher,{_STEPS}',
        f'method=hybrid,teacher_dir={{root}}/bpe_teacher,{_STEPS}',
        f'method=forward_kl,teacher_dir={{root}}/byte_teacher,{_STEPS}']
SEEDS = [0, 1, 2]
TAGS = ['lm', 'pystdlib', 'cross_tokenizer']
