"""An anomaly event's evidence URI (``AnomalyEvent.evidence_uri``, issue 16 item 2):
``avsurv://<site>/events/<event_id>/evidence.mp4``. It names the deployment and the event rather than a
host, so a message on the topic stays valid whatever address the API or the dashboard has: ``avsurv export``
and ``Anomalies.Export`` take it in place of the event id, and a dashboard serves its path under ``/api``."""

from __future__ import annotations

import re

SCHEME = "avsurv://"
_URI = re.compile(r"avsurv://([A-Za-z0-9_-]+)/events/([^/?#\s]+)/evidence\.mp4")


def evidence_uri(site: str, event_id: str) -> str:
    return f"{SCHEME}{site}/events/{event_id}/evidence.mp4"


def event_of(reference: str, site: str) -> str:
    """The event id that ``reference`` names: an evidence URI of ``site``'s, or an event id as it is.
    Raises LookupError for an evidence URI of another site and ValueError for a malformed one."""
    if not reference.startswith(SCHEME):
        return reference
    match = _URI.fullmatch(reference)
    if match is None:
        raise ValueError(f"an evidence URI is {SCHEME}<site>/events/<event_id>/evidence.mp4")
    if match[1] != site:
        raise LookupError(f"the evidence URI is of site {match[1]!r}; this deployment serves site {site!r}")
    return match[2]
