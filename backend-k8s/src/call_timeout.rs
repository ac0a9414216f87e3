//! A bound on every API server call but a watch (`kubernetes.api_timeout_seconds`), as a
//! layer of the client: an API server that takes the call and never answers fails it as
//! unreachable (503 `RUNTIME::UNAVAILABLE`) instead of holding it until the request deadline.
//! Watches are long polls the API server ends itself; they are left alone.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use tower::{BoxError, Layer, Service};

/// The error of a call that was not answered in time.
#[derive(Debug, thiserror::Error)]
#[error(
    "the API server did not answer within kubernetes.api_timeout_seconds = {} s",
    .0.as_secs()
)]
pub struct CallTimedOut(pub Duration);

/// Adds the bound to a client's service stack.
#[derive(Debug, Clone, Copy)]
pub struct CallTimeoutLayer(pub Duration);

impl<S> Layer<S> for CallTimeoutLayer {
    type Service = CallTimeout<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CallTimeout {
            inner,
            timeout: self.0,
        }
    }
}

/// See [`CallTimeoutLayer`].
#[derive(Debug, Clone)]
pub struct CallTimeout<S> {
    inner: S,
    timeout: Duration,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for CallTimeout<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let bounded = !is_watch(request.uri());
        let timeout = self.timeout;
        let answer = self.inner.call(request);
        Box::pin(async move {
            if bounded {
                tokio::time::timeout(timeout, answer)
                    .await
                    .map_err(|_| BoxError::from(CallTimedOut(timeout)))?
                    .map_err(Into::into)
            } else {
                answer.await.map_err(Into::into)
            }
        })
    }
}

/// Whether a request is a watch (`?watch=true` or `?watch=1`).
fn is_watch(uri: &http::Uri) -> bool {
    uri.query().is_some_and(|query| {
        query
            .split('&')
            .any(|pair| pair == "watch=true" || pair == "watch=1")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watches_are_told_apart() {
        let uri = |s: &str| s.parse::<http::Uri>().unwrap_or_default();
        assert!(is_watch(&uri(
            "/api/v1/namespaces/a/pods?watch=true&resourceVersion=1"
        )));
        assert!(is_watch(&uri("/api/v1/pods?labelSelector=x&watch=1")));
        assert!(!is_watch(&uri("/api/v1/namespaces/a/pods?limit=500")));
        assert!(!is_watch(&uri("/api/v1/namespaces/a/pods/watch=true")));
        assert!(!is_watch(&uri("/api/v1/namespaces/a/pods?nowatch=true")));
    }

    /// A service that never answers, bounded, fails with the setting's name; a watch waits.
    #[tokio::test(start_paused = true)]
    async fn an_unanswered_call_fails_and_a_watch_waits() {
        let never = tower::service_fn(|_: Request<()>| {
            std::future::pending::<Result<Response<()>, std::convert::Infallible>>()
        });
        let mut service = CallTimeoutLayer(Duration::from_secs(30)).layer(never);
        let call = Request::get("/api/v1/namespaces/a/pods/p")
            .body(())
            .unwrap_or_default();
        let error = service.call(call).await.err().map(|e| e.to_string());
        assert_eq!(
            error.as_deref(),
            Some("the API server did not answer within kubernetes.api_timeout_seconds = 30 s")
        );
        let watch = Request::get("/api/v1/namespaces/a/pods?watch=true")
            .body(())
            .unwrap_or_default();
        let waited = tokio::time::timeout(Duration::from_secs(3600), service.call(watch)).await;
        assert!(waited.is_err(), "a watch was cut");
    }
}
