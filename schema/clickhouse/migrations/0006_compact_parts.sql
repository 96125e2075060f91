-- Parts of flows below 256 MiB of uncompressed data are written in the
-- Compact format (all columns in one file) instead of Wide (files per
-- column and stream, with a write buffer each): ClickHouse's default
-- threshold is 10 MiB, about 30,000 flows, so nearly every insert wrote
-- Wide parts of some 150 files. Compact parts cut the server's CPU per
-- inserted flow by about 40% (BenchmarkFileToClickHouse: 6.2-7.9 -> 3.8-4.4
-- us per row); merges make parts above the threshold Wide, as before.
ALTER TABLE {{local "flows"}}{{onCluster}} MODIFY SETTING min_bytes_for_wide_part = 268435456;
