"""experiments/hf_teacher/config.py: the teacher run the README trains
first is the pipelines' teacher stage (so every sweep run reuses it), the
students read the converted teacher, and the sizes are the README's."""
import jax
import jax.numpy as jnp
import pytest

from experiments.hf_teacher import config as hf_teacher
from kd import models


def _params(c) -> int:
  model = models.from_config(c.model.name, c.model.kwargs,
                             c.data.vocab_size, 'float32')
  shapes = jax.eval_shape(lambda: model.init(
      jax.random.key(0), jnp.zeros((1, 8), jnp.int32), train=False))
  return sum(x.size for x in jax.tree.leaves(shapes))


def test_students_reuse_the_teacher_run_and_read_the_converted_one():
  args = 'teacher_dir=/r/teacher,hf_teacher=/r/converted,steps=7'
  teacher = hf_teacher.get_config(f'method=teacher,{args}')
  kd_, scratch = (hf_teacher.get_config(f'method={m},{args}')
                  for m in ('forward_kl', 'scratch'))
  for c in (kd_, scratch):
    assert c.stage_dirs.teacher == '/r/teacher'
    assert c.stages.teacher.to_dict() == teacher.to_dict()
    s = c.stages.student
    assert (s.steps, s.data.tokenizer, s.data.tokenizer_path) == (
        7, 'hf', '/r/converted')
    assert s.data.vocab_size == teacher.data.vocab_size == 2048
  assert teacher.data.tokenizer == 'bpe' and teacher.data.name == 'kd_text'
  t = kd_.stages.student.distill.teacher
  assert t.workdir == '/r/converted'
  assert t.kwargs.to_dict() == teacher.model.kwargs.to_dict()
  assert list(kd_.stages.student.distill.terms) == ['forward_kl']
  assert not scratch.stages.student.distill.teacher.workdir
  assert not scratch.stages.student.distill.terms
  # The README's sizes: 3.9x fewer parameters.
  assert _params(teacher) == 1_053_824
  assert _params(kd_.stages.student) == 269_760
  with pytest.raises(ValueError, match="unknown method 'kl'"):
    hf_teacher.get_config('method=kl')
