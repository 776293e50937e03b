//! The HTTP requests the app is handling, kept in native memory so the monitor's native thread can
//! name them while JS is blocked ("hung 3.1s in parseQuery (search.js:41) while handling GET
//! /search"). `index.js` calls [`begin`] on each server request and [`end`] when its response
//! finishes or closes. Bounded: at most [`MAX_REQUESTS`] are kept (later ones are counted, not
//! kept), each as method and target cut to [`MAX_TARGET`] bytes. A lock held for a few
//! instructions per call; no allocation beyond the strings kept.

use std::sync::{Mutex, PoisonError};

pub use nodeguard_proto::worker::MAX_REQUESTS;

/// Longest request target kept, in bytes.
pub const MAX_TARGET: usize = 256;
/// Longest method kept, in bytes.
const MAX_METHOD: usize = 16;

struct Table {
    next_id: u32,
    /// (id, method, target), oldest first.
    entries: Vec<(u32, String, String)>,
    /// Requests in flight that were not kept (the table was full).
    untracked: u32,
}

static TABLE: Mutex<Table> = Mutex::new(Table {
    next_id: 1,
    entries: Vec::new(),
    untracked: 0,
});

fn cut(text: &str, max: usize) -> String {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}

/// A request began. Returns the id to [`end`] it with; 0 when the table was full (end(0) then
/// counts it off).
pub fn begin(method: &str, target: &str) -> u32 {
    let mut table = TABLE.lock().unwrap_or_else(PoisonError::into_inner);
    if table.entries.len() >= MAX_REQUESTS {
        table.untracked = table.untracked.saturating_add(1);
        return 0;
    }
    let id = table.next_id;
    table.next_id = table.next_id.checked_add(1).unwrap_or(1);
    let entry = (id, cut(method, MAX_METHOD), cut(target, MAX_TARGET));
    table.entries.push(entry);
    id
}

/// The request `id` (from [`begin`]) ended.
pub fn end(id: u32) {
    let mut table = TABLE.lock().unwrap_or_else(PoisonError::into_inner);
    if id == 0 {
        table.untracked = table.untracked.saturating_sub(1);
        return;
    }
    table.entries.retain(|(kept, _, _)| *kept != id);
}

/// The requests in flight, oldest first, as `GET /path`; the query string only with
/// `show_query`. When more are in flight than kept, the last line says how many more.
pub fn in_flight(show_query: bool) -> Vec<String> {
    let table = TABLE.lock().unwrap_or_else(PoisonError::into_inner);
    let mut lines: Vec<String> = table
        .entries
        .iter()
        .map(|(_, method, target)| {
            let target = if show_query {
                target.as_str()
            } else {
                target.split(['?', '#']).next().unwrap_or_default()
            };
            format!("{method} {target}")
        })
        .collect();
    if table.untracked > 0 && lines.len() >= MAX_REQUESTS {
        lines.pop();
        lines.push(format!("{} more", table.untracked.saturating_add(1)));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One test: the table is process-global.
    #[test]
    fn requests_are_kept_bounded_named_without_query_and_forgotten_at_end() {
        let search = begin("GET", "/search?q=secret");
        let upload = begin("POST", &format!("/upload/{}", "é".repeat(300)));
        assert_eq!(in_flight(false)[0], "GET /search");
        assert_eq!(in_flight(true)[0], "GET /search?q=secret");
        assert!(in_flight(false)[1].len() <= "POST ".len() + MAX_TARGET);
        end(upload);
        assert_eq!(in_flight(false), ["GET /search"]);
        let more: Vec<u32> = (0..10).map(|i| begin("GET", &format!("/{i}"))).collect();
        let lines = in_flight(false);
        assert_eq!(lines.len(), MAX_REQUESTS);
        assert_eq!(lines[MAX_REQUESTS - 1], "4 more");
        for id in more {
            end(id);
        }
        end(search);
        assert!(in_flight(false).is_empty());
    }
}
