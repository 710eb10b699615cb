"""Learning: the EPG distance, pair labels and losses, the baselines and training; and what training
produces for the floors above: embeddings of clips (``embed``, ``embeddings``), the anomaly score's
calibration (``calibration``) and per-camera normalization (``normalization``)."""
