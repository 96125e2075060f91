-- Raw flow records: one row per observed flow event, from every source.
-- Ordered for the forensic questions people ask ("what did this workload talk
-- to, when, with which verdict"); skip indexes serve the reverse direction and
-- address look-ups. Partitioned by day so that retention drops whole parts.
-- On a cluster (--clickhouse-cluster) each table here is a shard-local
-- <name>_local, and <name> is a Distributed table over them; flows are
-- sharded by source workload so that one workload stays on one shard.
CREATE TABLE IF NOT EXISTS {{local "flows"}}{{onCluster}}
(
    time              DateTime64(9, 'UTC') CODEC(DoubleDelta, ZSTD(1)),
    node              LowCardinality(String),
    source            LowCardinality(String),
    verdict           LowCardinality(String),
    drop_reason       LowCardinality(String),
    direction         LowCardinality(String),
    is_reply          Bool,
    ip_version        UInt8,
    protocol          LowCardinality(String),
    src_ip            IPv6,
    dst_ip            IPv6,
    src_port          UInt16,
    dst_port          UInt16,
    tcp_flags         LowCardinality(String),
    src_namespace     LowCardinality(String),
    src_pod           LowCardinality(String),
    src_workload      LowCardinality(String),
    src_workload_kind LowCardinality(String),
    src_labels        Map(LowCardinality(String), String),
    src_identity      UInt32,
    dst_namespace     LowCardinality(String),
    dst_pod           LowCardinality(String),
    dst_workload      LowCardinality(String),
    dst_workload_kind LowCardinality(String),
    dst_labels        Map(LowCardinality(String), String),
    dst_identity      UInt32,
    dst_names         Array(String),
    l7_type           LowCardinality(String),
    dns_query         String,
    dns_rcode         UInt16,
    http_method       LowCardinality(String),
    http_path         String,
    http_status       UInt16,
    bytes             UInt64,
    packets           UInt64,
    duration_ms       UInt32,
    mtls              Bool,
    src_principal     LowCardinality(String),
    dst_principal     LowCardinality(String),
    policy_names      Array(LowCardinality(String)),
    trace_id          String,
    -- Readable addresses: "10.0.0.1" rather than "::ffff:10.0.0.1".
    src_addr          String ALIAS replaceRegexpOne(IPv6NumToString(src_ip), '^::ffff:', ''),
    dst_addr          String ALIAS replaceRegexpOne(IPv6NumToString(dst_ip), '^::ffff:', ''),
    INDEX idx_dst_namespace dst_namespace TYPE set(1000) GRANULARITY 4,
    INDEX idx_dst_workload  dst_workload  TYPE bloom_filter(0.01) GRANULARITY 4,
    INDEX idx_src_ip        src_ip        TYPE bloom_filter(0.01) GRANULARITY 4,
    INDEX idx_dst_ip        dst_ip        TYPE bloom_filter(0.01) GRANULARITY 4,
    INDEX idx_verdict       verdict       TYPE set(16)          GRANULARITY 4,
    INDEX idx_dst_names     dst_names     TYPE bloom_filter(0.01) GRANULARITY 4
)
ENGINE = {{engine "MergeTree" "flows"}}
PARTITION BY toDate(time)
ORDER BY (src_namespace, src_workload, time)
{{if .FlowsTTLDays}}TTL toDateTime(time) + INTERVAL {{.FlowsTTLDays}} DAY{{end}}
SETTINGS ttl_only_drop_parts = 1, non_replicated_deduplication_window = 10000;
{{distributed "flows" "cityHash64(src_namespace, if(src_workload = '', IPv6NumToString(src_ip), src_workload))"}}

-- Who talked to whom, in 5-minute and 1-day buckets. dst_address names peers
-- that are not pods (world, host, unknown): a DNS name when Hubble saw one,
-- else the address. Query with GROUP BY and sum()/min()/max(). Labels are
-- not rolled up (aggregating the label maps doubled the cost of every
-- insert); read them from flows.
CREATE TABLE IF NOT EXISTS {{local "edges_5m"}}{{onCluster}}
(
    time              DateTime('UTC'),
    src_namespace     LowCardinality(String),
    src_workload      LowCardinality(String),
    src_workload_kind LowCardinality(String),
    dst_namespace     LowCardinality(String),
    dst_workload      LowCardinality(String),
    dst_workload_kind LowCardinality(String),
    dst_address       LowCardinality(String),
    protocol          LowCardinality(String),
    dst_port          UInt16,
    verdict           LowCardinality(String),
    is_reply          Bool,
    flows             SimpleAggregateFunction(sum, UInt64),
    bytes             SimpleAggregateFunction(sum, UInt64),
    first_seen        SimpleAggregateFunction(min, DateTime64(9, 'UTC')),
    last_seen         SimpleAggregateFunction(max, DateTime64(9, 'UTC'))
)
ENGINE = {{engine "AggregatingMergeTree" "edges_5m"}}
PARTITION BY toYYYYMM(time)
ORDER BY (src_namespace, src_workload, src_workload_kind, dst_namespace, dst_workload, dst_workload_kind, dst_address, protocol, dst_port, verdict, is_reply, time)
{{if .RollupTTLDays}}TTL time + INTERVAL {{.RollupTTLDays}} DAY{{end}}
SETTINGS non_replicated_deduplication_window = 10000;
{{distributed "edges_5m" "cityHash64(src_namespace, src_workload)"}}

CREATE TABLE IF NOT EXISTS {{local "edges_1d"}}{{onCluster}} AS {{local "edges_5m"}}
ENGINE = {{engine "AggregatingMergeTree" "edges_1d"}}
PARTITION BY toYYYYMM(time)
ORDER BY (src_namespace, src_workload, src_workload_kind, dst_namespace, dst_workload, dst_workload_kind, dst_address, protocol, dst_port, verdict, is_reply, time)
{{if .RollupTTLDays}}TTL time + INTERVAL {{.RollupTTLDays}} DAY{{end}}
SETTINGS non_replicated_deduplication_window = 10000;
{{distributed "edges_1d" "cityHash64(src_namespace, src_workload)"}}

-- On a cluster the views run on each shard, over its local tables.
CREATE MATERIALIZED VIEW IF NOT EXISTS edges_5m_mv{{onCluster}} TO {{local "edges_5m"}} AS
SELECT
    toStartOfFiveMinutes(f.time) AS time,
    f.src_namespace AS src_namespace, f.src_workload AS src_workload, f.src_workload_kind AS src_workload_kind,
    f.dst_namespace AS dst_namespace, f.dst_workload AS dst_workload, f.dst_workload_kind AS dst_workload_kind,
    if(f.dst_workload_kind IN ('reserved', '') , if(notEmpty(f.dst_names), f.dst_names[1], f.dst_addr), '') AS dst_address,
    f.protocol AS protocol, f.dst_port AS dst_port, f.verdict AS verdict, f.is_reply AS is_reply,
    count() AS flows, sum(f.bytes) AS bytes, min(f.time) AS first_seen, max(f.time) AS last_seen
FROM {{local "flows"}} AS f
GROUP BY time, src_namespace, src_workload, src_workload_kind, dst_namespace, dst_workload, dst_workload_kind,
         dst_address, protocol, dst_port, verdict, is_reply;

-- The daily rollup is fed from the 5-minute one: each insert into edges_5m
-- is already aggregated, so this view sees far fewer rows than flows gets.
CREATE MATERIALIZED VIEW IF NOT EXISTS edges_1d_mv{{onCluster}} TO {{local "edges_1d"}} AS
SELECT
    toStartOfDay(e.time) AS time,
    e.src_namespace AS src_namespace, e.src_workload AS src_workload, e.src_workload_kind AS src_workload_kind,
    e.dst_namespace AS dst_namespace, e.dst_workload AS dst_workload, e.dst_workload_kind AS dst_workload_kind,
    e.dst_address AS dst_address, e.protocol AS protocol, e.dst_port AS dst_port, e.verdict AS verdict, e.is_reply AS is_reply,
    sum(e.flows) AS flows, sum(e.bytes) AS bytes, min(e.first_seen) AS first_seen, max(e.last_seen) AS last_seen
FROM {{local "edges_5m"}} AS e
GROUP BY time, src_namespace, src_workload, src_workload_kind, dst_namespace, dst_workload, dst_workload_kind,
         dst_address, protocol, dst_port, verdict, is_reply;
