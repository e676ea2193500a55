"""Continues a prompt with a run's language model or an exported file.

  python -m kd.generate --workdir=RUN --prompt=TEXT [--max_new_tokens=64
      --temperature=0 --top_k=0 --seed=0] [--tflite=FILE]

prints the prompt and its continuation, sampled in JAX (`kd.sampling`), or
with `--tflite` by the same rule from a file written by `python -m kd.export`
(its prefill and decode signatures run in LiteRT; --workdir is then not
needed).
"""
from kd import sampling
from kd.export import lm as lm_export


def complete(prompt: str, *, workdir: str | None = None,
             tflite: str | None = None, max_new_tokens: int = 64,
             temperature: float = 0.0, top_k: int = 0, seed: int = 0) -> str:
  """The text of `prompt` and its continuation, sampled (as
  `kd.sampling.generate` does) by a run's model in JAX, or by an exported
  LiteRT file (`tflite`, with its JSON sidecar beside it). The model sees
  bos, then the prompt."""
  sampling.check_max_new_tokens(max_new_tokens)
  if tflite:
    tok = lm_export.sidecar_tokenizer(tflite)
    ids = [tok.bos_id, *map(int, tok.encode([prompt])[0])]
    new = lm_export.LiteRTLM.from_file(tflite).generate(
        ids, max_new_tokens, temperature=temperature, top_k=top_k, seed=seed,
        eos_id=tok.eos_id) if max_new_tokens else []
  else:
    if not workdir:
      raise ValueError('give --workdir (a run directory) or --tflite (an '
                       'exported file)')
    run = lm_export.load_run(workdir)
    tok = run.tokenizer
    ids = [tok.bos_id, *map(int, tok.encode([prompt])[0])]
    (new,) = lm_export.jax_generate(
        run.model, run.variables, [ids], max_new_tokens, pad_id=tok.pad_id,
        temperature=temperature, top_k=top_k, seed=seed, eos_id=tok.eos_id)
  return prompt + tok.decode([t for t in new if t != tok.eos_id])


if __name__ == '__main__':
  from absl import app, flags  # pylint: disable=g-import-not-at-top

  _WORKDIR = flags.DEFINE_string('workdir', None, 'A language-model run.')
  _TFLITE = flags.DEFINE_string('tflite', None, 'An exported .tflite file '
                                '(from `python -m kd.export`) to run instead.')
  _PROMPT = flags.DEFINE_string('prompt', '', 'Text to continue.')
  _MAX_NEW = flags.DEFINE_integer('max_new_tokens', 64, 'Tokens to add.')
  _TEMPERATURE = flags.DEFINE_float('temperature', 0.0, '0: greedy.')
  _TOP_K = flags.DEFINE_integer('top_k', 0, 'Sample among the k most '
                                'likely tokens (0: all).')
  _SEED = flags.DEFINE_integer('seed', 0, 'Sampling seed.')

  def main(argv):
    del argv
    try:
      print(complete(_PROMPT.value, workdir=_WORKDIR.value,
                     tflite=_TFLITE.value, max_new_tokens=_MAX_NEW.value,
                     temperature=_TEMPERATURE.value, top_k=_TOP_K.value,
                     seed=_SEED.value))
    except ValueError as e:  # Bad flags: one line, no traceback.
      raise SystemExit(str(e)) from None

  app.run(main)
