//! A body wrapper that paces data frames through a [`Throttle`] (the
//! bandwidth fault) and cuts a response short after N bytes (limitData on
//! the response side). Trailers and other frames pass untouched; a data
//! frame larger than the current grant (or than what is left) is split.
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::time::Sleep;

use crate::body::BoxError;
use crate::conn::ConnCtx;
use crate::events::KILL;
use crate::throttle::Throttle;

/// After cutting a body, how long the connection may take to write out
/// what it was given before it is closed all the same. HTTP/1.1 closes as
/// soon as it flushed (see `ClientIo::poll_flush`); an HTTP/2 connection
/// with nothing left to send would otherwise never notice.
const CUT_GRACE: Duration = Duration::from_secs(1);

/// limitData on a response: the body bytes still allowed.
pub struct Truncate {
    left: u64,
    ctx: Arc<ConnCtx>,
    cut: bool,
}

impl Truncate {
    pub fn new(bytes: u64, ctx: Arc<ConnCtx>) -> Self {
        Truncate {
            left: bytes,
            ctx,
            cut: false,
        }
    }
}

pin_project_lite::pin_project! {
    pub struct Throttled<B> {
        #[pin]
        inner: B,
        throttle: Option<Throttle>,
        truncate: Option<Truncate>,
        pending: Option<Bytes>,
        sleep: Option<Pin<Box<Sleep>>>,
    }
}

impl<B> Throttled<B> {
    pub fn new(inner: B, throttle: Throttle) -> Self {
        Self::shaped(inner, Some(throttle), None)
    }

    pub fn shaped(inner: B, throttle: Option<Throttle>, truncate: Option<Truncate>) -> Self {
        Throttled {
            inner,
            throttle,
            truncate,
            pending: None,
            sleep: None,
        }
    }
}

impl<B> Body for Throttled<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        loop {
            if let Some(sleep) = this.sleep.as_mut() {
                ready!(sleep.as_mut().poll(cx));
                *this.sleep = None;
                if let Some(truncate) = this.truncate.as_ref().filter(|t| t.cut) {
                    // Dropping the connection closes it (a FIN: no reset).
                    truncate.ctx.events.raise(KILL);
                    return Poll::Pending;
                }
            }
            if let Some(pending) = this.pending.as_mut() {
                let mut want = pending.len();
                if let Some(truncate) = this.truncate.as_mut() {
                    if truncate.left == 0 {
                        // More than the limit: the client gets what went
                        // through, then the connection closes.
                        truncate.cut = true;
                        truncate.ctx.close_after_flush();
                        *this.pending = None;
                        *this.sleep = Some(Box::pin(tokio::time::sleep(CUT_GRACE)));
                        continue;
                    }
                    want = want.min(usize::try_from(truncate.left).unwrap_or(usize::MAX));
                }
                let granted = match this.throttle.as_ref().map(|t| t.try_take(want)) {
                    None => want,
                    Some(Ok(n)) => n,
                    Some(Err(wait)) => {
                        *this.sleep = Some(Box::pin(tokio::time::sleep(wait)));
                        continue;
                    }
                };
                let chunk = pending.split_to(granted);
                if pending.is_empty() {
                    *this.pending = None;
                }
                if let Some(truncate) = this.truncate.as_mut() {
                    truncate.left -= granted as u64;
                }
                return Poll::Ready(Some(Ok(Frame::data(chunk))));
            }
            match ready!(this.inner.as_mut().poll_frame(cx)) {
                None => return Poll::Ready(None),
                Some(Err(error)) => return Poll::Ready(Some(Err(error.into()))),
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) if data.is_empty() => return Poll::Ready(Some(Ok(Frame::data(data)))),
                    Ok(data) => *this.pending = Some(data),
                    Err(other) => return Poll::Ready(Some(Ok(other))),
                },
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.pending.is_none() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let inner = self.inner.size_hint();
        let extra = self.pending.as_ref().map_or(0, |p| p.len() as u64);
        let mut hint = SizeHint::new();
        hint.set_lower(inner.lower() + extra);
        if let Some(upper) = inner.upper() {
            hint.set_upper(upper + extra);
        }
        hint
    }
}
