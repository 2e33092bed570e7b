// @libsql/client (intMode "bigint") against a node or a primary: 64-bit integers written and read
// through untyped and INTEGER columns and bare expressions, positional and named, with typeof.
const { createClient } = require("@libsql/client");
const T = process.env.TABLE;
const VALUES = JSON.parse(process.env.VALUES).map(BigInt);
(async () => {
  const db = createClient({ url: process.env.URL, authToken: process.env.TOKEN, intMode: "bigint" });
  const out = { bare: [], named: [], minus: [], stored: [], typed: [] };
  await db.execute(`create table ${T}(k integer primary key, u, i integer)`);
  for (const [k, v] of VALUES.entries()) {
    const r = (await db.execute({ sql: "select ?, typeof(?)", args: [v, v] })).rows[0];
    out.bare.push([String(r[0]), r[1]]);
    const n = (await db.execute({ sql: "select :v as v, typeof(:v) as t, :v as again", args: { v } })).rows[0];
    out.named.push([String(n.v), n.t, String(n.again)]);
    // `x - ?` with a negative value must not turn into a `--` comment.
    const m = (await db.execute({ sql: "select 0 - ? as d, typeof(0 - ?) as t", args: [v, v] })).rows[0];
    out.minus.push([String(m.d), m.t]);
    if (k % 2) await db.execute({ sql: `insert into ${T}(k, u, i) values (?, ?, ?)`, args: [k, v, v] });
    else await db.batch([{ sql: `insert into ${T}(k, u, i) values (:k, :v, :v)`, args: { k, v } }], "write");
  }
  for (const row of (await db.execute(`select u, typeof(u), i, typeof(i) from ${T} order by k`)).rows) {
    out.stored.push([String(row[0]), row[1]]);
    out.typed.push([String(row[2]), row[3]]);
  }
  out.where = [];
  for (const v of VALUES) {
    const r = await db.execute({ sql: `select count(*) from ${T} where u = ?1 and i = ?1`, args: [v] });
    out.where.push(String(r.rows[0][0]));
  }
  const tx = await db.transaction("write");
  await tx.execute({ sql: `update ${T} set u = u - ? where k = 0`, args: [VALUES[0]] });
  out.inTx = String((await tx.execute(`select u from ${T} where k = 0`)).rows[0][0]);
  await tx.rollback();
  db.close();
  console.log(JSON.stringify(out, (_, x) => (typeof x === "bigint" ? String(x) : x)));
})().catch((e) => { console.error(e); process.exit(1); });
