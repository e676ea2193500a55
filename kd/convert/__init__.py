"""Weights of published teachers into kd run directories.

  python -m kd.convert --from=repdistiller --model=resnet32x4 \
      resnet32x4_vanilla/ckpt_epoch_240.pth --out=runs/teachers/resnet32x4

The run directory (config.json, checkpoints/0/, summary.json with
`converted: true` and the source file's sha256) loads as a teacher:
`--config.distill.teacher.workdir=runs/teachers/resnet32x4`.

`--data` names the dataset the model was trained for (its classes and
input size; default the source's: cifar100, imagenet2012), `--image_size`
ImageNet's input size where it is not 224 (DeiT-B at 384), and `--kwargs`
the model's arguments as JSON (a small ViT:
`--kwargs='{"patch_size": 4, "width": 192, "depth": 6, "heads": 3}'`);
all are saved in config.json, so `distill.teacher.model` and `.kwargs`
must say the same.

Hugging Face model folders (kd.convert.hf; docs/convert.md):

  python -m kd.convert --from=hf HF_DIR --out=RUN_DIR [--dtype=bfloat16]
  python -m kd.convert --from=hf --describe HF_DIR [--student_params=30M]
"""
import os

from kd.convert import common, repdistiller, timm, torchvision
from kd.data import input_pipeline

SOURCES = {'repdistiller': repdistiller, 'timm': timm,
           'torchvision': torchvision}


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


def _classes_and_shape(source: str, data: str | None, image_size: int):
  """(number of classes, input shape) of `data` (default the source's) at
  `image_size` (ImageNet's; 0: its default)."""
  spec = input_pipeline.spec(data or source_module(source).DATA,
                             image_size or None)
  return spec.num_classes, spec.input_shape


def convert_state_dict(source: str, model: str, state_dict, *,
                       data: str | None = None, image_size: int = 0,
                       kwargs: dict | None = None) -> dict:
  """The kd variables of `model` (built with `kwargs` for `data` at
  `image_size`) from a PyTorch `state_dict` of `source`."""
  src, name = source_module(source), model_name(source, model)
  _, abstract = common.abstract_variables(
      name, *_classes_and_shape(source, data, image_size), **(kwargs or {}))
  return common.to_variables(state_dict, src.RULES[name], abstract)


def convert(source: str, model: str, ckpt: str, out: str, *,
            data: str | None = None, image_size: int = 0,
            kwargs: dict | None = None) -> dict:
  """Converts the checkpoint file `ckpt` into the run directory `out`;
  returns its summary."""
  src, name = source_module(source), model_name(source, model)
  variables = convert_state_dict(source, name, common.load_state_dict(ckpt),
                                 data=data, image_size=image_size,
                                 kwargs=kwargs)
  config = common.run_config(name, data or src.DATA, kwargs)
  config.data.image_size = image_size
  summary = {'steps': config.steps, 'converted': True, 'source': source,
             'source_file': os.path.basename(ckpt),
             'source_sha256': common.sha256(ckpt), 'model': name}
  common.write_run(out, variables, config, summary)
  return summary
