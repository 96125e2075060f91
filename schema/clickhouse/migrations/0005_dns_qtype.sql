-- The record types a DNS query asked ("A", "AAAA", "TXT"; comma-joined
-- when one query asks several), from Hubble's l7.dns.qtypes: tunnels
-- favour TXT, NULL and ANY. Rows stored before this migration have ''.
-- On a cluster the writer inserts through the Distributed table, so it
-- gets the column as well as the shard-local table.
ALTER TABLE {{local "flows"}}{{onCluster}} ADD COLUMN IF NOT EXISTS dns_qtype LowCardinality(String) AFTER dns_rcode;
{{if ne (local "flows") "flows"}}ALTER TABLE flows{{onCluster}} ADD COLUMN IF NOT EXISTS dns_qtype LowCardinality(String) AFTER dns_rcode;{{end}}
