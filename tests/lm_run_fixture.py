"""A tiny language-model run directory (byte-level unless told), laid out as
kd's trainer writes a finished one (config.json, checkpoints/<step>/ with a
TrainState, summary.json), trained a few dozen Adam steps on the tiny
Python-stdlib corpus (train_steps=0: its initial weights). `noise` adds
Gaussian noise to every initial parameter, norm scales included, so that a
weight mapping that mixes two of them up changes the logits. `model_name`
may name another token model (`transformer_encoder`: its masked-LM logits
are trained as next-token ones here)."""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax

from kd import checkpoint, models, steps
from kd import config as kd_config
from kd.data import text

SIZES = {'d_model': 128, 'num_layers': 2, 'num_heads': 4, 'max_len': 64}


def write_lm_run(workdir: str, data_dir: str, *, train_steps: int = 60,
                 seq_len: int = 64, batch_size: int = 8, sizes=None,
                 name: str = 'kd_pystdlib/tiny', lr: float = 3e-3,
                 tokenizer: str = 'byte', vocab_size: int = 0,
                 noise: float = 0.0,
                 model_name: str = 'transformer_lm') -> str:
  sizes = sizes or SIZES
  c = kd_config.run_config()  # The config.json a kd.main run writes.
  c.model.update(name=model_name, kwargs=sizes)
  c.data.update(name=name, data_dir=data_dir, seq_len=seq_len,
                tokenizer=tokenizer, vocab_size=vocab_size, augment=False)
  c.steps, c.batch_size = max(train_steps, 1), batch_size
  config = c.to_dict()
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, 'config.json'), 'w') as f:
    json.dump(config, f)
  tok = text.tokenizer(tokenizer, name=name, vocab_size=vocab_size,
                       path=os.path.join(workdir, 'tokenizer.json'),
                       data_dir=data_dir)
  model = models.create(model_name, tok.vocab_size, **sizes)
  tx = optax.adam(lr)
  state = steps.create_state(model, tx, jax.random.key(0),
                             jnp.zeros((1, seq_len), jnp.int32))
  if noise:  # NumPy's: no compilation per parameter shape.
    rng = np.random.default_rng(1)
    state = state.replace(params=jax.tree.map(
        lambda p: np.asarray(p) + rng.normal(0, noise, p.shape).astype(
            p.dtype), state.params))

  @jax.jit
  def step(state, batch):
    def loss(params):
      logits = model.apply({'params': params}, batch['tokens'][:, :-1])[0]
      nll = optax.softmax_cross_entropy_with_integer_labels(
          logits, batch['tokens'][:, 1:])
      return jnp.sum(nll * batch['mask']) / jnp.sum(batch['mask'])
    grads = jax.grad(loss)(state.params)
    updates, opt_state = tx.update((grads, {}), state.opt_state,
                                   (state.params, {}))
    return state.replace(step=state.step + 1,
                         params=optax.apply_updates(state.params, updates[0]),
                         opt_state=opt_state)

  batches = text.packed_batches(config['data']['name'], batch_size=batch_size,
                               seq_len=seq_len, seed=0, tok=tok,
                               data_dir=data_dir)
  for _ in range(train_steps):
    state = step(state, next(batches))
  mngr = checkpoint.manager(os.path.join(workdir, 'checkpoints'))
  checkpoint.save(mngr, train_steps, state)
  mngr.wait_until_finished()
  mngr.close()
  with open(os.path.join(workdir, 'summary.json'), 'w') as f:
    json.dump({'steps': c.steps}, f)  # Finished, as kd.export asks.
  return workdir
