"""The platform's core: what the six services (``services/``, ``avsurv.services``) share: configuration,
topics and messages, the registry, the clip store, the worker loop, model versions, heads attached to
cameras, and the runtime that loads and runs them, wired through the ports in :mod:`avsurv.adapters`."""
