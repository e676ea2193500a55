"""The README and docs/: links that resolve, the landing page's commands."""
import glob
import importlib
import importlib.util
import json
import os
import re

import pytest

from kd import report
from tests import conftest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = ['README.md'] + sorted(glob.glob('docs/*.md', root_dir=ROOT))
READMES = sorted(glob.glob('experiments/**/README.md', root_dir=ROOT,
                           recursive=True))
LINK = re.compile(r'\[[^\]]*\]\(([^)\s]+)\)')


def _slug(heading: str) -> str:
  """GitHub's anchor for a heading: lower case, punctuation dropped, spaces
  to hyphens."""
  return re.sub(r'[^\w\- ]', '', heading.strip().lower()).replace(' ', '-')


def _anchors(path: str) -> set[str]:
  text = open(path).read()
  text = re.sub(r'```.*?```', '', text, flags=re.S)  # '# ...' in code is no heading.
  return {_slug(h) for h in re.findall(r'^#+ (.+)$', text, flags=re.M)}


def _broken_links(doc: str, root: str = ROOT) -> list[str]:
  """`doc`'s local links (a file, a folder, a heading of a Markdown file)
  that do not resolve."""
  path = os.path.join(root, doc)
  text = re.sub(r'```.*?```', '', open(path).read(), flags=re.S)
  broken = []
  for target in LINK.findall(text):
    if re.match(r'[a-z]+:', target):  # https:, mailto:
      continue
    file, _, anchor = target.partition('#')
    resolved = os.path.normpath(os.path.join(os.path.dirname(path), file))
    if not os.path.exists(resolved):
      broken.append(f'{target} (no {os.path.relpath(resolved, root)})')
    elif anchor and (not resolved.endswith('.md')
                     or anchor not in _anchors(resolved)):
      broken.append(f'{target} (no heading #{anchor})')
  return broken


@pytest.mark.parametrize('doc', DOCS + READMES)
def test_every_local_link_resolves(doc):
  assert _broken_links(doc) == []


def test_a_broken_link_is_found(tmp_path):
  (tmp_path / 'docs').mkdir()
  (tmp_path / 'docs' / 'a.md').write_text('# Many runs, one step (CPU)\n')
  (tmp_path / 'README.md').write_text(
      '[a](docs/a.md) [b](docs/b.md) [h](docs/a.md#many-runs-one-step-cpu) '
      '[x](docs/a.md#nothing) [w](https://example.com/none)\n'
      '```\n[c](not/checked.md)\n```\n')
  assert _broken_links('README.md', str(tmp_path)) == [
      'docs/b.md (no docs/b.md)', 'docs/a.md#nothing (no heading #nothing)']


def test_readme_is_a_landing_page_linking_every_doc():
  readme = open(os.path.join(ROOT, 'README.md')).read()
  assert len(readme.splitlines()) <= 300
  linked = {os.path.normpath(t.partition('#')[0]) for t in LINK.findall(readme)}
  assert set(DOCS[1:]) <= linked, set(DOCS[1:]) - linked


def test_readme_test_command_is_what_ci_runs():
  """The README's tests command is, to the character, the one .ci/run runs
  (with --durations=25, the slowest tests printed)."""
  readme = open(os.path.join(ROOT, 'README.md')).read().splitlines()
  i = next(i for i, line in enumerate(readme) if line.startswith('Tests ('))
  command = next(line.strip() for line in readme[i:]
                 if line.startswith('    '))
  ci = open(os.path.join(ROOT, '.ci/run')).read().splitlines()
  assert ci[-1] == command
  assert f'    {command}\n' in open(os.path.join(ROOT, 'docs/testing.md')).read()
  assert command.endswith('python -m pytest -q -n 2 --dist loadfile '
                          '--durations=25')


SAMPLE = """

def child():
  return subprocess.run(['true'], check=False)

def helper():
  return [child() for _ in range(1)]

def pure():
  return sorted([2, 1])
"""


def test_tests_that_start_processes_are_marked():
  namespace = {'__name__': 'sample'}
  exec(SAMPLE, namespace)  # pylint: disable=exec-used
  assert conftest.starts_process(namespace['child'], namespace)
  # Through a module function it names, inside a comprehension.
  assert conftest.starts_process(namespace['helper'], namespace)
  assert not conftest.starts_process(namespace['pure'], namespace)


def test_readme_quickstart_table_is_its_summarys():
  """The README's quickstart table is what kd.main printed for the
  summary.json the run wrote (kept beside the plot in docs/)."""
  readme = open(os.path.join(ROOT, 'README.md')).read().splitlines()
  i = readme.index('## The quickstart')
  j = next(j for j in range(i, len(readme)) if readme[j].startswith('|'))
  k = next(k for k in range(j, len(readme)) if not readme[k].startswith('|'))
  summary = json.load(open(os.path.join(ROOT, 'docs/quickstart_summary.json')))
  assert '\n'.join(readme[j:k]) == report.table(
      summary, ['teacher', 'student_scratch', 'student_kd'])


def test_zoo_table_is_the_tested_parameter_counts():
  """docs/vision.md's zoo table holds the counts tests/test_zoo.py checks
  the models against (hand-derived or published)."""
  from tests import test_zoo  # pylint: disable=import-outside-toplevel
  lines = open(os.path.join(ROOT, 'docs/vision.md')).read().splitlines()
  i = lines.index('| model | params | model | params |')
  shown = {}
  for line in lines[i + 2:]:
    if not line.startswith('|'):
      break
    cells = [c.strip() for c in line.strip('|').split('|')]
    for name, count in zip(cells[::2], cells[1::2]):
      shown[name.removesuffix(' (CIFAR)')] = int(count.replace(',', ''))
  assert len(shown) == 20
  assert shown == {n: {**test_zoo.CIFAR100, **test_zoo.IMAGENET}[n]
                   for n in shown}


def _importable(module: str) -> bool:
  try:
    return importlib.util.find_spec(module) is not None
  except ModuleNotFoundError:  # Its package is missing.
    return False


def _missing_names(text: str) -> list[str]:
  """The kd names (`kd.a.b`), modules run with `-m` and repository files
  (`kd/x.py`, `configs/...py`) that `text` mentions but that do not exist."""
  missing = []
  for name in sorted(set(re.findall(r'`(kd(?:\.\w+)+)', text))):
    parts = name.split('.')
    for i in range(len(parts), 0, -1):  # The longest importable prefix.
      module = '.'.join(parts[:i])
      if _importable(module):
        break
    obj = importlib.import_module(module)
    for attr in parts[i:]:
      obj = getattr(obj, attr, None)
    if obj is None:
      missing.append(name)
  for module in sorted(set(re.findall(
      r'-m ((?:kd|launch|experiments)(?:\.\w+)+)', text))):
    if not _importable(module):
      missing.append(f'-m {module}')
  for path in sorted(set(re.findall(
      r'((?:kd|configs|launch|tests|experiments)/[\w/.\-]+\.(?:py|sh))', text))):
    if not os.path.exists(os.path.join(ROOT, path)):
      missing.append(path)
  return missing


@pytest.mark.parametrize('doc', DOCS)
def test_names_and_files_the_docs_mention_exist(doc):
  assert _missing_names(open(os.path.join(ROOT, doc)).read()) == []


def test_a_renamed_function_is_found():
  assert _missing_names(
      '`kd.losses.logits.kd` `kd.losses.no_such_loss` `kd.nothing.here` '
      'python -m kd.tables, python -m kd.tabels; `kd/runs.py`, kd/gone.py') == [
          'kd.losses.no_such_loss', 'kd.nothing.here', '-m kd.tabels',
          'kd/gone.py']
