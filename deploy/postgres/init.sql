-- Second database of deploy/compose.yaml, for the `cluster` profile's nodes, so that they do
-- not share (and, on start, mark failed) the single node's live calls.
CREATE DATABASE confab_cluster OWNER confab;
