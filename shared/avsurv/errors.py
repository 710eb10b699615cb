"""The errors that reach people: each carries one line saying which input is wrong and how. Every
floor of the core raises these, so they live below all of them."""

from __future__ import annotations


class MediaError(Exception):
    """An input that cannot be read at all; the message is one line meant for people."""


class ModelError(Exception):
    """A model directory that cannot be used; one line for people."""


class TaskError(ValueError):
    """Bad input to a downstream task; the message says which input and what is wrong, in one line."""
