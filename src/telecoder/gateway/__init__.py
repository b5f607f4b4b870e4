"""TeleCoder's model gateway: agents reach models only through it, with a key worthless
elsewhere; it adds the real key, streams answers through and meters every request.

``apis`` (the API kinds and where keys travel), ``tickets`` (per-attempt keys), ``upstreams``
(where requests go), ``http`` (the loopback HTTP server), ``proxy`` (the forwarding loop),
``meter`` (usage read from responses), ``prices`` (what usage costs).
"""

from telecoder.gateway.proxy import Gateway, vendor_replaced
from telecoder.gateway.tickets import Ticket

__all__ = ["Gateway", "Ticket", "vendor_replaced"]
