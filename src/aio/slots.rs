//! The connections of one server: a fixed number of slots, each holding
//! one open connection (opened on first use, replaced when it closes),
//! shared by every caller in turn.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::conn::{Handle, Ticket};
use super::pipeline::{permits_for, Failed, Slot, SlotStart};
use crate::core::reply::Reply;
use crate::error::{Error, ErrorKind, Result};
use crate::server::Server;
use crate::transport::{ConnOptions, Wire};

/// The connections of one server.
#[derive(Debug)]
pub(crate) struct ServerConns {
    server: Server,
    opts: ConnOptions,
    slots: Vec<ConnSlot>,
    next: AtomicUsize,
}

#[derive(Debug, Default)]
struct ConnSlot {
    open: Mutex<Option<Arc<Handle>>>,
    /// Held while connecting, so one caller connects and the others wait.
    connecting: tokio::sync::Mutex<Option<(Instant, Error)>>,
}

impl ServerConns {
    pub fn new(server: Server, opts: ConnOptions, connections: u32) -> ServerConns {
        ServerConns {
            server,
            opts,
            slots: (0..connections.max(1))
                .map(|_| ConnSlot::default())
                .collect(),
            next: AtomicUsize::new(0),
        }
    }

    pub fn io_timeout(&self) -> Duration {
        self.opts.io_timeout
    }

    /// Queues a request and returns where its outcome will arrive. `make`
    /// encodes it for the connection it goes on (see
    /// [`Wire`](crate::transport::Wire); `tokens` opaque tokens are taken
    /// for it) and gives its reader. Fails without sending when no
    /// connection can be had.
    pub async fn submit<R>(
        &self,
        tokens: usize,
        make: impl FnOnce(Wire) -> (Vec<u8>, R),
        deadline: Instant,
    ) -> std::result::Result<Ticket<R::Out>, Failed<R::Out>>
    where
        R: Reply + Send + 'static,
        R::Out: Send + 'static,
    {
        let first = self.handle().await.map_err(Failed::unsent)?;
        let wire = first.0.wire(tokens);
        let (bytes, reader) = make(wire);
        let (tx, rx) = oneshot::channel();
        let orphan = reader.orphan();
        let mut slot: Box<dyn SlotStart> = Box::new(Slot {
            reader,
            tx: Some(tx),
            answer: None,
            start: 0,
            permits: permits_for(bytes.len()),
            deadline,
        });
        // A connection that closed under us is replaced once, by one of
        // the same protocol.
        let mut closed = None;
        let mut next = Some(first);
        for _ in 0..2 {
            let handle = match next.take() {
                Some(h) => h,
                None => self.handle().await.map_err(Failed::unsent)?,
            };
            if handle.0.is_meta() != matches!(wire, Wire::Meta(_)) {
                break;
            }
            match handle.0.submit(&bytes, slot).await {
                Ok(()) => return Ok(Ticket::new(rx, orphan)),
                Err(back) => slot = back,
            }
            closed = Some(handle);
        }
        Err(Failed::unsent(
            closed.and_then(|h| h.0.ended()).unwrap_or_else(|| {
                Error::new(
                    ErrorKind::Io,
                    "the connection closed before the request could be sent",
                )
            }),
        ))
    }

    /// An open connection, opening one if its slot has none.
    async fn handle(&self) -> Result<Arc<Handle>> {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len();
        let Some(slot) = self.slots.get(i) else {
            return Err(Error::new(ErrorKind::InvalidConfig, "no connection slot"));
        };
        if let Some(h) = slot.current() {
            return Ok(h);
        }
        let asked = Instant::now();
        let mut connecting = slot.connecting.lock().await;
        if let Some(h) = slot.current() {
            return Ok(h);
        }
        // Whoever held the lock just failed to connect: share its error
        // rather than queueing up to wait out the same timeout in turn.
        if let Some((at, e)) = connecting.as_ref() {
            if *at >= asked {
                return Err(e.duplicate());
            }
        }
        match super::conn::connect(&self.server, &self.opts).await {
            Ok(h) => {
                let h = Arc::new(h);
                *slot.open.lock().unwrap_or_else(PoisonError::into_inner) = Some(h.clone());
                *connecting = None;
                Ok(h)
            }
            Err(e) => {
                *connecting = Some((Instant::now(), e.duplicate()));
                Err(e)
            }
        }
    }
}

impl ConnSlot {
    fn current(&self) -> Option<Arc<Handle>> {
        let open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        open.as_ref().filter(|h| !h.0.is_closed()).cloned()
    }
}
