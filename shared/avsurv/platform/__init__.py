"""The platform: the six services (ingest, segmentation, embedding, trainer, anomaly-detector, search)
as thin loops around the core, wired through the ports in :mod:`avsurv.adapters`."""
