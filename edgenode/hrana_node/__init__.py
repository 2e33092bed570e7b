"""The node speaks Hrana: `HranaComponent` mounts `edgenode.hrana.HranaServer` over the node's data.

The sessions behind it come from the database (`Database.connections()`): `edgenode.standalone.sessions`
on a plain local file, `edgenode.replica.sessions` on a replica.
"""
