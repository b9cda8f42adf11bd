//! Defence in depth: a panic inside one session ends that session only, and
//! never silently. The driver's future is polled inside `catch_unwind`; when
//! it panics, the session's client hears `421`, its backend connection and
//! data channel are released, the panic is logged with the session's id (the
//! caller's span) and counted, and the process goes on serving everyone else.

use std::any::Any;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::task::{Context, Poll};

/// A future that turns a panic in `F` into an `Err` with the panic's payload.
///
/// Unwind safety: after a panic the future is dropped and never polled again;
/// the driver it borrowed is only used to say goodbye and release what it
/// holds (each step of which tolerates a half-finished state).
pub struct CatchUnwind<F>(Pin<Box<F>>);

impl<F: Future> CatchUnwind<F> {
    pub fn new(future: F) -> Self {
        CatchUnwind(Box::pin(future))
    }
}

impl<F: Future> Future for CatchUnwind<F> {
    type Output = Result<F::Output, Box<dyn Any + Send>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = self.0.as_mut();
        match catch_unwind(AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(v)) => Poll::Ready(Ok(v)),
            Err(payload) => Poll::Ready(Err(payload)),
        }
    }
}

/// The panic's message, bounded, for the log.
pub fn message(payload: &(dyn Any + Send)) -> String {
    let text = if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(no message)".to_string()
    };
    crate::text::for_log(text.as_bytes(), 300)
}

/// A fault injected on purpose, so tests can prove the guard above: in debug
/// builds only, `FTPGATE_TEST_PANIC_VERB=XPNC` makes a command with that verb
/// panic inside the session driver. Release builds have no such hook.
#[cfg(debug_assertions)]
pub fn injected_fault(verb: &str) {
    if std::env::var("FTPGATE_TEST_PANIC_VERB").is_ok_and(|v| !v.is_empty() && v.eq_ignore_ascii_case(verb)) {
        panic!("fault injected for a test at {verb}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panic_becomes_an_error_with_its_message() {
        let r = CatchUnwind::new(async { panic!("boom {}", 7) }).await;
        let Err(payload) = r else { panic!("the panic is caught") };
        assert_eq!(message(payload.as_ref()), "boom 7");
        let ok = CatchUnwind::new(async { 5 }).await;
        assert_eq!(ok.ok(), Some(5));
    }

    #[tokio::test]
    async fn a_pending_future_stays_pending_until_it_panics() {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(CatchUnwind::new(async move {
            let _ = rx.await;
            panic!("after the wait");
        }));
        tokio::task::yield_now().await;
        assert!(!task.is_finished());
        tx.send(()).expect("still waiting");
        let r = task.await.expect("the task itself does not panic");
        let Err(payload) = r else { panic!("caught") };
        assert_eq!(message(payload.as_ref()), "after the wait");
    }
}
