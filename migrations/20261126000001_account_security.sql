-- Login attempt budgets shared by every api replica, access-token revocation by version,
-- and the link from a rotated refresh token to its successor (for the reuse grace window).

-- One row per account (`user:<id>`) or unknown login name (`name:<lowercased>`): attempts
-- counted in the window that started at `window_started_at`. Expired rows are pruned.
CREATE TABLE login_attempts (
    account_key         text        NOT NULL,
    attempts            integer     NOT NULL,
    window_started_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT login_attempts_pkey PRIMARY KEY (account_key),
    CONSTRAINT login_attempts_key_length CHECK (octet_length(account_key) <= 1100)
);
CREATE INDEX login_attempts_window_idx ON login_attempts (window_started_at);

-- Access tokens carry the version they were issued under; bumping it (password change,
-- logout everywhere, deactivation, role change) invalidates every one issued before.
ALTER TABLE users ADD COLUMN token_version integer NOT NULL DEFAULT 0;

ALTER TABLE refresh_tokens ADD COLUMN replaced_by uuid;
