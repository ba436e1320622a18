//! The port contract against the real engines: CQL (ScyllaDB or Cassandra 5) at
//! `TICKETING_CQL_NODES` and Redis at `TICKETING_REDIS_URL`.
//!
//! Each run works in a keyspace of its own (`ticketing_test_<random>`), dropped
//! at the end even when a check fails. The engines may still be starting when
//! the tests begin, so connecting is retried for a few minutes.
#![cfg(feature = "real-stack")]

use chrono::Duration;
use redis::AsyncCommands;
use scylla::client::session::Session as CqlSession;
use scylla::client::session_builder::SessionBuilder;
use scylla::statement::unprepared::Statement;
use std::future::Future;
use ticketing_domain::account::Role;
use ticketing_domain::ids::UserId;
use ticketing_storage::contract;
use ticketing_storage::cql::{self, CqlStore};
use ticketing_storage::redis_sessions::RedisSessionStore;
use ticketing_storage::{AccountStore, CatalogStore, Session, SessionStore, StoreError};
use uuid::Uuid;

const STARTUP_WAIT: std::time::Duration = std::time::Duration::from_secs(300);
const SLOW: std::time::Duration = std::time::Duration::from_secs(120);

fn cql_nodes() -> Vec<String> {
    std::env::var("TICKETING_CQL_NODES")
        .unwrap_or_else(|_| "127.0.0.1:9042".into())
        .split(',')
        .map(|n| n.trim().to_string())
        .filter(|n| !n.is_empty())
        .collect()
}

fn redis_url() -> String {
    std::env::var("TICKETING_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

async fn retry<T, E: std::fmt::Display, Fut: Future<Output = Result<T, E>>>(
    what: &str,
    mut attempt: impl FnMut() -> Fut,
) -> T {
    let deadline = tokio::time::Instant::now() + STARTUP_WAIT;
    loop {
        match attempt().await {
            Ok(value) => return value,
            Err(e) if tokio::time::Instant::now() < deadline => {
                eprintln!("{what} not ready yet ({e}); retrying");
                tokio::time::sleep(std::time::Duration::from_secs(3)).await;
            }
            Err(e) => panic!("{what} never became ready: {e}"),
        }
    }
}

async fn admin_session(nodes: &[String]) -> Result<CqlSession, String> {
    SessionBuilder::new()
        .known_nodes(nodes)
        .connection_timeout(std::time::Duration::from_secs(30))
        .schema_agreement_timeout(SLOW)
        .build()
        .await
        .map_err(|e| e.to_string())
}

async fn run(session: &CqlSession, cql: &str, values: impl scylla::serialize::row::SerializeRow) {
    let mut statement = Statement::new(cql);
    statement.set_request_timeout(Some(SLOW));
    session
        .query_unpaged(statement, values)
        .await
        .unwrap_or_else(|e| panic!("{cql}: {e}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cql_store_keeps_the_contract() {
    let nodes = cql_nodes();
    let keyspace = format!("ticketing_test_{}", Uuid::new_v4().simple());
    let admin = retry("CQL", || admin_session(&nodes)).await;
    let body = tokio::spawn(cql_checks(nodes, keyspace.clone()));
    let outcome = body.await;
    run(&admin, &format!("DROP KEYSPACE IF EXISTS {keyspace}"), ()).await;
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

async fn cql_checks(nodes: Vec<String>, keyspace: String) {
    // Migrations: two processes starting at once apply them once between them
    // (the lease serialises them); later runs, and the one inside `connect`,
    // are no-ops.
    let raw = admin_session(&nodes).await.unwrap();
    let other = admin_session(&nodes).await.unwrap();
    let (a, b) = tokio::join!(
        cql::migrate(&raw, &keyspace),
        cql::migrate(&other, &keyspace)
    );
    let mut applied = [a.unwrap(), b.unwrap()];
    applied.sort();
    assert_eq!(applied, [vec![], vec![1, 2, 3, 4]]);
    assert_eq!(
        cql::migrate(&raw, &keyspace).await.unwrap(),
        Vec::<i32>::new()
    );
    let store = CqlStore::connect(&nodes, &keyspace).await.unwrap();
    let versions: Vec<(i32,)> = raw
        .query_unpaged("SELECT version FROM schema_migrations", ())
        .await
        .unwrap()
        .into_rows_result()
        .unwrap()
        .rows()
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let mut versions = versions;
    versions.sort();
    assert_eq!(versions, vec![(1,), (2,), (3,), (4,)]);

    contract::accounts(&store).await;
    contract::catalog(&store).await;
    contract::payments(&store).await;
    contract::payment_views(&store).await;
    contract::booking_rows(&store).await;
    contract::request_logs(&store).await;
    sub_millisecond_instants_are_truncated_once(&store).await;
    stored_secrets_are_untouched(&store, &raw).await;
    stale_claims_are_taken_over(&store, &raw).await;
    a_fenced_sign_up_cannot_commit(&store, &raw).await;
    many_concurrent_sign_ups(&store).await;
}

/// CQL keeps milliseconds. The ingress writes a row with the clock's full
/// precision, the sink rewrites it from the event: one listing entry, both times.
async fn sub_millisecond_instants_are_truncated_once(store: &CqlStore) {
    let hall = contract::stage(UserId::from_uuid(Uuid::now_v7()));
    let newest = contract::t0() + Duration::days(400);
    let precise = newest + Duration::nanoseconds(1_234_567);
    let show = contract::concert(&hall, precise, "precise");
    let before = store.list_concerts(0, 1).await.unwrap().total;
    store.put_concert(&show).await.unwrap();
    store.put_concert(&show).await.unwrap();
    let mut from_event = show.clone();
    from_event.audit.created_at = newest + Duration::milliseconds(1);
    from_event.audit.updated_at = from_event.audit.created_at;
    store.put_concert(&from_event).await.unwrap();
    let page = store.list_concerts(0, 1).await.unwrap();
    assert_eq!(page.total, before + 1);
    assert_eq!(page.items, vec![from_event.clone()]);
    assert_eq!(
        store.concert(show.concert_id).await.unwrap(),
        Some(from_event)
    );
}

/// A sign-up that stalled past the stale period and was fenced meanwhile gives
/// up when it resumes, and frees its claims.
async fn a_fenced_sign_up_cannot_commit(store: &CqlStore, raw: &CqlSession) {
    let slow = contract::user("slow@example.com", "slowpoke");
    let id = slow.user_id.as_uuid();
    let at = slow.audit.created_at;
    run(raw, "INSERT INTO users_by_email (email, user_id, created_at, is_deleted) VALUES (?, ?, ?, false)", ("slow@example.com", id, at)).await;
    run(raw, "INSERT INTO users_by_nickname (nickname, user_id, created_at, is_deleted) VALUES (?, ?, ?, false)", ("slowpoke", id, at)).await;
    run(
        raw,
        // What `fence` writes for the sign-up that wins the stale claim.
        "INSERT INTO users (user_id, abandoned, created_at, updated_at, is_deleted) VALUES (?, true, ?, ?, false)",
        (id, at, at),
    )
    .await;
    assert!(matches!(
        store.insert_user(&slow).await,
        Err(StoreError::Unavailable(_))
    ));
    assert_eq!(store.user_by_id(slow.user_id).await.unwrap(), None);
    let next = contract::user("slow@example.com", "slowpoke");
    store
        .insert_user(&next)
        .await
        .expect("the fenced sign-up released its claims");
}

/// More contenders than the contract's race, to go through LWT contention.
async fn many_concurrent_sign_ups(store: &CqlStore) {
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..16 {
        let store = store.clone();
        tasks.spawn(async move {
            let u = contract::user("crowd@example.com", &format!("crowd{i}"));
            store.insert_user(&u).await
        });
    }
    let mut ok = 0;
    while let Some(result) = tasks.join_next().await {
        match result.unwrap() {
            Ok(()) => ok += 1,
            Err(StoreError::EmailTaken) => {}
            Err(e) => panic!("unexpected: {e}"),
        }
    }
    assert_eq!(ok, 1);
}

async fn stored_secrets_are_untouched(store: &CqlStore, raw: &CqlSession) {
    let mut user = contract::user("secret@example.com", "secretive");
    user.phone_ciphertext = "v1:kid-7:AAECAwQFBgcICQ==:tag+/=".into();
    user.password_hash = "$argon2id$v=19$m=19456,t=2,p=1$U0FMVA$SEFTSA".into();
    store.insert_user(&user).await.unwrap();
    let (phone, password): (String, String) = raw
        .query_unpaged(
            "SELECT phone, password FROM users WHERE user_id = ?",
            (user.user_id.as_uuid(),),
        )
        .await
        .unwrap()
        .into_rows_result()
        .unwrap()
        .single_row()
        .unwrap();
    assert_eq!(
        phone, user.phone_ciphertext,
        "phone column is exactly what the caller passed"
    );
    assert_eq!(
        password, user.password_hash,
        "password column is exactly what the caller passed"
    );
}

/// A crash between claim and row leaves a claim pointing at a missing account;
/// these claims are written by hand to stand for it.
async fn stale_claims_are_taken_over(store: &CqlStore, raw: &CqlSession) {
    let t0 = contract::t0();
    let ghost = Uuid::now_v7();
    let claim_email = "INSERT INTO users_by_email (email, user_id, created_at, is_deleted) VALUES (?, ?, ?, false)";
    let claim_nick = "INSERT INTO users_by_nickname (nickname, user_id, created_at, is_deleted) VALUES (?, ?, ?, false)";
    run(
        raw,
        claim_email,
        ("ghost@example.com", ghost, t0 - Duration::minutes(10)),
    )
    .await;
    run(
        raw,
        claim_nick,
        ("ghostly", ghost, t0 - Duration::minutes(10)),
    )
    .await;

    let heir = contract::user("ghost@example.com", "heir");
    store
        .insert_user(&heir)
        .await
        .expect("a stale e-mail claim is taken over");
    assert_eq!(
        store.user_by_email(&heir.email).await.unwrap(),
        Some(heir.clone())
    );
    let other = contract::user("other-heir@example.com", "GHOSTLY");
    store
        .insert_user(&other)
        .await
        .expect("a stale nickname claim is taken over");

    // The abandoned sign-up is fenced: it can never commit, and is no account.
    let (abandoned,): (Option<bool>,) = raw
        .query_unpaged("SELECT abandoned FROM users WHERE user_id = ?", (ghost,))
        .await
        .unwrap()
        .into_rows_result()
        .unwrap()
        .single_row()
        .unwrap();
    assert_eq!(abandoned, Some(true));
    assert_eq!(
        store.user_by_id(UserId::from_uuid(ghost)).await.unwrap(),
        None
    );

    // A fresh claim without its row is presumed to be a sign-up in flight.
    let young = Uuid::now_v7();
    run(raw, claim_email, ("inflight@example.com", young, t0)).await;
    let early = contract::user("inflight@example.com", "early");
    assert!(matches!(
        store.insert_user(&early).await,
        Err(StoreError::EmailTaken)
    ));
    assert_eq!(
        store.user_by_email(&early.email).await.unwrap(),
        None,
        "a claim alone is no account"
    );

    // An old claim whose account exists stays taken, however old.
    let mut late = contract::user("secret@example.com", "latecomer");
    late.audit.created_at = t0 + Duration::days(30);
    late.audit.updated_at = late.audit.created_at;
    assert!(matches!(
        store.insert_user(&late).await,
        Err(StoreError::EmailTaken)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_sessions_keep_the_contract() {
    let url = redis_url();
    let store = retry("Redis", || RedisSessionStore::connect(&url)).await;
    let now = contract::now_millis();
    contract::sessions(&store, now).await;

    let mut raw = redis::Client::open(url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let session = |expires_at| Session {
        session_id: Uuid::now_v7(),
        user_id: UserId::from_uuid(Uuid::now_v7()),
        role: Role::User,
        refresh_hash: "h0".into(),
        expires_at,
    };

    // The key's TTL is the session's end, so Redis forgets it by itself.
    let long = session(now + Duration::hours(1));
    store.create(&long).await.unwrap();
    let key = format!("session:{}", long.session_id);
    let ttl_ms: i64 = raw.pttl(&key).await.unwrap();
    assert!((3_500_000..=3_600_000).contains(&ttl_ms), "ttl {ttl_ms}");
    store.revoke(long.session_id).await.unwrap();
    assert!(!raw.exists::<_, bool>(&key).await.unwrap());

    let short = session(contract::now_millis() + Duration::milliseconds(800));
    store.create(&short).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert!(!raw
        .exists::<_, bool>(format!("session:{}", short.session_id))
        .await
        .unwrap());
    assert!(!store
        .is_active(short.session_id, short.expires_at - Duration::seconds(1))
        .await
        .unwrap());
}
