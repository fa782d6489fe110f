-- One transfer per transaction, as `cellpay bench` sends one per request: a random payer and a
-- different random payee among :naccounts, an amount of 1..100; debit with a balance check,
-- credit only if the debit happened, and a row in `transfers`. One statement, one commit
-- (synchronous_commit=on: the commit waits for the WAL fsync). Deadlocks between opposite
-- transfers are retried by pgbench (--max-tries).
\set from random(1, :naccounts)
\set to random(1, :naccounts - 1)
\if :to >= :from
\set to :to + 1
\endif
\set amount random(1, 100)
WITH debit AS (
    UPDATE accounts SET balance = balance - :amount
    WHERE id = :from AND balance >= :amount
    RETURNING id
), credit AS (
    UPDATE accounts SET balance = balance + :amount
    WHERE id = :to AND EXISTS (SELECT 1 FROM debit)
    RETURNING id
)
INSERT INTO transfers (from_id, to_id, amount)
SELECT :from, :to, :amount FROM credit;
