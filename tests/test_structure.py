"""The shape of kd's imports: no circle, and a batch and a model travel one
way (data -> models -> training; export and generation never load the
training code)."""
import ast
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _modules(root: str, package: str) -> dict:
  """{dotted module name: path} of every .py file under root/package."""
  found = {}
  for folder, _, names in os.walk(os.path.join(root, package)):
    for name in names:
      if name.endswith('.py'):
        path = os.path.join(folder, name)
        module = os.path.relpath(path, root)[:-3].replace(os.sep, '.')
        found[module.removesuffix('.__init__')] = path
  return found


def import_graph(root: str, package: str) -> dict:
  """{module: set of modules of `package` it imports}, counting imports
  inside functions too: a lazy import is still an edge of the circle."""
  modules = _modules(root, package)

  def resolve(name):  # 'kd.data.text.is_text' -> 'kd.data.text'
    while name and name not in modules:
      name = name.rpartition('.')[0]
    return name

  graph = {}
  for module, path in modules.items():
    with open(path) as f:
      tree = ast.parse(f.read(), path)
    is_package = path.endswith('__init__.py')
    edges = set()
    for node in ast.walk(tree):
      if isinstance(node, ast.Import):
        edges.update(resolve(a.name) for a in node.names)
      elif isinstance(node, ast.ImportFrom):
        base = node.module or ''
        if node.level:
          parts = module.split('.')
          parts = parts[:len(parts) - node.level + is_package]
          base = '.'.join(parts + ([node.module] if node.module else []))
        edges.update(resolve(f'{base}.{a.name}') or resolve(base)
                     for a in node.names)
    graph[module] = edges - {'', module}
  return graph


def circles(graph: dict) -> list[list[str]]:
  """The strongly connected components of more than one module (Tarjan)."""
  index, low, stack, on_stack, found = {}, {}, [], set(), []

  def visit(v):
    index[v] = low[v] = len(index)
    stack.append(v)
    on_stack.add(v)
    for w in sorted(graph.get(v, ())):
      if w not in index:
        visit(w)
        low[v] = min(low[v], low[w])
      elif w in on_stack:
        low[v] = min(low[v], index[w])
    if low[v] == index[v]:
      component = []
      while True:
        w = stack.pop()
        on_stack.discard(w)
        component.append(w)
        if w == v:
          break
      if len(component) > 1:
        found.append(sorted(component))

  for v in sorted(graph):
    if v not in index:
      visit(v)
  return found


def test_the_circle_finder_sees_lazy_and_relative_imports(tmp_path):
  pkg = tmp_path / 'p'
  (pkg / 'sub').mkdir(parents=True)
  (pkg / '__init__.py').write_text('')
  (pkg / 'sub' / '__init__.py').write_text('')
  (pkg / 'a.py').write_text('from p.sub import b\n')
  (pkg / 'sub' / 'b.py').write_text('from . import c\n')
  (pkg / 'sub' / 'c.py').write_text('def f():\n  from p import a\n')
  (pkg / 'd.py').write_text('import p.a\n')
  graph = import_graph(str(tmp_path), 'p')
  assert graph['p.sub.b'] == {'p.sub.c'}
  assert circles(graph) == [['p.a', 'p.sub.b', 'p.sub.c']]


def test_kd_has_no_import_circle():
  found = circles(import_graph(ROOT, 'kd'))
  assert not found, 'import circles in kd/: ' + '; '.join(
      ' <-> '.join(c) for c in found)


_PROBE = """
import json, sys
import kd.export.onnx
onnx_loads_tf = 'tensorflow' in sys.modules
import kd.export, kd.export.lm, kd.export.student, kd.export.tflite
import kd.generate
print(json.dumps({'onnx_loads_tf': onnx_loads_tf,
                  'loaded': sorted(m for m in sys.modules
                                   if m.startswith('kd.'))}))
"""


def test_export_and_generation_load_no_training_code():
  out = subprocess.run([sys.executable, '-c', _PROBE], cwd=ROOT, check=True,
                       capture_output=True, text=True).stdout
  probe = json.loads(out.strip().splitlines()[-1])
  assert not probe['onnx_loads_tf'], 'kd.export.onnx imports TensorFlow'
  assert 'kd.export.tflite' in probe['loaded']  # The probe ran to its end.
  training = {'kd.loop', 'kd.train', 'kd.steps', 'kd.seqkd', 'kd.variant',
              'kd.vectorize', 'kd.main'}
  assert not training & set(probe['loaded'])
