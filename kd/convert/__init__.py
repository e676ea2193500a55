"""Weights of published teachers into kd run directories.

  python -m kd.convert --from=repdistiller --model=resnet32x4 \
      resnet32x4_vanilla/ckpt_epoch_240.pth --out=runs/teachers/resnet32x4

The run directory (config.json, checkpoints/0/, summary.json with
`converted: true` and the source file's sha256) loads as a teacher:
`--config.distill.teacher.workdir=runs/teachers/resnet32x4`.
"""
import os

from kd.convert import common, repdistiller, torchvision

SOURCES = {'repdistiller': repdistiller, 'torchvision': torchvision}


def source_module(source: str):
  if source not in SOURCES:
    raise ValueError(f'unknown source {source!r}; valid: '
                     f'{", ".join(sorted(SOURCES))}')
  return SOURCES[source]


def model_name(source: str, model: str) -> str:
  """kd's name of `model` (either kd's or the source's own name)."""
  src = source_module(source)
  name = src.ALIASES.get(model, model)
  if name not in src.RULES:
    raise ValueError(f'{source} has no model {model!r}; valid: '
                     f'{", ".join(sorted(src.RULES))}')
  return name


def convert_state_dict(source: str, model: str, state_dict) -> dict:
  """The kd variables of `model` from a PyTorch `state_dict` of `source`."""
  src, name = source_module(source), model_name(source, model)
  _, abstract = common.abstract_variables(name, src.NUM_CLASSES,
                                          src.INPUT_SHAPE)
  return common.to_variables(state_dict, src.RULES[name], abstract)


def convert(source: str, model: str, ckpt: str, out: str) -> dict:
  """Converts the checkpoint file `ckpt` into the run directory `out`;
  returns its summary."""
  src, name = source_module(source), model_name(source, model)
  variables = convert_state_dict(source, name,
                                 common.load_state_dict(ckpt))
  config = common.run_config(name, src.DATA)
  summary = {'steps': config.steps, 'converted': True, 'source': source,
             'source_file': os.path.basename(ckpt),
             'source_sha256': common.sha256(ckpt), 'model': name}
  common.write_run(out, variables, config, summary)
  return summary
