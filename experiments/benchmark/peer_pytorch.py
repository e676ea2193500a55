"""The benchmark's pairs in PyTorch, timed as `experiments.benchmark.run`.

  /work/venv_torch/bin/python -m experiments.benchmark.peer_pytorch \\
      --pair=cifar_r32x4_r8x4 [--batch=64] [--iters=10] \\
      [--repdistiller=/work/refcode]

Prints one JSON object: examples/s and milliseconds of the student's
training step (forward, cross-entropy, backward, SGD with momentum 0.9),
the teacher's forward pass (eval mode, no_grad) and the distillation step
(the teacher's no_grad forward, then the student's step on CE + KD at T=4),
float32 on the CPU, random inputs, the median of `--iters` timed calls after
two warm-up calls, the three steps' calls interleaved. The CIFAR models are RepDistiller's own definitions
(`--repdistiller`: the folder holding its `models/`, e.g. a clone of
github.com/HobbitLong/RepDistiller), the ImageNet ones torchvision's; the
MNIST-1D pair (kd's `cnn1d` and `mlp`) is re-expressed here layer for layer.
Needs torch (`pip install torch`, plus torchvision for the ImageNet pair),
usually in a virtual environment of its own: `run.py --peer` calls this
module with `--peer_python`.
"""
import argparse
import json
import statistics
import sys
import time

# name: (teacher, student, batch, input shape CHW, classes), as run.PAIRS.
PAIRS = {
    'mnist1d': ('cnn1d', 'mlp', 100, (1, 40), 10),
    'cifar_r32x4_r8x4': ('resnet32x4', 'resnet8x4', 64, (3, 32, 32), 100),
    'cifar_wrn40_2_wrn16_2': ('wrn_40_2', 'wrn_16_2', 64, (3, 32, 32), 100),
    'imagenet_r34_r18': ('resnet34', 'resnet18', 64, (3, 224, 224), 1000),
}


def _import_torch():
  try:
    import torch  # pylint: disable=import-outside-toplevel
  except ImportError:
    sys.exit(f'PyTorch is not importable by {sys.executable}: '
             '`pip install torch` (CPU wheels suffice), or pass run.py '
             '--peer_python=/path/to/a/python/that/has/it')
  return torch


def mnist1d_models(torch, classes):
  """kd's cnn1d (3 x [conv k5 SAME, ReLU], 2x max-pooling between them,
  flatten, dense 128, ReLU, head) and mlp (128-128), in PyTorch."""
  nn = torch.nn
  layers, c = [], 1
  for i in range(3):
    layers += [nn.Conv1d(c, 32, 5, padding=2), nn.ReLU()]
    if i < 2:
      layers.append(nn.MaxPool1d(2))
    c = 32
  cnn = nn.Sequential(*layers, nn.Flatten(), nn.Linear(32 * 10, 128),
                      nn.ReLU(), nn.Linear(128, classes))
  mlp = nn.Sequential(nn.Flatten(), nn.Linear(40, 128), nn.ReLU(),
                      nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, classes))
  return cnn, mlp


def create(torch, pair: str, repdistiller: str):
  t_name, s_name, _, _, classes = PAIRS[pair]
  if pair == 'mnist1d':
    return mnist1d_models(torch, classes)
  if pair.startswith('imagenet'):
    import torchvision  # pylint: disable=import-outside-toplevel
    return (getattr(torchvision.models, t_name)(num_classes=classes),
            getattr(torchvision.models, s_name)(num_classes=classes))
  sys.path.insert(0, repdistiller)
  try:
    from models import model_dict  # pylint: disable=import-outside-toplevel
  except ImportError:
    sys.exit(f'no RepDistiller models/ under --repdistiller={repdistiller}: '
             'git clone https://github.com/HobbitLong/RepDistiller and pass '
             'its folder')
  return (model_dict[t_name](num_classes=classes),
          model_dict[s_name](num_classes=classes))


def time_interleaved(fns: dict, iters: int) -> dict:
  """{name: median seconds per call} of `fns`, after two warm-up calls
  each, their timed calls taken in turn (as `run.time_interleaved`)."""
  for fn in fns.values():
    fn()
    fn()
  times = {k: [] for k in fns}
  for _ in range(iters):
    for k, fn in fns.items():
      t0 = time.perf_counter()
      fn()
      times[k].append(time.perf_counter() - t0)
  return {k: statistics.median(v) for k, v in times.items()}


def bench(pair: str, iters: int, batch: int = 0,
          repdistiller: str = '/work/refcode') -> dict:
  torch = _import_torch()
  f = torch.nn.functional
  _, _, default_batch, shape, classes = PAIRS[pair]
  batch = batch or default_batch
  teacher, student = create(torch, pair, repdistiller)
  teacher.eval()
  student.train()
  g = torch.Generator().manual_seed(0)
  x = torch.randn(batch, *shape, generator=g)
  y = torch.randint(0, classes, (batch,), generator=g)
  opt = torch.optim.SGD(student.parameters(), lr=0.01, momentum=0.9)

  def student_step(t_logits=None):
    logits = student(x)
    loss = f.cross_entropy(logits, y)
    if t_logits is not None:  # kd's 'kd' term: T^2 KL(p_T || q_T), T = 4.
      loss = loss + 16 * f.kl_div(f.log_softmax(logits / 4, -1),
                                  f.log_softmax(t_logits / 4, -1),
                                  reduction='batchmean', log_target=True)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()

  @torch.no_grad()
  def teacher_forward():
    return teacher(x)

  def distill_step():
    student_step(teacher_forward())

  out = {'pair': pair, 'batch': batch, 'torch': torch.__version__,
         'threads': torch.get_num_threads()}
  for name, sec in time_interleaved(
      {'student_step': student_step, 'teacher_forward': teacher_forward,
       'distill_step': distill_step}, iters).items():
    out[f'{name}_ms'] = 1000 * sec
    out[f'{name}_ex_per_s'] = batch / sec
  return out


def main():
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--pair', required=True, choices=sorted(PAIRS))
  p.add_argument('--batch', type=int, default=0)
  p.add_argument('--iters', type=int, default=10)
  p.add_argument('--repdistiller', default='/work/refcode')
  a = p.parse_args()
  print(json.dumps(bench(a.pair, a.iters, a.batch, a.repdistiller)))


if __name__ == '__main__':
  main()
