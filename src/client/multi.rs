//! Multi-key commands, blocking driver. The core plans each round (which
//! keys go to which server, in waves); here every server's wave is sent,
//! then replies are read as they arrive, from whichever server is ready
//! (`poll`), each server against its own deadline, which starts when its
//! batch was sent: a hung server costs the others nothing.

use std::time::Instant;

use super::{feed, probe, Client, Inner};
use crate::client::pool::PooledConn;
use crate::core::multi::{Batch, Call, Entry, GetBatch, KeyBatch, Round, SetBatch};
use crate::core::replicas::Ranked;
use crate::core::reply::Reply;
use crate::error::{Error, ErrorKind, Result};
use crate::value::{CasToken, Expiry, FromValue, ToValue};

/// A batch sent to one server, whose replies are being read.
struct Flight<'e, R> {
    server: usize,
    conn: PooledConn,
    entries: &'e [Entry],
    reader: R,
}

impl<B: Batch> Call<'_, B> {
    /// The reply to `f` ended: an answer for each entry, or a failure for
    /// those not answered.
    fn land(&mut self, mut f: Flight<'_, B::Reader>, r: Result<()>) {
        match r {
            Ok(()) => self.succeeded(f.server),
            Err(e) => {
                if let Some(partial) = f.reader.salvage() {
                    self.answered(f.server, partial);
                }
                self.fail(f.server, f.entries, e, true, Instant::now());
            }
        }
    }
}

impl Client {
    /// Runs a multi-key call; a write is spread over each key's replicas
    /// in the same call (one round trip per wave).
    fn multi<B: Batch>(&self, batch: &B, n: usize) -> Vec<Result<B::Out>> {
        let view = self.view();
        let call = Ranked::new(&view.core, batch, n, Instant::now());
        let results = run_call(&view, call.call(&view));
        call.finish(&view.core, results, Instant::now())
    }
}

/// Runs a multi-key call to its end.
fn run_call<B: Batch>(view: &Inner, mut call: Call<'_, B>) -> Vec<Result<B::Out>> {
    loop {
        match call.next_round(Instant::now()) {
            Round::Probe(server) => {
                let r = probe(view, server);
                call.probed(server, r, Instant::now());
            }
            Round::Send(groups) => {
                for wave in 0..Round::wave_count(&groups) {
                    let flights = send_wave(view, &mut call, &groups, wave);
                    read_wave(&mut call, flights);
                }
            }
            Round::Done => return call.finish(),
        }
    }
}

/// Sends one wave: each server's chunk `wave`.
fn send_wave<'e, B: Batch>(
    view: &Inner,
    call: &mut Call<'_, B>,
    groups: &'e [Vec<Vec<Entry>>],
    wave: usize,
) -> Vec<Flight<'e, B::Reader>> {
    let mut flights = Vec::new();
    let wall = std::time::SystemTime::now();
    for (s, chunks) in groups.iter().enumerate() {
        let Some(entries) = chunks.get(wave) else {
            continue;
        };
        // Each server's deadline runs from its own checkout (the one
        // before it may have taken a while to connect).
        let mut conn = match view.conn(s, Instant::now()) {
            Ok(c) => c,
            Err(e) => {
                call.fail(s, entries, e, false, Instant::now());
                continue;
            }
        };
        let wire = conn.wire(entries.len());
        call.batch().encode(view, wall, conn.begin(), entries, wire);
        match conn.send() {
            Ok(()) => flights.push(Flight {
                server: s,
                reader: call.batch().reader(entries, wire),
                conn,
                entries,
            }),
            Err(e) => {
                let sent = conn.sent();
                call.fail(s, entries, e, sent, Instant::now());
            }
        }
    }
    flights
}

impl Client {
    /// Reads many keys at once. The result has one entry per key, in the
    /// order given: `Ok(Some(v))` for a hit, `Ok(None)` for a miss, or the
    /// error for that key (an invalid key, a value above `max_value_size`,
    /// or a server that failed even after failover). The other keys are
    /// unaffected by one key's error.
    ///
    /// ```no_run
    /// # let client = memring::Client::new("127.0.0.1:11211")?;
    /// let keys = ["a", "b", "c"];
    /// for (key, r) in keys.iter().zip(client.get_multi::<String>(&keys)) {
    ///     println!("{key}: {:?}", r?);
    /// }
    /// # Ok::<(), memring::Error>(())
    /// ```
    pub fn get_multi<V: FromValue>(&self, keys: &[impl AsRef<[u8]>]) -> Vec<Result<Option<V>>> {
        let batch = GetBatch {
            keys,
            with_cas: false,
        };
        let got = self.multi(&batch, keys.len());
        // One view decodes every value (its codec and limits).
        let view = self.view();
        got.into_iter()
            .map(|r| r.and_then(|f| view.value(f)))
            .collect()
    }

    /// [`get_multi`](Self::get_multi) with cas tokens (`gets`).
    pub fn gets_multi<V: FromValue>(
        &self,
        keys: &[impl AsRef<[u8]>],
    ) -> Vec<Result<Option<(V, CasToken)>>> {
        let batch = GetBatch {
            keys,
            with_cas: true,
        };
        let got = self.multi(&batch, keys.len());
        // One view decodes every value (its codec and limits).
        let view = self.view();
        got.into_iter()
            .map(|r| r.and_then(|f| view.value_cas(f)))
            .collect()
    }

    /// Stores many key/value pairs at once (`set`, pipelined per server).
    /// One result per pair, in the order given.
    #[must_use = "each pair has its own result; a failed one was not stored"]
    pub fn set_multi(
        &self,
        items: &[(impl AsRef<[u8]>, impl ToValue)],
        ttl: impl Into<Expiry>,
    ) -> Vec<Result<()>> {
        let batch = SetBatch::new(&self.view(), items, ttl.into());
        self.multi(&batch, items.len())
    }

    /// Deletes many keys at once. One result per key: `true` if it existed.
    #[must_use = "each key has its own result; a failed one may not be deleted"]
    pub fn delete_multi(&self, keys: &[impl AsRef<[u8]>]) -> Vec<Result<bool>> {
        self.multi(&KeyBatch { keys, touch: None }, keys.len())
    }

    /// Sets a new expiry on many keys at once. `true` where the key exists.
    #[must_use = "each key has its own result"]
    pub fn touch_multi(
        &self,
        keys: &[impl AsRef<[u8]>],
        ttl: impl Into<Expiry>,
    ) -> Vec<Result<bool>> {
        let batch = KeyBatch {
            keys,
            touch: Some(ttl.into()),
        };
        self.multi(&batch, keys.len())
    }
}

/// Feeds the replies already buffered to the flight's reader. True once
/// its batch is answered (the answers are recorded).
fn step<B: Batch>(call: &mut Call<'_, B>, f: &mut Flight<'_, B::Reader>) -> Result<bool> {
    match feed(&mut f.conn, &mut f.reader)? {
        Some(answers) => {
            call.answered(f.server, answers);
            Ok(true)
        }
        None => Ok(false),
    }
}

/// Reads every flight's replies as they arrive, each against its own
/// deadline. Bytes already received are read before a timeout is declared.
fn read_wave<B: Batch>(call: &mut Call<'_, B>, mut flights: Vec<Flight<'_, B::Reader>>) {
    loop {
        let mut i = 0;
        while let Some(f) = flights.get_mut(i) {
            match step(call, f) {
                Ok(false) => i += 1,
                Ok(true) => {
                    let f = flights.swap_remove(i);
                    call.land(f, Ok(()));
                }
                Err(e) => {
                    let f = flights.swap_remove(i);
                    call.land(f, Err(e));
                }
            }
        }
        if flights.is_empty() {
            return;
        }
        let view = Instant::now();
        // Data a TLS session already holds is ready without the socket.
        let held: Vec<bool> = flights.iter_mut().map(|f| f.conn.buffered()).collect();
        let wait = if held.contains(&true) {
            std::time::Duration::ZERO
        } else {
            flights
                .iter()
                .filter_map(|f| f.conn.deadline())
                .map(|d| d.saturating_duration_since(view))
                .min()
                .unwrap_or_default()
        };
        let fds: Vec<_> = flights.iter().map(|f| f.conn.raw_fd()).collect();
        let ready = match crate::sys::poll_readable(&fds, wait) {
            Ok(r) => r
                .into_iter()
                .zip(held)
                .map(|(r, h)| r || h)
                .collect::<Vec<_>>(),
            Err(e) => {
                for f in flights {
                    let err = Error::io(
                        std::io::Error::new(e.kind(), e.to_string()),
                        "waiting for replies",
                    );
                    call.land(f, Err(err));
                }
                return;
            }
        };
        let view = Instant::now();
        for i in (0..flights.len()).rev() {
            let Some(f) = flights.get_mut(i) else {
                continue;
            };
            let result = if ready.get(i) == Some(&true) {
                f.conn.read_ready()
            } else if f.conn.deadline().is_some_and(|d| d <= view) {
                Err(Error::new(ErrorKind::Timeout, "reading replies"))
            } else {
                continue;
            };
            if let Err(e) = result {
                let f = flights.swap_remove(i);
                call.land(f, Err(e));
            }
        }
    }
}
