//! Meta commands against real memcached, and the anti-dogpile helper:
//! exactly one computation per miss, per expiry and per invalidation.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use memring::protocol::{MetaCode, MetaFlag};
use memring::{Error, MetaRequest, Origin};
use support::Memcached;

/// The cases, written once and run through both clients (`sync!` adds
/// `.await` for the async one; see tests/support).
macro_rules! cases {
    ($(#[$t:meta])* ; $($kw:tt)?) => {
        #[allow(unused_imports)]
        use super::*;

        fn client(mc: &Memcached) -> Client {
            build!(per_server!(Client::builder().servers(mc.addr().as_str()), 16)).unwrap()
        }

        $(#[$t])*
        $($kw)? fn meta_commands_behave_as_memcached_1_6_does() {
            let mc = Memcached::start();
            let c = client(&mc);
            use MetaFlag::*;
            let r = sync!(c
                .meta("m", MetaRequest::Set(b"bar", &[Ttl(60), SetFlags(7)])))
                .unwrap();
            assert_eq!(r.code, MetaCode::Hd);
            let r = sync!(c
                .meta(
                    "m",
                    MetaRequest::Get(&[
                        Value,
                        ReturnFlags,
                        ReturnTtl,
                        ReturnCas,
                        ReturnKey,
                        Opaque(b"99"),
                    ]),
                ))
                .unwrap();
            assert_eq!(r.code, MetaCode::Va);
            assert_eq!(r.value.as_deref(), Some(&b"bar"[..]));
            assert_eq!(r.flag('f'), Some("7"));
            assert_eq!(r.flag('k'), Some("m"));
            assert_eq!(r.flag('O'), Some("99"));
            let ttl: i64 = r.flag('t').unwrap().parse().unwrap();
            assert!((55..=60).contains(&ttl));
            let cas: u64 = r.flag('c').unwrap().parse().unwrap();
            // cas mismatch, then match
            assert_eq!(
                sync!(c.meta("m", MetaRequest::Set(b"x", &[CompareCas(cas + 1000)])))
                    .unwrap()
                    .code,
                MetaCode::Ex
            );
            assert_eq!(
                sync!(c.meta("m", MetaRequest::Set(b"x", &[CompareCas(cas)])))
                    .unwrap()
                    .code,
                MetaCode::Hd
            );
            // miss, quiet miss, quiet store, add mode
            assert_eq!(
                sync!(c.meta("nope", MetaRequest::Get(&[Value]))).unwrap().code,
                MetaCode::En
            );
            assert_eq!(
                sync!(c.meta("nope", MetaRequest::Get(&[Value, Quiet])))
                    .unwrap()
                    .code,
                MetaCode::En
            );
            assert_eq!(
                sync!(c.meta("q", MetaRequest::Set(b"1", &[Quiet]))).unwrap().code,
                MetaCode::Hd
            );
            assert_eq!(
                sync!(c.meta("q", MetaRequest::Set(b"2", &[Mode(b'E')])))
                    .unwrap()
                    .code,
                MetaCode::Ns
            );
            // arithmetic with autovivify, delete, not found
            let r = sync!(c
                .meta("n", MetaRequest::Arith(&[Vivify(0), Initial(13), Value])))
                .unwrap();
            assert_eq!(r.value.as_deref(), Some(&b"13"[..]));
            let r = sync!(c
                .meta("n", MetaRequest::Arith(&[Mode(b'D'), Delta(100), Value])))
                .unwrap();
            assert_eq!(r.value.as_deref(), Some(&b"0"[..]));
            assert_eq!(
                sync!(c.meta("n", MetaRequest::Delete(&[]))).unwrap().code,
                MetaCode::Hd
            );
            assert_eq!(
                sync!(c.meta("n", MetaRequest::Delete(&[]))).unwrap().code,
                MetaCode::Nf
            );
            // base64 keys reach the same item as the plain key
            let b64 = memring::protocol::encode::base64(b"foo");
            sync!(c.set("foo", "plain", Duration::from_secs(60))).unwrap();
            let r = sync!(c.meta(&b64, MetaRequest::Get(&[Value, Base64Key]))).unwrap();
            assert_eq!(r.value.as_deref(), Some(&b"plain"[..]));
            // win / lose / stale, as documented
            let a = sync!(c
                .meta("dp", MetaRequest::Get(&[Value, ReturnCas, Vivify(30)])))
                .unwrap();
            assert!(a.has('W'));
            let b = sync!(c
                .meta("dp", MetaRequest::Get(&[Value, ReturnCas, Vivify(30)])))
                .unwrap();
            assert!(b.has('Z') && !b.has('W'));
            assert!(sync!(c.invalidate("dp", Duration::from_secs(30))).unwrap());
            let s = sync!(c.meta("dp", MetaRequest::Get(&[Value]))).unwrap();
            assert!(s.has('X') && s.has('W'));
            assert!(!sync!(c.invalidate("never-set", Duration::from_secs(30))).unwrap());
        }

        $(#[$t])*
        $($kw)? fn failures_are_not_cached_and_typed_values_round_trip() {
            let mc = Memcached::start();
            let c = client(&mc);
            #[derive(Debug)]
            enum AppError {
                Failed,
                Cache(Error),
            }
            impl From<Error> for AppError {
                fn from(e: Error) -> Self {
                    AppError::Cache(e)
                }
            }
            let r: Result<u64, AppError> =
                sync!(c.get_or_set("n", Duration::from_secs(60), compute!(Err(AppError::Failed))));
            match r {
                Err(AppError::Failed) => {}
                Err(AppError::Cache(e)) => panic!("cache error {e}"),
                Ok(v) => panic!("computed {v}"),
            }
            // The failed computation's placeholder was released: the next caller
            // computes at once rather than waiting out the lease.
            let started = Instant::now();
            let r: Result<u64, AppError> = sync!(c.get_or_set("n", Duration::from_secs(60), compute!(Ok(42))));
            assert_eq!(r.unwrap(), 42);
            // Not after waiting out the lease (lease_wait is 2 s).
            assert!(started.elapsed() < Duration::from_secs(1));
            assert_eq!(sync!(c.get::<u64>("n")).unwrap(), Some(42));
            let bytes: Vec<u8> = sync!(c
                .get_or_set("b", Duration::from_secs(60), compute!({
                    Ok::<_, Error>(vec![0u8, 255, 13, 10])
                })))
                .unwrap();
            assert_eq!(bytes, vec![0u8, 255, 13, 10]);
            let again: Vec<u8> = sync!(c
                .get_or_set("b", Duration::from_secs(60), compute!(Ok::<_, Error>(vec![]))))
                .unwrap();
            assert_eq!(again, vec![0u8, 255, 13, 10]);
            let e = sync!(c
                .get_or_set("bad key", Duration::from_secs(1), compute!(Ok::<_, Error>(1u8))))
                .unwrap_err();
            assert_eq!(e.kind(), memring::ErrorKind::InvalidKey);
        }

        $(#[$t])*
        $($kw)? fn an_unreachable_cache_still_computes() {
            let c = build!(Client::builder().servers("127.0.0.1:1")).unwrap();
            let (v, origin) = sync!(c
                .get_or_set_with_origin("k", Duration::from_secs(60), compute!(Ok::<_, Error>(7u32))))
                .unwrap();
            assert_eq!((v, origin), (7, Origin::Computed));
        }

        #[cfg(feature = "serde")]
        $(#[$t])*
        $($kw)? fn serde_values_round_trip_as_json() {
            use memring::Json;
            #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq, Clone)]
            struct Report {
                year: u32,
                regions: Vec<String>,
            }
            let mc = Memcached::start();
            let c = client(&mc);
            let r = Report {
                year: 2024,
                regions: vec!["eu".into(), "us".into()],
            };
            sync!(c.set("report", Json(&r), Duration::from_secs(60))).unwrap();
            let back: Json<Report> = sync!(c.get("report")).unwrap().unwrap();
            assert_eq!(back.0, r);
            let Json(cached) = sync!(c
                .get_or_set("report2", Duration::from_secs(60), compute!({
                    Ok::<_, Error>(Json(r.clone()))
                })))
                .unwrap();
            assert_eq!(cached, r);
            sync!(c.set("notjson", "{oops", Duration::from_secs(60))).unwrap();
            let e = sync!(c.get::<Json<Report>>("notjson")).unwrap_err();
            assert_eq!(e.kind(), memring::ErrorKind::Decode);
        }
    };
}

both_clients! {
    blocking: {
    #[test]
    fn eight_threads_on_one_missing_key_compute_once_then_once_per_expiry() {
        let mc = Memcached::start();
        let c = client(&mc);
        let calls = Arc::new(AtomicUsize::new(0));
        let round = |c: &Client| {
            let barrier = Arc::new(Barrier::new(8));
            let threads: Vec<_> = (0..8)
                .map(|_| {
                    let (c, calls, barrier) = (c.clone(), calls.clone(), barrier.clone());
                    std::thread::spawn(move || {
                        barrier.wait();
                        c.get_or_set("hot", Duration::from_secs(1), || {
                            let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
                            std::thread::sleep(Duration::from_millis(100));
                            Ok::<_, Error>(format!("value-{n}"))
                        })
                        .unwrap()
                    })
                })
                .collect();
            let values: Vec<String> = threads.into_iter().map(|t| t.join().unwrap()).collect();
            assert!(values.iter().all(|v| v == &values[0]), "{values:?}");
            values[0].clone()
        };
        assert_eq!(round(&c), "value-1");
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        // Cached: no computation at all.
        assert_eq!(round(&c), "value-1");
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        // After expiry: exactly one more.
        let deadline = Instant::now() + Duration::from_secs(5);
        while c.get::<String>("hot").unwrap().is_some() {
            assert!(Instant::now() < deadline);
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(round(&c), "value-2");
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn invalidation_serves_stale_while_one_caller_recomputes() {
        let mc = Memcached::start();
        let c = client(&mc);
        let v: String = c
            .get_or_set("page", Duration::from_secs(60), || {
                Ok::<_, Error>("v1".to_string())
            })
            .unwrap();
        assert_eq!(v, "v1");
        assert!(c.invalidate("page", Duration::from_secs(30)).unwrap());
        let calls = Arc::new(AtomicUsize::new(0));
        let barrier = Arc::new(Barrier::new(8));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (c, calls, barrier) = (c.clone(), calls.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    c.get_or_set_with_origin("page", Duration::from_secs(60), || {
                        calls.fetch_add(1, Ordering::SeqCst);
                        std::thread::sleep(Duration::from_millis(200));
                        Ok::<_, Error>("v2".to_string())
                    })
                    .unwrap()
                })
            })
            .collect();
        let results: Vec<(String, Origin)> =
            threads.into_iter().map(|t| t.join().unwrap()).collect();
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        let computed: Vec<_> = results.iter().filter(|r| r.1 == Origin::Computed).collect();
        assert_eq!(computed.len(), 1);
        assert_eq!(computed[0].0, "v2");
        assert!(results
            .iter()
            .filter(|r| r.1 != Origin::Computed)
            .all(|r| r.0 == "v1" && r.1 == Origin::Stale));
        // The recomputed value is fresh now.
        let (v, origin) = c
            .get_or_set_with_origin("page", Duration::from_secs(60), || {
                Ok::<_, Error>("v3".to_string())
            })
            .unwrap();
        assert_eq!((v.as_str(), origin), ("v2", Origin::Hit));
    }
    }
    nonblocking: {
    /// Eight tasks ask for one missing key at once, three times.
    async fn round(c: &Client, calls: &Arc<AtomicUsize>) -> String {
        let barrier = Arc::new(tokio::sync::Barrier::new(8));
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let (c, calls, barrier) = (c.clone(), calls.clone(), barrier.clone());
                tokio::spawn(async move {
                    barrier.wait().await;
                    c.get_or_set("hot", Duration::from_secs(1), || async {
                        let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        Ok::<_, Error>(format!("value-{n}"))
                    })
                    .await
                    .unwrap()
                })
            })
            .collect();
        let mut values = Vec::new();
        for t in tasks {
            values.push(t.await.unwrap());
        }
        assert!(values.iter().all(|v| v == &values[0]), "{values:?}");
        values[0].clone()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn eight_tasks_on_one_missing_key_compute_once_then_once_per_expiry() {
        let mc = Memcached::start();
        let c = client(&mc);
        let calls = Arc::new(AtomicUsize::new(0));
        assert_eq!(round(&c, &calls).await, "value-1");
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(round(&c, &calls).await, "value-1");
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        let deadline = Instant::now() + Duration::from_secs(5);
        while c.get::<String>("hot").await.unwrap().is_some() {
            assert!(Instant::now() < deadline);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(round(&c, &calls).await, "value-2");
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn invalidation_serves_stale_while_one_task_recomputes() {
        let mc = Memcached::start();
        let c = client(&mc);
        let v: String = c
            .get_or_set("page", Duration::from_secs(60), || async {
                Ok::<_, Error>("v1".to_string())
            })
            .await
            .unwrap();
        assert_eq!(v, "v1");
        assert!(c.invalidate("page", Duration::from_secs(30)).await.unwrap());
        let calls = Arc::new(AtomicUsize::new(0));
        let barrier = Arc::new(tokio::sync::Barrier::new(8));
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let (c, calls, barrier) = (c.clone(), calls.clone(), barrier.clone());
                tokio::spawn(async move {
                    barrier.wait().await;
                    c.get_or_set_with_origin("page", Duration::from_secs(60), || async {
                        calls.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        Ok::<_, Error>("v2".to_string())
                    })
                    .await
                    .unwrap()
                })
            })
            .collect();
        let mut results = Vec::new();
        for t in tasks {
            results.push(t.await.unwrap());
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        let computed: Vec<_> = results.iter().filter(|r| r.1 == Origin::Computed).collect();
        assert_eq!(computed.len(), 1);
        assert_eq!(computed[0].0, "v2");
        assert!(results
            .iter()
            .filter(|r| r.1 != Origin::Computed)
            .all(|r| r.0 == "v1" && r.1 == Origin::Stale));
    }
    }
}
