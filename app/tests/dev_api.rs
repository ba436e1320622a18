//! The end-to-end scenario against `ticketing dev`, started in-process on an
//! ephemeral port over a temporary data directory.

mod common;

use common::*;
use reqwest::StatusCode;
use serde_json::json;
use std::path::Path;
use ticketing::settings::{DevSettings, HttpSettings, ScheduleSettings};
use ticketing_runtime::shutdown::{self, ShutdownTrigger};

const ADMIN_EMAIL: &str = "root@example.com";
const ADMIN_PASSWORD: &str = "admin-password-1";

struct Running {
    api: Api,
    trigger: ShutdownTrigger,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

/// The waiting-room scenario's settings: small, so every rule shows.
fn scenario_settings() -> ScheduleSettings {
    ScheduleSettings {
        admission_max_active: 2,
        admission_ttl_secs: 600,
        hold_ttl_secs: 8,
        max_seats_per_user: SCENARIO_MAX_SEATS,
        payment_ttl_secs: 120,
    }
}

async fn start(dir: &Path) -> Running {
    start_with(dir, scenario_settings()).await
}

async fn start_with(dir: &Path, schedules: ScheduleSettings) -> Running {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let settings = DevSettings {
        http: HttpSettings {
            listen: addr,
            admin_email: Some(ADMIN_EMAIL.into()),
            admin_password: Some(ADMIN_PASSWORD.into()),
            token_secret: None,
            phone_keys: None,
            card_keys: None,
            access_ttl_secs: 900,
            refresh_ttl_secs: 3600,
            decision_timeout_ms: 5000,
            payment_sweep_after_secs: 60,
            schedules,
        },
        data_dir: dir.to_path_buf(),
        request_log_retention_days: 7,
    };
    let (trigger, stop) = shutdown::channel();
    let task = tokio::spawn(ticketing::dev::run(settings, listener, stop));
    let api = Api::new(addr);
    api.wait_ready().await;
    Running { api, trigger, task }
}

impl Running {
    async fn stop(self) {
        self.trigger.trigger();
        self.task.await.unwrap().unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_api_works_in_dev_mode() {
    let dir = tempfile::tempdir().unwrap();
    let app = start(dir.path()).await;
    accounts_scenario(&app.api).await;
    catalog_scenario(&app.api).await;
    ops_scenario(&app.api).await;
    // dev runs the sinks in-process: their lag is on the same /metrics.
    let text = app
        .api
        .http
        .get(format!("{}/metrics", app.api.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains(r#"ticketing_consumer_lag{consumer="catalog-sink",partition="0",topic="ticketing.catalog.v1",component="dev"}"#),
        "{text}"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payments_and_refunds_work_in_dev_mode() {
    let dir = tempfile::tempdir().unwrap();
    let app = start(dir.path()).await;
    let (manager, _) = login(&app.api, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let _seen = payments_scenario(&app.api, &manager).await;
    request_logs_scenario(&app.api, &manager).await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_waiting_room_and_seat_holds_work_in_dev_mode() {
    let dir = tempfile::tempdir().unwrap();
    let app = start(dir.path()).await;
    waiting_room_scenario(&app.api, 2, 8).await;
    let text = app
        .api
        .http
        .get(format!("{}/metrics", app.api.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains(r#"ticketing_schedule_decisions_total{outcome="held",component="dev"}"#),
        "{text}"
    );
    assert!(
        text.contains("ticketing_processor_transaction_seconds_bucket{"),
        "{text}"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flash_sale_sells_every_seat_at_most_once_in_dev_mode() {
    let dir = tempfile::tempdir().unwrap();
    let app = start_with(
        dir.path(),
        ScheduleSettings {
            admission_max_active: 10,
            admission_ttl_secs: 600,
            hold_ttl_secs: 600,
            max_seats_per_user: 2,
            payment_ttl_secs: 120,
        },
    )
    .await;
    // More buyers than seats: the sale ends with the seats gone.
    let (held, lucky) = flash_sale_scenario(&app.api, 40, 5, 6, 2).await;
    assert_eq!(held, 30, "every seat found a buyer");
    assert!(lucky >= 15, "{lucky} buyers got seats");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holds_survive_a_restart_and_still_expire_on_time() {
    let dir = tempfile::tempdir().unwrap();
    let app = start(dir.path()).await;
    let (_, _, schedule) = schedule_on_sale(&app.api, 1, 2, 100).await;
    let buyer = sign_up_and_login(&app.api, "USER").await;
    let (s, b) = app
        .api
        .post(
            &format!("/api/v1/schedules/{schedule}/queue"),
            Some(&buyer.access),
            json!({}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let (s, b) = app
        .api
        .post(
            &format!("/api/v1/schedules/{schedule}/holds"),
            Some(&buyer.access),
            json!({"seats": [{"row": 1, "col": 2}]}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let expires_at: chrono::DateTime<chrono::Utc> =
        b["expires_at"].as_str().unwrap().parse().unwrap();
    app.stop().await;

    let app = start(dir.path()).await;
    // The processor rebuilt the schedule from its changelog: a rival, admitted
    // now, cannot take the held seat, and the read model shows it HELD.
    let rival = sign_up_and_login(&app.api, "USER").await;
    let (s, b) = app
        .api
        .post(
            &format!("/api/v1/schedules/{schedule}/queue"),
            Some(&rival.access),
            json!({}),
        )
        .await;
    assert_eq!(
        (s, b["status"].as_str()),
        (StatusCode::CREATED, Some("ADMITTED")),
        "{b}"
    );
    let (s, b) = app
        .api
        .post(
            &format!("/api/v1/schedules/{schedule}/holds"),
            Some(&rival.access),
            json!({"seats": [{"row": 1, "col": 2}]}),
        )
        .await;
    assert_eq!(
        (s, b["code"].as_str()),
        (StatusCode::CONFLICT, Some("SEAT_UNAVAILABLE")),
        "{b}"
    );
    eventually("the read model is rebuilt", 10, || async {
        (seat_status(&app.api, &schedule, 1, 2).await == "HELD").then_some(())
    })
    .await;
    eventually("the hold expires after the restart", 30, || async {
        (seat_status(&app.api, &schedule, 1, 2).await == "AVAILABLE").then_some(())
    })
    .await;
    assert!(chrono::Utc::now() >= expires_at, "not before its time");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_keeps_accounts_catalog_and_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let app = start(dir.path()).await;
    let catalog = catalog_scenario(&app.api).await;
    let seller = catalog.seller;
    app.stop().await;

    let app = start(dir.path()).await;
    // The access token survives: secrets are kept in the data directory.
    let (s, me) = app.api.get("/api/v1/users/me", Some(&seller.access)).await;
    assert_eq!(s, StatusCode::OK, "{me}");
    assert_eq!(me["phone"], "01012345678", "phone still decrypts");
    login(&app.api, &seller.email, &seller.password).await;
    let (s, b) = app
        .api
        .get(&format!("/api/v1/concerts/{}", catalog.concert_id), None)
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["schedules"].as_array().unwrap().len(), 2);
    let (s, _) = app
        .api
        .get(
            &format!("/api/v1/schedules/{}/seats", catalog.schedule_id),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bootstrap_manager_exists_and_may_act_for_any_seller() {
    let dir = tempfile::tempdir().unwrap();
    let app = start(dir.path()).await;
    let (admin, _) = login(&app.api, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let (s, me) = app.api.get("/api/v1/users/me", Some(&admin)).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(me["role"], "MANAGER");
    let catalog = catalog_scenario(&app.api).await;
    let (s, b) = app
        .api
        .post(
            &format!("/api/v1/concerts/{}/schedules", catalog.concert_id),
            Some(&admin),
            json!({"concert_date": "2030-05-03", "concert_time": "20:00"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    app.stop().await;
    // A second start with the same admin settings does not fail or duplicate.
    let app = start(dir.path()).await;
    login(&app.api, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    app.stop().await;
}

/// Every byte `dev` wrote to disk, searched for the plain phone number and
/// password: they must only exist encrypted and hashed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn phone_and_password_are_not_stored_in_plain_text() {
    let dir = tempfile::tempdir().unwrap();
    let app = start(dir.path()).await;
    let password = "PlainPassword-93417";
    let phone = "+82 10-9876-5432";
    let (s, b) = app
        .api
        .post(
            "/api/v1/users",
            None,
            json!({"email": "secret@example.com", "password": password, "nickname": "secretive", "phone": phone, "role": "USER"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let (access, _) = login(&app.api, "secret@example.com", password).await;
    let (_, me) = app.api.get("/api/v1/users/me", Some(&access)).await;
    assert_eq!(me["phone"], "+821098765432");
    app.stop().await;

    let mut files = Vec::new();
    collect(dir.path(), &mut files);
    assert!(
        files.len() >= 3,
        "store, log and secrets were written: {files:?}"
    );
    let mut saw_email = false;
    for f in files {
        let bytes = std::fs::read(&f).unwrap();
        for needle in ["+821098765432", "821098765432", "1098765432", password] {
            assert!(
                !contains(&bytes, needle.as_bytes()),
                "{needle} found in plain text in {}",
                f.display()
            );
        }
        saw_email |= contains(&bytes, b"secret@example.com");
    }
    // Guards the search itself: the e-mail is stored in plain text, so a search
    // that finds nothing at all would be broken.
    assert!(saw_email, "the search must see the stored account");
}

fn collect(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            collect(&p, out);
        } else {
            out.push(p);
        }
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}
