"""The data plane: IAM tokens, TLS, psycopg connections and pools, OCC retry, and the SQL-level
operations built on them (roles, indexes, jobs, stats, explain)."""
