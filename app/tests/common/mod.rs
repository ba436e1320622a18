//! The end-to-end scenario, written once and run against every way of running
//! the platform (`ticketing dev` and the real stack).

#![allow(dead_code)]

use reqwest::{Client, Response, StatusCode};
use serde_json::{json, Value};
use uuid::Uuid;

#[derive(Clone)]
pub struct Api {
    pub base: String,
    pub http: Client,
}

impl Api {
    pub fn new(addr: std::net::SocketAddr) -> Self {
        Self {
            base: format!("http://{addr}"),
            http: Client::new(),
        }
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: Value) -> (StatusCode, Value) {
        let mut req = self.http.post(format!("{}{path}", self.base)).json(&body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        read(req.send().await.expect("request sent")).await
    }

    pub async fn post_raw(
        &self,
        path: &str,
        content_type: &str,
        body: &'static str,
    ) -> (StatusCode, Value) {
        let req = self
            .http
            .post(format!("{}{path}", self.base))
            .header("content-type", content_type)
            .body(body);
        read(req.send().await.expect("request sent")).await
    }

    /// A POST with an `Idempotency-Key`.
    pub async fn post_keyed(
        &self,
        path: &str,
        token: &str,
        key: &str,
        body: Value,
    ) -> (StatusCode, Value) {
        let req = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(token)
            .header("idempotency-key", key)
            .json(&body);
        read(req.send().await.expect("request sent")).await
    }

    /// A command (POST with a body, or DELETE without) that is retried with the
    /// same `Idempotency-Key` while the answer is 503: what a client does while
    /// a processor restarts. Gives up after about a minute.
    pub async fn command(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let key = Uuid::new_v4().to_string();
        let (s, b, _) = self.command_keyed(method, path, token, &key, body).await;
        (s, b)
    }

    /// [`Self::command`] with the client's own `Idempotency-Key`, also telling
    /// whether a 503 made it retry.
    pub async fn command_keyed(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        key: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value, bool) {
        for attempt in 0..120 {
            let mut req = self
                .http
                .request(method.clone(), format!("{}{path}", self.base))
                .bearer_auth(token)
                .header("idempotency-key", key);
            if let Some(b) = &body {
                req = req.json(b);
            }
            let (s, b) = read(req.send().await.expect("request sent")).await;
            if s != StatusCode::SERVICE_UNAVAILABLE {
                return (s, b, attempt > 0);
            }
            if b["code"] == "DECISION_PENDING" {
                assert_eq!(b["command_id"], key, "retry with the key the client sent");
            }
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        }
        panic!("{path} never answered");
    }

    pub async fn delete(&self, path: &str, token: Option<&str>) -> (StatusCode, Value) {
        let mut req = self.http.delete(format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        read(req.send().await.expect("request sent")).await
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> (StatusCode, Value) {
        let mut req = self.http.get(format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        read(req.send().await.expect("request sent")).await
    }

    /// Waits for `/readyz`, so tests never race the start-up. A real-stack
    /// ingress creates its keyspace and runs the CQL migrations first, which
    /// a loaded 2-core machine can take tens of seconds over.
    pub async fn wait_ready(&self) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        let mut last = String::from("no answer");
        while std::time::Instant::now() < deadline {
            if let Ok(r) = self.http.get(format!("{}/readyz", self.base)).send().await {
                if r.status() == StatusCode::OK {
                    return;
                }
                last = format!("{}: {}", r.status(), r.text().await.unwrap_or_default());
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("{} never became ready ({last})", self.base);
    }
}

async fn read(r: Response) -> (StatusCode, Value) {
    let status = r.status();
    let text = r.text().await.expect("body read");
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    (status, body)
}

/// A unique suffix so scenarios can run against a store that outlives them.
/// The real stack's addresses (the `deploy/local/stack.sh env` variables, or
/// their local defaults), with the given CQL keyspace.
pub fn stack_settings(keyspace: &str) -> ticketing::settings::StackSettings {
    let env =
        |name: &str, default: &str| std::env::var(name).unwrap_or_else(|_| default.to_string());
    ticketing::settings::StackSettings {
        kafka_brokers: env("TICKETING_KAFKA_BROKERS", "127.0.0.1:9092"),
        kafka_debug: None,
        cql_nodes: env("TICKETING_CQL_NODES", "127.0.0.1:9042")
            .split(',')
            .map(String::from)
            .collect(),
        cql_keyspace: keyspace.to_string(),
        redis_url: env("TICKETING_REDIS_URL", "redis://127.0.0.1:6379"),
        schema_registry_url: env("TICKETING_SCHEMA_REGISTRY_URL", "http://127.0.0.1:8081"),
        request_log_retention_days: 7,
        stall_after_secs: 120,
        outside_group_after_secs: 30,
    }
}

pub fn unique() -> String {
    Uuid::new_v4().simple().to_string()[..10].to_string()
}

#[derive(Clone)]
pub struct Account {
    pub user_id: String,
    pub email: String,
    pub password: String,
    pub access: String,
    pub refresh: String,
}

pub async fn sign_up_and_login(api: &Api, role: &str) -> Account {
    let u = unique();
    let email = format!("{role}-{u}@example.com").to_lowercase();
    let password = format!("pw-{u}-long");
    let (s, b) = api
        .post(
            "/api/v1/users",
            None,
            json!({"email": email, "password": password, "nickname": format!("n{u}"), "phone": "010-1234-5678", "role": role}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let user_id = b["user_id"].as_str().expect("user_id").to_string();
    let (access, refresh) = login(api, &email, &password).await;
    Account {
        user_id,
        email,
        password,
        access,
        refresh,
    }
}

pub async fn login(api: &Api, email: &str, password: &str) -> (String, String) {
    let (s, b) = api
        .post(
            "/api/v1/auth/login",
            None,
            json!({"email": email, "password": password}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["token_type"], "Bearer");
    assert!(b["expires_in"].as_i64().unwrap() > 0);
    (
        b["access_token"].as_str().unwrap().to_string(),
        b["refresh_token"].as_str().unwrap().to_string(),
    )
}

fn assert_error(status: StatusCode, body: &Value, want_status: StatusCode, want_code: &str) {
    assert_eq!(status, want_status, "{body}");
    assert_eq!(body["code"], want_code, "{body}");
    assert!(body["message"].is_string(), "{body}");
}

/// Sign-up, login, profile, refresh rotation and reuse, logout, and every bad
/// input of the accounts API.
pub async fn accounts_scenario(api: &Api) {
    let buyer = sign_up_and_login(api, "USER").await;
    let (s, me) = api.get("/api/v1/users/me", Some(&buyer.access)).await;
    assert_eq!(s, StatusCode::OK, "{me}");
    assert_eq!(me["user_id"], buyer.user_id.as_str());
    assert_eq!(me["email"], buyer.email.as_str());
    assert_eq!(me["role"], "USER");
    assert_eq!(me["phone"], "01012345678");

    // Taken e-mail (case-insensitive) and nickname.
    let u = unique();
    let (s, b) = api
        .post("/api/v1/users", None, json!({"email": buyer.email.to_uppercase(), "password": "abcdefgh1", "nickname": format!("x{u}"), "phone": "01012345678", "role": "USER"}))
        .await;
    assert_error(s, &b, StatusCode::CONFLICT, "EMAIL_TAKEN");
    let nick = me["nickname"].as_str().unwrap().to_uppercase();
    let (s, b) = api
        .post("/api/v1/users", None, json!({"email": format!("o{u}@example.com"), "password": "abcdefgh1", "nickname": nick, "phone": "01012345678", "role": "USER"}))
        .await;
    assert_error(s, &b, StatusCode::CONFLICT, "NICKNAME_TAKEN");

    // Invalid values.
    let base = json!({"email": format!("v{u}@example.com"), "password": "abcdefgh1", "nickname": format!("v{u}"), "phone": "01012345678", "role": "USER"});
    for (field, value, code) in [
        ("email", json!("not-an-email"), "INVALID_EMAIL"),
        ("password", json!("short"), "PASSWORD_TOO_SHORT"),
        ("phone", json!("12ab"), "INVALID_PHONE"),
        ("role", json!("MANAGER"), "ROLE_NOT_ALLOWED"),
        ("role", json!("GOD"), "INVALID_ROLE"),
        ("nickname", json!("x"), "INVALID_NICKNAME"),
    ] {
        let mut body = base.clone();
        body[field] = value;
        let (s, b) = api.post("/api/v1/users", None, body).await;
        assert_error(s, &b, StatusCode::UNPROCESSABLE_ENTITY, code);
    }
    // Malformed bodies are 400s, never 500s.
    let (s, b) = api
        .post_raw("/api/v1/users", "application/json", "{not json")
        .await;
    assert_error(s, &b, StatusCode::BAD_REQUEST, "MALFORMED_BODY");
    let (s, b) = api
        .post_raw("/api/v1/users", "application/json", r#"{"email": 5}"#)
        .await;
    assert_error(s, &b, StatusCode::BAD_REQUEST, "MALFORMED_BODY");
    let (s, b) = api.post_raw("/api/v1/users", "text/plain", "hello").await;
    assert_error(
        s,
        &b,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "UNSUPPORTED_MEDIA_TYPE",
    );

    // Wrong credentials.
    let (s, b) = api
        .post(
            "/api/v1/auth/login",
            None,
            json!({"email": buyer.email, "password": "wrong-password"}),
        )
        .await;
    assert_error(s, &b, StatusCode::UNAUTHORIZED, "INVALID_CREDENTIALS");
    let (s, b) = api
        .post(
            "/api/v1/auth/login",
            None,
            json!({"email": format!("nobody{u}@example.com"), "password": "whatever1"}),
        )
        .await;
    assert_error(s, &b, StatusCode::UNAUTHORIZED, "INVALID_CREDENTIALS");

    // No, forged and garbage tokens.
    let (s, b) = api.get("/api/v1/users/me", None).await;
    assert_error(s, &b, StatusCode::UNAUTHORIZED, "UNAUTHENTICATED");
    let (s, b) = api.get("/api/v1/users/me", Some("garbage")).await;
    assert_error(s, &b, StatusCode::UNAUTHORIZED, "INVALID_TOKEN");

    // Refresh rotates; the old refresh token is then refused, and its reuse
    // revokes the session, so the new pair dies too.
    let (s, b) = api
        .post(
            "/api/v1/auth/refresh",
            None,
            json!({"refresh_token": buyer.refresh}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let access2 = b["access_token"].as_str().unwrap().to_string();
    let refresh2 = b["refresh_token"].as_str().unwrap().to_string();
    assert_ne!(refresh2, buyer.refresh);
    let (s, _) = api.get("/api/v1/users/me", Some(&access2)).await;
    assert_eq!(s, StatusCode::OK);
    let (s, b) = api
        .post(
            "/api/v1/auth/refresh",
            None,
            json!({"refresh_token": buyer.refresh}),
        )
        .await;
    assert_error(s, &b, StatusCode::UNAUTHORIZED, "INVALID_REFRESH_TOKEN");
    let (s, _) = api
        .post(
            "/api/v1/auth/refresh",
            None,
            json!({"refresh_token": refresh2}),
        )
        .await;
    assert_eq!(
        s,
        StatusCode::UNAUTHORIZED,
        "reuse revoked the whole session"
    );
    let (s, _) = api.get("/api/v1/users/me", Some(&access2)).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, b) = api
        .post(
            "/api/v1/auth/refresh",
            None,
            json!({"refresh_token": "forged.token"}),
        )
        .await;
    assert_error(s, &b, StatusCode::UNAUTHORIZED, "INVALID_REFRESH_TOKEN");

    // Logout revokes both tokens of a fresh session at once.
    let (access, refresh) = login(api, &buyer.email, &buyer.password).await;
    let (s, b) = api
        .post("/api/v1/auth/logout", Some(&access), json!({}))
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{b}");
    let (s, b) = api.get("/api/v1/users/me", Some(&access)).await;
    assert_error(s, &b, StatusCode::UNAUTHORIZED, "INVALID_TOKEN");
    let (s, b) = api
        .post(
            "/api/v1/auth/refresh",
            None,
            json!({"refresh_token": refresh}),
        )
        .await;
    assert_error(s, &b, StatusCode::UNAUTHORIZED, "INVALID_REFRESH_TOKEN");
}

pub struct Catalog {
    pub seller: Account,
    pub stage_id: String,
    pub concert_id: String,
    pub schedule_id: String,
}

/// A seller creates a stage, a concert and a schedule; anyone reads them back.
pub async fn catalog_scenario(api: &Api) -> Catalog {
    let seller = sign_up_and_login(api, "SELLER").await;
    let buyer = sign_up_and_login(api, "USER").await;
    let t = Some(seller.access.as_str());

    let stage = json!({"name": "Olympic Hall", "location": "Seoul", "rows": 3, "cols": 4});
    let (s, b) = api
        .post("/api/v1/stages", Some(&buyer.access), stage.clone())
        .await;
    assert_error(s, &b, StatusCode::FORBIDDEN, "FORBIDDEN");
    let (s, b) = api.post("/api/v1/stages", None, stage.clone()).await;
    assert_error(s, &b, StatusCode::UNAUTHORIZED, "UNAUTHENTICATED");
    for (rows, cols) in [(0, 4), (3, 0), (-1, 4), (100_000, 100_000)] {
        let (s, b) = api
            .post(
                "/api/v1/stages",
                t,
                json!({"name": "x", "location": "y", "rows": rows, "cols": cols}),
            )
            .await;
        assert_error(
            s,
            &b,
            StatusCode::UNPROCESSABLE_ENTITY,
            "INVALID_STAGE_SIZE",
        );
    }
    let (s, b) = api.post("/api/v1/stages", t, stage).await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let stage_id = b["stage_id"].as_str().unwrap().to_string();

    let concert = json!({"stage_id": stage_id, "concert_name": "Hit Show", "runtime": 120,
        "start_date": "2030-05-01", "end_date": "2030-05-03", "price": 99000, "concert_image": "https://img.example.com/a.png"});
    let (s, b) = api
        .post("/api/v1/concerts", Some(&buyer.access), concert.clone())
        .await;
    assert_error(s, &b, StatusCode::FORBIDDEN, "FORBIDDEN");
    let mut unknown_stage = concert.clone();
    unknown_stage["stage_id"] = json!(Uuid::new_v4());
    let (s, b) = api.post("/api/v1/concerts", t, unknown_stage).await;
    assert_error(s, &b, StatusCode::NOT_FOUND, "STAGE_NOT_FOUND");
    let mut backwards = concert.clone();
    backwards["end_date"] = json!("2030-04-01");
    let (s, b) = api.post("/api/v1/concerts", t, backwards).await;
    assert_error(s, &b, StatusCode::UNPROCESSABLE_ENTITY, "INVALID_CONCERT");
    let mut bad_date = concert.clone();
    bad_date["start_date"] = json!("May 1st");
    let (s, b) = api.post("/api/v1/concerts", t, bad_date).await;
    assert_error(s, &b, StatusCode::BAD_REQUEST, "MALFORMED_BODY");
    let (s, b) = api.post("/api/v1/concerts", t, concert).await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let concert_id = b["concert_id"].as_str().unwrap().to_string();

    let path = format!("/api/v1/concerts/{concert_id}/schedules");
    let schedule = json!({"concert_date": "2030-05-02", "concert_time": "19:30", "sale_opens_at": "2030-04-01T10:00:00Z"});
    let other_seller = sign_up_and_login(api, "SELLER").await;
    let (s, b) = api
        .post(&path, Some(&other_seller.access), schedule.clone())
        .await;
    assert_error(s, &b, StatusCode::FORBIDDEN, "NOT_OWNER");
    let (s, b) = api
        .post(
            &format!("/api/v1/concerts/{}/schedules", Uuid::new_v4()),
            t,
            schedule.clone(),
        )
        .await;
    assert_error(s, &b, StatusCode::NOT_FOUND, "CONCERT_NOT_FOUND");
    let (s, b) = api
        .post("/api/v1/concerts/not-a-uuid/schedules", t, schedule.clone())
        .await;
    assert_error(s, &b, StatusCode::BAD_REQUEST, "INVALID_ID");
    let (s, b) = api
        .post(
            &path,
            t,
            json!({"concert_date": "2030-06-01", "concert_time": "19:30"}),
        )
        .await;
    assert_error(s, &b, StatusCode::UNPROCESSABLE_ENTITY, "INVALID_SCHEDULE");
    let (s, b) = api
        .post(
            &path,
            t,
            json!({"concert_date": "2030-05-02", "concert_time": "25:99"}),
        )
        .await;
    assert_error(s, &b, StatusCode::UNPROCESSABLE_ENTITY, "INVALID_SCHEDULE");
    let (s, b) = api.post(&path, t, schedule).await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let schedule_id = b["schedule_id"].as_str().unwrap().to_string();
    let (s, b) = api
        .post(
            &path,
            t,
            json!({"concert_date": "2030-05-01", "concert_time": "18:00:00"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let first_schedule = b["schedule_id"].as_str().unwrap().to_string();

    // Reads, anonymous.
    let (s, b) = api
        .get(&format!("/api/v1/concerts/{concert_id}"), None)
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["concert_name"], "Hit Show");
    assert_eq!(b["price"], 99000);
    assert_eq!(b["stage"]["rows"], 3);
    let schedules = b["schedules"].as_array().unwrap();
    assert_eq!(schedules.len(), 2);
    assert_eq!(
        schedules[0]["schedule_id"],
        first_schedule.as_str(),
        "ordered by date"
    );
    assert_eq!(schedules[1]["schedule_id"], schedule_id.as_str());
    assert_eq!(schedules[1]["sale_opens_at"], "2030-04-01T10:00:00Z");
    let (s, b) = api
        .get(&format!("/api/v1/concerts/{}", Uuid::new_v4()), None)
        .await;
    assert_error(s, &b, StatusCode::NOT_FOUND, "CONCERT_NOT_FOUND");

    let (s, b) = api.get("/api/v1/concerts?page=0&size=100", None).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["page"], 0);
    assert_eq!(b["size"], 100);
    assert!(b["total"].as_u64().unwrap() >= 1);
    assert!(b["items"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["concert_id"] == concert_id.as_str()));
    for bad in ["?size=0", "?size=101", "?page=-1", "?page=abc"] {
        let (s, b) = api.get(&format!("/api/v1/concerts{bad}"), None).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{bad}: {b}");
    }

    let (s, b) = api
        .get(&format!("/api/v1/schedules/{schedule_id}/seats"), None)
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!((b["rows"].as_u64(), b["cols"].as_u64()), (Some(3), Some(4)));
    let seats = b["seats"].as_array().unwrap();
    assert_eq!(seats.len(), 12);
    assert_eq!(seats[0], json!({"row": 1, "col": 1, "status": "AVAILABLE"}));
    assert_eq!(
        seats[11],
        json!({"row": 3, "col": 4, "status": "AVAILABLE"})
    );
    let (s, b) = api
        .get(&format!("/api/v1/schedules/{}/seats", Uuid::new_v4()), None)
        .await;
    assert_error(s, &b, StatusCode::NOT_FOUND, "SCHEDULE_NOT_FOUND");

    Catalog {
        seller,
        stage_id,
        concert_id,
        schedule_id,
    }
}

/// Ops endpoints and the OpenAPI document.
pub async fn ops_scenario(api: &Api) {
    let (s, _) = api.get("/healthz", None).await;
    assert_eq!(s, StatusCode::OK);
    let r = api
        .http
        .get(format!("{}/metrics", api.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let text = r.text().await.unwrap();
    assert!(text.contains("ticketing_http_requests_total{"), "{text}");
    assert!(
        text.contains(r#"route="/api/v1/users""#),
        "routes are templates: {text}"
    );
    assert!(text.contains("ticketing_events_produced_total{"), "{text}");
    let (s, doc) = api.get("/api-docs/openapi.json", None).await;
    assert_eq!(s, StatusCode::OK);
    for path in [
        "/api/v1/users",
        "/api/v1/auth/login",
        "/api/v1/concerts/{concert_id}/schedules",
        "/api/v1/schedules/{schedule_id}/seats",
        "/api/v1/payments",
        "/api/v1/payments/{payment_id}/cancel",
        "/api/v1/admin/payments",
        "/api/v1/admin/refunds",
        "/api/v1/admin/stream",
        "/api/v1/admin/request-logs",
        "/api/v1/admin/request-logs/stream",
    ] {
        assert!(
            doc["paths"][path].is_object(),
            "{path} missing from OpenAPI"
        );
    }
    let (s, b) = api.get("/api/v1/nowhere", None).await;
    assert_error(s, &b, StatusCode::NOT_FOUND, "NOT_FOUND");
}

/// Polls `probe` until it returns `Some`, or panics with `what` after `secs`.
/// Read models follow the processor by a moment; tests wait for them instead
/// of sleeping a fixed time.
pub async fn eventually<T, F, Fut>(what: &str, secs: u64, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// A seller's schedule of `rows` x `cols` seats, on sale at once.
pub async fn schedule_on_sale(
    api: &Api,
    rows: u32,
    cols: u32,
    price: i64,
) -> (Account, String, String) {
    let show = "2030-05-02T19:30:00Z".parse().unwrap();
    schedule_on_sale_at(api, rows, cols, price, show).await
}

/// [`schedule_on_sale`] for a show starting at `show` (whole seconds).
pub async fn schedule_on_sale_at(
    api: &Api,
    rows: u32,
    cols: u32,
    price: i64,
    show: chrono::DateTime<chrono::Utc>,
) -> (Account, String, String) {
    let day = show.date_naive();
    let (first, last) = (day.pred_opt().unwrap(), day.succ_opt().unwrap());
    let seller = sign_up_and_login(api, "SELLER").await;
    let t = Some(seller.access.as_str());
    let (s, b) = api
        .post(
            "/api/v1/stages",
            t,
            json!({"name": "Arena", "location": "Seoul", "rows": rows, "cols": cols}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let stage_id = b["stage_id"].as_str().unwrap().to_string();
    let (s, b) = api
        .post("/api/v1/concerts", t, json!({"stage_id": stage_id, "concert_name": "Flash", "runtime": 90,
            "start_date": first.to_string(), "end_date": last.to_string(), "price": price, "concert_image": "https://img.example.com/f.png"}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let concert_id = b["concert_id"].as_str().unwrap().to_string();
    let (s, b) = api
        .post(
            &format!("/api/v1/concerts/{concert_id}/schedules"),
            t,
            json!({"concert_date": day.to_string(), "concert_time": show.format("%H:%M:%S").to_string()}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    (
        seller,
        concert_id,
        b["schedule_id"].as_str().unwrap().to_string(),
    )
}

pub async fn seat_statuses(api: &Api, schedule: &str) -> Vec<(u64, u64, String)> {
    let (s, b) = api
        .get(&format!("/api/v1/schedules/{schedule}/seats"), None)
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    b["seats"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| {
            (
                x["row"].as_u64().unwrap(),
                x["col"].as_u64().unwrap(),
                x["status"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

pub async fn seat_status(api: &Api, schedule: &str, row: u64, col: u64) -> String {
    seat_statuses(api, schedule)
        .await
        .into_iter()
        .find(|(r, c, _)| (*r, *c) == (row, col))
        .map(|(_, _, st)| st)
        .expect("seat on the map")
}

pub async fn bookings(api: &Api, token: &str) -> Vec<Value> {
    let (s, b) = api.get("/api/v1/bookings", Some(token)).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    b["items"].as_array().unwrap().clone()
}

/// The per-buyer seat limit the waiting-room scenario is written for.
pub const SCENARIO_MAX_SEATS: u32 = 4;

/// The waiting room and seat holds through HTTP, every status and error code
/// of the contract, on a platform started with these settings (and
/// `SCENARIO_MAX_SEATS`).
/// `POST .../holds` for `seats` (a JSON array of `{row, col}`), retried
/// through 503s with one Idempotency-Key.
pub async fn hold(api: &Api, holds: &str, token: &str, seats: Value) -> (StatusCode, Value) {
    api.command(
        reqwest::Method::POST,
        holds,
        token,
        Some(json!({ "seats": seats })),
    )
    .await
}

/// `POST .../queue`, retried through 503s with one Idempotency-Key.
pub async fn join(api: &Api, queue: &str, token: &str) -> (StatusCode, Value) {
    api.command(reqwest::Method::POST, queue, token, Some(json!({})))
        .await
}

/// A buyer's first join: 201, also when its first attempt timed out (503) and
/// the retry found the buyer in line (the processor remembers which command
/// joined).
pub async fn first_join(api: &Api, queue: &str, token: &str) -> Value {
    let (s, body) = join(api, queue, token).await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    body
}

pub async fn waiting_room_scenario(api: &Api, max_active: u32, hold_ttl_secs: i64) {
    assert!(max_active >= 2, "the scenario admits two buyers it names");
    let (_, concert_id, schedule) = schedule_on_sale(api, 2, 3, 5000).await;
    let queue = format!("/api/v1/schedules/{schedule}/queue");
    let me = format!("{queue}/me");
    let holds = format!("/api/v1/schedules/{schedule}/holds");
    let a = sign_up_and_login(api, "USER").await;
    let b = sign_up_and_login(api, "USER").await;
    let c = sign_up_and_login(api, "USER").await;

    // Unknown schedule, no token, bad id.
    let (s, body) = api
        .command(
            reqwest::Method::POST,
            &format!("/api/v1/schedules/{}/queue", Uuid::new_v4()),
            &a.access,
            Some(json!({})),
        )
        .await;
    assert_error(s, &body, StatusCode::NOT_FOUND, "SCHEDULE_NOT_FOUND");
    let (s, body) = api.post(&queue, None, json!({})).await;
    assert_error(s, &body, StatusCode::UNAUTHORIZED, "UNAUTHENTICATED");
    let (s, body) = api
        .get(
            &format!("/api/v1/schedules/{}/queue/me", Uuid::new_v4()),
            Some(&a.access),
        )
        .await;
    assert_error(s, &body, StatusCode::NOT_FOUND, "SCHEDULE_NOT_FOUND");

    // Joining: first come, first served, at most MAX_ACTIVE admitted.
    let body = first_join(api, &queue, &a.access).await;
    assert_eq!(
        (body["status"].as_str(), body["position"].as_u64()),
        (Some("ADMITTED"), Some(1)),
        "{body}"
    );
    assert!(body["admitted_until"].is_string(), "{body}");
    let body = first_join(api, &queue, &b.access).await;
    assert_eq!(
        (body["status"].as_str(), body["position"].as_u64()),
        (Some("ADMITTED"), Some(2)),
        "{body}"
    );
    for _ in 2..max_active {
        let filler = sign_up_and_login(api, "USER").await;
        let body = first_join(api, &queue, &filler.access).await;
        assert_eq!(body["status"].as_str(), Some("ADMITTED"), "{body}");
    }
    let c_position = u64::from(max_active) + 1;
    let body = first_join(api, &queue, &c.access).await;
    assert_eq!(body["status"], "WAITING", "{body}");
    assert_eq!(
        (body["position"].as_u64(), body["ahead"].as_u64()),
        (Some(c_position), Some(0)),
        "{body}"
    );
    assert!(body["eta_seconds"].as_u64().unwrap() > 0, "{body}");
    // Joining twice keeps the first position: 200, at once (the processor,
    // not the read model, knows the buyer is in line).
    let (s, body) = join(api, &queue, &c.access).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["position"].as_u64(), Some(c_position), "{body}");

    // Live updates: the first SSE event is the status now.
    let sse = api
        .http
        .get(format!("{}{me}/events", api.base))
        .bearer_auth(&c.access)
        .send()
        .await
        .unwrap();
    assert_eq!(sse.status(), StatusCode::OK);
    assert!(sse.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let mut sse = sse;
    let mut text = String::new();
    while !text.contains("\n\n") {
        let chunk = tokio::time::timeout(std::time::Duration::from_secs(10), sse.chunk())
            .await
            .expect("an SSE event in time")
            .unwrap()
            .expect("the stream stays open");
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(text.contains("event: queue"), "{text}");
    assert!(text.contains("\"status\":\"WAITING\""), "{text}");

    // Holds: only the admitted, all or nothing, within the limits.
    let (s, body) = hold(api, &holds, &c.access, json!([{"row": 1, "col": 1}])).await;
    assert_error(s, &body, StatusCode::FORBIDDEN, "NOT_ADMITTED");
    let (s, body) = hold(
        api,
        &holds,
        &a.access,
        json!([{"row": 1, "col": 1}, {"row": 1, "col": 2}]),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    let a_bookings: Vec<String> = body["booking_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert_eq!(a_bookings.len(), 2);
    assert!(body["expires_at"].is_string(), "{body}");
    let (s, body) = hold(
        api,
        &holds,
        &b.access,
        json!([{"row": 2, "col": 1}, {"row": 1, "col": 2}]),
    )
    .await;
    assert_eq!(s, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["code"], "SEAT_UNAVAILABLE");
    assert_eq!(body["seats"], json!([{"row": 1, "col": 2}]), "{body}");
    let (s, body) = hold(api, &holds, &b.access, json!([{"row": 3, "col": 1}])).await;
    assert_error(s, &body, StatusCode::BAD_REQUEST, "INVALID_SEAT");
    let (s, body) = hold(
        api,
        &holds,
        &b.access,
        json!([{"row": 2, "col": 1}, {"row": 2, "col": 1}]),
    )
    .await;
    assert_error(s, &body, StatusCode::BAD_REQUEST, "DUPLICATE_SEAT");
    let (s, body) = hold(api, &holds, &b.access, json!([])).await;
    assert_error(s, &body, StatusCode::BAD_REQUEST, "INVALID_HOLD");
    let (s, body) = hold(api, &holds, &b.access, json!([{"row": -1, "col": 1}])).await;
    assert_error(s, &body, StatusCode::BAD_REQUEST, "MALFORMED_BODY");
    let (s, body) = hold(
        api,
        &holds,
        &a.access,
        json!([{"row": 2, "col": 1}, {"row": 2, "col": 2}, {"row": 2, "col": 3}]),
    )
    .await;
    assert_error(s, &body, StatusCode::UNPROCESSABLE_ENTITY, "SEAT_LIMIT");

    // A retried request (same Idempotency-Key) is the same hold, not a second one.
    let key = Uuid::new_v4().to_string();
    let (s, first) = api
        .post_keyed(
            &holds,
            &b.access,
            &key,
            json!({"seats": [{"row": 2, "col": 3}]}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{first}");
    let (s, again) = api
        .post_keyed(
            &holds,
            &b.access,
            &key,
            json!({"seats": [{"row": 2, "col": 3}]}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{again}");
    assert_eq!(first["booking_ids"], again["booking_ids"]);
    let (s, body) = api
        .post_keyed(
            &holds,
            &b.access,
            "not-a-uuid",
            json!({"seats": [{"row": 2, "col": 2}]}),
        )
        .await;
    assert_error(s, &body, StatusCode::BAD_REQUEST, "INVALID_IDEMPOTENCY_KEY");

    // The read models: the seat map and the buyer's bookings.
    eventually("held seats on the map", 10, || async {
        let seats = seat_statuses(api, &schedule).await;
        let held: Vec<_> = seats
            .iter()
            .filter(|x| x.2 == "HELD")
            .map(|x| (x.0, x.1))
            .collect();
        (held == vec![(1, 1), (1, 2), (2, 3)]).then_some(())
    })
    .await;
    let mine = eventually("a's bookings", 10, || async {
        let items = bookings(api, &a.access).await;
        (items.len() == 2).then_some(items)
    })
    .await;
    for item in &mine {
        assert_eq!(item["status"], "PENDING", "{item}");
        assert_eq!(item["schedule_id"], schedule.as_str());
        assert_eq!(item["concert_id"], concert_id.as_str());
        assert_eq!(item["price"], 5000);
        assert!(
            a_bookings.contains(&item["booking_id"].as_str().unwrap().to_string()),
            "{item}"
        );
    }
    assert!(bookings(api, &c.access).await.is_empty());

    // Releasing: only the owner, only a pending hold.
    let release = format!("/api/v1/bookings/{}", a_bookings[0]);
    let (s, body) = api
        .command(reqwest::Method::DELETE, &release, &b.access, None)
        .await;
    assert_error(s, &body, StatusCode::FORBIDDEN, "NOT_OWNER");
    let (s, body) = api
        .command(
            reqwest::Method::DELETE,
            &format!("/api/v1/bookings/{}", Uuid::new_v4()),
            &a.access,
            None,
        )
        .await;
    assert_error(s, &body, StatusCode::NOT_FOUND, "BOOKING_NOT_FOUND");
    let (s, body) = api
        .command(reqwest::Method::DELETE, &release, &a.access, None)
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{body}");
    let released_seat = eventually("the released booking is CANCELLED", 10, || async {
        bookings(api, &a.access)
            .await
            .into_iter()
            .find(|i| i["booking_id"] == a_bookings[0].as_str() && i["status"] == "CANCELLED")
    })
    .await;
    let (row, col) = (
        released_seat["row"].as_u64().unwrap(),
        released_seat["col"].as_u64().unwrap(),
    );
    eventually("the released seat is AVAILABLE", 10, || async {
        (seat_status(api, &schedule, row, col).await == "AVAILABLE").then_some(())
    })
    .await;
    let (s, body) = api
        .command(reqwest::Method::DELETE, &release, &a.access, None)
        .await;
    assert_error(s, &body, StatusCode::CONFLICT, "BOOKING_NOT_PENDING");

    // Leaving frees the slot for the next in line.
    let (s, body) = api
        .command(reqwest::Method::DELETE, &me, &a.access, None)
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{body}");
    eventually("c is admitted after a leaves", 10, || async {
        let (_, body) = api.get(&me, Some(&c.access)).await;
        (body["status"] == "ADMITTED").then_some(())
    })
    .await;
    let (s, body) = api.get(&me, Some(&a.access)).await;
    assert_eq!(
        (s, body["status"].as_str()),
        (StatusCode::OK, Some("LEFT")),
        "{body}"
    );
    let (s, body) = hold(api, &holds, &a.access, json!([{"row": 2, "col": 1}])).await;
    assert_error(s, &body, StatusCode::FORBIDDEN, "NOT_ADMITTED");

    // Every hold expires on time: a's remaining seat and b's go back on sale
    // with nobody touching the schedule (the processor's clock fires them).
    eventually(
        "holds expire",
        u64::try_from(hold_ttl_secs).unwrap() + 20,
        || async {
            let seats = seat_statuses(api, &schedule).await;
            seats.iter().all(|x| x.2 == "AVAILABLE").then_some(())
        },
    )
    .await;
    let expired = eventually("expired bookings are CANCELLED", 10, || async {
        let items = bookings(api, &b.access).await;
        (items.len() == 1 && items[0]["status"] == "CANCELLED").then_some(items)
    })
    .await;
    assert!(
        expired[0].get("expires_at").is_none(),
        "a cancelled booking has no expiry: {}",
        expired[0]
    );
}

/// Many buyers at once: everyone joins, the admitted hold random seats and
/// leave, until no seat is left. Returns (seats held, buyers who got one).
/// Panics if any seat is held twice or a buyer holds more than the limit.
pub async fn flash_sale_scenario(
    api: &Api,
    buyers: usize,
    rows: u32,
    cols: u32,
    max_seats: usize,
) -> (usize, usize) {
    let (_, _, schedule) = schedule_on_sale(api, rows, cols, 1000).await;
    let accounts = buyers_for(api, buyers).await;
    let held = run_buyers(api, &schedule, &accounts).await;
    let total: usize = held.iter().sum();
    assert_not_oversold(api, &schedule, &accounts, total, max_seats).await;
    (total, held.iter().filter(|h| **h > 0).count())
}

pub async fn buyers_for(api: &Api, n: usize) -> Vec<Account> {
    let mut accounts = Vec::new();
    for chunk in (0..n).collect::<Vec<_>>().chunks(8) {
        let made =
            futures::future::join_all(chunk.iter().map(|_| sign_up_and_login(api, "USER"))).await;
        accounts.extend(made);
    }
    accounts
}

/// Every buyer at once: join, wait for admission, hold 1 or 2 random free
/// seats (retrying on SEAT_UNAVAILABLE), leave. Commands are retried with
/// their Idempotency-Key on 503, so a processor restart is survived. Returns
/// the seats each buyer holds.
pub async fn run_buyers(api: &Api, schedule: &str, accounts: &[Account]) -> Vec<usize> {
    let tasks = accounts.iter().enumerate().map(|(i, buyer)| async move {
        join_and_wait_admitted(api, schedule, &buyer.access).await;
        let mut held = 0;
        for attempt in 0..20 {
            match try_hold(api, schedule, &buyer.access, i, attempt).await {
                HoldTry::Held { booking_ids, .. } => {
                    held = booking_ids.len();
                    break;
                }
                HoldTry::Taken => {}
                HoldTry::NoneFree => break,
            }
        }
        let (s, body) = leave(api, schedule, &buyer.access).await;
        assert_eq!(s, StatusCode::NO_CONTENT, "{body}");
        held
    });
    futures::future::join_all(tasks).await
}

/// Nothing oversold: the map shows exactly `total` HELD seats (waited for: the
/// read model follows the processor), every live booking has its own seat,
/// and nobody is over the limit.
pub async fn assert_not_oversold(
    api: &Api,
    schedule: &str,
    accounts: &[Account],
    total: usize,
    max_seats: usize,
) {
    eventually("the map shows every successful hold", 15, || async {
        let held = seat_statuses(api, schedule)
            .await
            .into_iter()
            .filter(|x| x.2 == "HELD")
            .count();
        (held == total).then_some(())
    })
    .await;
    let mut owners = std::collections::HashMap::new();
    for buyer in accounts {
        let live: Vec<Value> = bookings(api, &buyer.access)
            .await
            .into_iter()
            .filter(|i| i["status"] == "PENDING" && i["schedule_id"] == schedule)
            .collect();
        assert!(live.len() <= max_seats, "a buyer over the limit: {live:?}");
        for b in live {
            let seat = (b["row"].as_u64().unwrap(), b["col"].as_u64().unwrap());
            if let Some(prev) = owners.insert(seat, buyer.user_id.clone()) {
                panic!("seat {seat:?} held by {prev} and {}", buyer.user_id);
            }
        }
    }
    assert_eq!(
        owners.len(),
        total,
        "every successful hold is a live booking"
    );
}

pub const CARD_OK: &str = "4242424242424242";
pub const CARD_DECLINED: &str = "4000000000000002";
pub const CARD_INSUFFICIENT: &str = "4000000000009995";
pub const CARD_TIMEOUT: &str = "4000000000000119";

/// `POST /api/v1/payments` with `key`, retried with the same key while the
/// answer is 503 (a payment being settled).
pub async fn pay(
    api: &Api,
    token: &str,
    key: &str,
    booking_ids: &[String],
    card: &str,
) -> (StatusCode, Value) {
    let (s, b, _) = pay_retried(api, token, key, booking_ids, card).await;
    (s, b)
}

/// [`pay`], also telling whether a 503 made it retry.
pub async fn pay_retried(
    api: &Api,
    token: &str,
    key: &str,
    booking_ids: &[String],
    card: &str,
) -> (StatusCode, Value, bool) {
    let body = json!({"booking_ids": booking_ids, "card": {"number": card, "expiry": "12/35", "cvc": "123"}});
    api.command_keyed(
        reqwest::Method::POST,
        "/api/v1/payments",
        token,
        key,
        Some(body),
    )
    .await
}

/// Joins a schedule, waits to be admitted and holds `seats`: the booking ids.
pub async fn admitted_hold(api: &Api, schedule: &str, token: &str, seats: Value) -> Vec<String> {
    let queue = format!("/api/v1/schedules/{schedule}/queue");
    let (s, b) = join(api, &queue, token).await;
    assert!(s.is_success(), "{b}");
    eventually("admitted", 30, || async {
        let (_, b) = api.get(&format!("{queue}/me"), Some(token)).await;
        (b["status"] == "ADMITTED").then_some(())
    })
    .await;
    let (s, b) = hold(
        api,
        &format!("/api/v1/schedules/{schedule}/holds"),
        token,
        seats,
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    b["booking_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap().to_string())
        .collect()
}

async fn booking_status(api: &Api, token: &str, id: &str) -> Option<String> {
    bookings(api, token)
        .await
        .into_iter()
        .find(|b| b["booking_id"] == id)
        .map(|b| b["status"].as_str().unwrap().to_string())
}

/// Paying and refunding through HTTP, every status and error code of the
/// contract: a decline, a payment sent four times at once, a lost provider
/// answer, partial and full refunds with the seats back on sale, and who may
/// see and cancel what. `manager` is a MANAGER's access token.
/// An SSE stream read in the background: each event block with the instant
/// it arrived.
pub struct LiveStream {
    events: std::sync::Arc<std::sync::Mutex<Vec<(std::time::Instant, String)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl LiveStream {
    pub async fn open(api: &Api, path: &str, token: &str) -> Self {
        let response = api
            .http
            .get(format!("{}{path}", api.base))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        let events = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = events.clone();
        let task = tokio::spawn(async move {
            let mut response = response;
            let mut text = String::new();
            while let Ok(Some(chunk)) = response.chunk().await {
                text.push_str(&String::from_utf8_lossy(&chunk));
                while let Some(end) = text.find("\n\n") {
                    let block: String = text.drain(..end + 2).collect();
                    sink.lock()
                        .unwrap()
                        .push((std::time::Instant::now(), block));
                }
            }
        });
        Self { events, task }
    }

    /// When the first event block matching `want` arrived.
    pub async fn arrival(&self, what: &str, want: impl Fn(&str) -> bool) -> std::time::Instant {
        eventually(what, 30, || async {
            self.events
                .lock()
                .unwrap()
                .iter()
                .find(|(_, block)| want(block))
                .map(|(at, _)| *at)
        })
        .await
    }
}

impl Drop for LiveStream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Who and what `payments_scenario` touched, to look its rows up.
pub struct PaymentsSeen {
    pub users: Vec<String>,
    pub schedules: Vec<String>,
    pub started: chrono::DateTime<chrono::Utc>,
}

/// How long before its show the payments scenario buys a ticket for it:
/// enough for the purchase under a loaded CI machine, paid for in waiting.
const SHOW_STARTS_IN_SECS: i64 = 20;

pub async fn payments_scenario(api: &Api, manager: &str) -> PaymentsSeen {
    // Millisecond precision, like the tables: the admin listing starts here.
    let started =
        chrono::DateTime::from_timestamp_millis(chrono::Utc::now().timestamp_millis() - 1).unwrap();
    let live = LiveStream::open(api, "/api/v1/admin/stream", manager).await;
    let (_, _, schedule) = schedule_on_sale(api, 1, 4, 50_000).await;
    let a = sign_up_and_login(api, "USER").await;
    let b = sign_up_and_login(api, "USER").await;

    // A show that starts while this scenario runs: b buys a seat for it and
    // a is admitted before it starts; both are refused once it has started.
    let show =
        chrono::DateTime::from_timestamp(chrono::Utc::now().timestamp() + SHOW_STARTS_IN_SECS, 0)
            .unwrap();
    let (_, _, soon) = schedule_on_sale_at(api, 1, 2, 10_000, show).await;
    let early = admitted_hold(api, &soon, &b.access, json!([{"row": 1, "col": 1}])).await;
    let (s, e) = pay(api, &b.access, &unique(), &early, CARD_OK).await;
    assert_eq!(s, StatusCode::CREATED, "{e}");
    let early_payment = e["payment_id"].as_str().unwrap().to_string();
    let soon_queue = format!("/api/v1/schedules/{soon}/queue");
    let (s, e) = join(api, &soon_queue, &a.access).await;
    assert!(s.is_success(), "{e}");
    eventually("admitted before the show", 30, || async {
        let (_, b) = api.get(&format!("{soon_queue}/me"), Some(&a.access)).await;
        (b["status"] == "ADMITTED").then_some(())
    })
    .await;
    assert!(
        chrono::Utc::now() < show,
        "buying for the show took longer than the {SHOW_STARTS_IN_SECS} s before it starts"
    );
    let mine = admitted_hold(
        api,
        &schedule,
        &a.access,
        json!([{"row": 1, "col": 1}, {"row": 1, "col": 2}]),
    )
    .await;
    let theirs = admitted_hold(api, &schedule, &b.access, json!([{"row": 1, "col": 3}])).await;

    // Malformed requests never reach the processor or the provider.
    let body =
        json!({"booking_ids": mine, "card": {"number": CARD_OK, "expiry": "12/35", "cvc": "123"}});
    let (s, e) = api.post("/api/v1/payments", Some(&a.access), body).await;
    assert_error(s, &e, StatusCode::BAD_REQUEST, "IDEMPOTENCY_KEY_REQUIRED");
    let (s, e) = pay(api, &a.access, &unique(), &mine, CARD_OK).await;
    let paid_at = std::time::Instant::now();
    assert_eq!(s, StatusCode::CREATED, "a fresh key pays: {e}");
    let first_payment = e["payment_id"].as_str().unwrap().to_string();
    // The managers' live stream has it within a second of the answer.
    let seen = live
        .arrival("the payment on the admin stream", |b| {
            b.contains("event: payment")
                && b.contains(&format!("\"payment_id\":\"{first_payment}\""))
                && b.contains("\"change\":\"COMPLETED\"")
        })
        .await;
    assert!(
        seen.saturating_duration_since(paid_at) < std::time::Duration::from_secs(1),
        "the admin stream lagged {:?}",
        seen.saturating_duration_since(paid_at)
    );
    assert_eq!(e["status"], "COMPLETED");
    assert_eq!(e["total_price"], 100_000);
    for (card, code) in [
        ("4242424242424241", "INVALID_CARD_NUMBER"),
        ("42", "INVALID_CARD_NUMBER"),
    ] {
        let (s, e) = pay(api, &b.access, &unique(), &theirs, card).await;
        assert_error(s, &e, StatusCode::UNPROCESSABLE_ENTITY, code);
    }
    let (s, e) = pay(api, &b.access, &unique(), &[], CARD_OK).await;
    assert_error(s, &e, StatusCode::BAD_REQUEST, "INVALID_BOOKINGS");
    // Someone else's bookings, and bookings that do not exist.
    let (s, e) = pay(api, &b.access, &unique(), &mine, CARD_OK).await;
    assert_error(s, &e, StatusCode::FORBIDDEN, "NOT_OWNER");
    let (s, e) = pay(
        api,
        &b.access,
        &unique(),
        &[Uuid::new_v4().to_string()],
        CARD_OK,
    )
    .await;
    assert_error(s, &e, StatusCode::NOT_FOUND, "BOOKING_NOT_FOUND");
    // Paid bookings cannot be paid again.
    let (s, e) = pay(api, &a.access, &unique(), &mine, CARD_OK).await;
    assert_error(s, &e, StatusCode::CONFLICT, "BOOKING_NOT_PENDING");

    // A declined card: 402, the payment FAILED, the seat still held; then
    // the same key with other bookings is refused, and insufficient funds
    // is a decline too.
    let declined_key = unique();
    let (s, e) = pay(api, &b.access, &declined_key, &theirs, CARD_DECLINED).await;
    assert_error(s, &e, StatusCode::PAYMENT_REQUIRED, "PAYMENT_DECLINED");
    let failed = e["payment_id"].as_str().unwrap().to_string();
    let (s, p) = api
        .get(&format!("/api/v1/payments/{failed}"), Some(&b.access))
        .await;
    assert_eq!(
        (s, p["status"].as_str()),
        (StatusCode::OK, Some("FAILED")),
        "{p}"
    );
    assert_eq!(seat_status(api, &schedule, 1, 3).await, "HELD");
    assert_eq!(
        booking_status(api, &b.access, &theirs[0]).await.as_deref(),
        Some("PENDING")
    );
    let (s, e) = pay(api, &b.access, &declined_key, &mine, CARD_OK).await;
    assert_error(
        s,
        &e,
        StatusCode::UNPROCESSABLE_ENTITY,
        "IDEMPOTENCY_KEY_REUSED",
    );
    let (s, e) = pay(api, &b.access, &unique(), &theirs, CARD_INSUFFICIENT).await;
    assert_error(s, &e, StatusCode::PAYMENT_REQUIRED, "PAYMENT_DECLINED");

    // The card whose answer is lost: four requests with one key at once, one
    // payment, settled by asking the provider.
    let key = unique();
    let tries = futures::future::join_all(
        (0..4).map(|_| pay_retried(api, &b.access, &key, &theirs, CARD_TIMEOUT)),
    )
    .await;
    let created = tries
        .iter()
        .filter(|(s, _, _)| *s == StatusCode::CREATED)
        .count();
    let replays = tries
        .iter()
        .filter(|(s, _, _)| *s == StatusCode::OK)
        .count();
    // One 201; none when the creating request was answered 503 (its outcome
    // still being asked for) and its retry, with the same key, found the
    // payment made: requests with one key are one payment, any may be told so.
    let retried = tries.iter().any(|(_, _, r)| *r);
    assert_eq!(created + replays, 4, "{tries:?}");
    assert!(created == 1 || (created == 0 && retried), "{tries:?}");
    let ids: std::collections::BTreeSet<_> = tries
        .iter()
        .map(|(_, b, _)| b["payment_id"].to_string())
        .collect();
    assert_eq!(ids.len(), 1, "one payment: {tries:?}");
    assert!(
        tries
            .iter()
            .all(|(_, b, _)| b["status"] == "COMPLETED" && b["total_price"] == 50_000),
        "{tries:?}"
    );

    // Sold, confirmed, visible to its buyer and to a MANAGER only.
    eventually("seats sold", 30, || async {
        let seats = seat_statuses(api, &schedule).await;
        seats
            .iter()
            .filter(|(_, c, st)| *c <= 3 && st == "SOLD")
            .count()
            .eq(&3)
            .then_some(())
    })
    .await;
    eventually("bookings confirmed", 30, || async {
        (booking_status(api, &a.access, &mine[0]).await.as_deref() == Some("CONFIRMED"))
            .then_some(())
    })
    .await;
    let path = format!("/api/v1/payments/{first_payment}");
    let (s, p) = api.get(&path, Some(&a.access)).await;
    assert_eq!(s, StatusCode::OK, "{p}");
    assert_eq!(
        (
            p["status"].as_str(),
            p["total_price"].as_i64(),
            p["refund_price"].as_i64()
        ),
        (Some("COMPLETED"), Some(100_000), Some(0))
    );
    assert_eq!(p["card_last4"], "4242");
    assert!(
        !p.to_string().contains(CARD_OK),
        "the card number is never returned"
    );
    let listed: std::collections::BTreeSet<_> = p["booking_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap().to_string())
        .collect();
    assert_eq!(listed, mine.iter().cloned().collect());
    let (s, e) = api.get(&path, Some(&b.access)).await;
    assert_error(s, &e, StatusCode::FORBIDDEN, "NOT_OWNER");
    let (s, _) = api.get(&path, Some(manager)).await;
    assert_eq!(s, StatusCode::OK);
    let (s, e) = api
        .get(
            &format!("/api/v1/payments/{}", Uuid::new_v4()),
            Some(&a.access),
        )
        .await;
    assert_error(s, &e, StatusCode::NOT_FOUND, "PAYMENT_NOT_FOUND");
    let (s, _) = api.get(&path, None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);

    // Refunds: one booking, then the rest (by a MANAGER).
    let cancel = format!("{path}/cancel");
    let (s, e) = api
        .post(&cancel, Some(&b.access), json!({"reason": "mine now"}))
        .await;
    assert_error(s, &e, StatusCode::FORBIDDEN, "NOT_OWNER");
    let (s, e) = api
        .post(&cancel, Some(&a.access), json!({"reason": "  "}))
        .await;
    assert_error(s, &e, StatusCode::UNPROCESSABLE_ENTITY, "INVALID_REASON");
    let (s, e) = api
        .post(
            &cancel,
            Some(&a.access),
            json!({"booking_ids": [theirs[0]], "reason": "x"}),
        )
        .await;
    assert_error(
        s,
        &e,
        StatusCode::UNPROCESSABLE_ENTITY,
        "BOOKING_NOT_IN_PAYMENT",
    );
    let refund_key = unique();
    let one = json!({"booking_ids": [mine[0]], "reason": "cannot come"});
    // A refund may answer 503 REFUND_PENDING (the provider slow under
    // load): the client retries with the same key, as the message says.
    let (s, r, _) = api
        .command_keyed(
            reqwest::Method::POST,
            &cancel,
            &a.access,
            &refund_key,
            Some(one.clone()),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert_eq!(
        (r["status"].as_str(), r["refund_price"].as_i64()),
        (Some("PART_CANCELED"), Some(50_000)),
        "{r}"
    );
    let refunded_at = std::time::Instant::now();
    let seen = live
        .arrival("the refund on the admin stream", |b| {
            b.contains("event: refund")
                && b.contains(&format!("\"payment_id\":\"{first_payment}\""))
                && b.contains("\"refund_price\":50000")
        })
        .await;
    assert!(seen.saturating_duration_since(refunded_at) < std::time::Duration::from_secs(1));
    let (s, again) = api
        .post_keyed(&cancel, &a.access, &refund_key, one.clone())
        .await;
    assert_eq!(
        (s, &again),
        (StatusCode::OK, &r),
        "a retried refund is reported, not repeated"
    );
    let (s, e) = api.post(&cancel, Some(&a.access), one).await;
    assert_error(s, &e, StatusCode::CONFLICT, "BOOKING_ALREADY_CANCELLED");
    eventually("the seat back on sale", 30, || async {
        (seat_status(api, &schedule, 1, 1).await == "AVAILABLE").then_some(())
    })
    .await;
    eventually("the booking cancelled", 30, || async {
        (booking_status(api, &a.access, &mine[0]).await.as_deref() == Some("CANCELLED"))
            .then_some(())
    })
    .await;
    assert_eq!(seat_status(api, &schedule, 1, 2).await, "SOLD");
    let (s, r, _) = api
        .command_keyed(
            reqwest::Method::POST,
            &cancel,
            manager,
            &unique(),
            Some(json!({"reason": "show moved"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert_eq!(
        (r["status"].as_str(), r["refund_price"].as_i64()),
        (Some("CANCELED"), Some(100_000)),
        "{r}"
    );
    let (s, e) = api
        .post(&cancel, Some(&a.access), json!({"reason": "again"}))
        .await;
    assert_error(s, &e, StatusCode::CONFLICT, "PAYMENT_ALREADY_CANCELED");
    eventually("every refunded seat back on sale", 30, || async {
        (seat_status(api, &schedule, 1, 2).await == "AVAILABLE").then_some(())
    })
    .await;
    let (_, p) = api.get(&path, Some(&a.access)).await;
    assert_eq!(p["refunds"].as_array().unwrap().len(), 2, "{p}");
    assert!(
        p["refunds"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["refunded_at"].is_string()),
        "{p}"
    );
    // A failed payment has nothing to refund.
    let (s, e) = api
        .post(
            &format!("/api/v1/payments/{failed}/cancel"),
            Some(&b.access),
            json!({"reason": "x"}),
        )
        .await;
    assert_error(s, &e, StatusCode::CONFLICT, "PAYMENT_NOT_COMPLETED");

    // Once the show has started: no refund, no hold, no join.
    let wait = (show - chrono::Utc::now()).to_std().unwrap_or_default();
    tokio::time::sleep(wait + std::time::Duration::from_millis(200)).await;
    let (s, e) = api
        .post(
            &format!("/api/v1/payments/{early_payment}/cancel"),
            Some(&b.access),
            json!({"reason": "late"}),
        )
        .await;
    assert_error(s, &e, StatusCode::UNPROCESSABLE_ENTITY, "REFUND_CLOSED");
    let (s, e) = hold(
        api,
        &format!("/api/v1/schedules/{soon}/holds"),
        &a.access,
        json!([{"row": 1, "col": 2}]),
    )
    .await;
    assert_error(s, &e, StatusCode::UNPROCESSABLE_ENTITY, "SALE_CLOSED");
    let late = sign_up_and_login(api, "USER").await;
    let (s, e) = join(api, &soon_queue, &late.access).await;
    assert_error(s, &e, StatusCode::UNPROCESSABLE_ENTITY, "SALE_CLOSED");
    assert_eq!(seat_status(api, &soon, 1, 2).await, "AVAILABLE");

    admin_money_scenario(api, manager, &a, started, &first_payment, &failed).await;
    PaymentsSeen {
        users: vec![a.user_id, b.user_id],
        schedules: vec![schedule, soon],
        started,
    }
}

/// The items' `field` instants never grow down the list.
fn assert_newest_first(items: &[Value], field: &str) {
    let times: Vec<chrono::DateTime<chrono::Utc>> = items
        .iter()
        .map(|i| i[field].as_str().unwrap().parse().unwrap())
        .collect();
    assert!(
        times.windows(2).all(|w| w[0] >= w[1]),
        "newest first: {times:?}"
    );
}

/// Every page of an admin listing from `path` (which has a query already).
pub async fn all_pages(api: &Api, manager: &str, path: &str) -> Vec<Value> {
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..200 {
        let url = match &cursor {
            Some(c) => format!("{path}&cursor={c}"),
            None => path.to_string(),
        };
        let (s, page) = api.get(&url, Some(manager)).await;
        assert_eq!(s, StatusCode::OK, "{url}: {page}");
        items.extend(page["items"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => return items,
        }
    }
    panic!("{path}: more than 200 pages");
}

/// The managers' view of the payments and refunds `payments_scenario` made:
/// only for managers, filtered by status, paged, fed by the payment sink.
async fn admin_money_scenario(
    api: &Api,
    manager: &str,
    buyer: &Account,
    started: chrono::DateTime<chrono::Utc>,
    refunded: &str,
    failed: &str,
) {
    let (s, e) = api.get("/api/v1/admin/payments", Some(&buyer.access)).await;
    assert_error(s, &e, StatusCode::FORBIDDEN, "FORBIDDEN");
    let (s, e) = api.get("/api/v1/admin/refunds", Some(&buyer.access)).await;
    assert_error(s, &e, StatusCode::FORBIDDEN, "FORBIDDEN");
    let (s, _) = api.get("/api/v1/admin/payments", None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, e) = api.get("/api/v1/admin/stream", Some(&buyer.access)).await;
    assert_error(s, &e, StatusCode::FORBIDDEN, "FORBIDDEN");
    for (query, code) in [
        ("status=PAID", "INVALID_STATUS"),
        ("limit=0", "INVALID_LIMIT"),
        ("limit=501", "INVALID_LIMIT"),
        ("cursor=nonsense", "INVALID_CURSOR"),
        ("from=yesterday", "INVALID_TIME_RANGE"),
        ("from=2030-01-02&to=2030-01-01", "INVALID_TIME_RANGE"),
    ] {
        let (s, e) = api
            .get(&format!("/api/v1/admin/payments?{query}"), Some(manager))
            .await;
        assert_error(s, &e, StatusCode::BAD_REQUEST, code);
    }
    let from = started.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let from = from.replace('+', "%2B");
    let canceled = format!("/api/v1/admin/payments?status=CANCELED&from={from}&limit=2");
    let row = eventually("the refunded payment in the admin listing", 30, || async {
        all_pages(api, manager, &canceled)
            .await
            .into_iter()
            .find(|p| p["payment_id"] == refunded && p["refund_price"] == 100_000)
    })
    .await;
    assert_eq!(row["user_id"], buyer.user_id.as_str());
    assert_eq!(
        (row["status"].as_str(), row["total_price"].as_i64()),
        (Some("CANCELED"), Some(100_000))
    );
    assert!(
        row["created_at"].is_string() && row["updated_at"].is_string(),
        "{row}"
    );
    let everything = eventually("the failed payment in the admin listing", 30, || async {
        let all = all_pages(
            api,
            manager,
            &format!("/api/v1/admin/payments?from={from}&limit=3"),
        )
        .await;
        all.iter()
            .any(|p| p["payment_id"] == failed && p["status"] == "FAILED")
            .then_some(all)
    })
    .await;
    let ids: Vec<&str> = everything
        .iter()
        .map(|p| p["payment_id"].as_str().unwrap())
        .collect();
    let unique_ids: std::collections::BTreeSet<_> = ids.iter().collect();
    assert_eq!(ids.len(), unique_ids.len(), "each payment on one page only");
    assert!(ids.contains(&refunded));
    assert_newest_first(&everything, "created_at");
    let refunds = eventually("both refunds in the admin listing", 30, || async {
        let mine: Vec<Value> = all_pages(
            api,
            manager,
            &format!("/api/v1/admin/refunds?from={from}&limit=1"),
        )
        .await
        .into_iter()
        .filter(|r| r["payment_id"] == refunded)
        .collect();
        (mine.len() == 2).then_some(mine)
    })
    .await;
    let total: i64 = refunds
        .iter()
        .map(|r| r["refund_price"].as_i64().unwrap())
        .sum();
    assert_eq!(total, 100_000, "{refunds:?}");
    assert!(refunds
        .iter()
        .all(|r| r["status"] == "REFUNDED" && r["total_price"] == 100_000));
}

/// Every request is logged with its caller, method, path and status, never
/// a query string or a token; managers list a user's requests page by page
/// and watch them live.
pub async fn request_logs_scenario(api: &Api, manager: &str) {
    let user = sign_up_and_login(api, "USER").await;
    let live = LiveStream::open(
        api,
        &format!("/api/v1/admin/request-logs/stream?user_id={}", user.user_id),
        manager,
    )
    .await;
    let (s, _) = api
        .get("/api/v1/users/me?secret=hunter2", Some(&user.access))
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = api.get("/api/v1/bookings", Some(&user.access)).await;
    assert_eq!(s, StatusCode::OK);
    let (s, e) = api
        .get("/api/v1/admin/request-logs", Some(&user.access))
        .await;
    assert_error(s, &e, StatusCode::FORBIDDEN, "FORBIDDEN");
    let (s, e) = api
        .get("/api/v1/admin/request-logs/stream", Some(&user.access))
        .await;
    assert_error(s, &e, StatusCode::FORBIDDEN, "FORBIDDEN");
    let (s, e) = api
        .get("/api/v1/admin/request-logs?user_id=nobody", Some(manager))
        .await;
    assert_error(s, &e, StatusCode::BAD_REQUEST, "INVALID_USER_ID");

    live.arrival("the request on the live request log", |b| {
        b.contains("event: request")
            && b.contains("\"path\":\"/api/v1/users/me\"")
            && b.contains(&format!("\"user_id\":\"{}\"", user.user_id))
    })
    .await;
    let path = format!(
        "/api/v1/admin/request-logs?user_id={}&limit=1",
        user.user_id
    );
    let items = eventually("the user's requests in the request log", 30, || async {
        let items = all_pages(api, manager, &path).await;
        let seen = |p: &str, status: u64| {
            items
                .iter()
                .any(|i| i["path"] == p && i["status"] == status && i["method"] == "GET")
        };
        (seen("/api/v1/users/me", 200)
            && seen("/api/v1/bookings", 200)
            && seen("/api/v1/admin/request-logs", 403))
        .then_some(items)
    })
    .await;
    let text = serde_json::to_string(&items).unwrap();
    for secret in [
        user.access.as_str(),
        "hunter2",
        "Bearer",
        user.password.as_str(),
    ] {
        assert!(
            !text.contains(secret),
            "{secret} leaked into the request log"
        );
    }
    assert!(items.iter().all(|i| i["user_id"] == user.user_id.as_str()));
    assert!(items
        .iter()
        .all(|i| i["latency_ms"].as_f64().is_some_and(|l| l >= 0.0)));
    let ids: std::collections::BTreeSet<_> =
        items.iter().map(|i| i["request_id"].to_string()).collect();
    assert_eq!(ids.len(), items.len(), "each request once across the pages");
    assert_newest_first(&items, "time");
}

/// A child process that is killed (and reaped) when dropped, so a failing
/// test never leaves one behind, in the shared processor group or elsewhere.
pub struct Killed(pub std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A free port on 127.0.0.1 (bound, read, released).
pub fn free_addr() -> std::net::SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// `ticketing processor` as a child process: a member of `group`, deciding
/// with `schedules`, its ops endpoints on `ops`, its output appended to `log`.
pub fn spawn_processor_process(
    instance: &str,
    group: &str,
    snapshot_every: usize,
    schedules: &ticketing::settings::ScheduleSettings,
    ops: std::net::SocketAddr,
    log: &std::path::Path,
) -> Killed {
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_ticketing"))
        .arg("processor")
        .env("TICKETING_PROCESSOR_GROUP", group)
        .env("TICKETING_INSTANCE_ID", instance)
        .env("TICKETING_SNAPSHOT_EVERY", snapshot_every.to_string())
        .env("TICKETING_OPS_LISTEN", ops.to_string())
        .env(
            "TICKETING_ADMISSION_MAX_ACTIVE",
            schedules.admission_max_active.to_string(),
        )
        .env(
            "TICKETING_ADMISSION_TTL_SECS",
            schedules.admission_ttl_secs.to_string(),
        )
        .env(
            "TICKETING_HOLD_TTL_SECS",
            schedules.hold_ttl_secs.to_string(),
        )
        .env(
            "TICKETING_MAX_SEATS_PER_USER",
            schedules.max_seats_per_user.to_string(),
        )
        .env(
            "TICKETING_PAYMENT_TTL_SECS",
            schedules.payment_ttl_secs.to_string(),
        )
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::from(out.try_clone().unwrap()))
        .stderr(std::process::Stdio::from(out))
        .spawn()
        .expect("the ticketing binary starts");
    Killed(child)
}

/// The sandbox PG over HTTP, as `ticketing pg-sandbox` serves it, until
/// `stop`; its "timeout" card keeps a caller waiting 1.5 s.
pub async fn spawn_pg_sandbox(
    secret: &str,
    stop: ticketing_runtime::shutdown::Shutdown,
) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = ticketing_payments::http::sandbox_router(
        ticketing_payments::sandbox::SandboxProvider::new(),
        secret,
        std::time::Duration::from_millis(1_500),
    );
    tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(stop.wait())
            .await
    });
    addr
}

/// An ingress of the real-stack tests: its own keyspace, the first MANAGER
/// `admin@example.com` / `admin-password-1`, fresh keys, the sandbox PG at
/// `pg` (whose answers it waits 1 s for, shorter than the "timeout" card).
pub fn test_ingress(
    listen: std::net::SocketAddr,
    keyspace: &str,
    pg: std::net::SocketAddr,
    pg_secret: &str,
    schedules: ticketing::settings::ScheduleSettings,
    decision_timeout_ms: u64,
    payment_sweep_after_secs: u64,
) -> ticketing::settings::IngressSettings {
    use ticketing_ingress::security::{card::CardCipher, phone::PhoneCipher};
    ticketing::settings::IngressSettings {
        http: ticketing::settings::HttpSettings {
            listen,
            admin_email: Some("admin@example.com".into()),
            admin_password: Some("admin-password-1".into()),
            token_secret: Some("an-integration-test-secret-of-enough-length".into()),
            phone_keys: Some(PhoneCipher::generate_spec("it1")),
            card_keys: Some(CardCipher::generate_spec("it1")),
            access_ttl_secs: 900,
            refresh_ttl_secs: 3600,
            decision_timeout_ms,
            payment_sweep_after_secs,
            schedules,
        },
        stack: stack_settings(keyspace),
        pg_url: Some(format!("http://{pg}")),
        pg_secret_key: Some(pg_secret.into()),
        pg_timeout_ms: 1_000,
    }
}

/// One hold attempt of buyer `i`: 1 or 2 of the seats the map shows free.
pub enum HoldTry {
    Held {
        seats: Vec<(u64, u64)>,
        booking_ids: Vec<String>,
    },
    /// Someone was faster (409 `SEAT_UNAVAILABLE`): look again.
    Taken,
    NoneFree,
}

/// Holds 1 or 2 of the free seats (which ones varies with `i` and `attempt`,
/// so buyers spread), retried through 503s. Panics on any other answer.
pub async fn try_hold(api: &Api, schedule: &str, token: &str, i: usize, attempt: usize) -> HoldTry {
    let free: Vec<_> = seat_statuses(api, schedule)
        .await
        .into_iter()
        .filter(|x| x.2 == "AVAILABLE")
        .collect();
    if free.is_empty() {
        return HoldTry::NoneFree;
    }
    let want = 1 + (i + attempt) % 2;
    let seats: Vec<(u64, u64)> = free
        .iter()
        .cycle()
        .skip((i * 7 + attempt) % free.len())
        .take(want.min(free.len()))
        .map(|x| (x.0, x.1))
        .collect();
    let body: Vec<Value> = seats
        .iter()
        .map(|(r, c)| json!({"row": r, "col": c}))
        .collect();
    let (s, body) = hold(
        api,
        &format!("/api/v1/schedules/{schedule}/holds"),
        token,
        json!(body),
    )
    .await;
    match s {
        StatusCode::CREATED => HoldTry::Held {
            seats,
            booking_ids: body["booking_ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_str().unwrap().to_string())
                .collect(),
        },
        StatusCode::CONFLICT => {
            assert_eq!(body["code"], "SEAT_UNAVAILABLE", "{body}");
            HoldTry::Taken
        }
        other => panic!("hold answered {other}: {body}"),
    }
}

/// An ingress and a sink of the real-stack tests in this process, until
/// `stop`; answers the API once the ingress is ready, and the tasks.
pub async fn start_ingress_and_sink(
    ingress: ticketing::settings::IngressSettings,
    listener: tokio::net::TcpListener,
    keyspace: &str,
    schedules: ticketing::settings::ScheduleSettings,
    stop: ticketing_runtime::shutdown::Shutdown,
) -> (Api, Vec<tokio::task::JoinHandle<anyhow::Result<()>>>) {
    let addr = listener.local_addr().unwrap();
    let ops = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sink = ticketing::settings::SinkSettings {
        stack: stack_settings(keyspace),
        ops_listen: ops.local_addr().unwrap(),
        group: format!("catalog-sink-{keyspace}"),
        schedules,
    };
    let tasks = vec![
        tokio::spawn(ticketing::stack::run_ingress(
            ingress,
            listener,
            stop.clone(),
        )),
        tokio::spawn(ticketing::stack::run_sink(sink, ops, stop)),
    ];
    let api = Api::new(addr);
    api.wait_ready().await;
    (api, tasks)
}

/// Joins the schedule's line (retried through 503s) and waits until ADMITTED.
pub async fn join_and_wait_admitted(api: &Api, schedule: &str, token: &str) {
    let queue = format!("/api/v1/schedules/{schedule}/queue");
    let (s, body) = join(api, &queue, token).await;
    assert!(
        s == StatusCode::CREATED || s == StatusCode::OK,
        "{s} {body}"
    );
    loop {
        let (s, body) = api.get(&format!("{queue}/me"), Some(token)).await;
        match body["status"].as_str() {
            Some("ADMITTED") => return,
            Some("WAITING") | Some("NOT_IN_QUEUE") => {}
            // The read model is catching up; the answer says to retry.
            None if s == StatusCode::SERVICE_UNAVAILABLE
                && body["code"] == "SCHEDULE_NOT_READY" => {}
            other => panic!("unexpected queue status {other:?}: {body}"),
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// `DELETE .../queue/me`, retried through 503s with one Idempotency-Key.
pub async fn leave(api: &Api, schedule: &str, token: &str) -> (StatusCode, Value) {
    let me = format!("/api/v1/schedules/{schedule}/queue/me");
    api.command(reqwest::Method::DELETE, &me, token, None).await
}
