"""Ports (bus, vector store, state store, artifact store) and their adapters, chosen by configuration."""
