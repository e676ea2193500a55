"""RKD's angle term from the Gram matrix against the difference form it
replaced: values, exact zeros and gradients, with duplicate embeddings."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.benchmark.rkd import difference_angles as diff_angles
from kd.losses import relations

R = np.random.default_rng(1)
B, D = 9, 5


def with_duplicates(e):
  e = np.array(e)
  e[3] = e[1]
  e[7] = e[1]
  e[5] = e[0]
  return e


def embeddings():
  return R.normal(size=(B, D)).astype(np.float32)


@pytest.mark.parametrize('e', [embeddings(), with_duplicates(embeddings()),
                               embeddings() + 1000.0,
                               np.ones((B, D), np.float32)],
                         ids=['distinct', 'duplicates', 'offset', 'collapsed'])
def test_angles_equal_the_difference_form_with_its_exact_zeros(e):
  ours, ref = np.asarray(relations._angles(e)), np.asarray(diff_angles(e))
  np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=2e-5)
  np.testing.assert_array_equal(ours == 0.0, ref == 0.0)
  zero = np.zeros((B, B, B), bool)
  same = np.all(e[:, None] == e[None], -1)
  zero |= same.T[:, :, None] | same.T[:, None, :]
  assert zero.sum() >= 2 * B * B - B  # i = j or k = j at least.
  np.testing.assert_array_equal(ours == 0.0, zero)


def rkd_grad(s, t, angles=None):
  """The gradient of rkd, or of its formula with these angles."""
  def ref(s, t):
    t = jax.lax.stop_gradient(t)
    d = relations._smooth_l1(relations._normalized_distances(s),
                             relations._normalized_distances(t))
    return 25.0 * d + 50.0 * relations._smooth_l1(angles(s), angles(t))
  return jax.grad(ref if angles else relations.rkd)(jnp.asarray(s),
                                                    jnp.asarray(t))


@pytest.mark.parametrize('case', ['distinct', 'duplicates_in_both'])
def test_rkd_gradient_equals_the_difference_forms(case):
  s, t = embeddings(), embeddings()
  if case == 'duplicates_in_both':
    s, t = with_duplicates(s), with_duplicates(t)
  np.testing.assert_allclose(rkd_grad(s, t),
                             rkd_grad(s, t, diff_angles), rtol=1e-4, atol=1e-6)


def test_student_only_duplicates_get_a_zero_angle_gradient_not_1e12():
  """The difference form's x / max(|x|, 1e-12) has slope 1e12 at x = 0:
  a student with two equal embeddings (a dead layer) got ~1e11 gradients.
  The Gram form holds those angles at 0; every other angle's gradient is
  the difference form's."""
  s, t = with_duplicates(embeddings()), embeddings()
  same = jnp.all(s[:, None] == s[None], -1)

  def masked_diff_angles(e):
    zero = same.T[:, :, None] | same.T[:, None, :]
    return jnp.where(zero, 0.0, diff_angles(e))

  ours = np.asarray(rkd_grad(s, t))
  assert np.abs(np.asarray(rkd_grad(s, t, diff_angles))).max() > 1e9
  assert np.abs(ours).max() < 10.0
  np.testing.assert_allclose(ours, rkd_grad(s, t, masked_diff_angles),
                             rtol=1e-4, atol=1e-6)
