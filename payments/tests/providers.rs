//! The same contract for the in-process sandbox and for the PG client talking
//! to the sandbox server over HTTP: each test card's outcome, one charge per
//! order, lookups, full and partial cancellation, idempotent cancels.

use chrono::NaiveDate;
use std::time::Duration;
use ticketing_domain::payment::Card;
use ticketing_payments::http::{sandbox_router, PgClient};
use ticketing_payments::sandbox::*;
use ticketing_payments::*;

fn card(number: &str) -> Card {
    Card::parse(
        number,
        "12/30",
        "123",
        NaiveDate::from_ymd_opt(2026, 11, 25).unwrap(),
    )
    .unwrap()
}

fn order() -> String {
    format!("order-{}", uuid::Uuid::new_v4().simple())
}

fn charge(order_id: &str, number: &str, amount: i64) -> ChargeRequest {
    ChargeRequest {
        order_id: order_id.to_string(),
        order_name: "Flash Sale x2".into(),
        amount,
        card: card(number),
    }
}

async fn contract(p: &dyn PaymentProvider, sandbox: &SandboxProvider) {
    // A good card is charged once per order, however often it is asked.
    let o = order();
    let paid = p.charge(&charge(&o, CARD_OK, 180)).await.unwrap();
    assert_eq!(paid.status, ProviderStatus::Done);
    assert_eq!((paid.total_amount, paid.balance_amount), (180, 180));
    assert_eq!(paid.card_number, "************4242");
    assert!(!serde_json::to_string(&paid).unwrap().contains(CARD_OK));
    let again = p.charge(&charge(&o, CARD_OK, 180)).await.unwrap_err();
    assert!(
        matches!(&again, ProviderError::Refused { code, .. } if code == "ALREADY_PROCESSED_PAYMENT"),
        "{again:?}"
    );
    assert_eq!(sandbox.charges(), 1);
    assert_eq!(p.lookup(&o).await.unwrap(), Some(paid.clone()));

    // Declines take nothing and leave nothing to find.
    let o2 = order();
    let e = p.charge(&charge(&o2, CARD_DECLINED, 90)).await.unwrap_err();
    assert!(matches!(e, ProviderError::Declined { .. }), "{e:?}");
    let o3 = order();
    let e = p
        .charge(&charge(&o3, CARD_INSUFFICIENT_FUNDS, 90))
        .await
        .unwrap_err();
    assert!(
        matches!(e, ProviderError::InsufficientFunds { .. }),
        "{e:?}"
    );
    assert_eq!(p.lookup(&o2).await.unwrap(), None);
    assert_eq!(p.lookup(&o3).await.unwrap(), None);
    assert_eq!(sandbox.charges(), 1);

    // The lost answer: unknown to the caller, charged at the PG, found by a
    // lookup, and a blind retry does not charge again.
    let o4 = order();
    let e = p.charge(&charge(&o4, CARD_TIMEOUT, 90)).await.unwrap_err();
    assert!(matches!(e, ProviderError::Unknown(_)), "{e:?}");
    let found = p.lookup(&o4).await.unwrap().expect("the charge happened");
    assert_eq!(
        (found.status, found.total_amount),
        (ProviderStatus::Done, 90)
    );
    assert!(p.charge(&charge(&o4, CARD_TIMEOUT, 90)).await.is_err());
    assert_eq!(sandbox.charges(), 2);

    // Part, then the rest; a retried cancel is the same cancel; nothing more
    // can be cancelled after.
    let part = p
        .cancel(&paid.payment_key, 90, "one seat", "cancel-1")
        .await
        .unwrap();
    assert_eq!(
        (part.status, part.balance_amount, part.cancels.len()),
        (ProviderStatus::PartialCanceled, 90, 1)
    );
    let replay = p
        .cancel(&paid.payment_key, 90, "one seat", "cancel-1")
        .await
        .unwrap();
    assert_eq!(replay.balance_amount, 90, "the retry did not cancel twice");
    let e = p
        .cancel(&paid.payment_key, 91, "too much", "cancel-2")
        .await
        .unwrap_err();
    assert!(
        matches!(&e, ProviderError::Refused { code, .. } if code == "NOT_CANCELABLE_AMOUNT"),
        "{e:?}"
    );
    let all = p
        .cancel(&paid.payment_key, 90, "the rest", "cancel-3")
        .await
        .unwrap();
    assert_eq!(
        (all.status, all.balance_amount),
        (ProviderStatus::Canceled, 0)
    );
    let e = p
        .cancel(&paid.payment_key, 1, "again", "cancel-4")
        .await
        .unwrap_err();
    assert!(
        matches!(&e, ProviderError::Refused { code, .. } if code == "ALREADY_CANCELED_PAYMENT"),
        "{e:?}"
    );
    let e = p
        .cancel("sbx_nope", 1, "who", "cancel-5")
        .await
        .unwrap_err();
    assert!(
        matches!(&e, ProviderError::Refused { code, .. } if code == "NOT_FOUND_PAYMENT"),
        "{e:?}"
    );
}

#[tokio::test]
async fn the_in_process_sandbox_keeps_the_contract() {
    let sandbox = SandboxProvider::new();
    contract(&sandbox, &sandbox).await;
}

async fn serve(sandbox: SandboxProvider, secret: &str) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = sandbox_router(sandbox, secret, Duration::from_secs(4));
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

#[tokio::test]
async fn the_pg_client_keeps_the_contract_against_the_sandbox_server() {
    let sandbox = SandboxProvider::new();
    let base = serve(sandbox.clone(), "test_sk_sandbox").await;
    // The client gives up before the "times out" card answers.
    let client = PgClient::new(&base, "test_sk_sandbox", Duration::from_millis(1500)).unwrap();
    contract(&client, &sandbox).await;
}

#[tokio::test]
async fn a_wrong_key_or_no_server_changes_nothing() {
    let sandbox = SandboxProvider::new();
    let base = serve(sandbox.clone(), "test_sk_right").await;
    let wrong = PgClient::new(&base, "test_sk_wrong", Duration::from_secs(2)).unwrap();
    let e = wrong
        .charge(&charge(&order(), CARD_OK, 10))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, ProviderError::Refused { code, .. } if code == "UNAUTHORIZED_KEY"),
        "{e:?}"
    );
    assert_eq!(sandbox.charges(), 0);

    // Nothing listens: the request never left, so it is Unavailable, not Unknown.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let gone = PgClient::new(
        &format!("http://127.0.0.1:{port}"),
        "k",
        Duration::from_secs(2),
    )
    .unwrap();
    let e = gone
        .charge(&charge(&order(), CARD_OK, 10))
        .await
        .unwrap_err();
    assert!(matches!(e, ProviderError::Unavailable(_)), "{e:?}");
    assert!(matches!(
        gone.lookup("x").await.unwrap_err(),
        ProviderError::Unavailable(_)
    ));
}
