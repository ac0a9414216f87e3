//! Mutating calls run detached from their connection (see ARCHITECTURE.md, invariant "Nothing
//! half-made"): a client that hangs up, or a proxy that resets the connection, drops the
//! handler's future, and dropping a runtime call half-way would leave a sandbox half-made. So the
//! call runs in a task of its own (tracked, so shutdown waits for it), and the handler only waits
//! for its result, for at most `server.request_deadline_seconds`.
//!
//! A create whose result nobody is waiting for any more (the client left, or the deadline
//! passed) is rolled back as soon as it finishes — the client never learnt its id, so nobody
//! would ever delete it. Rolling back is the delete the client would have made: the sandbox and
//! what `deleteOnSandboxTermination` covers go; a claim it asked to exist stays, as after any
//! delete, because another sandbox may already have written to it.

use std::future::Future;

use berth_core::ErrorCode;
use berth_core::model::{SandboxId, SandboxRecord};
use berth_core::runtime::{CreateSandbox, RuntimeError};
use tokio::sync::oneshot;

use crate::AppState;
use crate::error::ApiError;

/// Creates a sandbox detached from the connection; rolls it back if nobody takes the result.
pub(crate) async fn create(
    state: &AppState,
    request: CreateSandbox,
) -> Result<SandboxRecord, ApiError> {
    let (tx, rx) = oneshot::channel();
    let task_state = state.clone();
    state.in_flight.spawn(async move {
        let id = request.id.clone();
        let result = task_state.runtime.create(request).await;
        if let Err(Ok(_)) = tx.send(result) {
            roll_back_unclaimed(&task_state, &id).await;
        }
    });
    let mut result = UntakenCreate {
        rx,
        state: state.clone(),
    };
    wait(state, &mut result.rx).await
}

/// The handler's end of a detached create. A sent result is not yet a taken one: the client can
/// hang up after the create sent its record and before the handler ran again to take it (the
/// connection's task and the create's run on different threads), and the record would be dropped
/// with the handler. So when this end goes — taken or not — it is closed first (a send after that
/// fails, and the create rolls itself back), and a record sent before is rolled back here.
struct UntakenCreate {
    rx: oneshot::Receiver<Result<SandboxRecord, RuntimeError>>,
    state: AppState,
}

impl Drop for UntakenCreate {
    fn drop(&mut self) {
        self.rx.close();
        let Ok(Ok(record)) = self.rx.try_recv() else {
            return;
        };
        let state = self.state.clone();
        // Handlers are dropped on the server's runtime; without one there is nothing to run on.
        if tokio::runtime::Handle::try_current().is_ok() {
            self.state
                .in_flight
                .spawn(async move { roll_back_unclaimed(&state, &record.id).await });
        } else {
            tracing::error!(
                sandbox = %record.id,
                "create finished after its client had gone, and no runtime is left to roll it back (delete it by id)"
            );
        }
    }
}

/// Deletes a sandbox whose create finished after its client stopped waiting.
async fn roll_back_unclaimed(state: &AppState, id: &SandboxId) {
    let _guard = state.locks.lock(id).await;
    match state.runtime.delete(id).await {
        Ok(()) | Err(RuntimeError::NotFound { .. }) => tracing::warn!(
            sandbox = %id,
            "create finished after its client had gone (hung up, or past server.request_deadline_seconds); rolled back"
        ),
        Err(e) => tracing::error!(
            sandbox = %id,
            error = %e,
            "create finished after its client had gone; rolling it back failed (delete it by id)"
        ),
    }
}

/// Runs `call` on sandbox `id` under its lock, detached from the connection.
pub(crate) async fn on_sandbox<T, F, Fut>(
    state: &AppState,
    id: SandboxId,
    call: F,
) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce(AppState, SandboxId) -> Fut + Send + 'static,
    Fut: Future<Output = Result<T, RuntimeError>> + Send,
{
    let (tx, rx) = oneshot::channel();
    let task_state = state.clone();
    state.in_flight.spawn(async move {
        let _guard = task_state.locks.lock(&id).await;
        // The result is dropped if the client left: the call is done either way.
        let _ = tx.send(call(task_state.clone(), id).await);
    });
    wait(state, rx).await
}

/// Waits for a detached call's result, up to the request deadline.
async fn wait<T>(
    state: &AppState,
    rx: impl Future<Output = Result<Result<T, RuntimeError>, oneshot::error::RecvError>>,
) -> Result<T, ApiError> {
    match tokio::time::timeout(state.request_deadline, rx).await {
        Ok(Ok(result)) => result.map_err(ApiError::from),
        // The task ended without answering: it panicked (the panic is in the log).
        Ok(Err(_)) => Err(ApiError::new(
            ErrorCode::GeneralInternalError,
            "internal error; the server log has the details",
        )),
        Err(_) => Err(ApiError::new(
            ErrorCode::GeneralDeadlineExceeded,
            format!(
                "the call did not finish within server.request_deadline_seconds ({} s); it goes on in the background, and a create is rolled back when it ends",
                state.request_deadline.as_secs()
            ),
        )),
    }
}
