//! Bad input gets a 4xx with the documented error code and changes nothing (contract invariant
//! 6). Each test runs a one-node cluster (quick to start; the checks are about the HTTP layer
//! and the ledger's refusals, not replication). Every case asserts the status, the error code,
//! and that the ledger summary and every account are exactly as before.

mod common;

use common::{error_code, transfer_body, Auth, Options, TestCluster, TOKEN};
use reqwest::Method;
use serde_json::{json, Value};

const C1: &str = "+254700000501";
const C2: &str = "+254700000502";
const M1: &str = "+254711000501";

/// A one-node cluster with two customers (C1 funded with 100 000) and a merchant.
async fn setup() -> TestCluster {
    let cluster = TestCluster::start(Options::nodes(1)).await;
    cluster.create_account(1, C1, "customer").await;
    cluster.create_account(1, C2, "customer").await;
    cluster.create_account(1, M1, "merchant").await;
    cluster.issue(1, "fund-c1", C1, 100_000).await;
    cluster
}

/// Everything a refusal must leave alone: the summary and every account.
async fn state(cluster: &TestCluster) -> (Value, Vec<Value>) {
    (cluster.summary(1).await, cluster.accounts(1).await)
}

/// Sends one bad request and asserts its status, that its error code is one of `codes` (any
/// code when `codes` is empty), and that nothing changed.
async fn refused(
    cluster: &TestCluster,
    (method, path, body): (Method, &str, Option<Vec<u8>>),
    auth: Auth,
    status: u16,
    codes: &[&str],
    what: &str,
) -> Value {
    let before = state(cluster).await;
    let (got, answer) = cluster.request(method.clone(), 1, path, body, &auth).await;
    assert_eq!(
        got, status,
        "{what}: {method} {path}: expected {status} {codes:?}, got {got} {answer}"
    );
    let code = error_code(&answer);
    assert!(
        !code.is_empty(),
        "{what}: {method} {path}: no error.code in {answer}"
    );
    assert!(
        answer["error"]["message"].is_string(),
        "{what}: {method} {path}: no error.message in {answer}"
    );
    assert!(
        codes.is_empty() || codes.contains(&code),
        "{what}: {method} {path}: expected code {codes:?}, got {answer}"
    );
    assert_eq!(
        state(cluster).await,
        before,
        "{what}: {method} {path}: the refusal changed the ledger"
    );
    answer
}

async fn refused_post(
    cluster: &TestCluster,
    path: &str,
    body: &str,
    status: u16,
    codes: &[&str],
    what: &str,
) -> Value {
    refused(
        cluster,
        (Method::POST, path, Some(body.as_bytes().to_vec())),
        Auth::Token,
        status,
        codes,
        what,
    )
    .await
}

/// A batch holding one bad item: the batch is answered 200 and the item's result is exactly what
/// the single call answered (`single`); nothing changes.
async fn refused_in_batch(cluster: &TestCluster, item: &str, single: &Value, what: &str) {
    let before = state(cluster).await;
    let batch = format!(r#"{{"transfers": [{item}]}}"#);
    let (status, answer) = cluster
        .post_raw(1, "/v1/transfers/batch", batch.into_bytes())
        .await;
    assert_eq!(status, 200, "{what} inside a batch: {answer}");
    assert_eq!(
        answer["results"],
        json!([single]),
        "{what} inside a batch: the item's result differs from the single call's answer"
    );
    assert_eq!(
        state(cluster).await,
        before,
        "{what} inside a batch: the ledger changed"
    );
}

/// An oversized body: 413 payload_too_large, nothing changes. Sent on a connection of its own
/// (see `connection_is_reusable_after_413`).
async fn refused_oversized(cluster: &TestCluster, path: &str, body: &str, what: &str) {
    let before = state(cluster).await;
    let (status, answer) = cluster
        .api
        .without_pooling()
        .request(
            Method::POST,
            1,
            path,
            Some(body.as_bytes().to_vec()),
            &Auth::Token,
        )
        .await;
    assert_eq!(
        (status, error_code(&answer)),
        (413, "payload_too_large"),
        "{what}: POST {path}: {answer}"
    );
    assert_eq!(
        state(cluster).await,
        before,
        "{what}: POST {path}: the ledger changed"
    );
}

async fn assert_no_transfer(cluster: &TestCluster, id: &str) {
    let (status, answer) = cluster.get_transfer(1, id).await;
    assert_eq!(status, 404, "transfer {id} must not exist: {answer}");
    assert_eq!(error_code(&answer), "transfer_not_found", "{answer}");
}

/// Goal: malformed JSON and bodies of the wrong shape are refused with 400 invalid_json /
/// invalid_request and change nothing.
/// Method: post broken and mistyped bodies to the account, transfer, batch and reverse routes;
/// compare the summary and every account before and after each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_mistyped_bodies_change_nothing() {
    let cluster = setup().await;
    let json = &["invalid_json"];
    let request = &["invalid_request"];
    for (body, what) in [
        (r#"{"id": "m1", "kind": "p2p","#, "truncated JSON"),
        ("not json at all", "not JSON"),
        (
            r#"{"id": "m1", "kind": "p2p", "from": "+254700000501" "to": "+254700000502"}"#,
            "missing comma",
        ),
        (r#"{"id": 'm1'}"#, "single quotes"),
    ] {
        refused_post(&cluster, "/v1/transfers", body, 400, json, what).await;
        refused_post(&cluster, "/v1/accounts", body, 400, json, what).await;
        refused_post(&cluster, "/v1/transfers/batch", body, 400, json, what).await;
        refused_post(
            &cluster,
            "/v1/transfers/fund-c1/reverse",
            body,
            400,
            json,
            what,
        )
        .await;
    }
    refused_post(
        &cluster,
        "/v1/transfers",
        "",
        400,
        &["invalid_json", "invalid_request"],
        "empty body",
    )
    .await;
    refused_post(
        &cluster,
        "/v1/transfers",
        "[1, 2, 3]",
        400,
        request,
        "an array",
    )
    .await;

    let base = || transfer_body("m1", "p2p", C1, C2, 100);
    let with = |field: &str, value: Value| {
        let mut body = base();
        body[field] = value;
        body.to_string()
    };
    let without = |field: &str| {
        let mut body = base();
        body.as_object_mut().expect("object").remove(field);
        body.to_string()
    };
    let cases: Vec<(String, &[&str], String)> = vec![
        (
            with("amount", json!("100")),
            &["invalid_request", "invalid_amount"],
            "amount as a string".into(),
        ),
        (
            with("pending", json!("yes")),
            request,
            "pending as \"yes\"".into(),
        ),
        (with("pending", json!(1)), request, "pending as 1".into()),
        (
            with("timeout_s", json!("2")),
            request,
            "timeout_s as a string".into(),
        ),
        (with("memo", json!(42)), request, "memo as a number".into()),
        (
            with("id", json!(42)),
            &["invalid_request", "invalid_transfer_id"],
            "id as a number".into(),
        ),
        (
            with("from", json!(254700000501u64)),
            &["invalid_request", "invalid_account_id"],
            "from as a number".into(),
        ),
        (
            with("kind", json!(["p2p"])),
            &["invalid_request", "invalid_kind"],
            "kind as an array".into(),
        ),
        (
            with("colour", json!("blue")),
            request,
            "an unknown field".into(),
        ),
        (without("amount"), request, "no amount".into()),
        (without("kind"), request, "no kind".into()),
        (without("from"), request, "no from".into()),
        (without("id"), request, "no id".into()),
    ];
    for (body, codes, what) in &cases {
        let single = refused_post(&cluster, "/v1/transfers", body, 400, codes, what).await;
        refused_in_batch(&cluster, body, &single, what).await;
    }
    assert_no_transfer(&cluster, "m1").await;
    refused_post(
        &cluster,
        "/v1/transfers/batch",
        r#"{"transfers": "nope"}"#,
        400,
        request,
        "transfers not a list",
    )
    .await;
    refused_post(
        &cluster,
        "/v1/transfers/batch",
        r#"{"items": []}"#,
        400,
        request,
        "batch without transfers",
    )
    .await;
    refused_post(
        &cluster,
        "/v1/transfers/fund-c1/reverse",
        r#"{"id": 5, "reason": "x"}"#,
        400,
        &["invalid_request", "invalid_transfer_id"],
        "reverse id as a number",
    )
    .await;
    refused_post(
        &cluster,
        "/v1/transfers/fund-c1/reverse",
        r#"{"reason": "x"}"#,
        400,
        request,
        "reverse without id",
    )
    .await;

    let account = |id: Value, kind: Value, name: Value, extra: Option<(&str, Value)>| {
        let mut body = json!({"id": id, "kind": kind, "name": name, "currency": "KES"});
        if let Some((k, v)) = extra {
            body[k] = v;
        }
        body.to_string()
    };
    let c3 = "+254700000503";
    let account_cases: Vec<(String, &[&str], &str)> = vec![
        (
            account(json!(c3), json!("customer"), json!(5), None),
            request,
            "name as a number",
        ),
        (
            account(json!(c3), json!(3), json!("x"), None),
            &["invalid_request", "invalid_kind"],
            "kind as a number",
        ),
        (
            account(json!(c3), json!("wizard"), json!("x"), None),
            &["invalid_request", "invalid_kind"],
            "unknown account kind",
        ),
        (
            account(json!(c3), json!("system"), json!("x"), None),
            &["invalid_request", "invalid_kind"],
            "kind system",
        ),
        (
            account(
                json!(c3),
                json!("customer"),
                json!("x"),
                Some(("balance", json!(1_000_000))),
            ),
            request,
            "an unknown field (balance)",
        ),
        (
            json!({"id": c3, "name": "x", "currency": "KES"}).to_string(),
            request,
            "no kind",
        ),
    ];
    for (body, codes, what) in &account_cases {
        refused_post(&cluster, "/v1/accounts", body, 400, codes, what).await;
    }
    let (status, answer) = cluster.get(1, &format!("/v1/accounts/{c3}")).await;
    assert_eq!(status, 404, "{c3} must not exist: {answer}");
}

/// Goal: every /v1/ route needs `Authorization: Bearer <token>`; without a valid one the answer is
/// 401 unauthorized and nothing happens. /health and /metrics are open.
/// Method: send valid account, transfer, batch, post/void/reverse and read requests with no
/// header, a wrong token, the token without "Bearer", another scheme and an empty bearer; check
/// 401 and that nothing was created.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_are_refused_and_change_nothing() {
    let cluster = setup().await;
    let pending = json!({"id": "held", "kind": "p2p", "from": C1, "to": C2, "amount": 10, "pending": true, "timeout_s": 600});
    let (status, answer) = cluster.transfer(1, &pending).await;
    assert_eq!(status, 201, "{answer}");
    let new_account =
        json!({"id": "+254700000599", "kind": "customer", "name": "x", "currency": "KES"})
            .to_string();
    let issue = transfer_body("sneaky", "issue", "float", C2, 1_000_000).to_string();
    let batch =
        json!({"transfers": [transfer_body("sneaky-batch", "issue", "float", C2, 5)]}).to_string();
    let auths = [
        Auth::Missing,
        Auth::Header("Bearer wrong-token-0123456789abcdef".into()),
        Auth::Header(TOKEN.into()),
        Auth::Header(format!("Basic {TOKEN}")),
        Auth::Header("Bearer ".into()),
        Auth::Header(format!("Bearer {TOKEN}x")),
        Auth::Header(format!("Bearer {}", &TOKEN[..TOKEN.len() - 1])),
    ];
    let unauthorized = &["unauthorized"];
    for auth in auths {
        let what = format!("{auth:?}");
        let post =
            |path: &'static str, body: &str| (Method::POST, path, Some(body.as_bytes().to_vec()));
        let requests = [
            post("/v1/accounts", &new_account),
            post("/v1/transfers", &issue),
            post("/v1/transfers/batch", &batch),
            post("/v1/transfers/held/post", "{}"),
            post("/v1/transfers/held/void", "{}"),
            post(
                "/v1/transfers/fund-c1/reverse",
                r#"{"id": "sneaky-reverse", "reason": "x"}"#,
            ),
            post("/v1/transfers", "{ malformed"),
            (Method::GET, "/v1/accounts/+254700000501", None),
            (Method::GET, "/v1/accounts/+254700000501/statement", None),
            (Method::GET, "/v1/accounts", None),
            (Method::GET, "/v1/transfers/fund-c1", None),
            (Method::GET, "/v1/ledger/summary", None),
            (Method::GET, "/v1/cluster", None),
        ];
        for (method, path, body) in requests {
            refused(
                &cluster,
                (method, path, body),
                auth.clone(),
                401,
                unauthorized,
                &what,
            )
            .await;
        }
    }
    let (status, answer) = cluster.get(1, "/v1/accounts/+254700000599").await;
    assert_eq!(
        status, 404,
        "an unauthorized request created an account: {answer}"
    );
    for id in ["sneaky", "sneaky-batch", "sneaky-reverse"] {
        assert_no_transfer(&cluster, id).await;
    }
    let (status, record) = cluster.get_transfer(1, "held").await;
    assert_eq!(
        (status, record["status"].clone()),
        (200, json!("pending")),
        "{record}"
    );
    let (status, record) = cluster.get_transfer(1, "fund-c1").await;
    assert_eq!(
        (status, record["status"].clone()),
        (200, json!("completed")),
        "{record}"
    );

    // Open routes.
    let (status, answer) = cluster
        .request(Method::GET, 1, "/health", None, &Auth::Missing)
        .await;
    assert_eq!(status, 200, "/health without a token: {answer}");
    let (status, answer) = cluster
        .request(Method::GET, 1, "/metrics", None, &Auth::Missing)
        .await;
    assert_eq!(status, 200, "/metrics without a token: {answer}");
    let text = answer.as_str().unwrap_or_default();
    assert!(
        text.contains("cellpay_"),
        "/metrics has no cellpay_ metric: {text}"
    );
    let (status, _) = cluster
        .request(
            Method::GET,
            1,
            "/metrics",
            None,
            &Auth::Header("Bearer wrong".into()),
        )
        .await;
    assert_eq!(status, 200, "/metrics with a wrong token is still open");
}

/// Goal: ids, amounts, kinds and currencies are validated before anything is recorded.
/// Method: account ids that are not E.164 (in account creation and in a transfer's from/to),
/// bad transfer ids, amounts 0, -5, 1.5, 1e30 and beyond the maximum, unknown kinds, bad
/// currencies, and a few overlong texts; each must be a 400 with its code and change nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_amounts_kinds_and_currencies_are_validated() {
    let cluster = setup().await;
    let bad_ids = [
        "254700000501",
        "+0254700000501",
        "+25470",
        "+2547000000011111",
        "+25470a000001",
        "",
        "abc",
        "+",
        "Float",
        " +254700000501",
    ];
    for id in bad_ids {
        let body =
            json!({"id": id, "kind": "customer", "name": "x", "currency": "KES"}).to_string();
        refused_post(
            &cluster,
            "/v1/accounts",
            &body,
            400,
            &["invalid_account_id"],
            &format!("account id {id:?}"),
        )
        .await;
        let body = transfer_body("bad-from", "p2p", id, C2, 10).to_string();
        refused_post(
            &cluster,
            "/v1/transfers",
            &body,
            400,
            &["invalid_account_id"],
            &format!("from {id:?}"),
        )
        .await;
        let body = transfer_body("bad-to", "p2p", C1, id, 10).to_string();
        refused_post(
            &cluster,
            "/v1/transfers",
            &body,
            400,
            &["invalid_account_id"],
            &format!("to {id:?}"),
        )
        .await;
    }
    assert_no_transfer(&cluster, "bad-from").await;
    assert_no_transfer(&cluster, "bad-to").await;
    // System names are reserved: 409 account_exists (they exist) or 400 invalid_account_id.
    for id in ["float", "fees"] {
        let before = state(&cluster).await;
        let body = json!({"id": id, "kind": "customer", "name": "x", "currency": "KES"});
        let (status, answer) = cluster.post(1, "/v1/accounts", &body).await;
        let ok = matches!(
            (status, error_code(&answer)),
            (409, "account_exists") | (400, "invalid_account_id")
        );
        assert!(ok, "creating an account named {id}: expected 409 account_exists or 400 invalid_account_id, got {status} {answer}");
        assert_eq!(
            state(&cluster).await,
            before,
            "creating {id} changed the ledger"
        );
    }

    let bad_transfer_ids = [
        String::new(),
        "has space".into(),
        "x".repeat(65),
        "caf\u{e9}".into(),
        "a/b".into(),
        "a+b".into(),
    ];
    for id in &bad_transfer_ids {
        let body = transfer_body(id, "p2p", C1, C2, 10).to_string();
        refused_post(
            &cluster,
            "/v1/transfers",
            &body,
            400,
            &["invalid_transfer_id"],
            &format!("transfer id {id:?}"),
        )
        .await;
    }
    // 64 characters of every allowed kind is fine (positive control, done at the end).
    let amounts = [
        "0",
        "-5",
        "1.5",
        "1e30",
        "1000000000000000001",
        "18446744073709551616",
        "-0.0",
        "1.0e2",
    ];
    for amount in amounts {
        let body = format!(
            r#"{{"id": "amt", "kind": "p2p", "from": "{C1}", "to": "{C2}", "amount": {amount}, "currency": "KES"}}"#
        );
        let single = refused_post(
            &cluster,
            "/v1/transfers",
            &body,
            400,
            &["invalid_amount"],
            &format!("amount {amount}"),
        )
        .await;
        refused_in_batch(&cluster, &body, &single, &format!("amount {amount}")).await;
    }
    assert_no_transfer(&cluster, "amt").await;

    for kind in ["teleport", "", "P2P", "p2p ", "reversal"] {
        let body = transfer_body("kind", kind, C1, C2, 10).to_string();
        let codes: &[&str] = if kind == "reversal" {
            &["invalid_kind", "invalid_request"]
        } else {
            &["invalid_kind"]
        };
        refused_post(
            &cluster,
            "/v1/transfers",
            &body,
            400,
            codes,
            &format!("kind {kind:?}"),
        )
        .await;
    }
    assert_no_transfer(&cluster, "kind").await;

    for currency in ["kes", "KESX", "", "K1S", "ke"] {
        let mut body = transfer_body("cur", "p2p", C1, C2, 10);
        body["currency"] = json!(currency);
        refused_post(
            &cluster,
            "/v1/transfers",
            &body.to_string(),
            400,
            &["invalid_currency"],
            &format!("currency {currency:?}"),
        )
        .await;
        let body =
            json!({"id": "+254700000504", "kind": "customer", "name": "x", "currency": currency})
                .to_string();
        refused_post(
            &cluster,
            "/v1/accounts",
            &body,
            400,
            &["invalid_currency"],
            &format!("account currency {currency:?}"),
        )
        .await;
    }
    assert_no_transfer(&cluster, "cur").await;

    // Overlong texts and out-of-range timeouts: some 400, nothing recorded.
    let long = "m".repeat(300);
    let mut body = transfer_body("long-memo", "p2p", C1, C2, 10);
    body["memo"] = json!(long);
    refused_post(
        &cluster,
        "/v1/transfers",
        &body.to_string(),
        400,
        &[],
        "memo of 300 bytes",
    )
    .await;
    assert_no_transfer(&cluster, "long-memo").await;
    let body = json!({"id": "+254700000505", "kind": "customer", "name": long, "currency": "KES"})
        .to_string();
    refused_post(
        &cluster,
        "/v1/accounts",
        &body,
        400,
        &[],
        "name of 300 bytes",
    )
    .await;
    for timeout in [0u64, 7 * 24 * 3600 + 1] {
        let body = json!({"id": "bad-timeout", "kind": "p2p", "from": C1, "to": C2, "amount": 10, "pending": true, "timeout_s": timeout});
        refused_post(
            &cluster,
            "/v1/transfers",
            &body.to_string(),
            400,
            &[],
            &format!("timeout_s {timeout}"),
        )
        .await;
    }
    assert_no_transfer(&cluster, "bad-timeout").await;
    let body = json!({"id": "rev-1", "reason": long}).to_string();
    refused_post(
        &cluster,
        "/v1/transfers/fund-c1/reverse",
        &body,
        400,
        &[],
        "reversal reason of 300 bytes",
    )
    .await;
    assert_no_transfer(&cluster, "rev-1").await;
    let body = json!({"id": "bad id", "reason": "x"}).to_string();
    refused_post(
        &cluster,
        "/v1/transfers/fund-c1/reverse",
        &body,
        400,
        &["invalid_transfer_id"],
        "reversal id with a space",
    )
    .await;

    // Positive controls: the longest valid id, every allowed character, the largest amount's
    // neighbour that is still refused for funds (422, recorded).
    let id64 = format!("{}{}", "aZ09._:-", "x".repeat(56));
    assert_eq!(id64.len(), 64);
    let answer = cluster
        .transfer_ok(1, &transfer_body(&id64, "p2p", C1, C2, 10))
        .await;
    assert_eq!(answer["id"], json!(id64));
    let (status, record) = cluster.get_transfer(1, &id64).await;
    assert_eq!(
        (status, record["status"].clone()),
        (200, json!("completed")),
        "{record}"
    );
    let (status, answer) = cluster
        .transfer(
            1,
            &transfer_body("max-amount", "p2p", C1, C2, 1_000_000_000_000_000),
        )
        .await;
    assert_eq!(
        (status, answer["code"].clone()),
        (422, json!("insufficient_funds")),
        "AMOUNT_MAX is a valid amount: {answer}"
    );
}

/// Goal: a body over the 4 MiB limit is refused with 413 payload_too_large, and a batch over
/// 8190 items with 400 batch_too_large; neither changes anything. A batch at the limit works.
/// Method: post a 5 MiB transfer and account body, an 8191-item batch of valid transfers, then
/// (positive controls) a small mixed batch whose results must equal the single-call answers, and
/// an 8190-item batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_bodies_and_batches_are_refused() {
    let cluster = setup().await;
    let huge = "m".repeat(5 * 1024 * 1024);
    let mut body = transfer_body("huge", "p2p", C1, C2, 10);
    body["memo"] = json!(huge);
    refused_oversized(
        &cluster,
        "/v1/transfers",
        &body.to_string(),
        "a 5 MiB transfer",
    )
    .await;
    let body = json!({"id": "+254700000506", "kind": "customer", "name": huge, "currency": "KES"})
        .to_string();
    refused_oversized(&cluster, "/v1/accounts", &body, "a 5 MiB account").await;
    let junk = format!(
        "{{\"transfers\": [{}]}}",
        vec!["{}"; 2 * 1024 * 1024].join(",")
    );
    refused_oversized(&cluster, "/v1/transfers/batch", &junk, "a 6 MiB batch").await;
    assert_no_transfer(&cluster, "huge").await;

    let items = |prefix: &str, n: usize| -> Vec<Value> {
        (0..n)
            .map(|i| transfer_body(&format!("{prefix}-{i}"), "p2p", C1, C2, 1))
            .collect()
    };
    let batch = json!({"transfers": items("big", 8191)}).to_string();
    assert!(
        batch.len() < 4 * 1024 * 1024,
        "the 8191-item batch fits the body limit ({} bytes)",
        batch.len()
    );
    refused_post(
        &cluster,
        "/v1/transfers/batch",
        &batch,
        400,
        &["batch_too_large"],
        "8191 items",
    )
    .await;
    assert_no_transfer(&cluster, "big-0").await;
    assert_no_transfer(&cluster, "big-8190").await;

    // A small mixed batch: each result is what the single call answers.
    let mixed = vec![
        transfer_body("mix-ok", "p2p", C1, C2, 250),
        transfer_body("mix-broke", "p2p", C2, C1, 1_000_000),
        transfer_body("mix-unknown", "p2p", C1, "+254799999999", 5),
        transfer_body("mix-merchant", "merchant_payment", C1, M1, 100),
    ];
    let (status, answer) = cluster
        .post(1, "/v1/transfers/batch", &json!({"transfers": mixed}))
        .await;
    assert_eq!(status, 200, "{answer}");
    let results = answer["results"]
        .as_array()
        .unwrap_or_else(|| panic!("no results: {answer}"));
    assert_eq!(results.len(), mixed.len(), "{answer}");
    assert_eq!(results[0]["status"], "completed", "{answer}");
    assert_eq!(results[1]["status"], "rejected", "{answer}");
    assert_eq!(results[1]["code"], "insufficient_funds", "{answer}");
    assert_eq!(results[2]["code"], "account_not_found", "{answer}");
    assert_eq!(results[3]["status"], "completed", "{answer}");
    for (item, result) in mixed.iter().zip(results) {
        let (_, single) = cluster.transfer(1, item).await;
        assert_eq!(
            &single, result,
            "batch result differs from the single call for {item}"
        );
    }
    assert_eq!(cluster.balance(1, C1).await, 100_000 - 350);

    // At the limit: 8190 items are accepted.
    let batch = json!({"transfers": items("full", 8190)});
    let (status, answer) = cluster.post(1, "/v1/transfers/batch", &batch).await;
    assert_eq!(status, 200, "an 8190-item batch: {}", error_code(&answer));
    let results = answer["results"].as_array().expect("results");
    assert_eq!(results.len(), 8190);
    assert!(
        results.iter().all(|r| r["status"] == "completed"),
        "every item of the full batch completes"
    );
    assert_eq!(cluster.balance(1, C1).await, 100_000 - 350 - 8190);
    assert_eq!(cluster.sum_of_balances(1).await, 0);
}

/// Goal: refusals that record nothing (same_account, id_conflict, unknown records) and business
/// rejections (recorded, but no money moves) behave as documented.
/// Method: same_account → 400 and nothing recorded; unknown account → 422 account_not_found on a
/// transfer (recorded as rejected) and 404 on reads; unknown transfer → 404 on read, post, void
/// and reverse; duplicate account → 409; currency mismatch and insufficient funds → 422; a
/// reversal the payee can no longer cover → 422.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn business_refusals_change_nothing() {
    let cluster = setup().await;
    let body = transfer_body("self", "p2p", C1, C1, 10).to_string();
    refused_post(
        &cluster,
        "/v1/transfers",
        &body,
        400,
        &["same_account"],
        "from == to",
    )
    .await;
    assert_no_transfer(&cluster, "self").await;

    let unknown = "+254799999999";
    let (status, answer) = cluster.get(1, &format!("/v1/accounts/{unknown}")).await;
    assert_eq!(
        (status, error_code(&answer)),
        (404, "account_not_found"),
        "{answer}"
    );
    let (status, answer) = cluster
        .get(1, &format!("/v1/accounts/{unknown}/statement"))
        .await;
    assert_eq!(
        (status, error_code(&answer)),
        (404, "account_not_found"),
        "{answer}"
    );
    for (path, method) in [
        ("/v1/transfers/nope", Method::GET),
        ("/v1/transfers/nope/post", Method::POST),
        ("/v1/transfers/nope/void", Method::POST),
    ] {
        let body = (method == Method::POST).then(|| b"{}".to_vec());
        refused(
            &cluster,
            (method, path, body),
            Auth::Token,
            404,
            &["transfer_not_found"],
            path,
        )
        .await;
    }
    refused_post(
        &cluster,
        "/v1/transfers/nope/reverse",
        r#"{"id": "rev-nope", "reason": "x"}"#,
        404,
        &["transfer_not_found"],
        "reverse unknown",
    )
    .await;
    assert_no_transfer(&cluster, "rev-nope").await;

    let dup = json!({"id": C1, "kind": "merchant", "name": "someone else", "currency": "KES"})
        .to_string();
    refused_post(
        &cluster,
        "/v1/accounts",
        &dup,
        409,
        &["account_exists"],
        "duplicate account",
    )
    .await;
    assert_eq!(cluster.account(1, C1).await["kind"], "customer");

    // Business rejections: 422, recorded, no money moves.
    let accounts_before = cluster.accounts(1).await;
    let mut usd = transfer_body("usd", "p2p", C1, C2, 10);
    usd["currency"] = json!("USD");
    for (body, code) in [
        (
            transfer_body("to-unknown", "p2p", C1, unknown, 10),
            "account_not_found",
        ),
        (
            transfer_body("from-unknown", "p2p", unknown, C1, 10),
            "account_not_found",
        ),
        (
            transfer_body("broke", "p2p", C2, C1, 10),
            "insufficient_funds",
        ),
        (usd, "currency_mismatch"),
    ] {
        let (status, answer) = cluster.transfer(1, &body).await;
        assert_eq!(status, 422, "{body}: {answer}");
        assert_eq!(answer["status"], "rejected", "{answer}");
        assert_eq!(answer["code"], code, "{body}: {answer}");
        let id = body["id"].as_str().expect("id");
        let (status, record) = cluster.get_transfer(1, id).await;
        assert_eq!(status, 200, "a rejection is recorded: {record}");
        assert_eq!(
            (record["status"].clone(), record["code"].clone()),
            (json!("rejected"), json!(code)),
            "{record}"
        );
        assert_eq!(
            cluster.accounts(1).await,
            accounts_before,
            "{body}: a rejection moved money"
        );
    }
    let (status, answer) = cluster.get(1, &format!("/v1/accounts/{unknown}")).await;
    assert_eq!(
        status, 404,
        "a rejected transfer must not create {unknown}: {answer}"
    );

    // Reversal the payee cannot cover: 422 insufficient_funds, nothing moves.
    cluster
        .transfer_ok(1, &transfer_body("pay", "p2p", C1, C2, 1_000))
        .await;
    cluster
        .transfer_ok(1, &transfer_body("spend", "p2p", C2, C1, 900))
        .await;
    let accounts_before = cluster.accounts(1).await;
    let (status, answer) = cluster
        .post(
            1,
            "/v1/transfers/pay/reverse",
            &json!({"id": "undo-pay", "reason": "dispute"}),
        )
        .await;
    assert_eq!(status, 422, "{answer}");
    assert_eq!(
        (answer["status"].clone(), answer["code"].clone()),
        (json!("rejected"), json!("insufficient_funds")),
        "{answer}"
    );
    assert_eq!(
        cluster.accounts(1).await,
        accounts_before,
        "a rejected reversal moved money"
    );
    let (_, record) = cluster.get_transfer(1, "pay").await;
    assert_eq!(record["status"], "completed", "{record}");
    // A reversal that can be covered works and is linked (positive control).
    let (status, answer) = cluster
        .post(
            1,
            "/v1/transfers/spend/reverse",
            &json!({"id": "undo-spend", "reason": "oops"}),
        )
        .await;
    assert_eq!(
        (status, answer["status"].clone()),
        (201, json!("completed")),
        "{answer}"
    );
    let (_, record) = cluster.get_transfer(1, "spend").await;
    assert_eq!(record["status"], "reversed", "{record}");
    assert_eq!(cluster.balance(1, C2).await, 1_000);
    assert_eq!(cluster.sum_of_balances(1).await, 0);
}

/// Goal: a client that keeps connections alive can go on using its connection after a 413
/// (the server either drains the oversized body or says `Connection: close`).
/// Method: on one pooled client, post a 5 MiB body (413), then at once read the summary; repeat
/// a few times. Any transport error on the follow-up read fails the test.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_is_reusable_after_413() {
    let cluster = setup().await;
    let mut body = transfer_body("huge", "p2p", C1, C2, 10);
    body["memo"] = json!("m".repeat(5 * 1024 * 1024));
    let bytes = body.to_string().into_bytes();
    for round in 0..3 {
        let (status, answer) = cluster.post_raw(1, "/v1/transfers", bytes.clone()).await;
        assert_eq!(
            (status, error_code(&answer)),
            (413, "payload_too_large"),
            "{answer}"
        );
        let follow_up = cluster
            .api
            .try_get(1, "/v1/ledger/summary", std::time::Duration::from_secs(5))
            .await;
        assert!(
            matches!(follow_up, Ok((200, _))),
            "round {round}: the request after a 413 on a kept-alive connection failed: {follow_up:?}"
        );
    }
}
