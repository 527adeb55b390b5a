//! Line reading with a size cap: a 10 MB line is reported and skipped, never buffered whole.

use std::io::BufRead;

/// One line of input, or the fact that it was too long.
pub enum Line {
    /// The line's bytes, without the newline.
    Data(Vec<u8>),
    /// The line exceeded the cap; its length in bytes.
    TooLong(usize),
}

/// Reads the next line (None at end of input), keeping at most `cap` bytes of it.
pub fn next_line<R: BufRead>(r: &mut R, cap: usize) -> std::io::Result<Option<Line>> {
    let mut buf = Vec::new();
    let mut total = 0usize;
    let mut any = false;
    loop {
        let chunk = r.fill_buf()?;
        if chunk.is_empty() {
            return Ok(any.then(|| finish(buf, total, cap)));
        }
        any = true;
        let (take, done) = match chunk.iter().position(|&b| b == b'\n') {
            Some(i) => (i, true),
            None => (chunk.len(), false),
        };
        if total + take <= cap {
            buf.extend_from_slice(&chunk[..take]);
        } else {
            buf = Vec::new();
        }
        total += take;
        r.consume(if done { take + 1 } else { take });
        if done {
            return Ok(Some(finish(buf, total, cap)));
        }
    }
}

fn finish(mut buf: Vec<u8>, total: usize, cap: usize) -> Line {
    if total > cap {
        return Line::TooLong(total);
    }
    if buf.last() == Some(&b'\r') {
        buf.pop();
    }
    Line::Data(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_long_lines_and_keeps_going() {
        let input = format!("short\n{}\nafter\nlast", "x".repeat(100));
        let mut r = std::io::BufReader::with_capacity(8, input.as_bytes());
        let mut got = Vec::new();
        while let Some(l) = next_line(&mut r, 10).unwrap() {
            got.push(match l {
                Line::Data(d) => String::from_utf8(d).unwrap(),
                Line::TooLong(n) => format!("too long {n}"),
            });
        }
        assert_eq!(got, vec!["short", "too long 100", "after", "last"]);
    }
}
