// npm `libsql` (better-sqlite3 API) in remote mode: db.transaction(fn) with a statement prepared
// before the transaction, and with one prepared inside it (the work-around).
const Database = require("libsql");
const T = process.env.TABLE;
const out = {};
const db = new Database(process.env.URL, { authToken: process.env.TOKEN });
db.exec(`create table ${T}(a integer)`);
const early = db.prepare(`insert into ${T} values (?)`);
const before = db.transaction((n) => { for (let i = 0; i < n; i++) early.run(i); });
try { before(3); out.before = "committed"; } catch (e) { out.before = String(e.message || e); }
out.afterBefore = db.prepare(`select count(*) as n from ${T}`).get().n;
const inside = db.transaction((n) => {
  const stmt = db.prepare(`insert into ${T} values (?)`);
  for (let i = 0; i < n; i++) stmt.run(100 + i);
});
try { inside(3); out.inside = "committed"; } catch (e) { out.inside = String(e.message || e); }
out.afterInside = db.prepare(`select count(*) as n from ${T}`).get().n;
console.log(JSON.stringify(out));
