-- The LATEST baseline: the most recent hourly row before a period, per (customer ref, metric,
-- grain values), is found by walking this index instead of reading every earlier hour.
CREATE INDEX usage_hourly_by_grain ON usage_hourly (env, customer_ref, metric_id, groups, hour_ms);
