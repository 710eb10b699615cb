"""Downstream tasks on frozen clip embeddings (EPG sections 4.2, 4.3).

- ``anomalies``: d(z_v, z_a) events over a calibration (``avsurv.learning.calibration``);
- ``novelty``: the site novelty detector (each modality against the camera's own history);
- ``search``: query by example with exclusion and separation windows;
- ``probe``: linear evaluation (segment-wise accuracy of a linear classifier);
- ``metrics``: ROC-AUC, precision@k, average precision, event precision and recall;
- ``cli``: the ``calibrate``, ``anomalies``, ``search`` and ``probe`` sub-commands (``register_cli``).

The embeddings file they read, the per-camera normalization and calibration live one floor down, in
``avsurv.learning``; per-second labels in ``avsurv.labels``.
"""
