"""The node speaks Hrana: `HranaComponent` mounts `edgenode.hrana.HranaServer` over the node's data.

| module | job |
|---|---|
| `engine.py` | what runs inside a connection-owner process (kept light: owners import it on first call) |
| `common.py` | what both backends share: statement classification, argument binding, describe, loop bridge |
| `local.py` | standalone backend: reader pool, writer, leased connections for interactive transactions |
| `forward.py` | replica backend: reads on the local replica, writes and transactions forwarded to the primary |
| `component.py` | the node component: routes, lifecycle, metrics, status |

Nothing is imported here: owner processes import `engine` by reference and must not pull in the rest.
"""
