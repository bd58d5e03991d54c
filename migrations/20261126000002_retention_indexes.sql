-- Indexes for the retention sweep, which deletes old rows in bounded batches.
CREATE INDEX outbox_published_idx ON outbox (published_at) WHERE published_at IS NOT NULL;
CREATE INDEX processed_messages_processed_idx ON processed_messages (processed_at);
CREATE INDEX refresh_tokens_expires_idx ON refresh_tokens (expires_at);
CREATE INDEX notifications_read_idx ON notifications (read_at) WHERE read_at IS NOT NULL;
