//! Fuzzes server address strings (`host:port[:weight]`, `[v6]:port`,
//! socket paths): never a panic, and a parsed server prints back (its
//! label, which is what routing hashes, then `:weight`, always: a socket
//! path may itself end in `:<digits>`) to an address that parses to an
//! equal server.
#![no_main]

use libfuzzer_sys::fuzz_target;
use memring::Server;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(server) = text.parse::<Server>() {
        let printed = format!("{server}:{}", server.weight());
        let again: Server = printed
            .parse()
            .unwrap_or_else(|e| panic!("{printed:?} does not parse back: {e}"));
        assert_eq!(again, server, "{text:?} printed as {printed:?}");
    }
});
