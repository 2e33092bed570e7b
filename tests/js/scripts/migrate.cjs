// @libsql/client migrate(): the client wraps the batch in PRAGMA foreign_keys=off ... on, so a
// migration may rebuild a table that others reference (SQLite's documented 12-step ALTER).
const { createClient } = require("@libsql/client");
const T = process.env.TABLE;
const rejections = [];
process.on("unhandledRejection", (e) => rejections.push(String(e && e.message ? e.message : e)));
(async () => {
  const out = {};
  const db = createClient({ url: process.env.URL, authToken: process.env.TOKEN });
  await db.batch([
    `create table ${T}_p(id integer primary key)`,
    `create table ${T}_c(pid integer references ${T}_p(id))`,
    `insert into ${T}_p values (1)`,
    `insert into ${T}_c values (1)`,
  ], "write");
  out.fkBefore = (await db.execute("pragma foreign_keys")).rows[0][0];
  try {
    await db.migrate([
      `create table ${T}_p2(id integer primary key, name text)`,
      `insert into ${T}_p2(id) select id from ${T}_p`,
      `drop table ${T}_p`,
      `alter table ${T}_p2 rename to ${T}_p`,
    ]);
    out.migrated = (await db.execute(`select id, name from ${T}_p`)).rows.map((r) => [r.id, r.name]);
  } catch (e) {
    out.migrated = e.code || String(e);
  }
  // Nothing leaked: other streams still enforce foreign keys.
  out.fk = (await db.execute("pragma foreign_keys")).rows[0][0];
  try { await db.execute(`insert into ${T}_c values (99)`); out.orphan = "allowed"; }
  catch (e) { out.orphan = e.code; }
  db.close();
  await new Promise((resolve) => setTimeout(resolve, 200));
  out.rejections = rejections;
  console.log(JSON.stringify(out));
})().catch((e) => { console.error(e); process.exit(1); });
