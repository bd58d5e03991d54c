-- Users and their refresh tokens.
CREATE TYPE user_role AS ENUM ('customer', 'vendor', 'admin');

CREATE TABLE users (
    id              uuid        NOT NULL,
    email           text        NOT NULL,
    username        text        NOT NULL,
    full_name       text,
    password_hash   text        NOT NULL,
    role            user_role   NOT NULL DEFAULT 'customer',
    is_active       boolean     NOT NULL DEFAULT true,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT users_pkey PRIMARY KEY (id),
    CONSTRAINT users_username_length CHECK (char_length(username) BETWEEN 3 AND 50)
);
-- Case-insensitive uniqueness: "Alice@x.io" and "alice@x.io" are one account.
CREATE UNIQUE INDEX users_email_key ON users (lower(email));
CREATE UNIQUE INDEX users_username_key ON users (lower(username));
CREATE INDEX users_role_idx ON users (role, created_at DESC);

-- Refresh tokens are stored as SHA-256 hashes. Every token issued by one login shares a
-- family; presenting a token that was already rotated revokes the whole family.
CREATE TABLE refresh_tokens (
    id              uuid        NOT NULL,
    user_id         uuid        NOT NULL,
    family_id       uuid        NOT NULL,
    token_hash      bytea       NOT NULL,
    expires_at      timestamptz NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    rotated_at      timestamptz,
    revoked_at      timestamptz,
    CONSTRAINT refresh_tokens_pkey PRIMARY KEY (id),
    CONSTRAINT refresh_tokens_user_fkey FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE CASCADE,
    CONSTRAINT refresh_tokens_token_hash_key UNIQUE (token_hash)
);
CREATE INDEX refresh_tokens_family_idx ON refresh_tokens (family_id);
CREATE INDEX refresh_tokens_user_idx ON refresh_tokens (user_id);
