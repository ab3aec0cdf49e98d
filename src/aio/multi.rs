//! Multi-key commands of the async client. The core plans each round; here
//! every server's wave is queued on its connection before any outcome is
//! awaited, so servers work in parallel, each request against its own
//! deadline: a hung server costs the others nothing.

use std::time::Instant;

use super::{Client, Inner};
use crate::core::multi::{Batch, Call, GetBatch, KeyBatch, Round, SetBatch};
use crate::core::replicas::Ranked;
use crate::error::Result;
use crate::value::{CasToken, Expiry, FromValue, ToValue};

impl Client {
    /// Runs a multi-key call; a write is spread over each key's replicas
    /// in the same call (one round trip per wave).
    async fn multi<B>(&self, batch: &B, n: usize) -> Vec<Result<B::Out>>
    where
        B: Batch + Sync,
        B::Out: Send + 'static,
    {
        let view = self.view();
        let call = Ranked::new(&view.core, batch, n, Instant::now());
        let results = run_call(&view, &call, call.call(&view)).await;
        call.finish(&view.core, results, Instant::now())
    }
}

/// Runs a multi-key call to its end.
async fn run_call<B>(view: &Inner, batch: &B, mut call: Call<'_, B>) -> Vec<Result<B::Out>>
where
    B: Batch + Sync,
    B::Out: Send + 'static,
{
    let core: &crate::core::Core = view;
    loop {
        match call.next_round(Instant::now()) {
            Round::Probe(server) => {
                let r = view.probe(server).await;
                call.probed(server, r, Instant::now());
            }
            Round::Send(groups) => {
                for wave in 0..Round::wave_count(&groups) {
                    let mut queued = Vec::new();
                    for (s, chunks) in groups.iter().enumerate() {
                        let Some(entries) = chunks.get(wave) else {
                            continue;
                        };
                        let wall = std::time::SystemTime::now();
                        let make = |wire| {
                            let mut buf = Vec::new();
                            batch.encode(core, wall, &mut buf, entries, wire);
                            (buf, batch.reader(entries, wire))
                        };
                        let q = view.submit(s, entries.len(), make).await;
                        queued.push((s, entries, q));
                    }
                    for (s, entries, q) in queued {
                        let r = match q {
                            Ok(ticket) => ticket.outcome().await,
                            Err(f) => Err(f),
                        };
                        match r {
                            Ok(answers) => {
                                call.answered(s, answers);
                                call.succeeded(s);
                            }
                            Err(f) => {
                                if let Some(partial) = f.partial {
                                    call.answered(s, partial);
                                }
                                call.fail(s, entries, f.error, f.sent, Instant::now());
                            }
                        }
                    }
                }
            }
            Round::Done => return call.finish(),
        }
    }
}

impl Client {
    /// Reads many keys at once, as [`crate::Client::get_multi`] does: one
    /// result per key, in the order given.
    pub async fn get_multi<V: FromValue>(
        &self,
        keys: &[impl AsRef<[u8]> + Sync],
    ) -> Vec<Result<Option<V>>> {
        let batch = GetBatch {
            keys,
            with_cas: false,
        };
        let got = self.multi(&batch, keys.len()).await;
        // One view decodes every value (its codec and limits).
        let view = self.view();
        got.into_iter()
            .map(|r| r.and_then(|f| view.value(f)))
            .collect()
    }

    /// [`get_multi`](Self::get_multi) with cas tokens (`gets`).
    pub async fn gets_multi<V: FromValue>(
        &self,
        keys: &[impl AsRef<[u8]> + Sync],
    ) -> Vec<Result<Option<(V, CasToken)>>> {
        let batch = GetBatch {
            keys,
            with_cas: true,
        };
        let got = self.multi(&batch, keys.len()).await;
        // One view decodes every value (its codec and limits).
        let view = self.view();
        got.into_iter()
            .map(|r| r.and_then(|f| view.value_cas(f)))
            .collect()
    }

    /// Stores many key/value pairs at once; one result per pair.
    #[must_use = "each pair has its own result; a failed one was not stored"]
    pub async fn set_multi<K, V>(&self, items: &[(K, V)], ttl: impl Into<Expiry>) -> Vec<Result<()>>
    where
        K: AsRef<[u8]> + Sync,
        V: ToValue + Sync,
    {
        let batch = SetBatch::new(&self.view(), items, ttl.into());
        self.multi(&batch, items.len()).await
    }

    /// Deletes many keys at once; `true` where the key existed.
    #[must_use = "each key has its own result; a failed one may not be deleted"]
    pub async fn delete_multi(&self, keys: &[impl AsRef<[u8]> + Sync]) -> Vec<Result<bool>> {
        self.multi(&KeyBatch { keys, touch: None }, keys.len())
            .await
    }

    /// Sets a new expiry on many keys at once; `true` where the key exists.
    #[must_use = "each key has its own result"]
    pub async fn touch_multi(
        &self,
        keys: &[impl AsRef<[u8]> + Sync],
        ttl: impl Into<Expiry>,
    ) -> Vec<Result<bool>> {
        let batch = KeyBatch {
            keys,
            touch: Some(ttl.into()),
        };
        self.multi(&batch, keys.len()).await
    }
}
