"""configs/bert/distilbert.py at toy size: masked-LM teacher -> DistilBERT
student and MLM-only student -> the fine-tunes, in one command."""
import json
import os

import numpy as np
import pytest

from configs.bert import distilbert
from kd import main as kd_main
from kd import runs
from kd.data import classify
from kd.data import mlm

TOY = ('dataset=kd_bbcnews/tiny,task_dataset=kd_bbcnews/tiny,seq_len=16,'
       'batch=8,vocab=300,layers=2,d_model=16,heads=2,pretrain_steps=6,'
       'finetune_steps=4')


@pytest.fixture(scope='module')
def pipeline(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('distilbert'))
  c = distilbert.get_config(TOY)
  for stage in c.stages.values():
    stage.evaluate.latency = False
  return workdir, kd_main.run_pipeline(c, workdir)


def _metrics(run_dir):
  with open(os.path.join(run_dir, 'metrics.jsonl')) as f:
    return [json.loads(line) for line in f]


def test_every_stage_runs_and_reports(pipeline):
  workdir, summary = pipeline
  for stage in ('teacher_mlm', 'student_distil', 'student_mlm_only',
                'teacher_ft', 'distil_ft', 'mlm_only_ft', 'scratch_ft',
                'distil_kd_ft'):
    acc = summary[f'{stage}/test_accuracy']
    assert 0.0 <= acc <= 1.0, (stage, acc)
  # The DistilBERT loss: each term logged, the total their weighted sum.
  rows = [r for r in _metrics(os.path.join(workdir, 'student_distil'))
          if 'soft' in r]
  assert rows
  for r in rows:
    want = (distilbert.ALPHA_MLM * r['ce'] + distilbert.ALPHA_CE * r['soft']
            + distilbert.ALPHA_COS * r['cos'])
    np.testing.assert_allclose(r['loss'], want, rtol=1e-4)
  assert 'kd' in _metrics(os.path.join(workdir, 'distil_kd_ft'))[-2]


def test_stages_share_the_pretraining_tokenizer(pipeline):
  workdir, _ = pipeline
  with open(os.path.join(workdir, 'teacher_mlm', 'tokenizer.json')) as f:
    want = f.read()
  for stage in ('student_distil', 'student_mlm_only', 'scratch_ft',
                'distil_kd_ft'):
    with open(os.path.join(workdir, stage, 'tokenizer.json')) as f:
      assert f.read() == want, stage
  tok = mlm.WordPieceTokenizer.load(os.path.join(workdir, 'teacher_mlm'))
  assert tok.vocab_size <= 300


def test_students_are_half_the_teacher_and_start_from_it(pipeline):
  workdir, _ = pipeline
  _, teacher, t_vars, _ = runs.load_run(os.path.join(workdir, 'teacher_mlm'))
  _, student, s_vars, _ = runs.load_run(os.path.join(workdir, 'distil_ft'))
  assert (teacher.num_layers, student.num_layers) == (2, 1)
  assert student.type_vocab_size == 0 and student.head == 'cls'
  assert student.pooler_activation == 'relu'
  assert student.num_labels == len(classify.classes('kd_bbcnews/tiny'))
  assert 'type_embed' in t_vars['params'] and 'type_embed' not in s_vars[
      'params']


def test_a_rerun_reuses_every_finished_stage(pipeline, capsys):
  workdir, summary = pipeline
  c = distilbert.get_config(TOY)
  for stage in c.stages.values():
    stage.evaluate.latency = False
  again = kd_main.run_pipeline(c, workdir)
  assert again['distil_ft/test_accuracy'] == summary['distil_ft/test_accuracy']
  assert 'compiling' not in capsys.readouterr().out


def test_a_converted_hf_bert_is_the_teacher(tmp_path):
  """`teacher=RUN` (a converted BERT): it replaces teacher_mlm, its
  tokenizer is every stage's, and the student is its half."""
  from kd.convert import hf  # pylint: disable=import-outside-toplevel
  bert = os.path.join(os.path.dirname(__file__), 'fixtures', 'hf', 'bert')
  teacher = str(tmp_path / 'bert')
  hf.convert(bert, teacher)
  c = distilbert.get_config(
      f'teacher={teacher},dataset=kd_bbcnews/tiny,seq_len=32,batch=8,'
      'pretrain_steps=2')
  with c.unlocked():
    c.stage_order = ('teacher_mlm', 'student_distil')
  student_kw = c.stages.student_distil.model.kwargs
  assert (student_kw.num_layers, student_kw.d_model) == (1, 48)
  kd_main.run_pipeline(c, str(tmp_path / 'run'))
  run = str(tmp_path / 'run' / 'student_distil')
  with open(os.path.join(bert, 'tokenizer.json')) as f, open(
      os.path.join(run, 'tokenizer.json')) as g:
    assert f.read() == g.read()
  assert not os.path.exists(tmp_path / 'run' / 'teacher_mlm')
  assert runs.load_run(run)[1].type_vocab_size == 0


@pytest.mark.parametrize('fmt, quantize, tolerance', [
    ('tflite', 'none', 1e-4), ('tflite', 'dynamic', None),
    ('onnx', 'none', 1e-4)])
def test_the_fine_tuned_student_exports_with_parity(pipeline, tmp_path, fmt,
                                                    quantize, tolerance):
  from kd.export import encoder  # pylint: disable=import-outside-toplevel
  workdir, _ = pipeline
  run = os.path.join(workdir, 'distil_ft')
  out = str(tmp_path / f'student.{fmt}')
  side = encoder.export(run, out, quantize=quantize, format=fmt,
                        latency=False)
  assert os.path.getsize(out) == side['bytes']
  assert side['input']['shape'] == [1, 16] and side['input']['dtype'] == 'int32'
  assert side['input']['attention_mask'] == 'inside the model: input_ids != 0'
  assert side['class_names'] == classify.classes('kd_bbcnews/tiny')
  assert side['output']['shape'] == [1, len(side['class_names'])]
  if tolerance:
    assert side['max_abs_diff_vs_jax'] < tolerance
    assert side[f'{fmt}_accuracy'] == side['jax_accuracy']
  else:  # int8 weights: the same classes nearly everywhere.
    assert side['agreement_with_jax'] >= 0.9
  with open(os.path.join(run, 'tokenizer.json')) as f, open(
      tmp_path / 'tokenizer.json') as g:
    assert f.read() == g.read()


def test_export_refusals_name_the_fix(pipeline, tmp_path):
  from kd.export import artifact, encoder  # pylint: disable=import-outside-toplevel
  workdir, _ = pipeline
  with pytest.raises(artifact.ExportError, match=r'a masked-LM encoder '
                     r'\(head=mlm\) exports to a Hugging Face folder'):
    encoder.export(os.path.join(workdir, 'teacher_mlm'),
                   str(tmp_path / 'a.tflite'))
  with pytest.raises(artifact.ExportError, match="--quantize=int8: an "
                     'encoder takes token ids'):
    encoder.export(os.path.join(workdir, 'distil_ft'),
                   str(tmp_path / 'b.tflite'), quantize='int8')
  (tmp_path / 'tokenizer.json').write_text('{}')
  with pytest.raises(artifact.ExportError, match='holds another tokenizer'):
    encoder.export(os.path.join(workdir, 'distil_ft'),
                   str(tmp_path / 'c.tflite'), latency=False)
  assert not os.path.exists(tmp_path / 'c.tflite')


def test_the_table_reads_the_pipeline(pipeline, tmp_path, monkeypatch):
  from experiments.distilbert import table  # pylint: disable=import-outside-toplevel
  workdir, summary = pipeline
  monkeypatch.setattr(table, 'EXPORTS', (('distil_ft', 'none', 'onnx'),))
  monkeypatch.setattr(table.latency, 'latency_ms',
                      lambda fn, x, **_: float(x.shape[-1]))
  rows = table.collect(workdir)
  assert [r['stage'] for r in rows] == [m[0] for m in table.MODELS]
  by = {r['stage']: r for r in rows}
  assert by['distil_ft']['accs'] == [summary['distil_ft/test_accuracy']]
  assert by['teacher_ft']['mlm'] == summary['teacher_mlm/test_accuracy']
  assert by['scratch_ft']['mlm'] is None
  assert by['distil_ft']['params'] < by['teacher_ft']['params']
  text = table.markdown(rows)
  assert '| BERT teacher (`teacher_ft`) |' in text and '| 1.00x |' in text
  edge = table.exports(workdir)
  assert '| DistilBERT student (`distil_ft`) | kd_bbcnews/tiny | ONNX | '\
      'float32 |' in edge
  assert os.path.exists(os.path.join(workdir, 'distil_ft',
                                     'classifier_float32.onnx'))
