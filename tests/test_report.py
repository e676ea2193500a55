"""The pipeline's plot: which curves, from which stage directories."""
import json
import os

import matplotlib.image
import pytest

from kd import report

figure = report.figure


def _metrics(d, rows):
  os.makedirs(d, exist_ok=True)
  with open(os.path.join(d, 'metrics.jsonl'), 'w') as f:
    f.writelines(json.dumps(r) + '\n' for r in rows)


@pytest.fixture
def pipeline(tmp_path):
  """A quickstart-like pipeline whose teacher lives outside its workdir (a
  teacher shared through `teacher_dir=`)."""
  teacher, work = tmp_path / 'shared' / 'teacher', tmp_path / 'pipe'
  _metrics(teacher, [{'step': 10, 'loss': 2.0, 'ce': 2.0},
                     {'step': 10, 'test_accuracy': 0.5, 'test_loss': 1.5},
                     {'step': 20, 'loss': 1.0, 'ce': 1.0},
                     {'step': 20, 'test_accuracy': 0.9, 'test_loss': 0.4}])
  _metrics(work / 'student_kd', [{'step': 5, 'loss': 3.0, 'ce': 1.25},
                                 {'step': 10, 'loss': 2.5, 'ce': 1.0},
                                 {'step': 10, 'test_accuracy': 0.7}])
  return work, {'teacher': str(teacher), 'student_kd': str(work / 'student_kd')}


def test_every_stage_is_drawn_from_its_own_directory(pipeline):
  _, dirs = pipeline
  data = report.curves(dirs)
  assert data == {
      'metric': 'test_accuracy',
      'loss': {'teacher': ([10, 20], [2.0, 1.0]),
               'student_kd': ([5, 10], [3.0, 2.5]),
               'student_kd (CE part)': ([5, 10], [1.25, 1.0])},
      'held_out': {'teacher': ([10, 20], [0.5, 0.9]),
                   'student_kd': ([10], [0.7])}}


def test_the_figure_holds_loss_held_out_and_size_panels(pipeline):
  work, dirs = pipeline
  summary = {'teacher/params': 1000, 'teacher/test_accuracy': 0.9,
             'student_kd/params': 100, 'student_kd/test_accuracy': 0.7}
  fig = report.figure(dirs, summary)
  path = str(work / 'figure.png')
  fig.savefig(path, dpi=100)
  loss, held, size = fig.axes
  assert [(l.get_label(), l.get_color(), l.get_linestyle())
          for l in loss.get_lines()] == [
              ('teacher', 'C0', '-'), ('student_kd', 'C1', '-'),
              ('student_kd (CE part)', 'C1', '--')]
  assert [(l.get_label(), list(l.get_xdata()), list(l.get_ydata()))
          for l in held.get_lines()] == [('teacher', [10, 20], [0.5, 0.9]),
                                         ('student_kd', [10], [0.7])]
  assert held.get_ylabel() == 'held-out accuracy'
  assert [c.get_offsets().tolist() for c in size.collections] == [
      [[1000, 0.9]], [[100, 0.7]]]
  assert matplotlib.image.imread(path).shape[:2] == (400, 1600)


def test_plot_reads_a_shared_teachers_directory(pipeline, monkeypatch):
  """The MNIST-1D pipeline with `teacher_dir=`: its teacher stage lives
  outside the workdir, and its curves are drawn all the same."""
  from configs.mnist1d import distill  # pylint: disable=import-outside-toplevel
  work, dirs = pipeline
  os.rename(dirs['student_kd'], work / 'student')
  config = distill.get_config(f'method=kd,teacher_dir={dirs["teacher"]}')
  drawn = []
  monkeypatch.setattr(report, 'figure', lambda stage_dirs, summary: (
      drawn.append(stage_dirs), figure(stage_dirs, summary))[1])
  path = report.plot(str(work), config, {})
  assert drawn == [{'teacher': dirs['teacher'], 'student': str(work / 'student')}]
  assert list(report.curves(drawn[0])['held_out']) == ['teacher', 'student']
  assert path == str(work / 'plot.png')


def test_a_language_model_plots_bits_per_byte(tmp_path):
  _metrics(tmp_path / 'teacher', [{'step': 4, 'loss': 5.0},
                                  {'step': 4, 'test_bits_per_byte': 3.5,
                                   'test_accuracy': 0.2}])
  _metrics(tmp_path / 'student', [{'step': 4, 'test_bits_per_byte': 4.0}])
  dirs = {s: str(tmp_path / s) for s in ('teacher', 'student')}
  data = report.curves(dirs)
  assert data['metric'] == 'test_bits_per_byte'
  assert data['held_out'] == {'teacher': ([4], [3.5]), 'student': ([4], [4.0])}
  assert data['loss'] == {'teacher': ([4], [5.0])}  # The student has no 'ce'.
  fig = report.figure(dirs, {'student/params': 10,
                             'student/test_bits_per_byte': 4.0})
  assert fig.axes[1].get_ylabel() == 'held-out bits per byte'
  assert fig.axes[2].collections[0].get_offsets().tolist() == [[10, 4.0]]
