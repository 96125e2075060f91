-- Retention counts from when a row was stored, not from its event time: an
-- old recording imported today stays queryable for the whole retention
-- period, and an import's "written" count is what count() returns after
-- it. Partitions stay by event day. stored_at is MATERIALIZED: set by the
-- server on insert (on the shard-local tables, on a cluster), never sent by
-- the writer and not part of SELECT *. Rows stored before this migration
-- count as stored now (MATERIALIZE COLUMN), so migrating drops nothing.
-- The TTLs set here follow --flows-ttl/--rollup-ttl; a later change of
-- those flags is applied at start by clickhouse.Migrate (MODIFY TTL).
ALTER TABLE {{local "flows"}}{{onCluster}} ADD COLUMN IF NOT EXISTS stored_at DateTime('UTC') MATERIALIZED now() CODEC(DoubleDelta, ZSTD(1));
ALTER TABLE {{local "flows"}}{{onCluster}} MATERIALIZE COLUMN stored_at;
{{if .FlowsTTLDays}}ALTER TABLE {{local "flows"}}{{onCluster}} MODIFY TTL stored_at + INTERVAL {{.FlowsTTLDays}} DAY;{{end}}

-- The rollups keep the newest storing time of the rows they aggregate.
ALTER TABLE {{local "edges_5m"}}{{onCluster}} ADD COLUMN IF NOT EXISTS stored_at SimpleAggregateFunction(max, DateTime('UTC')) MATERIALIZED now();
ALTER TABLE {{local "edges_5m"}}{{onCluster}} MATERIALIZE COLUMN stored_at;
{{if .RollupTTLDays}}ALTER TABLE {{local "edges_5m"}}{{onCluster}} MODIFY TTL stored_at + INTERVAL {{.RollupTTLDays}} DAY;{{end}}
ALTER TABLE {{local "edges_1d"}}{{onCluster}} ADD COLUMN IF NOT EXISTS stored_at SimpleAggregateFunction(max, DateTime('UTC')) MATERIALIZED now();
ALTER TABLE {{local "edges_1d"}}{{onCluster}} MATERIALIZE COLUMN stored_at;
{{if .RollupTTLDays}}ALTER TABLE {{local "edges_1d"}}{{onCluster}} MODIFY TTL stored_at + INTERVAL {{.RollupTTLDays}} DAY;{{end}}

-- A finding's updated_at is when it was stored.
{{if .RollupTTLDays}}ALTER TABLE {{local "findings"}}{{onCluster}} MODIFY TTL toDateTime(updated_at) + INTERVAL {{.RollupTTLDays}} DAY;{{end}}
