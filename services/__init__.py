"""The six services, one package each (``avsurv serve NAME`` runs one; ``avsurv run`` all six). A service
imports the core, never another service; ``avsurv.platform.runtime`` loads each by name with its
``build(ports, settings)``."""
