"""Live changes: committed row changes of chosen tables, streamed over SSE and WebSocket.

Design (issue #16).

**Source.** The node's change feed (`edgenode.feed`). A table is streamed once it is *captured*
(`PUT /api/v1/changes/tables/{table}`): triggers append each row change with the row's values
(exact for every SQLite value, see `edgenode.feed`) to `_edgenode_changes`. The triggers are made
on the writer (a standalone node's writer process, or the primary for a replica: the DDL is
forwarded like any write), so the feed replicates, and a replica streams changes it receives by
sync exactly like a standalone node streams its own commits. Values are captured by the triggers
rather than re-read at delivery: a re-read sees only the row's state now, which loses intermediate
versions (insert then update, update then delete) and cannot show a deleted row to a filter.

**Order and cursors.** The cursor is the feed's `seq` (AUTOINCREMENT: never reused, never goes back,
durable with the transaction that made it). SQLite has one writer, so seq order is commit order,
and a reader sees whole transactions: reading `seq > cursor` after any commit misses nothing that
committed before it. Cursors survive restarts and `kill -9` (an acknowledged commit is in the WAL),
and they mean the same on every replica of one primary.

**Transaction boundaries.** A unit of writes that captured changes appends a commit marker after
them, in the same transaction (`edgenode.commit_marks`, one rule for the node's writer and the
primary); the stream sends it as `{"op": "commit", "first": <cursor of the unit's first change>}`
to each subscriber that got at least one change of that unit. Units: on a standalone node a REST
write transaction (`engine.run_transaction`), each write of the group commit (`engine.run_group`,
a savepoint each) and a Hrana interactive transaction (its COMMIT, and each RELEASE of a savepoint
inside it: `engine.end_unit`); on `edgenode primary` (`primary/backend.py`) every COMMIT/END and
RELEASE of a Hrana stream, which covers everything a replica forwards in a transaction: REST
batches, the combiner's groups (one unit per write, by its savepoint), Hrana transactions. Other
writes carry no marker: their changes arrive in commit order and complete (a replica applies whole
transactions), but without commit events, so a client must not wait for one; commit events are an
addition, never a precondition. That is final for writes committed by code the node does not run
(a Turso Cloud primary). Not marked, though the committing code is ours: a statement committed in
autocommit mode on the primary or, with stream PRAGMAs set, by a standalone node's Hrana stream
(its marker would need a transaction of its own around it), and the primary's Hrana `sequence`.

**One reader, many subscribers.** `ChangeHub` keeps one reading task per node: woken by the
database's change listeners (after a local commit, a Hrana lease or a replica's applied sync;
plus a slow fallback poll), it reads the feed past its position in pages and hands each event to
the subscribers whose filters take it, through a bounded queue per subscriber (`changes_buffer`).
Handing over never waits: a subscriber whose queue is full is cut off with a `slow_subscriber`
reason naming its cursor, and a connection that cannot even take that message within a grace
period is closed. Writers and syncs only set an event; they never wait for a subscriber.

**Resuming.** A subscriber gives a cursor (`Last-Event-ID` or `?after=`); it is registered at the
hub's position first, reads (cursor, position] from the feed itself, then takes its queue: nothing
is missed between the two and nothing is sent twice. A subscriber without a cursor starts at the
head (only new changes). A cursor names the last event the client got, so when the feed's entry
there is a change this subscription takes, the subscriber starts inside that change's transaction
and gets its commit event; when it is not (a cursor from another subscription, a commit event's,
one compacted away) it starts with no transaction open, and a commit event never comes without a
change of its own before it. A cursor a replica has not reached yet is trusted as the client's.

**Renamed tables.** `ALTER TABLE t RENAME TO u` moves t's triggers to u, but they go on
writing 't' into the feed. The hub notices (the schema mirror, after the DDL's refresh) and
follows it (`feed.follow_renames`): u's triggers are made under its name, t's entries relabelled
u in the same transaction, and streams of t end with `table_renamed` naming u and their cursor;
resuming on u from it misses nothing and repeats nothing. A capture of u meanwhile has its own
triggers: t's are dropped and its entries keep their name (relabelling would show those changes
twice).

**Retention.** The hub registers as a feed consumer whose floor is `changes_retention` entries
below its position, so vector/text compaction keeps at least that much; the hub compacts the feed
itself to that floor (never past what a vector or text collection still needs). A cursor below
the compacted range gets an explicit `resync` event (reason `cursor_expired`, with the oldest cursor
the node can resume from) and the stream ends: the client reloads its state and subscribes
without a cursor. Never a silent gap: on a standalone node a cursor past its last change (a
restored or replaced database) ends the same way with reason `cursor_ahead`.

**Local-first.** Speculative local feed rows may be rolled back and their seqs reused
(docs/local-first.md §8), so the hub reads only up to `Database.feed_bound()` (the synced head in
local-first mode; no bound otherwise). This is the one call to change when that mode lands.

**Fan-out.** The hub indexes subscribers by table: a change is offered to its table's
subscribers only; a commit marker to those that took a change, or registered, since the previous
marker (every writer starts a unit after the previous unit's marker; were one not to, the marker
goes to everyone, as the rule `Subscriber._wants` says). tests/test_changes_fanout.py checks the
index against asking everyone.

**Auth.** Both endpoints are read routes: the read-only token may subscribe. The token comes in
the Authorization header or, for browsers (EventSource and WebSocket cannot set headers), as
`?access_token=` on these two routes only; it is checked at connect (the WebSocket endpoint checks
it itself: the HTTP middleware does not see WebSocket scopes), and again when the subscriber is
registered. A JWT with an `exp` claim ends the stream at that instant with a `token_expired`
event. Revocation is key rotation: every `changes_heartbeat` the hub has the node's one
authenticator re-read `--jwt-key-file` if the file changed (`Authenticator.refresh_key`); on a new
key every open stream whose token no longer verifies ends with `token_revoked` (WebSocket: close
1008), and new requests with such a token get 401 on every route. Chosen over SIGHUP: replacing
the file is all an operator (or a secret manager that writes files) has to do, and it works the
same under process managers that do not forward signals. Static tokens change only by restart.
"""
