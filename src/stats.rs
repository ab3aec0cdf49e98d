//! memcached's own statistics, typed: `stats` as [`ServerStats`], and the
//! slab classes (`stats slabs`, `stats items`, `stats settings`) as
//! [`Slabs`], which also says which class an item of a given size lands in
//! and how much of its chunk is padding.
//!
//! memcached stores an item (a 48-byte header, the key, the value and a few
//! bytes more) in the smallest chunk that holds it. Chunk sizes grow by the
//! growth factor (`-f`, 1.25 by default) from 96 bytes, rounded up to 8, and
//! a 1 MiB page, once given to a class, stays with it. So a 190-byte item
//! takes a 192-byte chunk by default, and memory can run out in one class
//! while another has pages to spare.

use crate::error::{Error, ErrorKind, Result};

/// The common fields of a server's `stats`, typed, and the rest as pairs.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct ServerStats {
    /// `version`.
    pub version: String,
    /// Seconds since the server started.
    pub uptime: u64,
    /// Items stored now.
    pub curr_items: u64,
    /// Items stored since the start.
    pub total_items: u64,
    /// Bytes used by the items stored now.
    pub bytes: u64,
    /// The memory limit (`-m`), in bytes.
    pub limit_maxbytes: u64,
    /// Retrievals that found their key, and that did not.
    pub get_hits: u64,
    /// See `get_hits`.
    pub get_misses: u64,
    /// Retrieval and storage commands received.
    pub cmd_get: u64,
    /// See `cmd_get`.
    pub cmd_set: u64,
    /// Items evicted to make room.
    pub evictions: u64,
    /// Connections open now, and since the start.
    pub curr_connections: u64,
    /// See `curr_connections`.
    pub total_connections: u64,
    /// Worker threads.
    pub threads: u64,
    /// Every other statistic, as sent.
    pub other: Vec<(String, String)>,
}

impl ServerStats {
    /// Reads the pairs of a `stats` reply. A common field that is missing
    /// stays 0 (or empty); one that is not a number is an error.
    pub fn from_pairs(pairs: &[(String, String)]) -> Result<ServerStats> {
        let mut s = ServerStats::default();
        for (name, value) in pairs {
            let field = match name.as_str() {
                "version" => {
                    s.version = value.clone();
                    continue;
                }
                "uptime" => &mut s.uptime,
                "curr_items" => &mut s.curr_items,
                "total_items" => &mut s.total_items,
                "bytes" => &mut s.bytes,
                "limit_maxbytes" => &mut s.limit_maxbytes,
                "get_hits" => &mut s.get_hits,
                "get_misses" => &mut s.get_misses,
                "cmd_get" => &mut s.cmd_get,
                "cmd_set" => &mut s.cmd_set,
                "evictions" => &mut s.evictions,
                "curr_connections" => &mut s.curr_connections,
                "total_connections" => &mut s.total_connections,
                "threads" => &mut s.threads,
                _ => {
                    s.other.push((name.clone(), value.clone()));
                    continue;
                }
            };
            *field = number(name, value)?;
        }
        Ok(s)
    }

    /// Hits over all retrievals that were answered (`None` before any).
    pub fn hit_ratio(&self) -> Option<f64> {
        let all = self.get_hits + self.get_misses;
        (all > 0).then(|| self.get_hits as f64 / all as f64)
    }

    /// Another statistic by name, as sent.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.other
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

fn number<T: std::str::FromStr>(name: &str, value: &str) -> Result<T> {
    value.trim().parse().map_err(|_| {
        Error::new(
            ErrorKind::Protocol,
            format!("statistic {name} is not a number: {value:?}"),
        )
    })
}

/// One slab class: its chunks, its pages, and what its items use.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct SlabClass {
    /// The class number.
    pub id: u32,
    /// Bytes per chunk: every item of this class takes this much.
    pub chunk_size: u64,
    /// Chunks in one page.
    pub chunks_per_page: u64,
    /// Pages given to this class (0 for a class not used yet).
    pub total_pages: u64,
    /// Chunks holding an item, and free.
    pub used_chunks: u64,
    /// See `used_chunks`.
    pub free_chunks: u64,
    /// Bytes the items of this class asked for (their real sizes).
    pub mem_requested: u64,
    /// Items in the class.
    pub items: u64,
    /// Items evicted from the class.
    pub evicted: u64,
    /// Seconds since the oldest item in the class was last used.
    pub age: u64,
}

impl SlabClass {
    /// Bytes the used chunks take.
    pub fn mem_allocated(&self) -> u64 {
        self.used_chunks * self.chunk_size
    }

    /// Bytes of the used chunks that hold no item: chunk padding.
    pub fn padding(&self) -> u64 {
        self.mem_allocated().saturating_sub(self.mem_requested)
    }
}

/// A server's slab classes: every class its settings give (as memcached
/// computes them at start), with the usage of those that hold pages.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct Slabs {
    /// Every class, smallest chunks first.
    pub classes: Vec<SlabClass>,
    /// Memory given to slabs, in bytes.
    pub total_malloced: u64,
    /// The growth factor (`-f`).
    pub growth_factor: f64,
}

/// The size of memcached's item header on a 64-bit build.
const ITEM_HEADER: u64 = 48;
/// Chunk sizes are multiples of this.
const CHUNK_ALIGN: u64 = 8;

impl Slabs {
    /// Builds the classes from the pairs of `stats settings` (growth
    /// factor, smallest chunk, page and largest chunk sizes), then fills in
    /// the usage from `stats slabs` and `stats items`.
    pub fn from_pairs(
        settings: &[(String, String)],
        slabs: &[(String, String)],
        items: &[(String, String)],
    ) -> Result<Slabs> {
        let setting = |name: &str| {
            settings
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
                .ok_or_else(|| {
                    Error::new(ErrorKind::Protocol, format!("stats settings lacks {name}"))
                })
        };
        let factor: f64 = number("growth_factor", setting("growth_factor")?)?;
        let min_chunk: u64 = number("chunk_size", setting("chunk_size")?)?;
        let page: u64 = number("item_size_max", setting("item_size_max")?)?;
        let max_chunk: u64 = number("slab_chunk_max", setting("slab_chunk_max")?)?;
        if factor.is_nan() || factor <= 1.0 || page == 0 || max_chunk == 0 {
            return Err(Error::new(
                ErrorKind::Protocol,
                format!("unusable slab settings: factor {factor}, page {page}, largest chunk {max_chunk}"),
            ));
        }
        let mut out = Slabs {
            classes: predicted_classes(factor, min_chunk, page, max_chunk),
            total_malloced: 0,
            growth_factor: factor,
        };
        for (name, value) in slabs {
            if name == "total_malloced" {
                out.total_malloced = number(name, value)?;
                continue;
            }
            let Some((id, field)) = name.split_once(':') else {
                continue;
            };
            let Some(class) = out.class_mut(id)? else {
                continue;
            };
            let slot = match field {
                "chunk_size" => &mut class.chunk_size,
                "chunks_per_page" => &mut class.chunks_per_page,
                "total_pages" => &mut class.total_pages,
                "used_chunks" => &mut class.used_chunks,
                "free_chunks" => &mut class.free_chunks,
                _ => continue,
            };
            *slot = number(name, value)?;
        }
        for (name, value) in items {
            let mut parts = name.splitn(3, ':');
            let (Some("items"), Some(id), Some(field)) = (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            let Some(class) = out.class_mut(id)? else {
                continue;
            };
            let slot = match field {
                "number" => &mut class.items,
                "mem_requested" => &mut class.mem_requested,
                "evicted" => &mut class.evicted,
                "age" => &mut class.age,
                _ => continue,
            };
            *slot = number(name, value)?;
        }
        Ok(out)
    }

    fn class_mut(&mut self, id: &str) -> Result<Option<&mut SlabClass>> {
        let id: u32 = number("slab class", id)?;
        Ok(self.classes.iter_mut().find(|c| c.id == id))
    }

    /// The class an item of `item_size` bytes (header, key and value, as
    /// memcached counts them: `me <key>` shows it as `size`) is stored in,
    /// or `None` if it is larger than the largest chunk (memcached then
    /// chains chunks).
    pub fn class_for(&self, item_size: u64) -> Option<&SlabClass> {
        self.classes.iter().find(|c| c.chunk_size >= item_size)
    }

    /// The classes that hold pages.
    pub fn used(&self) -> impl Iterator<Item = &SlabClass> {
        self.classes.iter().filter(|c| c.total_pages > 0)
    }

    /// The share of the memory in used chunks that is chunk padding.
    pub fn padding_ratio(&self) -> Option<f64> {
        let allocated: u64 = self.used().map(SlabClass::mem_allocated).sum();
        let padding: u64 = self.used().map(SlabClass::padding).sum();
        (allocated > 0).then(|| padding as f64 / allocated as f64)
    }
}

/// The classes memcached 1.6 makes at start (`slabs_init`): from the
/// header plus the smallest chunk, each `factor` times the last, rounded up
/// to 8 bytes, until the largest chunk; the last class is the largest
/// chunk itself.
fn predicted_classes(factor: f64, min_chunk: u64, page: u64, max_chunk: u64) -> Vec<SlabClass> {
    let mut classes = Vec::new();
    let mut size = ITEM_HEADER + min_chunk;
    let mut id = 1;
    // memcached has 64 classes at most, the last one for the largest chunk.
    while id < 63 && (size as f64) < max_chunk as f64 / factor {
        let mut chunk = size;
        if chunk % CHUNK_ALIGN != 0 {
            chunk += CHUNK_ALIGN - chunk % CHUNK_ALIGN;
        }
        classes.push(SlabClass {
            id,
            chunk_size: chunk,
            chunks_per_page: page / chunk.max(1),
            ..SlabClass::default()
        });
        size = (chunk as f64 * factor) as u64;
        id += 1;
    }
    classes.push(SlabClass {
        id,
        chunk_size: max_chunk,
        chunks_per_page: page / max_chunk,
        ..SlabClass::default()
    });
    classes
}

/// Each server's `stats`, typed.
pub(crate) fn typed(raw: crate::PerServer<crate::Stats>) -> crate::PerServer<ServerStats> {
    raw.into_iter()
        .map(|(label, r)| {
            let typed = r.and_then(|p| ServerStats::from_pairs(&p).map_err(|e| e.at(&label)));
            (label, typed)
        })
        .collect()
}

/// Each server's slab classes, from its `stats settings`, `stats slabs`
/// and `stats items` (in the same server order).
pub(crate) fn slabs(
    settings: crate::PerServer<crate::Stats>,
    slabs: crate::PerServer<crate::Stats>,
    items: crate::PerServer<crate::Stats>,
) -> crate::PerServer<Slabs> {
    settings
        .into_iter()
        .zip(slabs)
        .zip(items)
        .map(|(((label, settings), (_, slabs)), (_, items))| {
            let r = settings.and_then(|settings| {
                Slabs::from_pairs(&settings, &slabs?, &items?).map_err(|e| e.at(&label))
            });
            (label, r)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(text: &str) -> Vec<(String, String)> {
        text.lines()
            .filter_map(|l| l.trim().split_once(' '))
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn default_settings_give_memcached_1_6_classes() {
        let settings = pairs(
            "growth_factor 1.25\nchunk_size 48\nitem_size_max 1048576\nslab_chunk_max 524288",
        );
        let slabs = Slabs::from_pairs(&settings, &[], &[]).unwrap();
        let sizes: Vec<u64> = slabs.classes.iter().map(|c| c.chunk_size).take(6).collect();
        assert_eq!(sizes, [96, 120, 152, 192, 240, 304]);
        assert_eq!(slabs.classes.last().unwrap().chunk_size, 524288);
        assert_eq!(slabs.class_for(190).unwrap().chunk_size, 192);
        assert_eq!(slabs.class_for(193).unwrap().chunk_size, 240);
        assert!(slabs.class_for(600_000).is_none());
    }

    #[test]
    fn usage_fills_in_and_padding_is_counted() {
        let settings = pairs(
            "growth_factor 1.25\nchunk_size 48\nitem_size_max 1048576\nslab_chunk_max 524288",
        );
        let slabs =
            pairs("4:chunk_size 192\n4:total_pages 1\n4:used_chunks 2\ntotal_malloced 1048576");
        let items = pairs("items:4:number 2\nitems:4:mem_requested 320");
        let s = Slabs::from_pairs(&settings, &slabs, &items).unwrap();
        let c = s.used().next().unwrap();
        assert_eq!(
            (c.id, c.items, c.mem_allocated(), c.padding()),
            (4, 2, 384, 64)
        );
        assert_eq!(s.padding_ratio(), Some(64.0 / 384.0));
        let e = Slabs::from_pairs(&settings, &pairs("4:used_chunks lots"), &[]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Protocol);
    }

    #[test]
    fn server_stats_type_the_common_fields() {
        let s = ServerStats::from_pairs(&pairs(
            "version 1.6.18\nuptime 5\nget_hits 3\nget_misses 1\npid 42",
        ))
        .unwrap();
        assert_eq!((s.version.as_str(), s.uptime), ("1.6.18", 5));
        assert_eq!(s.hit_ratio(), Some(0.75));
        assert_eq!(s.get("pid"), Some("42"));
        assert!(ServerStats::from_pairs(&pairs("uptime soon")).is_err());
    }
}
