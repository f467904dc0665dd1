//! Which key a byte offset of a TOML file belongs to, as a dotted path with array
//! indices (`listener[1].backend[0].weight`), for errors that have a place but no key:
//! syntax errors and bytes that are not UTF-8. (Errors found while deserializing take
//! their path from the deserializer itself, see `config::parse`.)
//!
//! It follows the TOML grammar through `toml_parser`'s event stream, so every spelling
//! is understood as TOML understands it: table headers, arrays of tables, dotted and
//! quoted keys, inline tables and arrays. The parser recovers from errors, so the key
//! being written where a syntax error sits is known too.

use std::collections::HashMap;

use toml_parser::decoder::Encoding;
use toml_parser::parser::{parse_document, EventReceiver};
use toml_parser::{ErrorSink, ParseError, Raw, Source, Span};

/// The dotted key path in effect at byte `offset` of `src` (empty at the top level
/// outside any key).
pub fn key_at(src: &str, offset: usize) -> String {
    let source = Source::new(src);
    let tokens: Vec<_> = source.lex().collect();
    let mut walker = Walker {
        source,
        offset,
        counts: HashMap::new(),
        header: None,
        stack: vec![Frame::Table {
            base: Vec::new(),
            keys: Vec::new(),
        }],
        found: String::new(),
    };
    let mut errors: Vec<ParseError> = Vec::new();
    parse_document(&tokens, &mut walker, &mut errors);
    walker.found
}

/// Where the events are.
enum Frame {
    /// Key/value pairs: the document body under a header, or an inline table. `keys`
    /// is the dotted key of the pair being read.
    Table {
        base: Vec<String>,
        keys: Vec<String>,
    },
    /// The elements of an array value.
    Array { base: Vec<String>, index: usize },
}

struct Walker<'i> {
    source: Source<'i>,
    offset: usize,
    /// Entries seen so far of each array of tables, by resolved path.
    counts: HashMap<String, usize>,
    /// Keys of the header being read, and whether it is `[[...]]`.
    header: Option<(bool, Vec<String>)>,
    stack: Vec<Frame>,
    /// The path at the last event at or before `offset`.
    found: String,
}

impl Walker<'_> {
    /// The path of the innermost place.
    fn path(&self) -> Vec<String> {
        if let Some((array, keys)) = &self.header {
            let Some((last, parents)) = keys.split_last() else {
                return Vec::new();
            };
            let mut path = self.resolve(parents);
            path.push(last.clone());
            if *array {
                // The entry this header opens is the next one.
                let next = self.counts.get(&path.join(".")).copied().unwrap_or(0);
                return indexed(&path, next);
            }
            return self.resolve(keys);
        }
        match self.stack.last() {
            Some(Frame::Table { base, keys }) => base.iter().chain(keys).cloned().collect(),
            Some(Frame::Array { base, index }) => indexed(base, *index),
            None => Vec::new(),
        }
    }

    /// Header keys with the index of each array of tables they pass through.
    fn resolve(&self, keys: &[String]) -> Vec<String> {
        let mut out: Vec<String> = Vec::with_capacity(keys.len());
        for k in keys {
            out.push(k.clone());
            if let Some(n) = self.counts.get(&out.join(".")) {
                let last = out.len() - 1;
                out[last] = format!("{k}[{}]", n - 1);
            }
        }
        out
    }

    /// A key as TOML reads it (quotes and escapes removed).
    fn key_text(&self, span: Span, encoding: Option<Encoding>) -> String {
        let mut text = String::new();
        if let Some(raw) = self.source.get(span) {
            let raw = Raw::new_unchecked(raw.as_str(), encoding, span);
            let mut ignore: Vec<ParseError> = Vec::new();
            raw.decode_key(&mut text, &mut ignore);
        }
        text
    }

    /// Records the path when an event starts at or before the offset asked about.
    fn seen(&mut self, span: Span) {
        if span.start() <= self.offset {
            self.found = self.path().join(".");
        }
    }

    /// A value ended: the pair it belonged to is complete.
    fn value_done(&mut self) {
        if let Some(Frame::Table { keys, .. }) = self.stack.last_mut() {
            keys.clear();
        }
    }
}

/// `base` with `[index]` on its last segment.
fn indexed(base: &[String], index: usize) -> Vec<String> {
    let mut out = base.to_vec();
    if let Some(last) = out.last_mut() {
        last.push_str(&format!("[{index}]"));
    }
    out
}

impl EventReceiver for Walker<'_> {
    fn std_table_open(&mut self, span: Span, _: &mut dyn ErrorSink) {
        self.header = Some((false, Vec::new()));
        self.seen(span);
    }

    fn array_table_open(&mut self, span: Span, _: &mut dyn ErrorSink) {
        self.header = Some((true, Vec::new()));
        self.seen(span);
    }

    fn std_table_close(&mut self, span: Span, _: &mut dyn ErrorSink) {
        self.close_header();
        self.seen(span);
    }

    fn array_table_close(&mut self, span: Span, _: &mut dyn ErrorSink) {
        self.close_header();
        self.seen(span);
    }

    fn inline_table_open(&mut self, span: Span, _: &mut dyn ErrorSink) -> bool {
        let base = self.path();
        self.stack.push(Frame::Table {
            base,
            keys: Vec::new(),
        });
        self.seen(span);
        true
    }

    fn inline_table_close(&mut self, span: Span, _: &mut dyn ErrorSink) {
        self.seen(span);
        if self.stack.len() > 1 {
            self.stack.pop();
        }
        self.value_done();
    }

    fn array_open(&mut self, span: Span, _: &mut dyn ErrorSink) -> bool {
        let base = self.path();
        self.stack.push(Frame::Array { base, index: 0 });
        self.seen(span);
        true
    }

    fn array_close(&mut self, span: Span, _: &mut dyn ErrorSink) {
        self.seen(span);
        if self.stack.len() > 1 {
            self.stack.pop();
        }
        self.value_done();
    }

    fn simple_key(&mut self, span: Span, encoding: Option<Encoding>, _: &mut dyn ErrorSink) {
        let key = self.key_text(span, encoding);
        if let Some((_, keys)) = &mut self.header {
            keys.push(key);
        } else if let Some(Frame::Table { keys, .. }) = self.stack.last_mut() {
            keys.push(key);
        }
        self.seen(span);
    }

    fn key_val_sep(&mut self, span: Span, _: &mut dyn ErrorSink) {
        self.seen(span);
    }

    fn scalar(&mut self, span: Span, _: Option<Encoding>, _: &mut dyn ErrorSink) {
        self.seen(span);
    }

    fn value_sep(&mut self, span: Span, _: &mut dyn ErrorSink) {
        match self.stack.last_mut() {
            Some(Frame::Array { index, .. }) => *index += 1,
            Some(Frame::Table { keys, .. }) => keys.clear(),
            None => {}
        }
        self.seen(span);
    }

    fn newline(&mut self, _: Span, _: &mut dyn ErrorSink) {
        // A line ends a pair of the document body (not inside an inline table or array).
        if self.stack.len() == 1 {
            self.value_done();
        }
    }

    fn error(&mut self, span: Span, _: &mut dyn ErrorSink) {
        self.seen(span);
    }
}

impl Walker<'_> {
    fn close_header(&mut self) {
        let Some((array, keys)) = self.header.take() else {
            return;
        };
        let mut path = self.resolve(&keys[..keys.len().saturating_sub(1)]);
        if let Some(last) = keys.last() {
            path.push(last.clone());
            if array {
                let n = self.counts.entry(path.join(".")).or_insert(0);
                *n += 1;
                let i = *n - 1;
                path = indexed(&path, i);
            } else if let Some(n) = self.counts.get(&path.join(".")) {
                // `[a.b]` after `[[a.b]]` names the last entry.
                path = indexed(&path, n - 1);
            }
        }
        self.stack = vec![Frame::Table {
            base: path,
            keys: Vec::new(),
        }];
    }
}

#[cfg(test)]
mod tests {
    use super::key_at;

    const SRC: &str = "workers = 2\n[[listener]]\nname = \"a\"\n[[listener.backend]]\naddress = \"x\"\n[[listener.backend]]\nweight = 0\n[[listener]]\nname = \"b\"\n[[listener.backend]]\nid = \"q\"\n";

    fn at(src: &str, needle: &str) -> String {
        key_at(src, src.find(needle).unwrap())
    }

    #[test]
    fn top_level_key() {
        assert_eq!(at(SRC, "2\n"), "workers");
    }

    #[test]
    fn nested_array_tables_are_indexed() {
        assert_eq!(at(SRC, "\"a\""), "listener[0].name");
        assert_eq!(at(SRC, "\"x\""), "listener[0].backend[0].address");
        assert_eq!(at(SRC, "0\n"), "listener[0].backend[1].weight");
        assert_eq!(at(SRC, "\"b\""), "listener[1].name");
        assert_eq!(at(SRC, "\"q\""), "listener[1].backend[0].id");
    }

    #[test]
    fn a_header_names_its_table() {
        let second = SRC.rfind("[[listener]]").unwrap();
        assert_eq!(key_at(SRC, second + 3), "listener[1]");
    }

    #[test]
    fn dotted_quoted_inline_and_array_spellings() {
        let src = "[[listener]]\nhealth.check = 1\n\"health\".'rise' = 2\nhealth = { fall = 3 }\nbackend = [{ address = 4 }, { weight = 5 }]\ncodes = [6, 7]\n";
        assert_eq!(at(src, "1\n"), "listener[0].health.check");
        assert_eq!(at(src, "2\n"), "listener[0].health.rise");
        assert_eq!(at(src, "3 }"), "listener[0].health.fall");
        assert_eq!(at(src, "4 }"), "listener[0].backend[0].address");
        assert_eq!(at(src, "5 }"), "listener[0].backend[1].weight");
        assert_eq!(at(src, "7]"), "listener[0].codes[1]");
    }

    #[test]
    fn a_syntax_error_is_placed_in_the_key_it_interrupts() {
        assert_eq!(key_at("workers = = 2\n", 10), "workers");
        let src = "[[listener]]\nhealth = { interval = }\n";
        assert_eq!(at(src, "}"), "listener[0].health.interval");
    }
}
