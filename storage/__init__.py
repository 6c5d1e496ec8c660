"""SQLite storage: raw results, hourly and daily rollups, rolling uptime, alert state, outbox."""
