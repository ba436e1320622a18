//! The platform's HTTP API as a buyer or seller uses it, with every call timed
//! into the run's statistics.

use crate::stats::{Op, Stats};
use anyhow::{bail, Context};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    stats: Arc<Stats>,
}

/// An answer: status and JSON body (`Null` when there is none).
pub struct Answer {
    pub status: StatusCode,
    pub body: Value,
}

impl Client {
    pub fn new(base: &str, stats: Arc<Stats>) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(4096)
            .build()?;
        Ok(Self {
            http,
            base: base.trim_end_matches('/').to_string(),
            stats,
        })
    }

    fn request(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        idempotency_key: Option<&str>,
        body: Option<Value>,
    ) -> reqwest::RequestBuilder {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(k) = idempotency_key {
            req = req.header("Idempotency-Key", k);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        req
    }

    pub async fn call(
        &self,
        op: Op,
        method: Method,
        path: &str,
        token: Option<&str>,
        idempotency_key: Option<&str>,
        body: Option<Value>,
    ) -> anyhow::Result<Answer> {
        let req = self.request(method, path, token, idempotency_key, body);
        let started = Instant::now();
        let result = req.send().await;
        let res = match result {
            Ok(r) => r,
            Err(e) => {
                self.stats.failed(op);
                return Err(e).with_context(|| format!("{op:?} {path}"));
            }
        };
        let status = res.status();
        let bytes = res.bytes().await.unwrap_or_default();
        self.stats.record(op, status, started.elapsed());
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Ok(Answer { status, body })
    }

    /// One request, untimed and never retried: the open-loop mode times
    /// from when a request was due and counts a 503 as a failure.
    pub async fn once(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        idempotency_key: Option<&str>,
        body: Option<Value>,
    ) -> anyhow::Result<StatusCode> {
        let res = self
            .request(method, path, token, idempotency_key, body)
            .send()
            .await?;
        let status = res.status();
        res.bytes().await?;
        Ok(status)
    }

    /// A command the processor decides: a 503 `DECISION_PENDING` (or any 503)
    /// is retried with the same Idempotency-Key, as clients are told to.
    pub async fn command(
        &self,
        op: Op,
        method: Method,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Answer> {
        let key = uuid::Uuid::new_v4().to_string();
        for _ in 0..20 {
            let a = self
                .call(
                    op,
                    method.clone(),
                    path,
                    Some(token),
                    Some(&key),
                    body.clone(),
                )
                .await?;
            if a.status != StatusCode::SERVICE_UNAVAILABLE {
                return Ok(a);
            }
            self.stats.retried(op);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        bail!("{op:?} {path}: still 503 after 20 tries")
    }

    /// Signs up (role `USER` or `SELLER`) and logs in; answers the access token.
    pub async fn account(&self, role: &str, tag: &str) -> anyhow::Result<String> {
        let email = format!("{tag}@loadtest.example.com");
        let password = format!("pw-{tag}-loadtest");
        let a = self
            .call(
                Op::Setup,
                Method::POST,
                "/api/v1/users",
                None,
                None,
                Some(
                    json!({"email": email, "password": password, "nickname": tag,
                    "phone": "010-1234-5678", "role": role}),
                ),
            )
            .await?;
        if a.status != StatusCode::CREATED {
            bail!("sign-up answered {}: {}", a.status, a.body);
        }
        let a = self
            .call(
                Op::Setup,
                Method::POST,
                "/api/v1/auth/login",
                None,
                None,
                Some(json!({"email": email, "password": password})),
            )
            .await?;
        if a.status != StatusCode::OK {
            bail!("login answered {}: {}", a.status, a.body);
        }
        a.body["access_token"]
            .as_str()
            .map(String::from)
            .context("no access_token in the login answer")
    }

    /// A stage, a concert and one schedule on sale at once; answers the
    /// schedule id.
    pub async fn schedule(
        &self,
        seller: &str,
        rows: u32,
        cols: u32,
        price: i64,
    ) -> anyhow::Result<String> {
        let t = Some(seller);
        let a = self
            .call(
                Op::Setup,
                Method::POST,
                "/api/v1/stages",
                t,
                None,
                Some(
                    json!({"name": "Load Arena", "location": "Seoul", "rows": rows, "cols": cols}),
                ),
            )
            .await?;
        if a.status != StatusCode::CREATED {
            bail!("stage answered {}: {}", a.status, a.body);
        }
        let stage_id = a.body["stage_id"].as_str().context("stage_id")?.to_string();
        let a = self
            .call(
                Op::Setup,
                Method::POST,
                "/api/v1/concerts",
                t,
                None,
                Some(
                    json!({"stage_id": stage_id, "concert_name": "Flash Sale", "runtime": 120,
                    "start_date": "2030-05-01", "end_date": "2030-05-03", "price": price,
                    "concert_image": "https://img.example.com/flash.png"}),
                ),
            )
            .await?;
        if a.status != StatusCode::CREATED {
            bail!("concert answered {}: {}", a.status, a.body);
        }
        let concert_id = a.body["concert_id"].as_str().context("concert_id")?;
        let a = self
            .call(
                Op::Setup,
                Method::POST,
                &format!("/api/v1/concerts/{concert_id}/schedules"),
                t,
                None,
                Some(json!({"concert_date": "2030-05-02", "concert_time": "19:30"})),
            )
            .await?;
        if a.status != StatusCode::CREATED {
            bail!("schedule answered {}: {}", a.status, a.body);
        }
        a.body["schedule_id"]
            .as_str()
            .map(String::from)
            .context("schedule_id")
    }

    /// The seat map: `(row, col, status)` row-major.
    pub async fn seats(&self, schedule: &str) -> anyhow::Result<Vec<(u64, u64, String)>> {
        let a = self
            .call(
                Op::Seats,
                Method::GET,
                &format!("/api/v1/schedules/{schedule}/seats"),
                None,
                None,
                None,
            )
            .await?;
        if a.status != StatusCode::OK {
            bail!("seat map answered {}: {}", a.status, a.body);
        }
        a.body["seats"]
            .as_array()
            .context("seats")?
            .iter()
            .map(|s| {
                Ok((
                    s["row"].as_u64().context("row")?,
                    s["col"].as_u64().context("col")?,
                    s["status"].as_str().context("status")?.to_string(),
                ))
            })
            .collect()
    }
}
