//! `ticketing pg-sandbox` as its own process, driven by the platform's PG
//! client: a charge, a decline, a lookup, a partial cancellation, and a wrong
//! key refused.

use chrono::NaiveDate;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use ticketing_domain::payment::Card;
use ticketing_payments::http::PgClient;
use ticketing_payments::sandbox::{CARD_DECLINED, CARD_OK};
use ticketing_payments::{ChargeRequest, PaymentProvider, ProviderError, ProviderStatus};

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn card(number: &str) -> Card {
    Card::parse(
        number,
        "12/35",
        "123",
        NaiveDate::from_ymd_opt(2026, 11, 25).unwrap(),
    )
    .unwrap()
}

fn charge(order: &str, number: &str, amount: i64) -> ChargeRequest {
    ChargeRequest {
        order_id: order.into(),
        order_name: "tickets".into(),
        amount,
        card: card(number),
    }
}

#[tokio::test]
async fn the_sandbox_pg_serves_the_pg_api_as_its_own_process() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let _pg = Killed(
        Command::new(env!("CARGO_BIN_EXE_ticketing"))
            .arg("pg-sandbox")
            .env("TICKETING_PG_LISTEN", format!("127.0.0.1:{port}"))
            .env("TICKETING_PG_SECRET_KEY", "test_sk_process")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the ticketing binary starts"),
    );
    let base = format!("http://127.0.0.1:{port}");
    let pg = PgClient::new(&base, "test_sk_process", Duration::from_secs(5)).unwrap();
    // It listens once it is up; until then calls fail without effect.
    let started = Instant::now();
    while matches!(
        pg.lookup("warm-up").await,
        Err(ProviderError::Unavailable(_))
    ) {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "pg-sandbox never listened"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let paid = pg
        .charge(&charge("order-1", CARD_OK, 90_000))
        .await
        .unwrap();
    assert_eq!(paid.status, ProviderStatus::Done);
    assert_eq!(pg.lookup("order-1").await.unwrap(), Some(paid.clone()));
    let e = pg
        .charge(&charge("order-2", CARD_DECLINED, 90_000))
        .await
        .unwrap_err();
    assert!(matches!(e, ProviderError::Declined { .. }), "{e:?}");
    let part = pg
        .cancel(&paid.payment_key, 30_000, "one seat", "cancel-1")
        .await
        .unwrap();
    assert_eq!(
        (part.status, part.balance_amount),
        (ProviderStatus::PartialCanceled, 60_000)
    );
    let wrong = PgClient::new(&base, "test_sk_wrong", Duration::from_secs(5)).unwrap();
    assert!(matches!(
        wrong.lookup("order-1").await,
        Err(ProviderError::Refused { .. })
    ));
}
