"""The names a config may choose, by field: the registries that validation
(`kd.config`) reads without importing the code that implements them.

Each implementing module takes its tuple from here, so a name added there
is added here first."""

OPTIMIZERS = ('sgd', 'adam', 'adamw')  # config.optimizer.name, kd.optim.
LR_SCHEDULES = ('constant', 'cosine', 'step')  # config.optimizer.schedule.
# A loss term's field schedules (distill.terms.*.kwargs.schedule),
# kd.steps.scheduled.
TERM_SCHEDULES = ('constant', 'linear', 'cosine')
DATA_PARALLEL = ('pmap', 'mesh')  # kd.parallel.DataParallel.
PARALLEL = DATA_PARALLEL + ('sharded',)  # config.parallel, kd.sharding.
DTYPES = ('float32', 'bfloat16')  # config.dtype, kd.models.DTYPES.
# Offline ('<name>/tiny' for tests); kd_text: your files (config.data.files).
TEXT_DATASETS = ('kd_bbcnews', 'kd_english', 'kd_gensim', 'kd_pystdlib',
                 'kd_text')
# config.data.tokenizer; 'wordpiece' (BERT's, kd.data.mlm) for the encoder
# tasks only.
TOKENIZERS = ('byte', 'bpe', 'hf', 'wordpiece')
# config.data.task of a text dataset: next-token prediction (decoders), or
# an encoder's masked-LM pretraining (kd.data.mlm) or document
# classification (kd.data.classify).
TEXT_TASKS = ('lm', 'mlm', 'classify')
# config.distill.teacher.cache_quantize: kd.cache's top-k record formats.
CACHE_QUANTIZE = ('none', 'q8', 'q6', 'q5', 'q4')
# Losses that read a text run's top-k teacher cache (kd.losses.divergences).
CACHED_TOPK_LOSSES = ('topk_kl_cached', 'topk_reverse_kl_cached',
                      'topk_jsd_cached')
ENCODER_TASKS = ('mlm', 'classify')


def is_text(dataset: str) -> bool:
  """Whether `dataset` (config.data.name) is a text corpus (kd.data.text),
  or a mix of them ('kd_pystdlib+kd_bbcnews', rows of one source each)."""
  return all(part.split('/')[0] in TEXT_DATASETS
             for part in dataset.split('+'))
