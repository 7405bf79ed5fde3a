"""Cost observability: CloudWatch fetch (metrics), the price table (pricing), the pure model (model),
I/O glue (collect), the cron report (report), budget alarms (alarms). See docs/cost.md."""
