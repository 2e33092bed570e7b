"""Full-text and hybrid search: FTS5 text collections beside the vector collections, kept current
by the same change feed (edgenode.feed), each index an apsw file the node owns.

Integration: `TextManager(db, data_dir, vectors=vector_manager)` is a node component (name,
routes(), start(), stop(), status(), not_ready_reason()).
"""

from __future__ import annotations

from edgenode.text.manager import TextManager

__all__ = ["TextManager"]
