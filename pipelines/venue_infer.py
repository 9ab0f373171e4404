"""Venues of connections that carry no name: no SNI, no Host, no venue-map entry.

How this works. A capture that began after a connection's handshake (an order session
open for days, the second file of a rotation ingested on its own) has no SNI for it, and
HTTP/2 or WebSocket traffic picked up mid-stream has no Host either. The registry
(``Resolver.resolve``) then names no venue. Such a flow gets the venue that, in order:

1. ``address``: every named flow of this capture to the same server address and port
   agrees on (its dialect and API kind are taken from such a flow, of the same
   application protocol when there is one);
2. ``dataset``: the named flows of the dataset's earlier captures to that address agree
   on (``Resolver.by_known_address``);
3. ``content``: the request paths and WebSocket calls the flow sent name
   (``Resolver.by_content``; ``pcapflow.venues.CONTENT_RULES``). Content can also give
   the dialect without the venue (Binance spot and futures share the WebSocket API's
   method names): the flow is then read with that dialect and its venue stays NULL.

"Agree" means exactly one venue: two venues behind one address (a shared gateway,
loopback in a lab) decide nothing. Whatever was used is ``flows.venue_source``, so a
report and a user can tell an inferred venue from a named one.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence

from .venue_rules import Assignment, FlowContent, FlowFacts, Resolver

NAMED = ("map", "name")
"""Sources that name a venue from the flow itself."""


def infer(facts: Sequence[FlowFacts], assigned: Sequence[Assignment], resolver: Resolver,
          content: Callable[[list[int]], dict[int, FlowContent]] | None = None,
          ) -> list[Assignment]:
    """``assigned`` (one per fact, from ``resolver.resolve``) with the venues of the
    unnamed flows filled in where an address, the dataset or the content decides."""
    out = list(assigned)
    unnamed = [i for i, a in enumerate(out) if a.venue is None]
    if not unnamed:
        return out
    by_address: dict[tuple[str | None, int | None], list[int]] = defaultdict(list)
    for i, a in enumerate(out):
        if a.venue is not None and a.source in NAMED:
            by_address[(facts[i].server_ip, facts[i].server_port)].append(i)
    left = []
    for i in unnamed:
        f = facts[i]
        named = by_address.get((f.server_ip, f.server_port), [])
        if len({out[j].venue for j in named}) == 1:
            same = [j for j in named if facts[j].app_protocol == f.app_protocol]
            like = out[(same or named)[0]]
            out[i] = Assignment(venue=like.venue, dialect=like.dialect,
                                protocol=like.protocol, source="address")
            continue
        known = resolver.by_known_address(f)
        if known is not None:
            out[i] = known
            continue
        left.append(i)
    if left and content is not None:
        sent = content([facts[i].flow_id for i in left])
        for i in left:
            what = sent.get(facts[i].flow_id)
            if what is not None:
                found = resolver.by_content(facts[i], what)
                if found is not None:
                    out[i] = found
    return out
