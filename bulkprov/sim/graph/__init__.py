"""The simulated Microsoft Graph tenant: what bulkprov reads its users and groups from.

:mod:`~bulkprov.sim.graph.tenant` holds :class:`~bulkprov.sim.graph.tenant.GraphTenant` (the
token endpoint and ``/v1.0/users``), :mod:`~bulkprov.sim.graph.directory` its delta rounds,
groups and app role assignments, :mod:`~bulkprov.sim.graph.odata` the ``$select`` catalogue and
error envelope both of them answer with, :mod:`~bulkprov.sim.graph.client_assertion` the
certificate check behind ``private_key_jwt``. It imports from ``bulkprov.sim`` only the shared
pieces (``http``, ``users``, ``faults``), never the SCIM simulator. Callers import the tenant
from the package, ``from bulkprov.sim import GraphTenant``; this file imports nothing, so
loading one module of the subpackage does not load the others.
"""
