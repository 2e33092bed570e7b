// npm @tursodatabase/sync (Turso Sync) against a URL: prints how the connection ended.
import { connect } from "@tursodatabase/sync";
const started = Date.now();
try {
  const db = await connect({ path: process.env.DB_PATH, url: process.env.URL, authToken: process.env.TOKEN });
  await db.pull();
  console.log(JSON.stringify({ connected: true, ms: Date.now() - started }));
} catch (e) {
  console.log(JSON.stringify({ connected: false, error: String(e && e.message ? e.message : e), ms: Date.now() - started }));
}
