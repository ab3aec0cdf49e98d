//! memring against a raw socket loop (the floor) and the `memcache` crate,
//! same workloads, same servers, one run; and the async client against the
//! blocking one on 8 threads and the async peers (`memcache`'s tokio
//! client, `async-memcached`). Prints a table and writes
//! `target/memring-bench/compare.json` with rates and ratios.
//!
//! `cargo bench --features tokio --bench compare` (about 3 minutes;
//! `--all-features` adds `codec_get_10k`, which needs `python` and `lz4`,
//! and `tls_seq_get` / `tls_get_multi_100x4`, which need `tls`);
//! `MEMRING_BENCH_QUICK=1 cargo bench --features tokio --bench compare` (about a
//! minute); `MEMRING_BENCH_ASYNC_ONLY=1` runs only the async workloads,
//! `MEMRING_BENCH_ONLY=seq,multi` only the groups named (`seq`, `multi`,
//! `threads`, `replicated`, `codec`, `tls`, `async`).
//! The servers are real memcached processes started on free ports.
//!
//! Beside the rates, each contender's own cost per unit of work: CPU time
//! (its thread's for the one-at-a-time workloads, the process's for the
//! threaded and async ones) and system calls (counted on the kernel's
//! `raw_syscalls:sys_enter` tracepoint when tracefs is mounted and the
//! bench may trace: root, or `perf_event_paranoid` -1). On a shared or
//! small machine the rates of one-request-at-a-time loops follow the
//! scheduler; the CPU time and system calls per request do not. Contenders
//! run in slices whose order rotates every round. `memring` speaks the
//! classic protocol, `memring_meta` (and `memring_async`) meta.

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use memring::{Distribution, Protocol, Ring, Server};
use serde_json::json;
use support::Memcached;

const VALUE_LEN: usize = 100;
const KEYSPACE: usize = 1000;

fn key(i: usize) -> String {
    format!("bench:key:{i:06}")
}

/// The floor: one buffered socket per server, one write and one read per
/// request, no validation, no routing at request time.
struct Raw {
    s: TcpStream,
    out: Vec<u8>,
    buf: Vec<u8>,
}

impl Raw {
    fn connect(addr: &str) -> Raw {
        let s = TcpStream::connect(addr).unwrap();
        s.set_nodelay(true).unwrap();
        Raw {
            s,
            out: Vec::with_capacity(1 << 16),
            buf: vec![0; 1 << 20],
        }
    }

    fn push_set(&mut self, key: &str, value: &[u8]) {
        self.out
            .extend_from_slice(format!("set {key} 0 0 {}\r\n", value.len()).as_bytes());
        self.out.extend_from_slice(value);
        self.out.extend_from_slice(b"\r\n");
    }

    fn flush(&mut self) {
        self.s.write_all(&self.out).unwrap();
        self.out.clear();
    }

    /// Reads until the reply ends with `tail` and is at least `min` bytes.
    fn read_until(&mut self, tail: &[u8], min: usize) -> usize {
        let mut n = 0;
        loop {
            if n >= self.buf.len() {
                self.buf.resize(n * 2, 0);
            }
            let r = self.s.read(&mut self.buf[n..]).unwrap();
            assert!(r > 0, "server closed");
            n += r;
            if n >= min && self.buf[..n].ends_with(tail) {
                return n;
            }
        }
    }

    fn set(&mut self, key: &str, value: &[u8]) {
        self.push_set(key, value);
        self.flush();
        self.read_until(b"STORED\r\n", 8);
    }

    fn get(&mut self, key: &str) -> bool {
        self.out.extend_from_slice(b"get ");
        self.out.extend_from_slice(key.as_bytes());
        self.out.extend_from_slice(b"\r\n");
        self.flush();
        self.read_until(b"END\r\n", 5) > 5
    }
}

/// One contender's loop body: does some work, returns how many units.
type Op<'a> = Box<dyn FnMut() -> usize + 'a>;

/// What the client itself costs, counted by the kernel: CPU time (user and
/// system) and system calls, for the calling thread (workloads that run
/// one request at a time on it) or the whole process (threaded and async
/// workloads, whose work runs on other threads too).
mod cost {
    use std::time::Duration;

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Scope {
        Thread,
        Process,
    }

    /// CPU time used so far by `scope`.
    pub fn cpu(scope: Scope) -> Duration {
        let clock = match scope {
            Scope::Thread => libc::CLOCK_THREAD_CPUTIME_ID,
            Scope::Process => libc::CLOCK_PROCESS_CPUTIME_ID,
        };
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a valid timespec to write into.
        unsafe { libc::clock_gettime(clock, &mut ts) };
        Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
    }

    /// `struct perf_event_attr` as far as `PERF_ATTR_SIZE_VER5` (112
    /// bytes): type, size, config, then sample_period, sample_type,
    /// read_format, the flag bits, and the rest, zero.
    #[repr(C)]
    struct Attr {
        kind: u32,
        size: u32,
        config: u64,
        rest: [u64; 12],
    }

    /// The id of the `raw_syscalls:sys_enter` tracepoint, where tracefs is
    /// mounted.
    fn sys_enter() -> Option<u64> {
        ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"]
            .iter()
            .find_map(|root| {
                std::fs::read_to_string(format!("{root}/events/raw_syscalls/sys_enter/id")).ok()
            })
            .and_then(|id| id.trim().parse().ok())
    }

    /// Counts the system calls entered by a set of threads (and the threads
    /// they start from now on, once those end): one perf counter per
    /// thread on the `sys_enter` tracepoint. Needs tracefs
    /// (`mount -t tracefs nodev /sys/kernel/tracing`) and the right to
    /// trace (root, or `perf_event_paranoid` at -1).
    pub struct Syscalls {
        fds: Vec<i32>,
    }

    impl Syscalls {
        pub fn new(scope: Scope) -> Option<Syscalls> {
            let id = sys_enter()?;
            let tids: Vec<i32> = match scope {
                // The calling thread.
                Scope::Thread => vec![0],
                Scope::Process => std::fs::read_dir("/proc/self/task")
                    .ok()?
                    .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                    .collect(),
            };
            let mut fds = Vec::new();
            for tid in tids {
                let attr = Attr {
                    kind: 2, // PERF_TYPE_TRACEPOINT
                    size: std::mem::size_of::<Attr>() as u32,
                    config: id,
                    // rest[3]: the flag bits; bit 1 is `inherit`.
                    rest: [0, 0, 0, 1 << 1, 0, 0, 0, 0, 0, 0, 0, 0],
                };
                // SAFETY: a perf_event_open(2) call with a valid attr.
                let fd = unsafe {
                    libc::syscall(
                        libc::SYS_perf_event_open,
                        &attr as *const Attr,
                        tid,
                        -1i32,
                        -1i32,
                        0u64,
                    )
                };
                if fd >= 0 {
                    fds.push(fd as i32);
                } else if scope == Scope::Thread {
                    return None;
                }
            }
            (!fds.is_empty()).then_some(Syscalls { fds })
        }

        /// System calls counted so far.
        pub fn count(&self) -> u64 {
            self.fds
                .iter()
                .map(|&fd| {
                    let mut n = 0u64;
                    // SAFETY: reads 8 bytes into `n` from a perf counter.
                    unsafe { libc::read(fd, (&mut n as *mut u64).cast(), 8) };
                    n
                })
                .sum()
        }
    }

    impl Drop for Syscalls {
        fn drop(&mut self) {
            for &fd in &self.fds {
                // SAFETY: closes a descriptor this value opened.
                unsafe { libc::close(fd) };
            }
        }
    }

    /// CPU time and system calls of `scope` at one moment.
    pub struct Meter {
        scope: Scope,
        syscalls: Option<Syscalls>,
    }

    /// What a stretch of work cost.
    #[derive(Debug, Default, Clone, Copy)]
    pub struct Spent {
        pub cpu: Duration,
        pub syscalls: Option<u64>,
    }

    impl Meter {
        pub fn new(scope: Scope) -> Meter {
            Meter {
                scope,
                syscalls: Syscalls::new(scope),
            }
        }

        /// Runs `f` and returns its result and what it cost.
        pub fn measure<T>(&self, f: impl FnOnce() -> T) -> (T, Spent) {
            let (c0, s0) = (cpu(self.scope), self.syscalls.as_ref().map(Syscalls::count));
            let out = f();
            let (c1, s1) = (cpu(self.scope), self.syscalls.as_ref().map(Syscalls::count));
            let syscalls = match (s0, s1) {
                (Some(a), Some(b)) => Some(b.saturating_sub(a)),
                _ => None,
            };
            (
                out,
                Spent {
                    cpu: c1.saturating_sub(c0),
                    syscalls,
                },
            )
        }
    }
}

/// One contender's result: units per second, and per unit the client's
/// CPU time (µs) and system calls (when they can be counted).
#[derive(Debug, Clone, Copy)]
struct Raced {
    name: &'static str,
    rate: f64,
    cpu_us: f64,
    syscalls: Option<f64>,
}

/// What every slice of one contender added up to.
#[derive(Default)]
struct Tally {
    units: usize,
    secs: f64,
    cpu: Duration,
    syscalls: Option<u64>,
}

impl Tally {
    fn add(&mut self, units: usize, secs: f64, spent: cost::Spent) {
        self.units += units;
        self.secs += secs;
        self.cpu += spent.cpu;
        self.syscalls = match (self.syscalls, spent.syscalls) {
            (None, s) if self.units == units => s,
            (Some(a), Some(b)) => Some(a + b),
            _ => None,
        };
    }

    fn raced(&self, name: &'static str) -> Raced {
        let per = |x: f64| x / self.units.max(1) as f64;
        Raced {
            name,
            rate: self.units as f64 / self.secs.max(1e-9),
            cpu_us: per(self.cpu.as_secs_f64() * 1e6),
            syscalls: self.syscalls.map(|s| per(s as f64)),
        }
    }
}

/// The order contenders run in during `round`: rotated every round, so
/// that none always runs first or after the same one.
fn rotation(n: usize, round: usize) -> impl Iterator<Item = usize> {
    (0..n).map(move |i| (i + round) % n.max(1))
}

/// Runs every contender for `dur` in total, interleaved in short slices
/// (so that drift in the machine's speed hits all of them alike) in an
/// order that rotates every round, after a warm-up slice each. Each runs on
/// this thread: its CPU time and system calls are this thread's.
fn race(dur: Duration, mut contenders: Vec<(&'static str, Op<'_>)>) -> Vec<Raced> {
    let slices = (dur.as_millis() / 50).max(4) as usize;
    let slice = dur / slices as u32;
    for (_, op) in contenders.iter_mut() {
        let t = Instant::now();
        while t.elapsed() < slice {
            op();
        }
    }
    let meter = cost::Meter::new(cost::Scope::Thread);
    let mut tallies: Vec<Tally> = contenders.iter().map(|_| Tally::default()).collect();
    for round in 0..slices {
        for i in rotation(contenders.len(), round) {
            let op = &mut contenders[i].1;
            let t = Instant::now();
            let (units, spent) = meter.measure(|| {
                let mut units = 0;
                while t.elapsed() < slice {
                    units += op();
                }
                units
            });
            tallies[i].add(units, t.elapsed().as_secs_f64(), spent);
        }
    }
    contenders
        .iter()
        .zip(&tallies)
        .map(|((name, _), t)| t.raced(name))
        .collect()
}

/// Makes one thread's loop body (given the thread number).
type ThreadOp<'a> = Box<dyn Fn(usize) -> Box<dyn FnMut(usize) -> usize + Send + 'a> + Sync + 'a>;

/// Like [`race`], with `threads` threads per contender in each slice.
fn race_threads(
    dur: Duration,
    threads: usize,
    contenders: Vec<(&'static str, ThreadOp<'_>)>,
) -> Vec<Raced> {
    let slices = contenders
        .into_iter()
        .map(|(name, make)| (name, threads_slice(threads, make)))
        .collect();
    race_slices(dur, slices)
}

/// The `memcache` crate's loops, shared by its binary and ASCII clients.
fn mc_set<'a>(c: &'a memcache::Client, keys: &'a [String], value: &'a [u8]) -> Op<'a> {
    let mut i = 0;
    Box::new(move || {
        i += 1;
        c.set(&keys[i % KEYSPACE], value, 3600).unwrap();
        1
    })
}

fn mc_get<'a>(c: &'a memcache::Client, keys: &'a [String]) -> Op<'a> {
    let mut i = 0;
    Box::new(move || {
        i += 1;
        assert!(c.get::<Vec<u8>>(&keys[i % KEYSPACE]).unwrap().is_some());
        1
    })
}

fn mc_multi<'a>(c: &'a memcache::Client, batches: &'a [Vec<&'a str>]) -> Op<'a> {
    let mut i = 0;
    Box::new(move || {
        i += 1;
        let got: std::collections::HashMap<String, Vec<u8>> =
            c.gets(&batches[i % batches.len()]).unwrap();
        assert_eq!(got.len(), 100);
        100
    })
}

fn mc_mixed<'a>(
    c: &'a memcache::Client,
    key_for: impl Fn(usize) -> &'a str + Copy + Send + Sync + 'a,
    value: &'a [u8],
) -> ThreadOp<'a> {
    Box::new(move |_t| {
        Box::new(move |i| {
            if i % 10 == 0 {
                c.set(key_for(i), value, 3600).unwrap();
            } else {
                c.get::<Vec<u8>>(key_for(i)).unwrap();
            }
            1
        })
    })
}

struct Workload {
    name: &'static str,
    unit: &'static str,
    rates: BTreeMap<&'static str, f64>,
    /// The client's CPU time per unit, in microseconds.
    cpu_us: BTreeMap<&'static str, f64>,
    /// The client's system calls per unit, where they could be counted.
    syscalls: BTreeMap<&'static str, f64>,
    /// The ratios reported, as (numerator, denominator) contenders.
    pairs: Vec<(&'static str, &'static str)>,
    /// Bytes each contender's value takes on the wire, where that differs.
    wire: BTreeMap<&'static str, usize>,
    /// Microseconds each contender spends decoding one value, without I/O.
    decode_us: BTreeMap<&'static str, f64>,
}

impl Workload {
    /// A workload's results, reported with the ratios `pairs`.
    fn new(
        name: &'static str,
        unit: &'static str,
        raced: Vec<Raced>,
        pairs: Vec<(&'static str, &'static str)>,
    ) -> Workload {
        let w = Workload {
            name,
            unit,
            rates: raced.iter().map(|r| (r.name, r.rate)).collect(),
            cpu_us: raced.iter().map(|r| (r.name, r.cpu_us)).collect(),
            syscalls: raced
                .iter()
                .filter_map(|r| Some((r.name, r.syscalls?)))
                .collect(),
            pairs,
            wire: BTreeMap::new(),
            decode_us: BTreeMap::new(),
        };
        eprintln!(
            "{:<20} {:?}\n{:<20} cpu µs/op {:?} syscalls/op {:?}",
            w.name, w.rates, "", w.cpu_us, w.syscalls
        );
        w
    }
}

/// The ratios of `lead` to each of `against`.
fn vs(lead: &'static str, against: &[&'static str]) -> Vec<(&'static str, &'static str)> {
    against.iter().map(|&a| (lead, a)).collect()
}

/// What one slice did: units of work, in how many seconds.
struct Done {
    units: usize,
    secs: f64,
}

/// One slice of a threaded or async workload: runs for the given time.
type Slice<'a> = Box<dyn FnMut(Duration) -> Done + 'a>;

/// Runs every contender in interleaved slices, in an order that rotates
/// every round, after a warm-up slice each. Their work runs on threads of
/// their own or the runtime's: CPU time and system calls are the
/// process's.
fn race_slices(dur: Duration, mut contenders: Vec<(&'static str, Slice<'_>)>) -> Vec<Raced> {
    let slices = (dur.as_millis() / 200).max(3) as usize;
    let slice = dur / slices as u32;
    for (_, run) in contenders.iter_mut() {
        run(slice);
    }
    let meter = cost::Meter::new(cost::Scope::Process);
    let mut tallies: Vec<Tally> = contenders.iter().map(|_| Tally::default()).collect();
    for round in 0..slices {
        for i in rotation(contenders.len(), round) {
            let run = &mut contenders[i].1;
            let (done, spent) = meter.measure(|| run(slice));
            tallies[i].add(done.units, done.secs, spent);
        }
    }
    contenders
        .iter()
        .zip(&tallies)
        .map(|((name, _), t)| t.raced(name))
        .collect()
}

/// `tasks` tokio tasks, each looping `op(task, n)` until the slice ends.
fn tasks_slice<F, Fut>(rt: &tokio::runtime::Runtime, tasks: usize, op: F) -> Slice<'_>
where
    F: Fn(usize, usize) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    Box::new(move |slice| {
        rt.block_on(async {
            let started = Instant::now();
            let end = started + slice;
            let handles: Vec<_> = (0..tasks)
                .map(|t| {
                    let op = op.clone();
                    tokio::spawn(async move {
                        let mut n = t * 7919;
                        let mut done = 0usize;
                        while Instant::now() < end {
                            n += 1;
                            op(t, n).await;
                            done += 1;
                        }
                        done
                    })
                })
                .collect();
            let mut total = 0;
            for h in handles {
                total += h.await.unwrap();
            }
            Done {
                units: total,
                secs: started.elapsed().as_secs_f64(),
            }
        })
    })
}

/// `threads` threads, each looping the op `make` gives it (units done
/// per call), started together.
fn threads_slice(threads: usize, make: ThreadOp<'_>) -> Slice<'_> {
    Box::new(move |slice| {
        let barrier = std::sync::Barrier::new(threads + 1);
        std::thread::scope(|scope| {
            let handles: Vec<_> = (0..threads)
                .map(|t| {
                    let (make, barrier) = (&make, &barrier);
                    scope.spawn(move || {
                        let mut op = make(t);
                        let mut n = t * 7919;
                        barrier.wait();
                        let started = Instant::now();
                        let mut done = 0;
                        while started.elapsed() < slice {
                            n += 1;
                            done += op(n);
                        }
                        done
                    })
                })
                .collect();
            barrier.wait();
            let started = Instant::now();
            let units = handles.into_iter().map(|h| h.join().unwrap()).sum();
            Done {
                units,
                secs: started.elapsed().as_secs_f64(),
            }
        })
    })
}

fn main() {
    let quick = std::env::var("MEMRING_BENCH_QUICK").is_ok_and(|v| v != "0");
    let dur = if quick {
        Duration::from_millis(600)
    } else {
        Duration::from_secs(3)
    };
    let servers: Vec<Memcached> = (0..4)
        .map(|_| Memcached::start_with(&["-t", "2"]))
        .collect();
    let addrs: Vec<String> = servers.iter().map(Memcached::addr).collect();
    let one = addrs[0].clone();
    let value = vec![b'x'; VALUE_LEN];

    // `memring` speaks classic, `memring_meta` meta.
    let mr = |servers: &[String], protocol| {
        memring::Client::builder()
            .servers(servers)
            .protocol(protocol)
            .build()
            .unwrap()
    };
    let mr_one = mr(&addrs[..1], Protocol::Classic);
    let mr_four = mr(&addrs, Protocol::Classic);
    let mrm_one = mr(&addrs[..1], Protocol::Meta);
    let mrm_four = mr(&addrs, Protocol::Meta);
    let url = |a: &str, ascii: bool| {
        format!(
            "memcache://{a}{}",
            if ascii { "?protocol=ascii" } else { "" }
        )
    };
    let mc_one = memcache::Client::connect(url(&one, false)).unwrap();
    let mca_one = memcache::Client::connect(url(&one, true)).unwrap();
    let mc_four =
        memcache::Client::connect(addrs.iter().map(|a| url(a, false)).collect::<Vec<_>>()).unwrap();
    let mca_four =
        memcache::Client::connect(addrs.iter().map(|a| url(a, true)).collect::<Vec<_>>()).unwrap();

    // Populate the keyspace everywhere.
    let items: Vec<(String, &[u8])> = (0..KEYSPACE).map(|i| (key(i), value.as_slice())).collect();
    let _ = mr_one.set_multi(&items, Duration::from_secs(3600));
    let _ = mr_four.set_multi(&items, Duration::from_secs(3600));
    for (k, _) in &items {
        mc_four.set(k, value.as_slice(), 3600).unwrap();
    }
    let keys: Vec<String> = (0..KEYSPACE).map(key).collect();
    let ttl = Duration::from_secs(3600);
    let mut results: Vec<Workload> = Vec::new();
    let mut add = |name, unit, raced: Vec<Raced>| {
        let mut pairs = vs("memring", &["raw", "memcache", "memcache_ascii"]);
        pairs.extend(vs("memring_meta", &["raw", "memring"]));
        results.push(Workload::new(name, unit, raced, pairs));
    };

    // MEMRING_BENCH_ASYNC_ONLY=1 runs the async workloads alone;
    // MEMRING_BENCH_ONLY=seq,multi runs the groups named (seq, multi,
    // threads, replicated, codec, tls, async).
    let async_only = std::env::var("MEMRING_BENCH_ASYNC_ONLY").is_ok_and(|v| v != "0");
    let only = std::env::var("MEMRING_BENCH_ONLY").ok();
    let want = |group: &str| {
        only.as_deref()
            .is_none_or(|o| o.split(',').any(|g| g == group))
    };
    if !async_only {
        // seq_set / seq_get: one client, one server, one request at a time.
        if want("seq") {
            let mut raw = Raw::connect(&one);
            let (mut a, mut b, mut m) = (0usize, 0usize, 0usize);
            let rates = race(
                dur,
                vec![
                    (
                        "raw",
                        Box::new(|| {
                            a += 1;
                            raw.set(&keys[a % KEYSPACE], &value);
                            1
                        }),
                    ),
                    (
                        "memring",
                        Box::new(|| {
                            b += 1;
                            mr_one
                                .set(&keys[b % KEYSPACE], value.as_slice(), ttl)
                                .unwrap();
                            1
                        }),
                    ),
                    (
                        "memring_meta",
                        Box::new(|| {
                            m += 1;
                            mrm_one
                                .set(&keys[m % KEYSPACE], value.as_slice(), ttl)
                                .unwrap();
                            1
                        }),
                    ),
                    ("memcache", mc_set(&mc_one, &keys, &value)),
                    ("memcache_ascii", mc_set(&mca_one, &keys, &value)),
                ],
            );
            add("seq_set", "ops/s", rates);

            let rates = race(
                dur,
                vec![
                    (
                        "raw",
                        Box::new(|| {
                            a += 1;
                            assert!(raw.get(&keys[a % KEYSPACE]));
                            1
                        }),
                    ),
                    ("memring", mr_get(&mr_one, &keys)),
                    ("memring_meta", mr_get(&mrm_one, &keys)),
                    ("memcache", mc_get(&mc_one, &keys)),
                    ("memcache_ascii", mc_get(&mca_one, &keys)),
                ],
            );
            add("seq_get", "ops/s", rates);
        }

        // get_multi_100x4 and set_multi_1000x4: keys spread over 4 servers.
        if want("multi") {
            let ring = Ring::new(
                Distribution::Ketama,
                &addrs
                    .iter()
                    .map(|a| a.parse::<Server>().unwrap())
                    .collect::<Vec<_>>(),
            );
            let mut raws: Vec<Raw> = addrs.iter().map(|a| Raw::connect(a)).collect();
            let batches_100: Vec<Vec<&str>> = (0..KEYSPACE / 100)
                .map(|b| {
                    keys[b * 100..b * 100 + 100]
                        .iter()
                        .map(String::as_str)
                        .collect()
                })
                .collect();
            // The floor groups keys by server before the clock starts.
            let grouped = |batch: &[&str]| {
                let mut g: Vec<Vec<String>> = vec![Vec::new(); 4];
                for k in batch {
                    g[ring.primary(k.as_bytes()).unwrap()].push(k.to_string());
                }
                g
            };
            let raw_batches: Vec<Vec<Vec<String>>> =
                batches_100.iter().map(|b| grouped(b)).collect();
            let (mut a, mut b, mut m) = (0usize, 0usize, 0usize);
            let rates = race(
                dur,
                vec![
                    (
                        "raw",
                        Box::new(|| {
                            a += 1;
                            let g = &raw_batches[a % raw_batches.len()];
                            for (s, ks) in g.iter().enumerate() {
                                if !ks.is_empty() {
                                    raws[s].out.extend_from_slice(
                                        format!("get {}\r\n", ks.join(" ")).as_bytes(),
                                    );
                                    raws[s].flush();
                                }
                            }
                            for (s, ks) in g.iter().enumerate() {
                                if !ks.is_empty() {
                                    raws[s].read_until(b"END\r\n", ks.len() * VALUE_LEN);
                                }
                            }
                            100
                        }),
                    ),
                    (
                        "memring",
                        Box::new(|| {
                            b += 1;
                            let got =
                                mr_four.get_multi::<Vec<u8>>(&batches_100[b % batches_100.len()]);
                            assert!(got.iter().all(|g| matches!(g, Ok(Some(_)))));
                            100
                        }),
                    ),
                    (
                        "memring_meta",
                        Box::new(|| {
                            m += 1;
                            let got =
                                mrm_four.get_multi::<Vec<u8>>(&batches_100[m % batches_100.len()]);
                            assert!(got.iter().all(|g| matches!(g, Ok(Some(_)))));
                            100
                        }),
                    ),
                    ("memcache", mc_multi(&mc_four, &batches_100)),
                    ("memcache_ascii", mc_multi(&mca_four, &batches_100)),
                ],
            );
            add("get_multi_100x4", "keys/s", rates);

            let all: Vec<&str> = keys.iter().map(String::as_str).collect();
            let raw_all = grouped(&all);
            // The memcache crate has no multi-set; it is left out here.
            let rates = race(
                dur,
                vec![
                    (
                        "raw",
                        Box::new(|| {
                            for (s, ks) in raw_all.iter().enumerate() {
                                for k in ks {
                                    raws[s].push_set(k, &value);
                                }
                                raws[s].flush();
                            }
                            for (s, ks) in raw_all.iter().enumerate() {
                                raws[s].read_until(b"STORED\r\n", ks.len() * 8);
                            }
                            KEYSPACE
                        }),
                    ),
                    (
                        "memring",
                        Box::new(|| {
                            let r = mr_four.set_multi(&items, ttl);
                            assert!(r.iter().all(Result::is_ok));
                            KEYSPACE
                        }),
                    ),
                    (
                        "memring_meta",
                        Box::new(|| {
                            let r = mrm_four.set_multi(&items, ttl);
                            assert!(r.iter().all(Result::is_ok));
                            KEYSPACE
                        }),
                    ),
                ],
            );
            add("set_multi_1000x4", "keys/s", rates);
        }

        // threads1_mixed / threads8_mixed: 90% get, 10% set, one shared client.
        for threads in [1usize, 8].into_iter().filter(|_| want("threads")) {
            let name = if threads == 1 {
                "threads1_mixed"
            } else {
                "threads8_mixed"
            };
            let (keys, value) = (&keys, &value);
            let key_for = move |i: usize| keys[(i * 31) % KEYSPACE].as_str();
            let rates = race_threads(
                dur,
                threads,
                vec![
                    (
                        "raw",
                        Box::new(|_t| {
                            let mut raw = Raw::connect(&one);
                            Box::new(move |i| {
                                if i % 10 == 0 {
                                    raw.set(key_for(i), value);
                                } else {
                                    raw.get(key_for(i));
                                }
                                1
                            })
                        }),
                    ),
                    ("memring", mr_mixed(&mr_one, key_for, value)),
                    ("memring_meta", mr_mixed(&mrm_one, key_for, value)),
                    ("memcache", mc_mixed(&mc_one, key_for, value)),
                    ("memcache_ascii", mc_mixed(&mca_one, key_for, value)),
                ],
            );
            add(name, "ops/s", rates);
        }
    }

    if !async_only {
        if want("replicated") {
            replicated_workloads(dur, &addrs[..3], &keys, &value, &mut results);
        }
        if want("codec") {
            codec_workload(dur, &one, &mut results);
        }
        if want("tls") {
            let plain = [&mr_one, &mr_four, &mrm_one, &mrm_four];
            tls_workloads(dur, &keys, &value, plain, &mut results);
        }
    }
    if want("async") {
        async_workloads(dur, &addrs, &keys, &value, &mr_four, &mut results);
    }
    report(&results, quick);
}

/// memring's 90% get, 10% set loop for one thread of a threaded workload.
fn mr_mixed<'a>(
    c: &'a memring::Client,
    key_for: impl Fn(usize) -> &'a str + Copy + Send + Sync + 'a,
    value: &'a [u8],
) -> ThreadOp<'a> {
    Box::new(move |_t| {
        let c = c.clone();
        Box::new(move |i| {
            if i % 10 == 0 {
                c.set(key_for(i), value, Duration::from_secs(3600)).unwrap();
            } else {
                c.get::<Vec<u8>>(key_for(i)).unwrap();
            }
            1
        })
    })
}

/// memring's `get` loop over the keyspace (every key present).
fn mr_get<'a>(c: &'a memring::Client, keys: &'a [String]) -> Op<'a> {
    let mut i = 0;
    Box::new(move || {
        i += 1;
        assert!(c.get::<Vec<u8>>(&keys[i % KEYSPACE]).unwrap().is_some());
        1
    })
}

/// replicated_set and replicated_get: one thread, three servers, with one
/// copy of each key (`memring_r1`) and two (`memring_r2`, sent to both
/// replicas at once); the ratios are of r2's rate to r1's.
fn replicated_workloads(
    dur: Duration,
    addrs: &[String],
    keys: &[String],
    value: &[u8],
    results: &mut Vec<Workload>,
) {
    let client = |n: usize, protocol| {
        memring::Client::builder()
            .servers(addrs)
            .replicas(n)
            .protocol(protocol)
            .build()
            .unwrap()
    };
    let (r1, r2) = (client(1, Protocol::Classic), client(2, Protocol::Classic));
    let (m1, m2) = (client(1, Protocol::Meta), client(2, Protocol::Meta));
    let ttl = Duration::from_secs(3600);
    fn set<'a>(c: &'a memring::Client, keys: &'a [String], value: &'a [u8]) -> Op<'a> {
        let mut i = 0;
        Box::new(move || {
            i += 1;
            c.set(&keys[i % KEYSPACE], value, Duration::from_secs(3600))
                .unwrap();
            1
        })
    }
    let rates = race(
        dur,
        vec![
            ("memring_r1", set(&r1, keys, value)),
            ("memring_r2", set(&r2, keys, value)),
            ("memring_meta_r1", set(&m1, keys, value)),
            ("memring_meta_r2", set(&m2, keys, value)),
        ],
    );
    let mut push = |name: &'static str, raced: Vec<Raced>| {
        let mut pairs = vs("memring_r2", &["memring_r1"]);
        pairs.extend(vs("memring_meta_r2", &["memring_meta_r1"]));
        results.push(Workload::new(name, "ops/s", raced, pairs));
    };
    push("replicated_set", rates);
    let items: Vec<(&str, &[u8])> = keys.iter().map(|k| (k.as_str(), value)).collect();
    for c in [&r1, &r2] {
        assert!(c.set_multi(&items, ttl).iter().all(Result::is_ok));
    }
    let rates = race(
        dur,
        vec![
            ("memring_r1", mr_get(&r1, keys)),
            ("memring_r2", mr_get(&r2, keys)),
            ("memring_meta_r1", mr_get(&m1, keys)),
            ("memring_meta_r2", mr_get(&m2, keys)),
        ],
    );
    push("replicated_get", rates);
}

/// codec_get_10k: one thread reads 10 KiB JSON values (compressible, as
/// cached API responses are) with no codec, with the Python zlib codec and
/// with LZ4; the ratios are of each codec's rate to no codec's, and the
/// bytes each value takes on the wire are reported beside them.
#[cfg(all(feature = "python", feature = "lz4"))]
fn codec_workload(dur: Duration, server: &str, results: &mut Vec<Workload>) {
    use memring::{Codec, Item};
    const VALUES: usize = 64;
    let json = |n: usize| {
        let mut v = String::from("[");
        let mut i = 0;
        while v.len() < 10 * 1024 - 120 {
            v.push_str(&format!(
                r#"{{"id":{},"name":"user{}","email":"user{}@example.com","active":{},"score":{}.{}}},"#,
                n * 1000 + i,
                i,
                i,
                i % 3 == 0,
                (i * 7919 + n) % 100,
                (i * 104_729) % 1000
            ));
            i += 1;
        }
        v.pop();
        v.push(']');
        v
    };
    let values: Vec<String> = (0..VALUES).map(json).collect();
    let codecs = [
        ("memring", Codec::raw()),
        (
            "memring_zlib",
            Codec::python_memcached().min_compress_len(1024),
        ),
        ("memring_lz4", Codec::lz4()),
    ];
    let mut wire = BTreeMap::new();
    let mut decode_us = BTreeMap::new();
    let mut contenders: Vec<(&'static str, Op<'_>)> = Vec::new();
    for (name, codec) in codecs {
        let c = memring::Client::builder()
            .servers(server)
            .codec(codec)
            .build()
            .unwrap();
        let keys: Vec<String> = (0..VALUES).map(|i| format!("{name}:{i}")).collect();
        for (k, v) in keys.iter().zip(&values) {
            c.set(k, v.as_str(), Duration::from_secs(3600)).unwrap();
        }
        let stored: usize = keys
            .iter()
            .map(|k| c.get::<Item>(k).unwrap().unwrap().data.len())
            .sum();
        wire.insert(name, stored / VALUES);
        // The codec's own cost, without the network: decoding stored items.
        let items: Vec<Item> = keys.iter().map(|k| c.get(k).unwrap().unwrap()).collect();
        let rounds = 20;
        let started = Instant::now();
        for _ in 0..rounds {
            for item in &items {
                std::hint::black_box(c.decode::<String>(item.clone()).unwrap());
            }
        }
        let per = started.elapsed().as_secs_f64() * 1e6 / (rounds * VALUES) as f64;
        decode_us.insert(name, per);
        let lens: Vec<usize> = values.iter().map(String::len).collect();
        let mut i = 0;
        contenders.push((
            name,
            Box::new(move || {
                i += 1;
                let v = c.get::<String>(&keys[i % VALUES]).unwrap().unwrap();
                assert_eq!(v.len(), lens[i % VALUES]);
                1
            }),
        ));
    }
    let raced = race(dur, contenders);
    let pairs = vec![("memring_zlib", "memring"), ("memring_lz4", "memring")];
    let mut w = Workload::new("codec_get_10k", "ops/s", raced, pairs);
    w.wire = wire;
    w.decode_us = decode_us;
    eprintln!("{:<20} {:?}", "", w.wire);
    results.push(w);
}

/// tls_seq_get and tls_get_multi_100x4: the same requests as seq_get and
/// get_multi_100x4, over TLS (memcached `-Z`, a certificate made for the
/// run) against plaintext, after the handshake: the ratio is TLS's cost.
#[cfg(feature = "tls")]
fn tls_workloads(
    dur: Duration,
    keys: &[String],
    value: &[u8],
    plain: [&memring::Client; 4],
    results: &mut Vec<Workload>,
) {
    let [plain_one, plain_four, meta_one, meta_four] = plain;
    let pki = support::tls::Pki::new();
    let servers: Vec<Memcached> = (0..4)
        .map(|_| pki.server("server", "", &["-t", "2"]))
        .collect();
    let addrs: Vec<String> = servers.iter().map(Memcached::addr).collect();
    let tls_client = |addrs: &[String], protocol| {
        memring::Client::builder()
            .servers(addrs)
            .tls(pki.trust())
            .protocol(protocol)
            .build()
            .unwrap()
    };
    let tls_one = tls_client(&addrs[..1], Protocol::Classic);
    let tls_four = tls_client(&addrs, Protocol::Classic);
    let tlsm_one = tls_client(&addrs[..1], Protocol::Meta);
    let tlsm_four = tls_client(&addrs, Protocol::Meta);
    let ttl = Duration::from_secs(3600);
    let items: Vec<(&str, &[u8])> = keys.iter().map(|k| (k.as_str(), value)).collect();
    for c in [&tls_one, &tls_four] {
        assert!(c.set_multi(&items, ttl).iter().all(Result::is_ok));
    }
    let mut push = |name, unit, raced: Vec<Raced>| {
        let mut pairs = vs("memring_tls", &["memring"]);
        pairs.extend(vs("memring_meta_tls", &["memring_meta"]));
        results.push(Workload::new(name, unit, raced, pairs));
    };
    let rates = race(
        dur,
        vec![
            ("memring", mr_get(plain_one, keys)),
            ("memring_tls", mr_get(&tls_one, keys)),
            ("memring_meta", mr_get(meta_one, keys)),
            ("memring_meta_tls", mr_get(&tlsm_one, keys)),
        ],
    );
    push("tls_seq_get", "ops/s", rates);

    let batches: Vec<Vec<&str>> = keys
        .chunks(100)
        .map(|b| b.iter().map(String::as_str).collect())
        .collect();
    fn multi<'a>(c: &'a memring::Client, batches: &'a [Vec<&'a str>]) -> Op<'a> {
        let mut i = 0;
        Box::new(move || {
            i += 1;
            let got = c.get_multi::<Vec<u8>>(&batches[i % batches.len()]);
            assert!(got.iter().all(|r| matches!(r, Ok(Some(_)))));
            100
        })
    }
    let rates = race(
        dur,
        vec![
            ("memring", multi(plain_four, &batches)),
            ("memring_tls", multi(&tls_four, &batches)),
            ("memring_meta", multi(meta_four, &batches)),
            ("memring_meta_tls", multi(&tlsm_four, &batches)),
        ],
    );
    push("tls_get_multi_100x4", "keys/s", rates);
}

#[cfg(not(feature = "tls"))]
fn tls_workloads(
    _: Duration,
    _: &[String],
    _: &[u8],
    _: [&memring::Client; 4],
    _: &mut Vec<Workload>,
) {
    eprintln!("tls_seq_get, tls_get_multi_100x4: not run (they need the tls feature)");
}

#[cfg(not(all(feature = "python", feature = "lz4")))]
fn codec_workload(_: Duration, _: &str, _: &mut Vec<Workload>) {
    eprintln!("codec_get_10k: not run (it needs the python and lz4 features; use --all-features)");
}

/// async_get_c256, async_mixed_c256 (256 tasks, 4 servers) and
/// async_seq_get (one task, one server).
fn async_workloads(
    dur: Duration,
    addrs: &[String],
    keys: &[String],
    value: &[u8],
    mr_four: &memring::Client,
    results: &mut Vec<Workload>,
) {
    use async_memcached::AsciiProtocol;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let keys: std::sync::Arc<Vec<String>> = std::sync::Arc::new(keys.to_vec());
    let value: std::sync::Arc<Vec<u8>> = std::sync::Arc::new(value.to_vec());
    let ttl = Duration::from_secs(3600);
    let key_at = |keys: &[String], t: usize, n: usize| keys[(n * 31 + t) % KEYSPACE].clone();

    // `memring_async` speaks meta (the default, Auto), `_classic` classic.
    let mr_async = memring::Client::builder()
        .servers(addrs)
        .build_async()
        .unwrap();
    let mr_async_classic = memring::Client::builder()
        .servers(addrs)
        .protocol(Protocol::Classic)
        .build_async()
        .unwrap();
    let mc_async = rt
        .block_on(memcache::exp::AsyncMetaClient::connect_multiple(
            addrs.iter().map(String::as_str).collect::<Vec<_>>(),
        ))
        .unwrap();
    // async-memcached is one connection per client (`&mut self`): a pool
    // of 16 clients per server, each behind a mutex, keys routed by ketama
    // as memring routes them.
    let ring = std::sync::Arc::new(Ring::new(
        Distribution::Ketama,
        &addrs
            .iter()
            .map(|a| a.parse::<Server>().unwrap())
            .collect::<Vec<_>>(),
    ));
    let am_pools: std::sync::Arc<Vec<Vec<tokio::sync::Mutex<async_memcached::Client>>>> =
        std::sync::Arc::new(rt.block_on(async {
            let mut pools = Vec::new();
            for a in addrs {
                let mut pool = Vec::new();
                for _ in 0..16 {
                    pool.push(tokio::sync::Mutex::new(
                        async_memcached::Client::new(format!("tcp://{a}"))
                            .await
                            .unwrap(),
                    ));
                }
                pools.push(pool);
            }
            pools
        }));
    // Populate with each client's own routing.
    rt.block_on(async {
        for k in keys.iter() {
            mc_async
                .set(k, value.as_slice())
                .ttl(memcache::exp::Ttl::secs(3600))
                .send()
                .await
                .unwrap();
        }
    });

    for mixed in [false, true] {
        let name = if mixed {
            "async_mixed_c256"
        } else {
            "async_get_c256"
        };
        let is_set = move |n: usize| mixed && n % 10 == 0;
        let memring_async = |c: &memring::aio::Client| {
            let (c, keys, value) = (c.clone(), keys.clone(), value.clone());
            tasks_slice(&rt, 256, move |t, n| {
                let (c, key, value) = (c.clone(), key_at(&keys, t, n), value.clone());
                async move {
                    if is_set(n) {
                        c.set(&key, value.as_slice(), ttl).await.unwrap();
                    } else {
                        assert!(c.get::<Vec<u8>>(&key).await.unwrap().is_some());
                    }
                }
            })
        };
        let mut contenders: Vec<(&'static str, Slice<'_>)> = vec![
            ("memring_async", memring_async(&mr_async)),
            ("memring_async_classic", memring_async(&mr_async_classic)),
            ("memring_threads8", {
                let (keys, value) = (keys.clone(), value.clone());
                threads_slice(
                    8,
                    Box::new(move |_t| {
                        let (keys, value) = (keys.clone(), value.clone());
                        Box::new(move |n| {
                            let key = &keys[(n * 31) % KEYSPACE];
                            if is_set(n) {
                                mr_four.set(key, value.as_slice(), ttl).unwrap();
                            } else {
                                assert!(mr_four.get::<Vec<u8>>(key).unwrap().is_some());
                            }
                            1
                        })
                    }),
                )
            }),
            ("memcache_async", {
                let (c, keys, value) = (mc_async.clone(), keys.clone(), value.clone());
                tasks_slice(&rt, 256, move |t, n| {
                    let (c, key, value) = (c.clone(), key_at(&keys, t, n), value.clone());
                    async move {
                        if is_set(n) {
                            c.set(&key, value.as_slice())
                                .ttl(memcache::exp::Ttl::secs(3600))
                                .send()
                                .await
                                .unwrap();
                        } else {
                            c.get(&key).send().await.unwrap();
                        }
                    }
                })
            }),
            ("async_memcached", {
                let (pools, ring, keys, value) =
                    (am_pools.clone(), ring.clone(), keys.clone(), value.clone());
                tasks_slice(&rt, 256, move |t, n| {
                    let (pools, ring, key, value) = (
                        pools.clone(),
                        ring.clone(),
                        key_at(&keys, t, n),
                        value.clone(),
                    );
                    async move {
                        let server = ring.primary(key.as_bytes()).unwrap();
                        let mut c = pools[server][t % 16].lock().await;
                        if is_set(n) {
                            c.set(&key, value.as_slice(), Some(3600), None)
                                .await
                                .unwrap();
                        } else {
                            assert!(c.get(&key).await.unwrap().is_some());
                        }
                    }
                })
            }),
        ];
        if !mixed {
            contenders.push(("raw_pipelined", raw_pipelined(addrs, &ring, &keys, false)));
            contenders.push((
                "raw_pipelined_meta",
                raw_pipelined(addrs, &ring, &keys, true),
            ));
        }
        let raced = race_slices(dur, contenders);
        let mut pairs = vs(
            "memring_async",
            &[
                "memring_threads8",
                "memcache_async",
                "async_memcached",
                "raw_pipelined",
                "memring_async_classic",
            ],
        );
        pairs.push(("memring_async_classic", "raw_pipelined"));
        pairs.push(("memring_async", "raw_pipelined_meta"));
        results.push(Workload::new(name, "ops/s", raced, pairs));
    }

    // async_seq_get: the latency path, one task against one server.
    let one = &addrs[0];
    let one_client = |protocol| {
        memring::Client::builder()
            .servers(one.as_str())
            .protocol(protocol)
            .build_async()
            .unwrap()
    };
    let mut raw = Raw::connect(one);
    let mut a = 0usize;
    // One task on the runtime, as a request handler would be.
    let one_task = |c: memring::aio::Client| -> Slice<'_> {
        let mut b = 0usize;
        let (rt, keys) = (&rt, keys.clone());
        Box::new(move |slice| {
            let (c, keys) = (c.clone(), keys.clone());
            b += 1;
            let first = b * 7919;
            let task = rt.spawn(async move {
                let started = Instant::now();
                let mut done = 0;
                let mut i = first;
                while started.elapsed() < slice {
                    i += 1;
                    let v = c.get::<Vec<u8>>(&keys[i % KEYSPACE]).await.unwrap();
                    assert!(v.is_some());
                    done += 1;
                }
                Done {
                    units: done,
                    secs: started.elapsed().as_secs_f64(),
                }
            });
            rt.block_on(task).unwrap()
        })
    };
    let contenders: Vec<(&'static str, Slice<'_>)> = vec![
        (
            "raw",
            Box::new(|slice| {
                let started = Instant::now();
                let mut done = 0;
                while started.elapsed() < slice {
                    a += 1;
                    assert!(raw.get(&keys[a % KEYSPACE]));
                    done += 1;
                }
                Done {
                    units: done,
                    secs: started.elapsed().as_secs_f64(),
                }
            }),
        ),
        ("memring_async", one_task(one_client(Protocol::Auto))),
        (
            "memring_async_classic",
            one_task(one_client(Protocol::Classic)),
        ),
    ];
    let raced = race_slices(dur, contenders);
    let pairs = vs("memring_async", &["raw", "memring_async_classic"]);
    results.push(Workload::new("async_seq_get", "ops/s", raced, pairs));
}

/// The machine's limit for 256 gets in flight over 4 servers: one thread
/// per server, each writing 64 gets in one write and reading their 64
/// replies, over and over (keys routed as memring routes them); classic
/// `get`s, or with `meta` `mg <key> v f` (which memcached 1.6.18 serves
/// pipelined at about a third of a classic `get`'s CPU).
fn raw_pipelined<'a>(
    addrs: &'a [String],
    ring: &'a Ring,
    keys: &'a [String],
    meta: bool,
) -> Slice<'a> {
    const DEPTH: usize = 64;
    let mut by_server: Vec<Vec<&str>> = vec![Vec::new(); addrs.len()];
    for k in keys {
        by_server[ring.primary(k.as_bytes()).unwrap()].push(k);
    }
    let mut conns: Vec<Raw> = addrs.iter().map(|a| Raw::connect(a)).collect();
    Box::new(move |slice| {
        let started = Instant::now();
        let units: usize = std::thread::scope(|scope| {
            let handles: Vec<_> = conns
                .iter_mut()
                .zip(&by_server)
                .map(|(raw, ks)| {
                    scope.spawn(move || {
                        let reply = |k: &str| {
                            if meta {
                                format!("VA {VALUE_LEN} f0\r\n").len() + VALUE_LEN + 2
                            } else {
                                format!("VALUE {k} 0 {VALUE_LEN}\r\n").len() + VALUE_LEN + 2 + 5
                            }
                        };
                        let (verb, flags, tail): (&[u8], &[u8], &[u8]) = if meta {
                            (b"mg ", b" v f\r\n", b"\r\n")
                        } else {
                            (b"get ", b"\r\n", b"END\r\n")
                        };
                        let mut done = 0;
                        let mut at = 0;
                        while started.elapsed() < slice {
                            let mut want = 0;
                            for _ in 0..DEPTH {
                                let k = ks[at % ks.len()];
                                at += 1;
                                raw.out.extend_from_slice(verb);
                                raw.out.extend_from_slice(k.as_bytes());
                                raw.out.extend_from_slice(flags);
                                want += reply(k);
                            }
                            raw.flush();
                            let got = raw.read_until(tail, want);
                            assert_eq!(got, want);
                            done += DEPTH;
                        }
                        done
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).sum()
        });
        Done {
            units,
            secs: started.elapsed().as_secs_f64(),
        }
    })
}

fn report(results: &[Workload], quick: bool) {
    println!();
    let mut json_rows = Vec::new();
    for w in results {
        let rate = |c: &str| w.rates.get(c).copied();
        let mut ratios = serde_json::Map::new();
        for (lead, c) in &w.pairs {
            if let (Some(l), Some(other)) = (rate(lead), rate(c)) {
                ratios.insert(format!("{lead}/{c}"), json!(l / other));
            }
        }
        let rates: Vec<String> = w.rates.iter().map(|(k, v)| format!("{k} {v:.0}")).collect();
        let shown: Vec<String> = ratios
            .iter()
            .map(|(k, v)| format!("{k} {:.2}", v.as_f64().unwrap_or(0.0)))
            .collect();
        println!("{:<18} {:>7}  {}", w.name, w.unit, rates.join(", "));
        println!("{:<18} {:>7}  {}", "", "ratios", shown.join(", "));
        let mut cpu_ratios = serde_json::Map::new();
        for (lead, c) in &w.pairs {
            if let (Some(l), Some(other)) = (w.cpu_us.get(lead), w.cpu_us.get(c)) {
                cpu_ratios.insert(format!("{lead}/{c}"), json!(l / other));
            }
        }
        let cpu: Vec<String> = w
            .cpu_us
            .iter()
            .map(|(k, v)| format!("{k} {v:.2}"))
            .collect();
        println!("{:<18} {:>7}  {}", "", "cpu µs", cpu.join(", "));
        let shown: Vec<String> = cpu_ratios
            .iter()
            .map(|(k, v)| format!("{k} {:.2}", v.as_f64().unwrap_or(0.0)))
            .collect();
        println!("{:<18} {:>7}  {}", "", "cpu x", shown.join(", "));
        if !w.syscalls.is_empty() {
            let sys: Vec<String> = w
                .syscalls
                .iter()
                .map(|(k, v)| format!("{k} {v:.2}"))
                .collect();
            println!("{:<18} {:>7}  {}", "", "sys/op", sys.join(", "));
        }
        let mut row = json!({
            "name": w.name,
            "unit": w.unit,
            "rates": w.rates,
            "ratios": ratios,
            "cpu_us_per_op": w.cpu_us,
            "cpu_ratios": cpu_ratios,
            "syscalls_per_op": w.syscalls,
        });
        if !w.wire.is_empty() {
            let per_op: BTreeMap<&str, f64> = w.rates.iter().map(|(k, r)| (*k, 1e6 / r)).collect();
            let wire: Vec<String> = w.wire.iter().map(|(k, b)| format!("{k} {b}")).collect();
            println!("{:<18} {:>7}  {}", "", "bytes", wire.join(", "));
            let decode: Vec<String> = w
                .decode_us
                .iter()
                .map(|(k, t)| format!("{k} {t:.2}"))
                .collect();
            println!("{:<18} {:>7}  {}", "", "decode", decode.join(", "));
            row["wire_bytes"] = json!(w.wire);
            row["decode_us"] = json!(w.decode_us);
            row["us_per_op"] = json!(per_op);
        }
        json_rows.push(row);
    }
    // Whether the client counted its metrics in this run.
    let metrics = cfg!(feature = "metrics");
    println!(
        "metrics: {}",
        if metrics {
            "on"
        } else {
            "off (built without the metrics feature)"
        }
    );
    let counted = cost::Syscalls::new(cost::Scope::Thread).is_some();
    if !counted {
        println!(
            "system calls: not counted (needs tracefs, `mount -t tracefs nodev /sys/kernel/tracing`, \
             and root or perf_event_paranoid -1)"
        );
    }
    let doc = json!({
        "quick": quick,
        "metrics": metrics,
        "syscalls_counted": counted,
        "workloads": json_rows,
    });
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/memring-bench");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("compare.json");
    std::fs::write(&path, serde_json::to_string_pretty(&doc).unwrap()).unwrap();
    println!("\nwrote {}", path.display());
}
