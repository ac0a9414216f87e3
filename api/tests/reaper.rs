//! The expiry reaper: with tokio's paused clock, a sandbox is deleted when (and not before) its
//! expiry comes, a renewal moves that, and `deleteOnSandboxTermination` is honoured on expiry; a
//! renewal that lands after the sandbox was found due still wins; a replica that does not lead
//! reaps nothing; neither the reaper nor `/metrics` lists every sandbox; with the real clock, a sandbox renewed to expire two seconds ahead is gone
//! shortly after.

#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

use std::sync::Arc;
use std::time::Duration;

use berth_api::reaper::{self, Clock};
use berth_api::{AppState, router};
use berth_core::model::{ClaimName, SandboxId};
use berth_core::runtime::Runtime;
use berth_core::testkit::InMemoryRuntime;
use berth_core::testkit::intercepted::{Call, HookFuture, Intercepted};
use berth_core::validate::StoragePolicy;
use chrono::{DateTime, Utc};
use tower::ServiceExt;

/// Wall clock that moves with tokio's (paused) clock.
struct TokioClock {
    base: DateTime<Utc>,
    start: tokio::time::Instant,
}

impl Clock for TokioClock {
    fn now(&self) -> DateTime<Utc> {
        self.base + chrono::TimeDelta::from_std(self.start.elapsed()).unwrap()
    }
}

async fn post(app: &axum::Router, uri: &str, body: serde_json::Value) -> serde_json::Value {
    let request = axum::http::Request::post(uri)
        .header("content-type", "application/json")
        .body(axum::body::Body::from(body.to_string()))
        .unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = http_body_util::BodyExt::collect(response.into_body())
        .await
        .unwrap()
        .to_bytes();
    assert!(
        status.is_success(),
        "{status}: {}",
        String::from_utf8_lossy(&bytes)
    );
    serde_json::from_slice(&bytes).unwrap()
}

fn state(runtime: Arc<InMemoryRuntime>, clock: Arc<dyn Clock>) -> AppState {
    let mut state = AppState::new(runtime, StoragePolicy::default());
    state.clock = clock;
    state
}

#[tokio::test(start_paused = true)]
async fn expiry_renewal_and_release_on_the_paused_clock() {
    let runtime = Arc::new(InMemoryRuntime::new());
    runtime.add_image("img");
    let clock: Arc<dyn Clock> = Arc::new(TokioClock {
        base: Utc::now(),
        start: tokio::time::Instant::now(),
    });
    let state = state(runtime.clone(), clock.clone());
    let app = router(state.clone());
    let reaper = tokio::spawn(reaper::run(state.clone(), clock.clone()));
    let body = |timeout: u64| {
        serde_json::json!({"image": {"uri": "img"}, "entrypoint": ["sh"], "resourceLimits": {}, "timeout": timeout,
            "volumes": [{"name": "w", "pvc": {"claimName": format!("made-{timeout}"), "deleteOnSandboxTermination": true}, "mountPath": "/w"}]})
    };
    let short = SandboxId::new(
        post(&app, "/v1/sandboxes", body(60)).await["id"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    let renewed = SandboxId::new(
        post(&app, "/v1/sandboxes", body(61)).await["id"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    let later = (clock.now() + chrono::TimeDelta::seconds(300)).to_rfc3339();
    post(
        &app,
        &format!("/v1/sandboxes/{renewed}/renew-expiration"),
        serde_json::json!({"expiresAt": later}),
    )
    .await;

    tokio::time::sleep(Duration::from_millis(59_500)).await;
    assert!(
        runtime.get(&short).await.is_ok(),
        "deleted before its expiry"
    );
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    assert!(
        runtime.get(&short).await.is_err(),
        "not deleted within a second of its expiry"
    );
    assert!(
        !runtime.has_claim(&ClaimName::new("made-60").unwrap()),
        "deleteOnSandboxTermination not honoured on expiry"
    );
    assert!(
        runtime.get(&renewed).await.is_ok(),
        "a renewed sandbox was deleted at its old expiry"
    );
    tokio::time::sleep(Duration::from_secs(240)).await;
    assert!(
        runtime.get(&renewed).await.is_err(),
        "the renewed expiry was not honoured"
    );
    assert_eq!(
        state
            .metrics
            .reaper_count(berth_api::metrics::ReaperResult::Deleted),
        2
    );
    reaper.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sandbox_renewed_to_two_seconds_ahead_is_gone_on_the_real_clock() {
    let runtime = Arc::new(InMemoryRuntime::new());
    runtime.add_image("img");
    let state = AppState::new(runtime.clone(), StoragePolicy::default());
    let app = router(state.clone());
    let reaper = tokio::spawn(reaper::run(state.clone(), state.clock.clone()));
    let body = serde_json::json!({"image": {"uri": "img"}, "entrypoint": ["sh"], "resourceLimits": {}, "timeout": 3600});
    let id = SandboxId::new(
        post(&app, "/v1/sandboxes", body).await["id"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    let expires = Utc::now() + chrono::TimeDelta::seconds(2);
    post(
        &app,
        &format!("/v1/sandboxes/{id}/renew-expiration"),
        serde_json::json!({"expiresAt": expires.to_rfc3339()}),
    )
    .await;
    let started = std::time::Instant::now();
    while runtime.get(&id).await.is_ok() {
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "still there a second after its expiry"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let late = Utc::now() - expires;
    println!("deleted {} ms after expiresAt", late.num_milliseconds());
    assert!(
        late < chrono::TimeDelta::seconds(1),
        "deleted {late} after expiry"
    );
    reaper.abort();
}

/// The in-memory runtime, where a renewal (as from another replica, outside this server's
/// per-sandbox lock) lands just before the reaper's delete: after any read of the sandbox and
/// before the delete acts. It also counts calls of `list`, which neither the reaper nor
/// `/metrics` may make.
struct RenewedUnderTheReaper {
    runtime: Arc<dyn Runtime>,
    renew_to: Arc<std::sync::Mutex<Option<DateTime<Utc>>>>,
    lists: Arc<std::sync::atomic::AtomicUsize>,
}

impl RenewedUnderTheReaper {
    fn new(inner: Arc<InMemoryRuntime>) -> Self {
        let renew_to = Arc::new(std::sync::Mutex::new(None::<DateTime<Utc>>));
        let lists = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut runtime = Intercepted::new(inner.clone());
        // Renews once, at the first chance: right after a read, or just before a delete.
        let renew_once = {
            let renew_to = Arc::clone(&renew_to);
            move |id: Option<&SandboxId>| -> HookFuture {
                let to = renew_to.lock().unwrap().take();
                let (inner, id) = (inner.clone(), id.cloned());
                Box::pin(async move {
                    if let (Some(to), Some(id)) = (to, id) {
                        inner.renew(&id, to).await.unwrap();
                    }
                })
            }
        };
        let before_renew = renew_once.clone();
        let counted = Arc::clone(&lists);
        runtime.before = Arc::new(move |call, id| match call {
            Call::Delete | Call::DeleteIfExpired => before_renew(id),
            Call::List => {
                counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                Box::pin(async {})
            }
            _ => Box::pin(async {}),
        });
        runtime.after = Arc::new(move |call, id| match call {
            Call::Get => renew_once(id),
            _ => Box::pin(async {}),
        });
        Self {
            runtime: Arc::new(runtime),
            renew_to,
            lists,
        }
    }
}

/// The reaper finds a sandbox due; before its delete acts, a renewal lands (outside this
/// server's lock, as another replica's would). The sandbox must survive: the delete is
/// conditional on the expiry, not on what the reaper read earlier.
#[tokio::test(start_paused = true)]
async fn a_renewal_landing_between_due_and_delete_wins() {
    let inner = Arc::new(InMemoryRuntime::new());
    inner.add_image("img");
    let clock: Arc<dyn Clock> = Arc::new(TokioClock {
        base: Utc::now(),
        start: tokio::time::Instant::now(),
    });
    let runtime = RenewedUnderTheReaper::new(inner.clone());
    let mut state = AppState::new(runtime.runtime.clone(), StoragePolicy::default());
    state.clock = clock.clone();
    let app = router(state.clone());
    let reaper = tokio::spawn(reaper::run(state.clone(), clock.clone()));
    let body = serde_json::json!({"image": {"uri": "img"}, "entrypoint": ["sh"], "resourceLimits": {}, "timeout": 60});
    let id = SandboxId::new(
        post(&app, "/v1/sandboxes", body).await["id"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    let renewed_to = clock.now() + chrono::TimeDelta::seconds(3600);
    *runtime.renew_to.lock().unwrap() = Some(renewed_to);

    tokio::time::sleep(Duration::from_secs(90)).await;
    assert!(
        runtime.renew_to.lock().unwrap().is_none(),
        "the reaper never came for the sandbox"
    );
    let survivor = inner.get(&id).await;
    assert!(
        survivor.is_ok(),
        "a sandbox renewed before the delete acted was reaped"
    );
    assert_eq!(survivor.unwrap().expires_at, Some(renewed_to));
    assert_eq!(
        state
            .metrics
            .reaper_count(berth_api::metrics::ReaperResult::Deleted),
        0
    );
    let scrape = axum::http::Request::get("/metrics")
        .body(axum::body::Body::empty())
        .unwrap();
    let metrics = app.clone().oneshot(scrape).await.unwrap();
    let text = http_body_util::BodyExt::collect(metrics.into_body())
        .await
        .unwrap()
        .to_bytes();
    assert!(
        String::from_utf8_lossy(&text).contains("berth_sandboxes{state=\"Running\"} 1"),
        "{}",
        String::from_utf8_lossy(&text)
    );
    assert_eq!(
        runtime.lists.load(std::sync::atomic::Ordering::Relaxed),
        0,
        "the reaper or /metrics listed every sandbox"
    );
    reaper.abort();
}

/// A replica whose runtime says it does not lead reaps nothing; once it leads, it reaps.
#[tokio::test(start_paused = true)]
async fn only_the_leader_reaps() {
    let runtime = Arc::new(InMemoryRuntime::new());
    runtime.add_image("img");
    runtime.set_leads_reaping(false);
    let clock: Arc<dyn Clock> = Arc::new(TokioClock {
        base: Utc::now(),
        start: tokio::time::Instant::now(),
    });
    let state = state(runtime.clone(), clock.clone());
    let app = router(state.clone());
    let reaper = tokio::spawn(reaper::run(state.clone(), clock.clone()));
    let body = serde_json::json!({"image": {"uri": "img"}, "entrypoint": ["sh"], "resourceLimits": {}, "timeout": 60});
    let id = SandboxId::new(
        post(&app, "/v1/sandboxes", body).await["id"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    tokio::time::sleep(Duration::from_secs(120)).await;
    assert!(
        runtime.get(&id).await.is_ok(),
        "a replica that does not lead reaped"
    );
    runtime.set_leads_reaping(true);
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert!(
        runtime.get(&id).await.is_err(),
        "the leader did not reap an expired sandbox"
    );
    reaper.abort();
}
