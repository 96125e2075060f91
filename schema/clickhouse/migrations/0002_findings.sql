-- Findings as they open, change and resolve; the newest version of each
-- (id, start) wins: query with FINAL.
CREATE TABLE IF NOT EXISTS {{local "findings"}}{{onCluster}}
(
    id          String,
    detector    LowCardinality(String),
    severity    LowCardinality(String),
    namespace   LowCardinality(String),
    workload    LowCardinality(String),
    peer        LowCardinality(String),
    summary     String,
    start       DateTime64(9, 'UTC'),
    end         DateTime64(9, 'UTC'),
    status      LowCardinality(String),
    flows       UInt64,
    evidence    String CODEC(ZSTD(3)),
    query       String CODEC(ZSTD(3)),
    updated_at  DateTime64(6, 'UTC')
)
ENGINE = {{engine "ReplacingMergeTree" "findings" "updated_at"}}
PARTITION BY toYYYYMM(start)
ORDER BY (id, start)
{{if .RollupTTLDays}}TTL toDateTime(start) + INTERVAL {{.RollupTTLDays}} DAY{{end}};
-- All versions of a finding go to one shard, so FINAL sees them together.
{{distributed "findings" "cityHash64(id)"}}
