"""Recurrent classifier for 1-D signals (the MNIST-1D paper's GRU baseline)."""
import flax.linen as nn
import jax.numpy as jnp


class GRU(nn.Module):
  """Bidirectional GRU over the time axis of `[batch, length(, 1)]` inputs;
  every step's hidden state (both directions) is flattened into the
  embedding, then a linear head, as in the MNIST-1D reference model."""
  num_classes: int
  hidden: int = 6
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    del train
    if x.ndim == 2:
      x = x[..., None]
    x = x.astype(self.dtype)
    rnn = nn.Bidirectional(
        nn.RNN(nn.GRUCell(self.hidden, dtype=self.dtype)),
        nn.RNN(nn.GRUCell(self.hidden, dtype=self.dtype)))
    h = rnn(x)
    emb = h.reshape(h.shape[0], -1)
    logits = nn.Dense(self.num_classes, dtype=self.dtype, name='head')(emb)
    return logits.astype(jnp.float32), {'sequence': h, 'embedding': emb}
