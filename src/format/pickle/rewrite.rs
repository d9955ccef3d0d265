//! Re-encoding chosen string opcodes of a pickle with new text (key renames in place).

use super::opcodes::*;
use super::*;

/// The result of [`rewrite_strings`].
#[derive(Debug, Clone)]
pub struct Rewrite {
    /// The new pickle.
    pub data: Vec<u8>,
    /// Spans of `GET`/`DUP` opcodes (in the input) that fetched an edited string from the
    /// memo elsewhere and were replaced by a copy of the original string opcode, so that
    /// those other uses keep the old text.
    pub detached: Vec<Range<usize>>,
    /// Number of `FRAME` opcodes dropped.
    pub frames_dropped: usize,
}

/// Re-encodes string opcodes of the pickle `data` with new text.
///
/// Each edit is `(span, text)`, where `span` is a [`StringSpan::span`] from parsing
/// `data` (the opcode that pushed the string: its defining `BINUNICODE`-family opcode,
/// or a `GET` that fetched it from the memo). The opcode is replaced by a `BINUNICODE`
/// of `text`; memo indices are untouched, since `PUT`/`MEMOIZE` opcodes stay where they
/// are. When the defining opcode of a memoized string is edited, other places that
/// fetch it with `GET` would see the new text too; those `GET`s are replaced by a copy
/// of the original opcode and reported in [`Rewrite::detached`], so only the edited
/// occurrence changes.
///
/// `FRAME` opcodes are dropped: their lengths would no longer match, and framing is
/// optional (PEP 3154: "the unpickler must handle frames and non-framed opcodes").
/// Everything else is copied byte for byte.
pub fn rewrite_strings(data: &[u8], edits: &[(Range<usize>, String)]) -> PResult<Rewrite> {
    let parsed = parse(data)?;
    // Replacement bytes by opcode start.
    let mut replace: HashMap<usize, (usize, Vec<u8>)> = HashMap::new();
    let by_start: HashMap<usize, &Occurrence> = parsed
        .occurrences
        .iter()
        .map(|o| (o.start as usize, o))
        .collect();
    let mut edited_lits = Vec::new();
    for (span, text) in edits {
        let Some(o) = by_start
            .get(&span.start)
            .filter(|o| o.end as usize == span.end)
        else {
            return err(
                span.start,
                format!(
                    "bytes {}..{} are not a string opcode of this pickle",
                    span.start, span.end
                ),
            );
        };
        if replace
            .insert(span.start, (span.end, binunicode(text)))
            .is_some()
        {
            return err(span.start, "the same string opcode is edited twice");
        }
        let lit = &parsed.lits[o.lit as usize];
        if (lit.start, lit.end) == (o.start, o.end) {
            edited_lits.push(o.lit);
        }
    }
    let mut detached = Vec::new();
    for lit_id in edited_lits {
        let lit = &parsed.lits[lit_id as usize];
        let original = &data[lit.start as usize..lit.end as usize];
        for o in parsed
            .occurrences
            .iter()
            .filter(|o| o.lit == lit_id && o.start != lit.start)
        {
            if let std::collections::hash_map::Entry::Vacant(e) = replace.entry(o.start as usize) {
                e.insert((o.end as usize, original.to_vec()));
                detached.push(o.start as usize..o.end as usize);
            }
        }
    }
    detached.sort_by_key(|r| r.start);
    let mut out =
        Vec::with_capacity(data.len() + edits.iter().map(|(_, t)| t.len() + 5).sum::<usize>());
    let mut pos = 0;
    let mut frames_dropped = 0;
    loop {
        let o = read_op(data, pos)?;
        if o.code == op::FRAME {
            frames_dropped += 1;
        } else if let Some((end, bytes)) = replace.get(&o.start) {
            debug_assert_eq!(*end, o.end);
            out.extend_from_slice(bytes);
        } else {
            out.extend_from_slice(&data[o.start..o.end]);
        }
        pos = o.end;
        if o.code == op::STOP {
            break;
        }
    }
    out.extend_from_slice(&data[pos..]);
    Ok(Rewrite {
        data: out,
        detached,
        frames_dropped,
    })
}

/// `BINUNICODE` (or `BINUNICODE8` past 4 GiB) of `text`.
fn binunicode(text: &str) -> Vec<u8> {
    let b = text.as_bytes();
    let mut out = Vec::with_capacity(b.len() + 9);
    match u32::try_from(b.len()) {
        Ok(n) => {
            out.push(op::BINUNICODE);
            out.extend_from_slice(&n.to_le_bytes());
        }
        Err(_) => {
            out.push(op::BINUNICODE8);
            out.extend_from_slice(&(b.len() as u64).to_le_bytes());
        }
    }
    out.extend_from_slice(b);
    out
}
