"""CIFAR-100 top-1 of the CRD benchmark (Tian et al., ICLR 2020, Tables 1-2;
last epoch of 240; FSP from Table 1) and DKD (Zhao et al., CVPR 2022, Table
1; mean of 5 runs of the best epoch; OFD and ReviewKD from the same
table). KD and DKD are checked against mdistiller's README (the DKD
authors' code); FSP, OFD and ReviewKD were entered from the papers' tables
and not re-checked against a copy here. Keys as `kd.tables` prints them:
a run with no teacher ('-') is trained from labels ('scratch'): the
sweep's shared teachers.
"""
SOURCE = ('Tian et al., "Contrastive Representation Distillation", ICLR 2020 '
          '(teacher / scratch / KD / CRD / FSP); Zhao et al., "Decoupled '
          'Knowledge Distillation", CVPR 2022, Table 1 (DKD / OFD / ReviewKD)')
KEYS = ('teacher', 'student', 'method')
_PAIRS = {
    ('wrn_40_2', 'wrn_16_2'): (75.61, 73.26, 74.92, 75.48, 76.23),
    ('resnet56', 'resnet20'): (72.34, 69.06, 70.66, 71.16, 71.97),
    ('resnet110', 'resnet32'): (74.31, 71.14, 73.08, 73.48, 74.11),
    ('resnet32x4', 'resnet8x4'): (79.42, 72.50, 73.33, 75.51, 76.32),
    ('vgg13', 'vgg8'): (74.64, 70.36, 72.98, 73.94, 74.68),
}
PUBLISHED = {}
for (_t, _s), (_teacher, _scratch, _kd, _crd, _dkd) in _PAIRS.items():
  PUBLISHED[(_t, _s, 'kd')] = _kd / 100
  PUBLISHED[(_t, _s, 'crd')] = _crd / 100
  PUBLISHED[(_t, _s, 'dkd')] = _dkd / 100
  PUBLISHED[('-', _s, 'scratch')] = _scratch / 100
  PUBLISHED[('-', _t, 'scratch')] = _teacher / 100
# method -> top-1 per pair, in the order of _PAIRS.
_MORE = {'fsp': (72.91, 69.95, 71.89, 72.62, 70.23),
         'ofd': (75.24, 70.98, 73.23, 74.95, 73.95),
         'reviewkd': (76.12, 71.89, 73.89, 75.63, 74.84)}
for _method, _values in _MORE.items():
  for (_t, _s), _v in zip(_PAIRS, _values):
    PUBLISHED[(_t, _s, _method)] = _v / 100
