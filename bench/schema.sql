-- The PostgreSQL baseline's ledger: one row per account (balance never below 0) and one row per
-- transfer, the same accounts and funding as `cellpay bench` (:naccounts accounts, 1000000 each).
DROP TABLE IF EXISTS transfers;
DROP TABLE IF EXISTS accounts;
CREATE TABLE accounts (
    id bigint PRIMARY KEY,
    balance bigint NOT NULL CHECK (balance >= 0)
);
CREATE TABLE transfers (
    id bigserial PRIMARY KEY,
    from_id bigint NOT NULL,
    to_id bigint NOT NULL,
    amount bigint NOT NULL,
    at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO accounts SELECT g, 1000000 FROM generate_series(1, :naccounts) AS g;
VACUUM ANALYZE accounts;
