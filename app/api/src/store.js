// Postgres access for monitors and check results. The pool is injected (pg.Pool or a fake
// with the same query(text, params) shape), so the routes can be tested without a database.

const COLUMNS = `id, name, url, interval_seconds AS "intervalSeconds", timeout_ms AS "timeoutMs",
  expected_status AS "expectedStatus", enabled, created_at AS "createdAt", updated_at AS "updatedAt"`;

export function monitorStore(pool) {
  return {
    async list() {
      const { rows } = await pool.query(`SELECT ${COLUMNS} FROM monitors ORDER BY id`);
      return rows;
    },
    async get(id) {
      const { rows } = await pool.query(`SELECT ${COLUMNS} FROM monitors WHERE id = $1`, [id]);
      return rows[0] ?? null;
    },
    async create(m) {
      const { rows } = await pool.query(
        `INSERT INTO monitors (name, url, interval_seconds, timeout_ms, expected_status, enabled)
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING ${COLUMNS}`,
        [m.name, m.url, m.intervalSeconds, m.timeoutMs, m.expectedStatus, m.enabled],
      );
      return rows[0];
    },
    async update(id, m) {
      const { rows } = await pool.query(
        `UPDATE monitors SET name = $2, url = $3, interval_seconds = $4, timeout_ms = $5,
           expected_status = $6, enabled = $7, updated_at = now()
         WHERE id = $1 RETURNING ${COLUMNS}`,
        [id, m.name, m.url, m.intervalSeconds, m.timeoutMs, m.expectedStatus, m.enabled],
      );
      return rows[0] ?? null;
    },
    async remove(id) {
      const { rowCount } = await pool.query("DELETE FROM monitors WHERE id = $1", [id]);
      return rowCount > 0;
    },
    async results(id, limit) {
      const { rows } = await pool.query(
        `SELECT checked_at AS "checkedAt", ok, status_code AS "statusCode",
           latency_ms AS "latencyMs", error
         FROM check_results WHERE monitor_id = $1 ORDER BY checked_at DESC LIMIT $2`,
        [id, limit],
      );
      return rows;
    },
  };
}
