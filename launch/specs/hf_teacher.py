"""The Hugging Face round trip end to end (experiments/hf_teacher/README.md):
a BPE teacher trained by kd on JSONL files, exported to a Hugging Face
folder and converted back, then a 4x smaller student from the corpus alone
and distilled from the converted teacher with forward KL; 3 seeds. The
teacher, its export and conversion come first (the README's commands).

  python -m launch.sweep launch/specs/hf_teacher.py --workdir=runs --parallel=3
  python -m kd.tables runs/hf_teacher --group-by=method,model.kwargs.d_model \
      --metric=test_bits_per_byte,params,teacher_agreement
"""
NAME = 'hf_teacher'
CONFIG = 'experiments/hf_teacher/config.py'
ARGS = [f'method={m},teacher_dir={{root}}/teacher'
        for m in ('scratch', 'forward_kl')]
SEEDS = [0, 1, 2]
TAGS = ['lm', 'hf', 'bbcnews']
