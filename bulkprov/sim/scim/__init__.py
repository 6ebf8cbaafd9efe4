"""The simulated Zoom-like SCIM 2.0 service: what bulkprov provisions users and groups into.

:mod:`~bulkprov.sim.scim.service` holds :class:`~bulkprov.sim.scim.service.ScimService`
(``/Users``, authentication, the rate limit, the control endpoints),
:mod:`~bulkprov.sim.scim.groups` its ``/Groups`` store and :mod:`~bulkprov.sim.scim.bulk`
SCIM Bulk and ``/ServiceProviderConfig``. It imports from ``bulkprov.sim`` only the shared
pieces (``http``, ``faults``), never the Graph simulator. Callers import the service from the
package, ``from bulkprov.sim import ScimService``; this file imports nothing, so loading one
module of the subpackage does not load the others.
"""
