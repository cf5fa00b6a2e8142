//! A body wrapper that paces data frames through a [`Throttle`] (the
//! bandwidth fault). Trailers and other frames pass untouched; a data frame
//! larger than the current grant is split.
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::time::Sleep;

use crate::body::BoxError;
use crate::throttle::Throttle;

pin_project_lite::pin_project! {
    pub struct Throttled<B> {
        #[pin]
        inner: B,
        throttle: Throttle,
        pending: Option<Bytes>,
        sleep: Option<Pin<Box<Sleep>>>,
    }
}

impl<B> Throttled<B> {
    pub fn new(inner: B, throttle: Throttle) -> Self {
        Throttled {
            inner,
            throttle,
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
            }
            if let Some(pending) = this.pending.as_mut() {
                match this.throttle.try_take(pending.len()) {
                    Ok(n) => {
                        let chunk = pending.split_to(n);
                        if pending.is_empty() {
                            *this.pending = None;
                        }
                        return Poll::Ready(Some(Ok(Frame::data(chunk))));
                    }
                    Err(wait) => {
                        *this.sleep = Some(Box::pin(tokio::time::sleep(wait)));
                        continue;
                    }
                }
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
