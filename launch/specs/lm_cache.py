"""The compressed top-k teacher cache against the float32 one: the LM
recipe's student (configs/lm/distill.py, method=topk) at k = 64 from a
float32 cache, an 8-bit and a 4-bit one (kd.topk_codec), and the 8-bit one
with the tail bucket; 3 seeds, one teacher (as lm_distill's) shared by all.

  python -m launch.sweep launch/specs/lm_cache.py --workdir=runs
  python -m kd.tables runs/lm_cache --group-by=quantize,tail \
      --metric=test_bits_per_byte,teacher_agreement,train_seconds,\
               teacher_cache_bytes_per_stored_logit
"""
NAME = 'lm_cache'
CONFIG = 'configs/lm/distill.py'
_T = 'teacher_dir={root}/teacher,teacher_steps=1000,steps=300,method=topk,k=64'
ARGS = [f'{_T},quantize={q},tail={t}'
        for q, t in (('none', 0), ('q8', 0), ('q4', 0), ('q8', 1))]
SEEDS = [0, 1, 2]
TAGS = ['lm', 'pystdlib', 'cache']
