"""The README and docs/: links that resolve, the landing page's commands."""
import glob
import json
import os
import re
import subprocess

import pytest

from kd import report
from tests import conftest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = ['README.md'] + sorted(glob.glob('docs/*.md', root_dir=ROOT))
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


@pytest.mark.parametrize('doc', DOCS)
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
  assert command.endswith('python -m pytest -q -n 2 --dist loadfile '
                          '--durations=25')


def _runs_a_child():
  return subprocess.run(['true'], check=False)


def _through_a_helper():
  return [_runs_a_child() for _ in range(1)]


def test_tests_that_start_processes_are_marked():
  namespace = globals()
  assert conftest.starts_process(_runs_a_child, namespace)
  assert conftest.starts_process(_through_a_helper, namespace)  # Comprehension.
  assert not conftest.starts_process(_slug, namespace)
  assert not conftest.starts_process(test_a_broken_link_is_found, namespace)


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
