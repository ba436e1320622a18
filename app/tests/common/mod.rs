//! The end-to-end scenario, written once and run against every way of running
//! the platform (`ticketing dev` and the real stack).

#![allow(dead_code)]

use reqwest::{Client, Response, StatusCode};
use serde_json::{json, Value};
use uuid::Uuid;

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

    pub async fn get(&self, path: &str, token: Option<&str>) -> (StatusCode, Value) {
        let mut req = self.http.get(format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        read(req.send().await.expect("request sent")).await
    }

    /// Waits for `/readyz`, so tests never race the start-up.
    pub async fn wait_ready(&self) {
        for _ in 0..600 {
            if let Ok(r) = self.http.get(format!("{}/readyz", self.base)).send().await {
                if r.status() == StatusCode::OK {
                    return;
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("{} never became ready", self.base);
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
pub fn unique() -> String {
    Uuid::new_v4().simple().to_string()[..10].to_string()
}

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
    ] {
        assert!(
            doc["paths"][path].is_object(),
            "{path} missing from OpenAPI"
        );
    }
    let (s, b) = api.get("/api/v1/nowhere", None).await;
    assert_error(s, &b, StatusCode::NOT_FOUND, "NOT_FOUND");
}
