-- nftables counter readings, polled from each node: named counters and the
-- anonymous counters of rules. Rates are differences between readings:
--   SELECT node, table, chain, handle, comment,
--          (max(packets) - min(packets)) / dateDiff('second', min(time), max(time)) AS pps
--   FROM nft_counters WHERE time > now() - INTERVAL 10 MINUTE GROUP BY ALL
CREATE TABLE IF NOT EXISTS {{local "nft_counters"}}{{onCluster}}
(
    time     DateTime64(3, 'UTC') CODEC(DoubleDelta, ZSTD(1)),
    node     LowCardinality(String),
    family   LowCardinality(String),
    `table`  LowCardinality(String),
    chain    LowCardinality(String),
    handle   UInt64,
    name     LowCardinality(String),
    comment  String,
    drop     Bool,
    packets  UInt64 CODEC(T64, ZSTD(1)),
    bytes    UInt64 CODEC(T64, ZSTD(1))
)
ENGINE = {{engine "MergeTree" "nft_counters"}}
PARTITION BY toDate(time)
ORDER BY (node, `table`, chain, handle, name, time)
{{if .FlowsTTLDays}}TTL toDateTime(time) + INTERVAL {{.FlowsTTLDays}} DAY{{end}};
{{distributed "nft_counters" "cityHash64(node)"}}
