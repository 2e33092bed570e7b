"""Text and hybrid search through real node processes over HTTP, and `edgenode text` against them."""

from __future__ import annotations

import base64
import json
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.procs import ROOT, Proc, start
from tests.test_replica_support import (
    AUTH,
    eventually,
    primary_write,
    start_node,
    start_primary,
    wait_ready,
)

DOCS = "CREATE TABLE docs(id INTEGER PRIMARY KEY, slug TEXT UNIQUE, title TEXT, body TEXT, tag TEXT, emb F32_BLOB(4))"


def _execute(url: str, *statements: str | tuple[str, list[Any]], headers: dict[str, str] | None = None) -> Any:
    body = {"statements": [{"sql": s} if isinstance(s, str) else {"sql": s[0], "params": s[1]} for s in statements]}
    r = httpx.post(url + "/api/v1/execute", json=body, headers=headers, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


def _rows(url: str, sql: str, headers: dict[str, str] | None = None) -> list[list[Any]]:
    r = httpx.post(url + "/api/v1/query", json={"sql": sql}, headers=headers, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()["rows"]


def _wait_ready(url: str, name: str, headers: dict[str, str] | None = None, seconds: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + seconds
    while True:
        info = httpx.get(f"{url}/api/v1/text/{name}", headers=headers).json()
        if info.get("state") == "ready" and info["progress"] >= 1:
            return info
        assert time.monotonic() < deadline, info
        time.sleep(0.05)


def _search(url: str, name: str, headers: dict[str, str] | None = None, **body: Any) -> httpx.Response:
    return httpx.post(f"{url}/api/v1/text/{name}/search", json=body, headers=headers, timeout=30)


def _ids(url: str, name: str, q: str, headers: dict[str, str] | None = None, **body: Any) -> list[int]:
    r = _search(url, name, headers, q=q, k=1000, **body)
    assert r.status_code == 200, r.text
    return [h["rowid"] for h in r.json()["results"]]


def _found(url: str, name: str, q: str) -> list[int]:
    return sorted(_ids(url, name, q))


def _cli(url: str, *args: str) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "edgenode", "text", "--url", url, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def _b64(v: list[float]) -> dict[str, str]:
    return {"base64": base64.b64encode(np.asarray(v, dtype="<f4").tobytes()).decode()}


@pytest.fixture
def node(tmp_path: Path) -> Iterator[tuple[Proc, Path]]:
    data = tmp_path / "data"
    proc = start(["serve", "--data-dir", str(data)], tmp_path, name="node", ready_path="/ready")
    yield proc, data
    proc.stop()


def _truth(url: str, word: str) -> list[int]:
    """Rows whose title or body holds `word` as a whole word, straight from the table."""
    rows = _rows(url, "SELECT rowid, coalesce(title, '') || ' ' || coalesce(body, '') FROM docs ORDER BY rowid")
    return sorted(r[0] for r in rows if word in r[1].lower().split())


def test_the_index_stays_exact_under_inserts_updates_deletes_and_replaces_and_survives_a_restart(
    node: tuple[Proc, Path], tmp_path: Path
) -> None:
    proc, data = node
    _execute(
        proc.url,
        DOCS,
        *[
            (
                "INSERT INTO docs(id, slug, title, body, tag) VALUES (?, ?, ?, ?, ?)",
                [i, f"s{i}", f"t{i} alpha", f"b{i}", "ab"[i % 2]],
            )
            for i in range(1, 201)
        ],
    )
    created = json.loads(
        _cli(
            proc.url,
            "create",
            "docs",
            "--table",
            "docs",
            "--column",
            "title",
            "--column",
            "body",
            "--filter-column",
            "tag",
            "--wait",
        )
    )
    assert created["state"] == "ready" and created["size"] == 200
    assert _found(proc.url, "docs", "t7") == [7]
    assert len(_found(proc.url, "docs", "alpha")) == 200

    # inserts, updates (text and rowid), deletes: visible when the write returns
    _execute(proc.url, "INSERT INTO docs(id, slug, title, body, tag) VALUES (500, 's500', 'fresh words', 'gamma', 'a')")
    assert _found(proc.url, "docs", "fresh") == [500]
    _execute(proc.url, "UPDATE docs SET body = 'gamma delta' WHERE id = 7")
    assert _found(proc.url, "docs", "gamma") == [7, 500] and _found(proc.url, "docs", "b7") == []
    _execute(proc.url, "UPDATE docs SET id = 700 WHERE id = 8")
    assert _found(proc.url, "docs", "t8") == [700]
    _execute(proc.url, "DELETE FROM docs WHERE id IN (9, 10)")
    assert _found(proc.url, "docs", "t9 OR t10") == []
    # INSERT OR REPLACE on the UNIQUE slug under another rowid: the replaced row 11 leaves the index
    _execute(
        proc.url, "INSERT OR REPLACE INTO docs(id, slug, title, body, tag) VALUES (900, 's11', 'replaced', 'x', 'b')"
    )
    assert _found(proc.url, "docs", "t11") == [] and _found(proc.url, "docs", "replaced") == [900]
    # REPLACE on the rowid itself
    _execute(proc.url, "REPLACE INTO docs(id, slug, title, body, tag) VALUES (12, 's12', 'twelve', 'x', 'b')")
    assert _found(proc.url, "docs", "t12") == [] and _found(proc.url, "docs", "twelve") == [12]
    # UPDATE OR REPLACE onto another row's slug retires that row too
    _execute(proc.url, "UPDATE OR REPLACE docs SET slug = 's13' WHERE id = 14")
    assert _found(proc.url, "docs", "t13") == [] and _found(proc.url, "docs", "t14") == [14]
    # one REPLACE conflicting on both keys, with two different rows: both leave
    _execute(proc.url, "INSERT OR REPLACE INTO docs(id, slug, title, body, tag) VALUES (15, 's16', 'double', 'x', 'a')")
    assert _found(proc.url, "docs", "t15 OR t16") == [] and _found(proc.url, "docs", "double") == [15]
    for word in ("alpha", "gamma", "x", "replaced", "t14", "double"):
        assert _found(proc.url, "docs", word) == _truth(proc.url, word), word
    (count,) = _rows(proc.url, "SELECT count(*) FROM docs")[0]
    assert httpx.get(proc.url + "/api/v1/text/docs").json()["size"] == count

    # restart: the persisted index is loaded, not rebuilt, and catches up with writes made meanwhile
    proc.stop()
    again = start(["serve", "--data-dir", str(data)], tmp_path, name="again", ready_path="/ready")
    try:
        info = _wait_ready(again.url, "docs")
        assert info["loaded_from_disk"] is True and info["builds"] == 0
        assert _found(again.url, "docs", "alpha") == _truth(again.url, "alpha")
        _execute(again.url, "DELETE FROM docs WHERE id = 1")
        assert _found(again.url, "docs", "t1") == []
    finally:
        again.stop()


def test_search_has_phrases_prefixes_boolean_operators_weights_filters_snippets_and_stable_pages(
    node: tuple[Proc, Path],
) -> None:
    proc, _ = node
    texts = [
        ("edge database", "a local first database that syncs"),
        ("vector search", "nearest neighbour search over embeddings"),
        ("full text search", "ranked text search with bm25 and snippets"),
        ("database sync", "pull frames from the primary database"),
        ("search engine", "an engine for search"),
    ]
    _execute(
        proc.url,
        DOCS,
        *[
            ("INSERT INTO docs(id, title, body, tag) VALUES (?, ?, ?, ?)", [i + 1, t, b, "ab"[i % 2]])
            for i, (t, b) in enumerate(texts)
        ],
        *[
            (
                "INSERT INTO docs(id, title, body, tag) VALUES (?, ?, ?, 'c')",
                [100 + i, f"page {i}", "common words here"],
            )
            for i in range(57)
        ],
    )
    r = httpx.put(
        proc.url + "/api/v1/text/docs", json={"table": "docs", "columns": ["title", "body"], "filter_columns": ["tag"]}
    )
    assert r.status_code == 202, r.text
    _wait_ready(proc.url, "docs")
    assert _ids(proc.url, "docs", '"text search"') == [3]
    assert sorted(_ids(proc.url, "docs", "datab*")) == [1, 4]
    assert sorted(_ids(proc.url, "docs", "database AND sync*")) == [1, 4]
    assert sorted(_ids(proc.url, "docs", "vector OR engine")) == [2, 5]
    assert sorted(_ids(proc.url, "docs", "search NOT vector")) == [3, 5]
    assert _ids(proc.url, "docs", "title:engine") == [5]
    assert sorted(_ids(proc.url, "docs", "search", filter={"sql": "tag = ?", "params": ["a"]})) == [3, 5]
    # plain syntax: free text with punctuation searches for all its words
    assert _ids(proc.url, "docs", '(database) "sync!', syntax="plain") == [4]
    assert sorted(_ids(proc.url, "docs", "vector, engine!", syntax="any")) == [2, 5]
    # weights: title matches outrank body matches when the title weighs more, and the other way round
    assert _ids(proc.url, "docs", "sync*", weights={"title": 10, "body": 0.1}) == [4, 1]  # 4: in the title
    assert _ids(proc.url, "docs", "sync*", weights={"title": 0.1, "body": 10}) == [1, 4]  # 1: in the body
    hit = _search(proc.url, "docs", q="bm25", include=["title", "tag"]).json()["results"][0]
    assert hit["rowid"] == 3 and "<mark>bm25</mark>" in hit["snippet"] and hit["score"] > 0
    assert hit["row"] == {"title": "full text search", "tag": "a"}
    r = _search(proc.url, "docs", q="bm25", include=["nope"])
    assert r.status_code == 400 and r.json()["error"]["code"] == "unknown_column"
    # pages of a query with many equal scores: together exactly the one long answer, no overlap
    whole = _ids(proc.url, "docs", "common")
    pages = [
        h["rowid"]
        for o in range(0, 57, 10)
        for h in _search(proc.url, "docs", q="common", k=10, offset=o).json()["results"]
    ]
    assert pages == whole and len(whole) == 57 == len(set(whole))
    # free text is scored from postings in memory (edgenode.text.scoring), the FTS5 syntax by FTS5's
    # bm25(): the same query both ways answers the same rows, order and scores
    for free, fts5 in (("search database", '"search" OR "database"'), ("search, text!", '"search" "text"')):
        syntax = "any" if " OR " in fts5 else "plain"
        for weights in ({}, {"title": 3, "body": 0.5}):
            via_memory = _search(proc.url, "docs", q=free, syntax=syntax, k=20, weights=weights).json()["results"]
            via_fts5 = _search(proc.url, "docs", q=fts5, k=20, weights=weights).json()["results"]
            assert via_memory == via_fts5 and via_memory


HOSTILE = [
    ('"unbalanced', "character 0"),
    ('title:"half', "character 6"),
    ("a (b OR c", "character 2"),
    ("a ) b", "character 2"),
    ("don't", "character 3"),
    ("nosuchcolumn: word", "nosuchcolumn"),
    ("tag: a", "tag"),  # a filter column is not a text column
    ("word AND", "ends too early"),
    ("OR word", "character 0"),
    ("NEAR(a b, x)", "integer"),
    ("(" * 300 + "a", "more than"),
    ("a" * 5000, "at most"),
    ("x\x00y", "NUL"),
    ("   ", "empty"),
    ("*", "q:"),
    ("'; DROP TABLE docs; --", "character 0"),
]


def test_hostile_query_strings_get_a_400_that_says_where_and_never_a_500(node: tuple[Proc, Path]) -> None:
    proc, _ = node
    _execute(
        proc.url,
        DOCS,
        "INSERT INTO docs(id, title, body, tag) VALUES (1, 'word', 'a b c', 'a')",
        "CREATE TABLE shadowed (rowid TEXT, v TEXT)",
    )
    httpx.put(
        proc.url + "/api/v1/text/docs", json={"table": "docs", "columns": ["title", "body"], "filter_columns": ["tag"]}
    )
    _wait_ready(proc.url, "docs")
    for q, says in HOSTILE:
        r = _search(proc.url, "docs", q=q)
        assert r.status_code == 400, (q, r.text)
        error = r.json()["error"]
        assert error["code"] == "invalid_query" and says in error["message"], (q, error)
        assert error["message"].count("at character") <= 1, error  # the position once, not twice
    bad = [
        ({"q": "word", "filter": {"sql": "body = 'x'"}}, 400, "invalid_filter"),  # not a filter column
        ({"q": "word", "filter": {"sql": "1); DROP TABLE docs; --"}}, 400, "invalid_filter"),
        # A value past SQLite's length limit (SQLITE_TOOBIG) was a 500 'internal error: TooBigError'.
        ({"q": "word", "filter": {"sql": "printf('%.*c', 2000000000, 'x') = tag"}}, 400, "invalid_filter"),
        ({"q": "word", "weights": {"nope": 1}}, 400, "invalid_weights"),
        ({"q": "word", "weights": {"title": -1}}, 400, "invalid_weights"),
        ({"q": "word", "k": 0}, 400, "invalid_k"),
        ({"q": "word", "offset": -1}, 400, "invalid_offset"),
        ({"q": "word", "extra": 1}, 422, "invalid_field"),
        ({"q": "word", "vector": [1, 0, 0, 0]}, 400, "invalid_request"),
        ({"q": "word", "vector": [1, 0, 0, 0], "collection": "nope"}, 400, "unknown_collection"),
    ]
    for body, status, code in bad:
        r = _search(proc.url, "docs", **body)
        assert r.status_code == status and r.json()["error"]["code"] == code, (body, r.text)
    assert _search(proc.url, "nope", q="word").status_code == 404
    assert _ids(proc.url, "docs", "word") == [1]  # the table survived all of it
    for spec, status, code in [
        ({"table": "docs", "columns": []}, 400, "invalid_collection"),
        ({"table": "docs", "columns": ["nope"]}, 400, "unknown_column"),
        ({"table": "nope", "columns": ["title"]}, 400, "unknown_table"),
        ({"table": "docs", "columns": ["title"], "tokenizer": "icu"}, 422, "invalid_field"),
        ({"table": "_edgenode_changes", "columns": ["tbl"]}, 400, "invalid_collection"),
        ({"table": "docs", "columns": ['title"; drop']}, 400, "invalid_collection"),
        ({"table": "shadowed", "columns": ["v"]}, 400, "invalid_collection"),  # a column named rowid
    ]:
        r = httpx.put(proc.url + "/api/v1/text/bad", json=spec)
        assert r.status_code == status and r.json()["error"]["code"] == code, (spec, r.text)
    vectors = httpx.put(proc.url + "/api/v1/collections/bad", json={"table": "shadowed", "column": "v", "dim": 2})
    assert vectors.status_code == 400 and "column named rowid" in vectors.text, vectors.text
    _execute(proc.url, ("INSERT INTO shadowed (v) VALUES (?)", ["no feed triggers got in the way"]))


def test_trigram_collections_find_substrings(node: tuple[Proc, Path]) -> None:
    proc, _ = node
    _execute(
        proc.url,
        DOCS,
        "INSERT INTO docs(id, title, body) VALUES (1, 'edgenode', '東京都の天気'), (2, 'libsql', 'データベース')",
    )
    r = httpx.put(
        proc.url + "/api/v1/text/tri", json={"table": "docs", "columns": ["title", "body"], "tokenizer": "trigram"}
    )
    assert r.status_code == 202
    _wait_ready(proc.url, "tri")
    assert _ids(proc.url, "tri", "geno") == [1]
    assert _ids(proc.url, "tri", "京都の") == [1] and _ids(proc.url, "tri", "ベース") == [2]


def test_collections_follow_writes_whatever_the_spelling_of_their_tables_name(node: tuple[Proc, Path]) -> None:
    """The feed's triggers record the table's name as text; a collection defined over 'DOCS' used
    to be built once and then miss every write to 'docs' (searches silently stale)."""
    proc, _ = node
    _execute(proc.url, DOCS, ("INSERT INTO docs(id, title, emb) VALUES (1, 'first', vector32(?))", ["[1,0,0,0]"]))
    for name, table in (("lower", "docs"), ("upper", "DOCS")):
        r = httpx.put(f"{proc.url}/api/v1/text/{name}", json={"table": table, "columns": ["TITLE"]})
        assert r.status_code == 202, r.text
        assert r.json()["table"] == "docs"
        _wait_ready(proc.url, name)
    r = httpx.put(f"{proc.url}/api/v1/collections/vecs", json={"table": "Docs", "column": "EMB", "dim": 4})
    assert r.status_code == 202, r.text
    assert r.json()["table"] == "docs"
    _execute(proc.url, ("INSERT INTO docs(id, title, emb) VALUES (2, 'second', vector32(?))", ["[0,0,0,1]"]))
    deadline = time.monotonic() + 30
    while True:
        nearest = httpx.post(f"{proc.url}/api/v1/collections/vecs/search", json={"vector": [0, 0, 0, 1], "k": 1})
        found = [_found(proc.url, name, "second") for name in ("lower", "upper")]
        if nearest.status_code == 200 and nearest.json()["results"][0]["rowid"] == 2 and found == [[2], [2]]:
            break
        assert time.monotonic() < deadline, (nearest.text, found)
        time.sleep(0.1)


def test_a_put_of_the_same_spec_follows_a_table_dropped_and_created_again(node: tuple[Proc, Path]) -> None:
    """DROP TABLE takes the feed's triggers with it: the collections kept answering from the old
    rows and never saw the new table's writes, and a PUT of the same spec changed nothing."""
    proc, _ = node
    vec = {"table": "docs", "column": "emb", "dim": 4}
    _execute(proc.url, DOCS, ("INSERT INTO docs(id, title, emb) VALUES (1, 'old', vector32(?))", ["[1,0,0,0]"]))
    assert httpx.put(f"{proc.url}/api/v1/text/t", json={"table": "docs", "columns": ["title"]}).status_code == 202
    assert httpx.put(f"{proc.url}/api/v1/collections/v", json=vec).status_code == 202
    _wait_ready(proc.url, "t")
    _execute(
        proc.url,
        "DROP TABLE docs",
        DOCS,
        ("INSERT INTO docs(id, title, emb) VALUES (1, 'fresh', vector32(?))", ["[0,1,0,0]"]),
    )
    again = httpx.put(f"{proc.url}/api/v1/text/t", json={"table": "docs", "columns": ["title"]})
    assert again.status_code == 202, again.text  # rebuilding
    # That PUT rebuilt every collection over the table, the vector one too: nothing is missing now.
    assert httpx.put(f"{proc.url}/api/v1/collections/v", json=vec).status_code == 200
    _execute(proc.url, ("INSERT INTO docs(id, title, emb) VALUES (2, 'later', vector32(?))", ["[0,0,1,0]"]))

    def nearest(vector: list[float]) -> tuple[int, float] | None:
        r = httpx.post(f"{proc.url}/api/v1/collections/v/search", json={"vector": vector, "k": 1, "mode": "exact"})
        return (r.json()["results"][0]["rowid"], r.json()["results"][0]["distance"]) if r.status_code == 200 else None

    deadline = time.monotonic() + 30
    while True:
        found = [_found(proc.url, "t", w) for w in ("old", "fresh", "later")]
        vectors = [nearest([0, 1, 0, 0]), nearest([0, 0, 1, 0])]  # row 1's vector is the new table's
        if found == [[], [1], [2]] and vectors == [(1, 0.0), (2, 0.0)]:
            break
        assert time.monotonic() < deadline, (found, vectors)
        time.sleep(0.1)
    # Nothing was missing any more: the same PUT is a plain 200 again.
    assert httpx.put(f"{proc.url}/api/v1/text/t", json={"table": "docs", "columns": ["title"]}).status_code == 200


def test_hybrid_search_fuses_text_and_vector_ranks_with_filters_on_both_arms(node: tuple[Proc, Path]) -> None:
    proc, _ = node
    rows = [
        (1, "red apple", [1, 0, 0, 0], "a"),
        (2, "green apple", [0.9, 0.1, 0, 0], "b"),
        (3, "red car", [0, 1, 0, 0], "a"),
        (4, "blue sky", [0.95, 0, 0.05, 0], "a"),
        (5, "apple pie", [-1, 0, 0, 0], "a"),
    ]
    _execute(
        proc.url,
        DOCS,
        *[("INSERT INTO docs(id, title, tag, emb) VALUES (?, ?, ?, ?)", [i, t, tag, _b64(v)]) for i, t, v, tag in rows],
    )
    vec = {"table": "docs", "column": "emb", "dim": 4, "filter_columns": ["tag"]}
    assert httpx.put(proc.url + "/api/v1/collections/emb", json=vec).status_code == 202
    assert (
        httpx.put(
            proc.url + "/api/v1/text/docs",
            json={"table": "docs", "columns": ["title"], "filter_columns": ["tag", "slug"]},
        ).status_code
        == 202
    )
    _wait_ready(proc.url, "docs")
    deadline = time.monotonic() + 30
    while httpx.get(proc.url + "/api/v1/collections/emb").json()["state"] != "ready":
        assert time.monotonic() < deadline
        time.sleep(0.05)

    # 4 candidates per arm (k): the vector arm finds 1, 4, 2, 3 and the text arm 1, 2, 5
    r = _search(proc.url, "docs", q="apple", k=4, vector=[1, 0, 0, 0], collection="emb", hybrid={"candidates": 3})
    assert r.status_code == 200, r.text
    result = r.json()
    assert result["mode"] == "hybrid"
    hits = {h["rowid"]: h for h in result["results"]}
    assert hits[1]["arms"] == ["text", "vector"] and hits[2]["arms"] == ["text", "vector"]
    assert hits[5]["arms"] == ["text"] and "<mark>apple</mark>" in hits[5]["snippet"]
    assert hits[4]["arms"] == ["vector"] and "snippet" not in hits[4] and hits[4]["vector_rank"] == 2
    assert [h["rowid"] for h in result["results"]] == [1, 2, 4, 5]
    scores = [h["score"] for h in result["results"]]
    assert scores == sorted(scores, reverse=True)
    # weight 1: the vector arm alone decides the order; weight 0: the text arm alone
    only_vector = _search(proc.url, "docs", q="apple", k=5, vector=[1, 0, 0, 0], collection="emb", hybrid={"weight": 1})
    assert [h["rowid"] for h in only_vector.json()["results"]][:3] == [1, 4, 2]
    # the filter applies to both arms
    filtered = _search(
        proc.url,
        "docs",
        q="apple",
        k=5,
        vector=[1, 0, 0, 0],
        collection="emb",
        filter={"sql": "tag = ?", "params": ["a"]},
    ).json()
    assert {h["rowid"] for h in filtered["results"]} <= {1, 3, 4, 5} and 2 not in {
        h["rowid"] for h in filtered["results"]
    }
    # a vector of the wrong size, or a filter the vector collection cannot run: the vector arm's 400
    r = _search(proc.url, "docs", q="apple", vector=[1, 0], collection="emb")
    assert r.status_code == 400 and r.json()["error"]["code"] == "dimension_mismatch"
    r = _search(proc.url, "docs", q="apple", vector=[1, 0, 0, 0], collection="emb", filter={"sql": "slug IS NULL"})
    assert r.status_code == 400 and r.json()["error"]["message"].startswith("vector collection 'emb': ")


def test_the_seed_schema_becomes_searchable_with_one_command(node: tuple[Proc, Path]) -> None:
    proc, _ = node
    _execute(
        proc.url,
        "INSERT INTO users(id, email) VALUES ('u1', 'u1@example.com')",
        (
            "INSERT INTO prompts(id, user_id, title, content, status) VALUES (?, ?, ?, ?, ?)",
            ["p1", "u1", "Summarize meetings", "Summarise the notes", "active"],
        ),
        "INSERT INTO prompts(id, user_id, title, content) VALUES ('p2', 'u1', 'Translate', 'Translate to French')",
        (
            "INSERT INTO prompt_templates(id, name, description, content) VALUES (?, ?, ?, ?)",
            ["t1", "summary", "Summaries of documents", "{{doc}}"],
        ),
    )
    _cli(proc.url, "seed", "--wait")
    assert "prompts\tprompts(title,content)\tporter\tready\tsize=2" in _cli(proc.url, "list")
    found = json.loads(
        _cli(proc.url, "search", "prompts", "summarizing", "--filter", "status = ?", "--param", "active")
    )
    assert [h["rowid"] for h in found["results"]] == [1]  # porter: summarizing ~ summarize
    templates = json.loads(_cli(proc.url, "search", "prompt_templates", "document", "--syntax", "plain"))
    assert len(templates["results"]) == 1 and "<mark>" in templates["results"][0]["snippet"]


def test_a_replicas_text_index_follows_writes_made_on_the_primary_and_survives_a_restart(tmp_path: Path) -> None:
    primary = start_primary(tmp_path)
    try:
        primary_write(primary, "CREATE TABLE notes(id INTEGER PRIMARY KEY, k TEXT UNIQUE, body TEXT)")
        primary_write(primary, "INSERT INTO notes(id, k, body) VALUES (1, 'a', 'hello from the primary')")
        node = start_node(tmp_path, primary)
        try:
            wait_ready(node)
            r = httpx.put(node.url + "/api/v1/text/notes", json={"table": "notes", "columns": ["body"]}, headers=AUTH)
            assert r.status_code == 202, r.text
            _wait_ready(node.url, "notes", AUTH)
            assert _ids(node.url, "notes", "hello", AUTH) == [1]
            # writes straight on the primary (its triggers record them), pulled by the node's sync
            primary_write(primary, "INSERT INTO notes(id, k, body) VALUES (2, 'b', 'second hello')")
            primary_write(primary, "UPDATE notes SET body = 'changed' WHERE id = 1")
            primary_write(primary, "INSERT OR REPLACE INTO notes(id, k, body) VALUES (3, 'b', 'replacement hello')")
            eventually(lambda: _ids(node.url, "notes", "hello", AUTH) == [3], timeout=10)
            assert _ids(node.url, "notes", "changed", AUTH) == [1]
            # the replica file holds no FTS index: it lives in the node's own files
            names = [r[0] for r in _rows(node.url, "SELECT name FROM sqlite_master", AUTH)]
            assert not any("fts" in n for n in names)
            assert list((tmp_path / "node" / "text").glob("notes-*/index-*.sqlite"))
            # a restarted replica loads its index and catches up with what the primary did meanwhile
            node.stop()
            primary_write(primary, "DELETE FROM notes WHERE id = 3")
            node = start_node(tmp_path, primary, name="node")
            wait_ready(node)
            info = _wait_ready(node.url, "notes", AUTH)
            assert info["loaded_from_disk"] is True and info["builds"] == 0
            eventually(lambda: _ids(node.url, "notes", "hello", AUTH) == [], timeout=10)
        finally:
            node.stop()
    finally:
        primary.stop()


def test_a_node_killed_with_sigkill_restarts_on_its_index_without_a_rebuild(
    node: tuple[Proc, Path], tmp_path: Path
) -> None:
    proc, data = node
    _execute(
        proc.url,
        DOCS,
        *[
            ("INSERT INTO docs(id, slug, title, body) VALUES (?, ?, ?, ?)", [i, f"s{i}", f"t{i}", "kept"])
            for i in range(50)
        ],
    )
    assert (
        httpx.put(proc.url + "/api/v1/text/docs", json={"table": "docs", "columns": ["title", "body"]}).status_code
        == 202
    )
    _wait_ready(proc.url, "docs")
    for i in range(50, 80):  # one transaction each: many small applies before the kill
        _execute(
            proc.url, ("INSERT INTO docs(id, slug, title, body) VALUES (?, ?, ?, ?)", [i, f"s{i}", f"t{i}", "kept"])
        )
    _execute(proc.url, "DELETE FROM docs WHERE id < 10")
    proc.kill()
    again = start(["serve", "--data-dir", str(data)], tmp_path, name="again", ready_path="/ready")
    try:
        info = _wait_ready(again.url, "docs")
        assert info["loaded_from_disk"] is True and info["builds"] == 0 and info["size"] == 70
        assert _found(again.url, "docs", "kept") == list(range(10, 80))
    finally:
        again.stop()


def test_the_readme_text_search_examples_work_against_a_node(node: tuple[Proc, Path]) -> None:
    proc, _ = node
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Text search", 1)[1].split("\n## ", 1)[0]
    block = section.split("```sh", 1)[1].split("```", 1)[0].replace("\\\n", " ")
    _execute(
        proc.url,
        "CREATE TABLE docs(id INTEGER PRIMARY KEY, title TEXT, body TEXT, tag TEXT)",
        "INSERT INTO docs(id, title, body, tag) VALUES (1, 'HNSW graphs', 'vector search in edgenode', 'db')",
    )
    lines = [line.split("  #")[0].strip() for line in block.strip().splitlines()]
    assert lines[0] == "edgenode text seed --wait"
    _cli(proc.url, "seed", "--wait")
    for command in [line for line in lines if line.startswith("curl ")]:
        words = shlex.split(command)
        path = next(w for w in words if w.startswith("localhost:")).split("localhost:8080", 1)[1]
        method = words[words.index("-X") + 1] if "-X" in words else "POST"
        response = httpx.request(method, proc.url + path, content=words[words.index("-d") + 1], timeout=30)
        assert response.status_code in (200, 202), (command, response.text)
        if method == "PUT":
            _wait_ready(proc.url, re.sub(r".*/text/", "", path))
        else:
            assert [h["rowid"] for h in response.json()["results"]] == [1]


def test_url_and_token_are_taken_before_and_after_the_subcommand(tmp_path: Path) -> None:
    """`edgenode text search ... --url X` said "No such option"; vectors the same. Both places work
    for text and vectors now, as they always did for `edgenode changes` (a command, not a group)."""
    token = "cli-flags-token"
    proc = start(["serve", "--data-dir", str(tmp_path / "data"), "--auth-token", token], tmp_path, name="node")
    auth = {"Authorization": f"Bearer {token}"}
    try:
        _execute(
            proc.url,
            DOCS,
            ("INSERT INTO docs(id, title, emb) VALUES (1, 'flags anywhere', vector32(?))", ["[1,0,0,0]"]),
            headers=auth,
        )

        def run(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [sys.executable, "-m", "edgenode", *args], cwd=ROOT, capture_output=True, text=True, timeout=60
            )

        url, tok = ("--url", proc.url), ("--token", token)
        made = run("text", "create", "t", "--table", "docs", "--column", "title", "--wait", *url, *tok)
        assert made.returncode == 0, made.stderr
        for args in (
            ("text", *url, *tok, "search", "t", "flags"),  # before
            ("text", "search", "t", "flags", *url, *tok),  # after
            ("text", *url, "search", "t", "flags", *tok),  # one each side
            ("text", "--url", "http://127.0.0.1:9", *tok, "search", "t", "flags", *url),  # after wins
        ):
            out = run(*args)
            assert out.returncode == 0, (args, out.stderr)
            assert [h["rowid"] for h in json.loads(out.stdout)["results"]] == [1], args
        refused = run("text", "search", "t", "flags", *url)
        assert refused.returncode != 0 and "401" in refused.stderr  # the token is what let them in

        made = run("vectors", "create", "v", "--table", "docs", "--column", "emb", "--dim", "4", "--wait", *url, *tok)
        assert made.returncode == 0, made.stderr
        for args in (("vectors", *url, *tok, "list"), ("vectors", "list", *url, *tok)):
            out = run(*args)
            assert out.returncode == 0 and "v\tdocs.emb\tdim=4" in out.stdout, (args, out.stderr)
        found = run("vectors", "search", "v", "--vector", "[1,0,0,0]", "-k", "1", *tok, *url)
        assert found.returncode == 0 and json.loads(found.stdout)["results"][0]["rowid"] == 1, found.stderr

        after = str(httpx.get(f"{proc.url}/api/v1/changes/tables", headers=auth).json()["position"])
        changes = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "edgenode",
                "changes",
                *url,
                "--tables",
                "docs",
                "--after",
                after,
                "--capture",
                *tok,
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            eventually(
                lambda: httpx.get(f"{proc.url}/api/v1/changes/tables", headers=auth).json()["tables"] == ["docs"]
            )
            _execute(proc.url, "INSERT INTO docs(id, title) VALUES (2, 'streamed')", headers=auth)
            assert changes.stdout is not None
            assert json.loads(changes.stdout.readline())["rowid"] == 2
        finally:
            changes.kill()
            changes.wait(10)
    finally:
        proc.stop()


def _found_once_built(url: str, name: str, words: tuple[str, ...]) -> list[list[int]] | None:
    """`_found` for each word; None while the collection (re)builds (503)."""
    try:
        return [_found(url, name, w) for w in words]
    except AssertionError:
        return None


def _nearest(url: str, name: str, vector: list[float]) -> tuple[int, float] | None:
    r = httpx.post(f"{url}/api/v1/collections/{name}/search", json={"vector": vector, "k": 1, "mode": "exact"})
    return (r.json()["results"][0]["rowid"], r.json()["results"][0]["distance"]) if r.status_code == 200 else None


def test_collections_follow_a_renamed_table(node: tuple[Proc, Path]) -> None:
    """ALTER TABLE ... RENAME kept the feed's triggers writing the old name: the collections, still
    defined over it, never saw another change. They follow the rename (rebuilt from the table)."""
    proc, _ = node
    _execute(proc.url, DOCS, ("INSERT INTO docs(id, title, emb) VALUES (1, 'old', vector32(?))", ["[1,0,0,0]"]))
    assert httpx.put(f"{proc.url}/api/v1/text/t", json={"table": "docs", "columns": ["title"]}).status_code == 202
    vec = {"table": "docs", "column": "emb", "dim": 4}
    assert httpx.put(f"{proc.url}/api/v1/collections/v", json=vec).status_code == 202
    _wait_ready(proc.url, "t")
    _execute(proc.url, "ALTER TABLE docs RENAME TO papers")
    _execute(proc.url, ("INSERT INTO papers(id, title, emb) VALUES (2, 'later', vector32(?))", ["[0,0,1,0]"]))
    deadline = time.monotonic() + 30
    while True:
        tables = [httpx.get(f"{proc.url}/api/v1/{kind}").json()["table"] for kind in ("text/t", "collections/v")]
        found = _found_once_built(proc.url, "t", ("old", "later"))
        vectors = [_nearest(proc.url, "v", [1, 0, 0, 0]), _nearest(proc.url, "v", [0, 0, 1, 0])]
        if tables == ["papers", "papers"] and found == [[1], [2]] and vectors == [(1, 0.0), (2, 0.0)]:
            break
        assert time.monotonic() < deadline, (tables, found, vectors)
        time.sleep(0.1)
    _execute(proc.url, "UPDATE papers SET title = 'renamed' WHERE id = 1")
    eventually(lambda: _found(proc.url, "t", "renamed") == [1] and _found(proc.url, "t", "old") == [])
    names = _rows(proc.url, "SELECT name FROM sqlite_master WHERE type = 'trigger' ORDER BY name")
    assert not [n for (n,) in names if n.startswith("_edgenode_feed_docs_")], names
    # Same spec, same table: nothing left to follow.
    assert httpx.put(f"{proc.url}/api/v1/text/t", json={"table": "papers", "columns": ["title"]}).status_code == 200


def test_a_restart_rebuilds_collections_over_a_table_dropped_and_created_again(node: tuple[Proc, Path]) -> None:
    """Without a PUT in between, a restart loaded the old table's index and never saw the new rows."""
    proc, _ = node
    vec = {"table": "docs", "column": "emb", "dim": 4}
    _execute(proc.url, DOCS, ("INSERT INTO docs(id, title, emb) VALUES (1, 'old', vector32(?))", ["[1,0,0,0]"]))
    assert httpx.put(f"{proc.url}/api/v1/text/t", json={"table": "docs", "columns": ["title"]}).status_code == 202
    assert httpx.put(f"{proc.url}/api/v1/collections/v", json=vec).status_code == 202
    _wait_ready(proc.url, "t")
    eventually(lambda: _nearest(proc.url, "v", [1, 0, 0, 0]) == (1, 0.0))
    _execute(
        proc.url,
        "DROP TABLE docs",
        DOCS,
        ("INSERT INTO docs(id, title, emb) VALUES (1, 'fresh', vector32(?))", ["[0,1,0,0]"]),
    )
    proc.stop()
    proc.start(ready_path="/ready")
    _execute(proc.url, ("INSERT INTO docs(id, title, emb) VALUES (2, 'later', vector32(?))", ["[0,0,1,0]"]))
    deadline = time.monotonic() + 30
    while True:
        found = _found_once_built(proc.url, "t", ("old", "fresh", "later"))
        vectors = [_nearest(proc.url, "v", [0, 1, 0, 0]), _nearest(proc.url, "v", [0, 0, 1, 0])]
        if found == [[], [1], [2]] and vectors == [(1, 0.0), (2, 0.0)]:
            break
        assert time.monotonic() < deadline, (found, vectors)
        time.sleep(0.1)
    # The triggers are back: a PUT of the same spec finds nothing missing.
    assert httpx.put(f"{proc.url}/api/v1/text/t", json={"table": "docs", "columns": ["title"]}).status_code == 200
