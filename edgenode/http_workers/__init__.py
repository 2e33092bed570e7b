"""HTTP served by more than one process (`http_workers` > 1, standalone role).

The node process stays the owner of everything it owns with one process (writer, group commit,
readers, vectors, text, the change hub, backups, Hrana streams). It creates the listening socket
and hands it to `http_workers - 1` worker processes (`supervisor.py`); the kernel spreads new
connections over every process accepting on it, the owner included. A worker (`worker.py`)
answers the hot read paths itself from its own pool of reader processes, with the same statement
checks and limits (`dispatch.py` decides which requests), and forwards every other request to the
owner over a unix socket (`forward.py`: HTTP, streamed bodies, WebSockets). The owner publishes
its schema version in a shared cell (`epoch.py`) before it acknowledges a schema change, so a
worker never answers from a stale schema mirror.
"""
