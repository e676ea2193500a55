"""Defaults shared by every run config. A config file under `configs/` starts
from `run_config()` (one run) or `pipeline_config(...)` (named stages run in
order, later stages using earlier ones as teachers). `validate` rejects bad
values before a run does any work; `parse_args` reads a config file's
`:key=value,...` argument."""
import os

import jax
import ml_collections as mc

from kd import fields
from kd import names


def run_config() -> mc.ConfigDict:
  c = mc.ConfigDict()
  c.seed = 0
  c.data = mc.ConfigDict(dict(
      name='kd_digits', data_dir='', download=False, augment=True,
      image_size=0, shuffle_buffer=10_000, eval_split='test',
      exclude_classes=(),  # Left out of training (a transfer set without them).
      process_split='shard',  # Or 'slice': see kd.data.example_batches.
      # Text datasets (kd.data.text): tokens per training sequence, and the
      # tokenizer ('byte'; 'bpe' trained to `vocab_size`; 'hf': the
      # teacher run's tokenizer.json, or the one at `tokenizer_path`).
      seq_len=0, tokenizer='byte', vocab_size=0, tokenizer_path='',
      # A teacher of another tokenizer (a cross-tokenizer term,
      # kd.data.paired): its tokens per row (0: seq_len).
      teacher_seq_len=0,
      # What a text run learns (kd.names.TEXT_TASKS): 'lm' the next token;
      # 'mlm' masked tokens (BERT; data.tokenizer 'wordpiece' or 'hf');
      # 'classify' each document's label ([CLS] head; model.kwargs
      # head='cls', vocab_size=data.vocab_size).
      task='lm',
      # name='kd_text' (kd.data.corpus): your .txt / .jsonl / .parquet
      # files (comma-separated globs), the JSONL field or parquet column of
      # the text, and optional files of the validation and test splits
      # (else 90/5/5 by a hash of each document). `source_field`: the
      # field naming each document's source, which makes the files a
      # mixed corpus (kd.data.mixed; a row's `source` for routing).
      files='', text_field='text', files_validation='', files_test='',
      source_field=''))
  c.model = mc.ConfigDict(dict(name='mlp', kwargs=mc.ConfigDict()))
  c.dtype = 'float32'
  c.batch_size = 64  # Global, split over all devices.
  c.eval_batch_size = 256
  c.eval_every = 0  # Steps between test evaluations; 0: only at the end.
  c.steps = 1000
  c.optimizer = mc.ConfigDict(dict(
      name='adam', lr=1e-3, momentum=0.9, nesterov=False, weight_decay=0.0,
      schedule='cosine', warmup_steps=0, boundaries=(), decay_factor=0.1,
      grad_clip=0.0, accumulate_steps=1))
  # A finished run (or earlier pipeline stage) whose student and matching
  # adapters start this run: the second stage of FitNets, FT and AB.
  c.init_from = ''
  # 'strided': init_from is a deeper language model of the same width, and
  # the student takes every k-th of its layers (DistilBERT).
  c.init_from_layers = ''
  # A prune run (kd.prune): `source`, a finished run or an earlier stage,
  # pruned to `width` / `depth` ('heads:0.5,mlp:0.5,embed:0.75',
  # 'keep:2,by:cosine'), scored on `calibration_batches` training batches;
  # steps = 0 and model.kwargs the pruned ones (kd.prune.pruned_kwargs).
  c.prune = mc.ConfigDict(dict(source='', width='', depth='',
                               calibration_batches=16))
  c.label_smoothing = 0.0
  # > 0: mixup of each batch; a teacher sees the student's mixed inputs
  # (consistent teaching, FunMatch).
  c.mixup_alpha = 0.0
  # Distillation: empty teacher.workdir means a supervised run.
  c.distill = mc.ConfigDict(dict(
      teacher=mc.ConfigDict(dict(
          workdir='', model='', kwargs=mc.ConfigDict(),
          # Teacher compute dtype; 'auto': bfloat16 on accelerators,
          # float32 on CPU (where bfloat16 is emulated and slower).
          dtype='auto',
          # A live teacher's batch norms folded into the convolutions before
          # them at load time (kd.fold): the same outputs, fewer operations.
          fold_bn=True,
          # Read the teacher's outputs from a cache built once (kd.cache)
          # instead of running it; needs inputs without augmentation.
          cache=False, cache_dir='',
          # A text dataset's cache: the teacher's top k log-probabilities
          # per token and its tail mass, read by its `topk_kl` terms (of
          # this k) as `topk_kl_cached`, or by terms of the losses on a
          # cached top k (kd.names.CACHED_TOPK_LOSSES).
          cache_topk=0,
          # How it stores them: 'none' (float32 values, int32 tokens) or
          # 'q8', 'q6', 'q5', 'q4': a kd.topk_codec record per token, the
          # log-probabilities as codes of that many bits.
          cache_quantize='none',
          # > 1: the teacher's parameters split over a `model` mesh axis of
          # this size (parallel='mesh'), for teachers too big for a device.
          model_shards=1,
          # Distill from a teacher run that has not finished (its latest
          # checkpoint; the summary's teacher_step says which).
          allow_unfinished_teacher=False)),
      # Several language-model teachers (kd.teachers) instead of `teacher`:
      # their run directories, comma-separated (each run's config names its
      # model; `teacher`'s dtype and allow_unfinished_teacher apply to all),
      # combined by `teacher_weights` (comma-separated, one per teacher; the
      # terms see the mixture sum_k w_k softmax(t_k / T); default: the
      # average), or routed by the data column `route_by` ('source': each
      # row of a mixed corpus, data.name='kd_pystdlib+kd_bbcnews', is
      # taught by the teacher of its source, its run's data.name unless
      # `teacher_sources` names them, comma-separated, one per teacher).
      teachers='', teacher_weights='', route_by='', teacher_sources='',
      ce_weight=1.0,
      terms=mc.ConfigDict(),
      # Train with simulated int8 (kd.quantization) for a better int8 export.
      quantization_aware=False,
      # On-policy distillation (GKD, Agarwal et al. 2024), text datasets:
      # with probability `lmbda` a batch keeps its first `prompt_len` tokens
      # and the rest is the student's own sample (at `temperature`,
      # `top_k`), which the terms then score against the teacher.
      on_policy=mc.ConfigDict(dict(lmbda=0.0, prompt_len=0, temperature=1.0,
                                   top_k=0)),
      # Sequence-level KD (Kim & Rush 2016; kd.seqkd), text datasets: with
      # prompt_len > 0 the student trains on the teacher's continuations
      # (at `temperature`, 0: greedy, and `top_k`) of the first
      # `num_prompts` (0: all) training rows' first `prompt_len` tokens,
      # generated once into `dir` (default: the run's `seqkd/`).
      seqkd=mc.ConfigDict(dict(prompt_len=0, temperature=0.0, top_k=0,
                               num_prompts=0, batch_size=64, dir=''))))
  c.parallel = 'pmap'  # Or 'mesh'; 'sharded': parameters split over `mesh`.
  # parallel='sharded' (kd.sharding): devices per mesh axis, -1 for the
  # devices left; the batch splits over data x fsdp.
  c.mesh = mc.ConfigDict(dict(data=-1, fsdp=1, tensor=1))
  c.log_every = 100
  c.checkpoint_every = 500
  # Training steps per jitted call (`lax.scan` over k batches): fewer
  # dispatches for small models; logging, tests and checkpoints happen at
  # multiples of k. On the CPU the k steps are unrolled (kd.steps.multi_step).
  c.steps_per_dispatch = 1
  c.keep_checkpoints = 2
  c.wandb = mc.ConfigDict(dict(
      mode='offline', project='kd', group='', tags=(), name=''))
  c.evaluate = mc.ConfigDict(dict(latency=True))
  c.export = mc.ConfigDict(dict(formats=(), representative_examples=256))
  return c


def _check_task(c, check, at: str) -> None:
  """A text run's `data.task` against its tokenizer, model and objective."""
  d, task = c.data, c.data.get('task', 'lm')
  check(task in names.TEXT_TASKS, 'data.task', 'unknown task',
        f'valid: {", ".join(names.TEXT_TASKS)}')
  if task == 'lm':
    check(d.tokenizer != 'wordpiece', 'data.tokenizer', "WordPiece has no "
          "end-of-text token to predict: it serves the encoder tasks",
          f"set --config.{at}data.task to 'mlm' or 'classify', or use "
          "another tokenizer ('byte', 'bpe', 'hf')")
    return
  check(d.tokenizer in ('wordpiece', 'hf'), 'data.tokenizer',
        f"the {task} task reads BERT's WordPiece tokens ([CLS], [SEP], "
        "[MASK], [PAD])", f"set --config.{at}data.tokenizer='wordpiece' (or "
        "'hf' with a BERT teacher's tokenizer)")
  check(d.tokenizer != 'wordpiece' or d.vocab_size > 5, 'data.vocab_size',
        'the WordPiece vocabulary (and the encoder\'s embedding rows) must '
        'exceed the 5 special tokens', f'set --config.{at}data.vocab_size, '
        'e.g. 8192')
  check(c.model.name == 'transformer_encoder', 'model.name',
        f'the {task} task trains a bidirectional encoder',
        f"set --config.{at}model.name='transformer_encoder'")
  head = c.model.kwargs.get('head', 'mlm')
  want = 'cls' if task == 'classify' else 'mlm'
  if head != want:
    _fail(f'{at}model.kwargs.head', head, f'the {task} task reads the '
          f'{want} head\'s logits', f"set --config.{at}model.kwargs.head="
          f"'{want}'")
  vocab = c.model.kwargs.get('vocab_size')
  if task == 'classify' and vocab != d.vocab_size:
    _fail(f'{at}model.kwargs.vocab_size', vocab, 'a classifier embeds the '
          f'tokenizer\'s vocabulary of data.vocab_size={d.vocab_size}',
          f'set --config.{at}model.kwargs.vocab_size={d.vocab_size}')
  if c.export.formats:
    _fail(f'{at}export.formats', tuple(c.export.formats), f'a {task} run is '
          'exported after training, not by the run', 'unset it and run '
          '`python -m kd.export --workdir=RUN` on the finished run')
  t = c.distill.teacher
  for field, on in (('distill.teacher.cache', t.cache),
                    ('distill.on_policy.lmbda',
                     c.distill.get('on_policy', {}).get('lmbda', 0)),
                    ('distill.seqkd.prompt_len',
                     c.distill.get('seqkd', {}).get('prompt_len', 0))):
    check(not on, field, f'serves next-token language models, not the '
          f'{task} task', f'unset it (--config.{at}{field}=0)')


def term(loss: str, weight: float = 1.0, student: str = 'logits',
         teacher: str = 'logits', adapter: str = '',
         adapter_kwargs: dict | None = None, **kwargs) -> mc.ConfigDict:
  """One distillation term of `config.distill.terms`: `loss` (a name in
  `kd.losses.LOSSES`) between the student output `student` and the teacher
  output `teacher` ('logits' or a feature name), through an optional
  learnable `adapter` (a name in `kd.adapters.ADAPTERS`).

  `schedule={'weight': ('linear', 0.0, 1.0), 'temperature': ('cosine', 4.0,
  1.0), 'beta': ('constant', 0.5)}` varies the weight (replacing `weight`)
  or a loss argument over the run's steps, or over a fourth entry's
  number of steps (`kd.steps.scheduled`)."""
  return mc.ConfigDict(dict(
      loss=loss, weight=weight, student=student, teacher=teacher,
      kwargs=mc.ConfigDict(kwargs), adapter=adapter,
      adapter_kwargs=mc.ConfigDict(adapter_kwargs or {})))


def pipeline_config(**stages: mc.ConfigDict) -> mc.ConfigDict:
  """Stages run in the order given; a stage's `distill.teacher.workdir`,
  `init_from` and `data.tokenizer_path` may name an earlier stage."""
  c = mc.ConfigDict()
  c.stage_order = tuple(stages)
  c.stages = mc.ConfigDict(stages)
  c.stage_dirs = mc.ConfigDict()  # Stage -> directory, instead of WORKDIR/stage.
  return c


def prune_distill_pipeline(teacher: mc.ConfigDict, student: mc.ConfigDict,
                           pruned: mc.ConfigDict | None = None,
                           prune: dict | None = None, terms: dict | None = None,
                           ce_weight: float = 0.0,
                           teacher_dir: str = '') -> mc.ConfigDict:
  """teacher -> [pruned ->] student. `pruned` (a run config of the
  teacher's recipe) becomes the stage that prunes the teacher to the
  student's model kwargs by `prune` (`config.prune`'s width, depth,
  calibration_batches) without training, and the student starts from it.
  With `terms`, the student distils from the teacher by them, its
  cross-entropy weighted `ce_weight` (0: the teacher alone, as Minitron).
  `teacher_dir` shares a trained teacher between pipelines."""
  stages = {'teacher': teacher}
  if pruned is not None:
    pruned.model.kwargs = student.model.kwargs.to_dict()
    pruned.steps = 0
    pruned.prune.update(source='teacher', **(prune or {}))
    stages['pruned'] = pruned
    student.init_from = 'pruned'
  if terms:
    student.distill.ce_weight = ce_weight
    student.distill.teacher.update(workdir='teacher', model=teacher.model.name,
                                   kwargs=teacher.model.kwargs.to_dict())
    for name, t in terms.items():
      student.distill.terms[name] = t
  stages['student'] = student
  c = pipeline_config(**stages)
  if teacher_dir:
    c.stage_dirs = {'teacher': teacher_dir}
  return c


def stage_dirs(pipeline, workdir: str) -> dict:
  """{stage: its directory}: `pipeline.stage_dirs[stage]` where set (a
  teacher shared with other pipelines), else WORKDIR/stage. `pipeline` is a
  pipeline config or its saved config.json."""
  kept = pipeline.get('stage_dirs') or {}
  return {name: kept.get(name) or os.path.join(workdir, name)
          for name in pipeline['stages']}


def parse_args(arg: str | None, **defaults) -> dict:
  """`key=value,...` (the text after `:` in `--config=file.py:...`) as a dict
  of every key in `defaults`, each value of its default's type (bool: 0/1,
  true/false); a default given as a type (`hint=int`) means None unless the
  argument is given. Unknown keys and values that do not parse are errors."""
  values = {k: None if isinstance(v, type) else v for k, v in defaults.items()}
  for key, text in fields.pairs(arg):
    if key not in defaults:
      raise ValueError(f'unknown config argument {key!r} in {arg!r}; valid: '
                       f'{", ".join(sorted(defaults))}')
    if text is None:
      raise ValueError(f'config argument {key!r} has no value; write '
                       f'{key}=VALUE')
    kind = defaults[key]
    values[key] = _typed(key, text, kind if isinstance(kind, type) else
                         type(kind))
  return values


def _typed(key: str, text: str, kind: type):
  if kind is bool:
    if text.lower() in ('1', 'true'):
      return True
    if text.lower() in ('0', 'false'):
      return False
    raise ValueError(f'config argument {key}={text!r}: expected 0/1 or '
                     'true/false')
  try:
    return kind(text)
  except ValueError:
    raise ValueError(f'config argument {key}={text!r}: expected '
                     f'{kind.__name__}') from None


class ConfigError(ValueError):
  """A config field that cannot run: the message names the field, the
  problem and the fix, so the command line shows it without a traceback."""


def _fail(field: str, value, why: str, fix: str):
  raise ConfigError(f'config.{field}={value!r}: {why}; {fix}')


def validate(config: mc.ConfigDict, num_devices: int | None = None) -> None:
  """Raises ValueError naming the first bad field of a run or of any stage
  of a pipeline, before any work is done. `num_devices`: the devices the
  batches split over (default all of them)."""
  if 'stages' in config:
    for name in config.stage_order:
      if name not in config.stages:
        _fail('stage_order', tuple(config.stage_order),
              f'stage {name!r} is not in config.stages',
              f'name one of {sorted(config.stages)}')
      _validate_run(config.stages[name], f'stages.{name}.', num_devices)
  else:
    _validate_run(config, '', num_devices)


def _validate_run(c, at: str, num_devices: int | None) -> None:
  def check(ok: bool, field: str, why: str, fix: str):
    if not ok:
      _fail(at + field, fields.get(c, field), why, fix)

  pruning = bool(c.get('prune', {}).get('source'))
  for field in ('steps', 'batch_size', 'eval_batch_size', 'log_every',
                'checkpoint_every', 'keep_checkpoints',
                'optimizer.accumulate_steps'):
    if field == 'steps' and pruning:  # kd.prune.run checks it is 0.
      continue
    check(fields.get(c, field) > 0, field, 'must be positive',
          f'set --config.{at}{field} to 1 or more')
  k = c.get('steps_per_dispatch', 1)
  check(k > 0, 'steps_per_dispatch', 'must be positive',
        f'set --config.{at}steps_per_dispatch to 1 or more')
  for field in ('steps', 'log_every', 'checkpoint_every', 'eval_every'):
    check(fields.get(c, field) % k == 0, field, f'must be a multiple of '
          f'steps_per_dispatch={k} (k steps run in one call)',
          f'set --config.{at}{field} to a multiple of {k}, or '
          f'--config.{at}steps_per_dispatch to a divisor of it')
  check(k == 1 or c.parallel != 'sharded', 'steps_per_dispatch',
        "parallel='sharded' takes one batch per call", 'set it to 1')
  check(k == 1 or c.distill.teacher.model_shards == 1, 'steps_per_dispatch',
        'a teacher split over devices (distill.teacher.model_shards > 1) '
        'takes one batch per call', 'set it to 1')
  check(c.eval_every >= 0, 'eval_every', 'must be 0 (test only at the end) '
        'or a number of steps', f'set --config.{at}eval_every to 0 or more')
  check(c.optimizer.lr > 0, 'optimizer.lr', 'the learning rate must be '
        'positive', f'set --config.{at}optimizer.lr, e.g. 1e-3')
  check(c.optimizer.warmup_steps >= 0, 'optimizer.warmup_steps',
        'cannot be negative', f'set --config.{at}optimizer.warmup_steps to 0 '
        'or more')
  check(0 <= c.label_smoothing < 1, 'label_smoothing', 'must be in [0, 1)',
        f'set --config.{at}label_smoothing, e.g. 0.1 (0: off)')
  check(c.mixup_alpha >= 0, 'mixup_alpha', 'cannot be negative',
        f'set --config.{at}mixup_alpha to 0 (off) or a Beta parameter > 0')
  for field, valid in (('dtype', names.DTYPES), ('parallel', names.PARALLEL),
                       ('optimizer.name', names.OPTIMIZERS),
                       ('optimizer.schedule', names.LR_SCHEDULES),
                       ('distill.teacher.dtype', names.DTYPES + ('auto',))):
    check(fields.get(c, field) in valid, field, 'unknown name',
          f'valid: {", ".join(valid)}')
  if c.data.name == 'image_folder':
    check(bool(c.data.data_dir), 'data.data_dir', 'image_folder reads your '
          'images', f'set --config.{at}data.data_dir=DIR holding '
          'train/<class>/* and test/<class>/*')
    check(c.data.image_size > 0, 'data.image_size', 'image_folder resizes '
          'every image to image_size squared',
          f'set --config.{at}data.image_size, e.g. 64')
  if c.data.name == 'kd_text':
    check(bool(c.data.files), 'data.files', 'kd_text reads your files',
          f"set --config.{at}data.files='corpus/*.jsonl' (globs of .txt, "
          '.jsonl or .parquet, comma-separated)')
  if names.is_text(c.data.name):
    check(c.data.seq_len > 0, 'data.seq_len', 'a text dataset needs the '
          'training sequence length', f'set --config.{at}data.seq_len, e.g. 128')
    check(c.data.tokenizer in names.TOKENIZERS, 'data.tokenizer',
          'unknown tokenizer', f'valid: {", ".join(names.TOKENIZERS)}')
    check(c.data.tokenizer != 'bpe' or c.data.vocab_size > 259,
          'data.vocab_size', 'a BPE vocabulary must exceed the 259 byte and '
          'special tokens', f'set --config.{at}data.vocab_size, e.g. 4096')
    check(not c.mixup_alpha, 'mixup_alpha', 'token ids cannot be mixed',
          f'set --config.{at}mixup_alpha=0 for a text dataset')
    _check_task(c, check, at)
    t = c.distill.teacher
    check(not t.cache or t.cache_topk > 0, 'distill.teacher.cache_topk',
          "a text dataset's cache holds the teacher's top-k logits per token",
          f'set --config.{at}distill.teacher.cache_topk, e.g. 64, or keep the '
          'teacher live (cache=False)')
    for name, term in c.distill.terms.items() if t.cache else ():
      check(term.loss in names.CACHED_TOPK_LOSSES or (
          term.loss == 'topk_kl' and term.kwargs.get('k') == t.cache_topk),
            f'distill.terms.{name}.loss', 'a top-k cache serves only topk_kl '
            f'terms of k=distill.teacher.cache_topk={t.cache_topk} and '
            f'the losses on it ({", ".join(names.CACHED_TOPK_LOSSES)})',
            'make it one of those, or keep the teacher live (cache=False)')
    for name, term in c.distill.terms.items() if not t.cache else ():
      check(term.loss not in names.CACHED_TOPK_LOSSES,
            f'distill.terms.{name}', f'{term.loss} reads the teacher\'s '
            'top-k cache', f'set --config.{at}distill.teacher.cache=True '
            'and cache_topk, or use topk_kl (live top k)')
  quantize = c.distill.teacher.get('cache_quantize', 'none')
  check(quantize in names.CACHE_QUANTIZE,
        'distill.teacher.cache_quantize', 'unknown name',
        f'valid: {", ".join(names.CACHE_QUANTIZE)}')
  check(quantize == 'none' or (c.distill.teacher.cache and names.is_text(
      c.data.name)), 'distill.teacher.cache_quantize', "compresses a text "
        "dataset's top-k cache", f'set --config.{at}distill.teacher.cache='
        "True for a text dataset, or cache_quantize='none'")
  on_policy = c.distill.get('on_policy')
  if on_policy is not None and on_policy.lmbda:
    check(0 < on_policy.lmbda <= 1, 'distill.on_policy.lmbda',
          'is a probability', 'set it in (0, 1], or 0 for off-policy only')
    check(names.is_text(c.data.name), 'distill.on_policy.lmbda', 'on-policy '
          'distillation samples tokens: it needs a text dataset',
          'set it to 0')
    check(not c.distill.teacher.cache, 'distill.on_policy.lmbda',
          "the teacher cache holds no outputs for the student's samples",
          'set it to 0, or keep the teacher live (cache=False)')
    check(0 < on_policy.prompt_len < max(c.data.seq_len, 1),
          'distill.on_policy.prompt_len', 'the prompt must be shorter than '
          'data.seq_len (the rest is sampled)',
          f'set --config.{at}distill.on_policy.prompt_len, e.g. 32')
  seqkd = c.distill.get('seqkd')
  if seqkd is not None and seqkd.prompt_len:
    check(names.is_text(c.data.name), 'distill.seqkd.prompt_len', 'sequence-level '
          'KD generates tokens: it needs a text dataset', 'set it to 0')
    check(0 < seqkd.prompt_len <= c.data.seq_len, 'distill.seqkd.prompt_len',
          'the prompt must fit in data.seq_len (the rest is generated)',
          f'set --config.{at}distill.seqkd.prompt_len, e.g. 32')
    check(bool(c.distill.teacher.workdir), 'distill.teacher.workdir',
          'sequence-level KD needs the teacher that generates',
          f'set --config.{at}distill.teacher.workdir')
    check(seqkd.temperature >= 0, 'distill.seqkd.temperature',
          'cannot be negative', 'set 0 (greedy) or a sampling temperature')
    check(seqkd.batch_size > 0, 'distill.seqkd.batch_size',
          'must be positive', 'set the generation batch, e.g. 64')
  if c.distill.get('teachers'):
    _check_teachers(c, check, at)
  source_field = c.data.get('source_field')
  check(not source_field or (c.data.name == 'kd_text' and c.data.get(
      'task', 'lm') == 'lm'), 'data.source_field',
        f'names the field of your files (data.name=\'kd_text\') that holds '
        f'each document\'s source for a language model, not a field of '
        f'{c.data.name} (task {c.data.get("task", "lm")!r})',
        "unset it, or mix built-in corpora by name (data.name="
        "'kd_pystdlib+kd_bbcnews')")
  mixed = '+' in c.data.name or bool(source_field)
  what = c.data.name + (f' by {source_field}' if source_field else '')
  check(not mixed or not c.export.formats, 'export.formats',
        f'the export\'s held-out figures read one corpus, not a mix '
        f'({what})', 'export later with kd.export from a run of one '
        "corpus, or set --config.export.formats='()'")
  several = bool(c.distill.get('teachers'))  # Their caches serve a mix.
  for field in ('distill.teacher.cache', 'distill.seqkd.prompt_len'):
    check(not mixed or not fields.get(c, field, 0) or (
        several and field == 'distill.teacher.cache'), field,
          f'reads one corpus\'s fixed rows, not a mix ({what})',
          'turn it off (a live teacher), or train on one corpus')
  teacher = c.distill.teacher
  check(teacher.model_shards >= 1, 'distill.teacher.model_shards',
        'must be 1 or more', 'set 1 to keep the teacher on every device')
  for field in ('model.kwargs', 'distill.teacher.kwargs'):
    for key in ('num_classes', 'dtype'):
      check(key not in fields.get(c, field), f'{field}.{key}',
            f'{key} is not a model argument here: it comes from '
            + ('the dataset (config.data.name)' if key == 'num_classes' else
               f'config.{at}dtype / distill.teacher.dtype'),
            f'remove {key} from config.{at}{field}')
  for path, value in _leaves(c):
    if path.rsplit('.', 1)[-1] == 'temperature' and isinstance(
        value, (int, float)) and path != 'distill.seqkd.temperature':
      check(value > 0, path, 'a temperature must be positive',
            f'set --config.{at}{path}, e.g. 4.0')
  for name, t in c.distill.terms.items():
    for field, spec in (t.kwargs.get('schedule') or {}).items():
      _check_schedule(f'{at}distill.terms.{name}.kwargs.schedule.{field}',
                      field, tuple(spec))
  devices = jax.device_count() if num_devices is None else num_devices
  split = max(devices // max(teacher.model_shards, 1), 1)
  local = max(jax.local_device_count() // max(teacher.model_shards, 1), 1)
  check(c.batch_size % split == 0, 'batch_size',
        f'the global batch must split evenly over {split} devices',
        f'choose a multiple of {split}')
  check(c.eval_batch_size % local == 0, 'eval_batch_size',
        f'each process\'s test batch must split evenly over its {local} '
        'devices', f'choose a multiple of {local}')


# The valid range of a scheduled term field's values, and its fix.
_SCHEDULE_RANGES = {
    'weight': (lambda v: v >= 0, 'cannot be negative'),
    'temperature': (lambda v: v > 0, 'must be positive'),
    'beta': (lambda v: 0 < v < 1, 'must be in (0, 1)'),
    'alpha': (lambda v: 0 <= v <= 1, 'must be in [0, 1]'),
}


def _check_teachers(c, check, at: str) -> None:
  """Several LM teachers (`kd.teachers`): what the config alone decides."""
  d = c.distill
  dirs = [x.strip() for x in d.teachers.split(',') if x.strip()]
  k = len(dirs)
  check(names.is_text(c.data.name) and c.data.get('task', 'lm') == 'lm',
        'distill.teachers', 'several teachers distill a language model '
        f'(data.name={c.data.name!r})', 'use a text dataset, or '
        'experiments/multi_teacher for classifiers')
  check(not d.teacher.workdir, 'distill.teachers', 'distill.teacher.workdir'
        f'={d.teacher.workdir!r} is set too', 'name every teacher in '
        f"distill.teachers and set --config.{at}distill.teacher.workdir=''")
  try:
    weights = [float(w) for w in d.teacher_weights.split(',') if w.strip()]
  except ValueError:
    weights = None
  check(weights is not None, 'distill.teacher_weights', 'not numbers',
        'give comma-separated numbers, one per teacher, e.g. 0.5,0.5')
  check(not weights or len(weights) == k, 'distill.teacher_weights',
        f'{len(weights)} weights for the {k} teachers of distill.teachers',
        f'give {k} weights, one per teacher in order')
  check(all(w >= 0 for w in weights) and (not weights or sum(weights) > 0),
        'distill.teacher_weights', 'a mixture needs weights >= 0, not all 0',
        'give non-negative weights')
  check(not (weights and d.route_by), 'distill.teacher_weights',
        f'route_by={d.route_by!r} routes each row to one teacher',
        'weight the teachers or route by a column, not both')
  sources = [x.strip() for x in d.teacher_sources.split(',') if x.strip()]
  check(not sources or len(sources) == k, 'distill.teacher_sources',
        f'{len(sources)} sources for the {k} teachers of distill.teachers',
        f'give {k} sources, one per teacher in order')
  t = d.teacher
  check(t.model_shards == 1 and not d.seqkd.prompt_len
        and not d.on_policy.lmbda, 'distill.teachers', 'several teachers '
        'run live on the mesh, replicated or sharded by parallel=\'sharded\', '
        'or from top-k caches (no model_shards, seqkd or on_policy yet)',
        'turn those off, or distill from one teacher')
  check(not t.cache or d.route_by or all(
      term.loss == 'topk_kl' and not term.kwargs.get('tail')
      for term in d.terms.values()), 'distill.teacher.cache', 'a mixture of '
        "several teachers' top-k caches is the forward KL to sum_k w_k "
        'softmax(top k of t_k / T) on the union of their top k (topk_kl; '
        'their tails differ, so no tail bucket)', 'make every term '
        f"topk_kl without tail, route the teachers (--config.{at}distill."
        "route_by='source'), or keep them live (cache=False)")
  temperatures = {}
  for name, term in d.terms.items():
    check(term.teacher == 'logits' and not term.adapter,
          f'distill.terms.{name}.teacher', 'several teachers share only '
          'their next-token logits', "read teacher='logits' without an "
          'adapter')
    temperatures.setdefault(float(term.kwargs.get('temperature', 1.0)), name)
  if not d.route_by and len(temperatures) > 1:
    _fail(f'{at}distill.terms', ', '.join(
        f'{name}: T={t:g}' for t, name in temperatures.items()),
          'the mixture sum_k w_k softmax(t_k / T) of several teachers is '
          'formed at one temperature', 'give every term the same one')


def _check_schedule(path: str, field: str, spec: tuple) -> None:
  """A term's schedule: (kind, value) for 'constant', (kind, start, end[,
  steps]) otherwise, with endpoints in the field's range."""
  kind = spec[0] if spec else None
  if kind not in names.TERM_SCHEDULES:
    _fail(path, spec, 'unknown schedule', 'start it with one of '
          + ', '.join(names.TERM_SCHEDULES))
  sizes = (2,) if kind == 'constant' else (3, 4)
  if len(spec) not in sizes:
    _fail(path, spec, f'a {kind} schedule has {" or ".join(map(str, sizes))} '
          'entries', "write ('constant', v) or (kind, start, end[, steps])")
  if len(spec) == 4 and not spec[3] > 0:
    _fail(path, spec, 'its number of steps must be positive',
          'give steps >= 1, or leave it out for the run\'s steps')
  ok, why = _SCHEDULE_RANGES.get(field, (lambda v: True, ''))
  for value in spec[1:3]:
    if not ok(value):
      _fail(path, spec, f'{field} {why}', f'choose values where {field} '
            f'{why}')


def _leaves(c, prefix: str = ''):
  """(dotted path, value) of every non-dict value of `c`."""
  for key, value in c.items():
    if isinstance(value, (mc.ConfigDict, dict)):
      yield from _leaves(value, f'{prefix}{key}.')
    else:
      yield f'{prefix}{key}', value
