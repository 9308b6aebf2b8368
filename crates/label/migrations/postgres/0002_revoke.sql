-- `rlhf label revoke`: a revoked labeler's token authenticates nothing; their submissions stay.
ALTER TABLE labelers ADD COLUMN revoked_ms BIGINT;
