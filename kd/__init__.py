"""kd: knowledge distillation in JAX/Flax."""
