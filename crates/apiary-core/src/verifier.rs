//! Reading a verifier log the way a person would: which instruction failed, what the verifier
//! said about it, the C line it came from, what the registers it names held, and what usually
//! causes that message.
//!
//! The input is the kernel's log at level 1, as libbpf retrieves it after a failed load. At that
//! level the kernel keeps only the path that failed: instructions as `N: (op) text ; state`,
//! register states as `N: R1=... R10=fp0` or `from A to B: ...`, and, when the program carries
//! BTF line info (compiled with `-g`), the source line of the instructions that follow as
//! `; text @ file.c:LINE`. The error comes after the last instruction, then statistics.

use serde::{Deserialize, Serialize};

/// What the verifier objected to, in a form a CLI, a gRPC detail and a Kubernetes condition
/// can all show.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Diagnosis {
    /// Index of the instruction the verifier stopped at, when it names one.
    pub insn: Option<u32>,
    /// That instruction as the verifier printed it (`r1 = *(u64 *)(r0 +0)`), without its opcode
    /// and state; empty without an instruction.
    pub insn_text: String,
    /// The verifier's error line (`R0 invalid mem access 'map_value_or_null'`).
    pub message: String,
    /// The C line the failing instruction came from.
    pub source: Option<SourceLine>,
    /// Registers the error names (or else the instruction uses), each with the last state the
    /// log showed for it (`("R0", "map_value_or_null(id=1,...)")`).
    pub registers: Vec<(String, String)>,
    pub hint: Option<Hint>,
    /// The end of the raw log, for what the summary leaves out.
    pub log_tail: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceLine {
    pub file: String,
    pub line: u32,
    /// The source text as the kernel printed it (from the program's BTF strings).
    pub text: String,
}

impl std::fmt::Display for SourceLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

/// The common causes of a rejection, each with advice that fixes most cases of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Hint {
    /// A pointer a helper may return as NULL (a map lookup) was used without checking it.
    NullCheck,
    /// A packet access beyond the length the program checked against `data_end`.
    PacketBounds,
    /// A loop the verifier cannot see end.
    UnboundedLoop,
    /// The 512-byte stack (of one frame, or of a chain of calls) is exceeded.
    StackLimit,
    /// The verifier gave up at its limit of processed instructions or branch states.
    TooComplex,
    /// None of the above: what the message and registers say is all there is.
    Generic,
}

impl Hint {
    /// All hints, for conversions that look one up by name.
    pub const ALL: [Hint; 6] = [
        Hint::NullCheck,
        Hint::PacketBounds,
        Hint::UnboundedLoop,
        Hint::StackLimit,
        Hint::TooComplex,
        Hint::Generic,
    ];

    /// A stable name, for the wire.
    pub fn name(self) -> &'static str {
        match self {
            Hint::NullCheck => "null-check",
            Hint::PacketBounds => "packet-bounds",
            Hint::UnboundedLoop => "unbounded-loop",
            Hint::StackLimit => "stack-limit",
            Hint::TooComplex => "too-complex",
            Hint::Generic => "generic",
        }
    }

    pub fn from_name(name: &str) -> Option<Hint> {
        Hint::ALL.into_iter().find(|h| h.name() == name)
    }

    /// One line of advice.
    pub fn text(self) -> &'static str {
        match self {
            Hint::NullCheck => {
                "check the value returned by bpf_map_lookup_elem for NULL before using it"
            }
            Hint::PacketBounds => {
                "check that the packet is long enough before reading it: compare the end of each \
                 header (pointer + size) against data_end before its first access"
            }
            Hint::UnboundedLoop => {
                "every path through the loop must move it towards an end the verifier can see: a \
                 constant bound on a counter that is advanced on each iteration (or bpf_loop)"
            }
            Hint::StackLimit => {
                "the BPF stack is 512 bytes for a program and the functions it calls together: \
                 keep large buffers in a per-CPU array map instead of local variables"
            }
            Hint::TooComplex => {
                "the verifier gave up after 1,000,000 instructions on all paths: lower loop \
                 bounds, move the loop body into bpf_loop, or split the program with tail calls"
            }
            Hint::Generic => {
                "the verifier could not prove this instruction safe: the registers below show \
                 what it knew about its operands"
            }
        }
    }

    /// The hint for a verifier error line.
    fn for_message(message: &str) -> Hint {
        let m = message;
        if m.contains("invalid mem access") && m.contains("_or_null") {
            Hint::NullCheck
        } else if m.contains("invalid access to packet") {
            Hint::PacketBounds
        } else if m.contains("back-edge")
            || m.contains("infinite loop detected")
            || m.contains("loop is not bounded")
            || m.contains("unbounded loop")
        {
            Hint::UnboundedLoop
        } else if m.contains("combined stack size")
            || m.contains("invalid write to stack")
            || m.contains("stack size")
            || m.contains("stack limit")
            || m.contains("stack depth")
        {
            Hint::StackLimit
        } else if m.contains("BPF program is too large")
            || m.contains("jumps is too complex")
            || m.contains("too many states")
        {
            Hint::TooComplex
        } else {
            Hint::Generic
        }
    }
}

/// One line of the log, as the parser sees it.
enum Line<'a> {
    /// `; text @ file.c:LINE` (the kernel prints one before each new source line); read by
    /// `source_comment` only for the line that matters, as logs run to a million lines.
    Source(&'a str),
    /// `N: (op) text` with, after `;`, the state of the registers it wrote.
    Insn {
        idx: u32,
        text: &'a str,
        state: Option<&'a str>,
    },
    /// A register state without an instruction: `N: R1=...`, `from A to B: R1=...`.
    State(&'a str),
    /// Statistics and bookkeeping the verifier prints around the error.
    Noise,
    Other(&'a str),
}

fn classify(line: &str) -> Line<'_> {
    let l = line.trim_end();
    if let Some(rest) = l.strip_prefix(';') {
        return Line::Source(rest);
    }
    if let Some(rest) = l.strip_prefix("from ") {
        // `from 44 to 20: R0=...`
        if let Some((_, state)) = rest.split_once(": ") {
            return Line::State(state);
        }
    }
    let noise = [
        "processed ",
        "verification time",
        "stack depth",
        "mark_precise:",
        "cur state:",
        "old state:",
        "func#",
        "Live regs",
        "returning from callee",
        "caller:",
        "callee:",
        "to caller at",
        "SCC ",
        "-- END PROG LOAD LOG --",
        "... (",
    ];
    if noise.iter().any(|n| l.starts_with(n)) || l.trim().is_empty() {
        return Line::Noise;
    }
    // Indented lines are the `Live regs` table or a callee's state: not the trace itself.
    if l.starts_with(' ') {
        return Line::Noise;
    }
    let digits = l.bytes().take_while(u8::is_ascii_digit).count();
    if digits > 0 {
        if let (Ok(idx), Some(rest)) = (l[..digits].parse::<u32>(), l[digits..].strip_prefix(": "))
        {
            if let Some(after) = rest.strip_prefix('(') {
                // `(79) r1 = ...`: a two-digit hex opcode, then the instruction.
                if let Some((op, text)) = after.split_once(") ") {
                    if op.len() == 2 && op.bytes().all(|b| b.is_ascii_hexdigit()) {
                        let (text, state) = match text.split_once(" ; ") {
                            Some((t, s)) => (t.trim_end(), Some(s.trim())),
                            None => (text.trim_end(), None),
                        };
                        return Line::Insn { idx, text, state };
                    }
                }
            }
            return Line::State(rest);
        }
    }
    Line::Other(l.trim())
}

/// `text @ file.c:LINE` after the `;`; None for the compiler's line 0 (no source line) and for
/// kernels that print the text without its place.
fn source_comment(rest: &str) -> Option<SourceLine> {
    source_parts(rest).map(|(text, file, line)| SourceLine {
        file: file.to_string(),
        line,
        text: text.to_string(),
    })
}

/// `source_comment` without allocating, for the pass over every line.
fn source_parts(rest: &str) -> Option<(&str, &str, u32)> {
    let (text, place) = rest.rsplit_once(" @ ")?;
    let (file, line) = place.trim().rsplit_once(':')?;
    let line: u32 = line.parse().ok()?;
    (line != 0).then_some((text.trim(), file, line))
}

/// Splits a state (`R0=map_value(id=1,map=m) R1_w=scalar() fp-8=mmmm????`) into its
/// registers, upper-cased and without the `_w` (written) suffix. Parentheses hold commas and
/// spaces (`var_off=(0x0; 0xff)`), so fields split at spaces outside them only.
fn registers_of(state: &str) -> Vec<(String, String)> {
    let state = state.trim();
    let state = match state.strip_prefix("frame") {
        Some(rest) => rest.split_once(": ").map(|(_, s)| s).unwrap_or(rest),
        None => state,
    };
    let mut out = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    let bytes = state.as_bytes();
    for i in 0..=bytes.len() {
        let c = bytes.get(i).copied();
        match c {
            Some(b'(') => depth += 1,
            Some(b')') => depth -= 1,
            Some(b' ') | None if depth <= 0 => {
                if let Some((name, value)) = state[start..i].split_once('=') {
                    if let Some(reg) = register_name(name) {
                        out.push((reg, value.to_string()));
                    }
                }
                start = i + 1;
            }
            _ => {}
        }
    }
    out
}

/// `R1`, `R1_w`, `r1` → `R1`; anything else (stack slots, `fp-8`) → None.
fn register_name(s: &str) -> Option<String> {
    let s = s.strip_suffix("_w").unwrap_or(s);
    let n = s.strip_prefix('R').or_else(|| s.strip_prefix('r'))?;
    if n.is_empty() || n.len() > 2 || !n.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u8 = n.parse().ok()?;
    (n <= 10).then(|| format!("R{n}"))
}

/// Register names in a piece of text (`R0 invalid mem access`, `r1 = *(u64 *)(r0 +0)`, `w1`),
/// in order of appearance, once each.
fn registers_named(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        let boundary = i == 0 || !bytes[i - 1].is_ascii_alphanumeric() && bytes[i - 1] != b'_';
        if boundary && matches!(c, b'r' | b'R' | b'w') {
            let digits = bytes[i + 1..]
                .iter()
                .take_while(|b| b.is_ascii_digit())
                .count();
            let end = i + 1 + digits;
            let next_ok = bytes
                .get(end)
                .is_none_or(|b| !b.is_ascii_alphanumeric() && *b != b'_');
            if (1..=2).contains(&digits) && next_ok {
                if let Ok(n) = text[i + 1..end].parse::<u8>() {
                    let name = format!("R{n}");
                    if n <= 10 && !out.contains(&name) {
                        out.push(name);
                    }
                }
            }
            i = end.max(i + 1);
            continue;
        }
        i += 1;
    }
    out
}

/// Reads a verifier log (the text between libbpf's BEGIN/END PROG LOAD LOG markers, or the
/// whole log). `tail_lines` is how many non-empty lines of it `log_tail` keeps.
pub fn diagnose(log: &str, tail_lines: usize) -> Diagnosis {
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    // One pass that only borrows: the last instruction (its line, index, text and source
    // comment) and the lines after it. Register states are read afterwards, backwards.
    let mut source: Option<&str> = None;
    let mut last_insn: Option<(usize, u32, &str, Option<&str>)> = None;
    let mut after: Vec<&str> = Vec::new();
    for (pos, line) in lines.iter().enumerate() {
        match classify(line) {
            Line::Source(s) => {
                // Line 0 means "no source line": the instructions after it still belong to
                // the previous one as far as a reader is concerned.
                if source_parts(s).is_some() {
                    source = Some(s);
                }
            }
            Line::Insn { idx, text, .. } => {
                last_insn = Some((pos, idx, text, source));
                after.clear();
            }
            Line::State(_) => after.clear(),
            Line::Noise => {}
            Line::Other(l) => after.push(l),
        }
    }
    // The error is sometimes followed by a line that explains it (`R1 offset is outside of the
    // packet`, `R0 min value is outside of the allowed memory range`): keep both.
    let message = (!after.is_empty())
        .then(|| after.iter().take(3).copied().collect::<Vec<_>>().join("; "))
        .or_else(|| {
            lines
                .iter()
                .rev()
                .map(|l| l.trim())
                .find(|l| !l.is_empty() && matches!(classify(l), Line::Other(_)))
                .map(str::to_string)
        })
        .unwrap_or_default();
    // A loop is reported at the instruction the kernel names, which is where it last was.
    let named_insn = message
        .split_once("at insn ")
        .or_else(|| message.split_once("back-edge from insn "))
        .and_then(|(_, r)| {
            let d: String = r.chars().take_while(char::is_ascii_digit).collect();
            d.parse::<u32>().ok()
        });
    let (insn, insn_text, source, insn_pos) = match last_insn {
        // Some rejections (the combined stack size) come after the whole program verified:
        // the log has no instructions left, and the last one seen is not the culprit.
        Some((pos, idx, text, src)) if !after.is_empty() || named_insn.is_some() => (
            Some(named_insn.unwrap_or(idx)),
            text.to_string(),
            src.and_then(source_comment),
            Some(pos),
        ),
        _ => (named_insn, String::new(), None, None),
    };
    let mut names = registers_named(&message);
    if names.is_empty() {
        names = registers_named(&insn_text);
    }
    // R10 is always the frame pointer: it says nothing a reader needs.
    names.retain(|n| n != "R10");
    let registers = match insn_pos {
        Some(pos) => last_states(&lines[..pos], &names),
        None => Vec::new(),
    };
    let hint = (!message.is_empty()).then(|| Hint::for_message(&message));
    let skip = lines.len().saturating_sub(tail_lines);
    let mut log_tail = String::new();
    if skip > 0 {
        log_tail.push_str(&format!(
            "... ({skip} earlier lines of the verifier log omitted)\n"
        ));
    }
    log_tail.push_str(&lines[skip..].join("\n"));
    Diagnosis {
        insn,
        insn_text,
        message,
        source,
        registers,
        hint,
        log_tail,
    }
}

/// The last state the log shows for each of `names` before its end, searching backwards. A
/// call clobbers R1-R5: a state from before one is stale, so the search for those stops there.
fn last_states(lines: &[&str], names: &[String]) -> Vec<(String, String)> {
    let mut found: Vec<Option<String>> = vec![None; names.len()];
    let mut gone = vec![false; names.len()];
    for line in lines.iter().rev() {
        let (state, call) = match classify(line) {
            Line::Insn { text, state, .. } => (state, text.starts_with("call ")),
            Line::State(s) => (Some(s), false),
            _ => continue,
        };
        if let Some(state) = state {
            for (reg, value) in registers_of(state) {
                if let Some(i) = names.iter().position(|n| *n == reg) {
                    if found[i].is_none() && !gone[i] {
                        found[i] = Some(value);
                    }
                }
            }
        }
        if call {
            for (i, n) in names.iter().enumerate() {
                if matches!(n.as_str(), "R1" | "R2" | "R3" | "R4" | "R5") {
                    gone[i] = true;
                }
            }
        }
        if found.iter().zip(&gone).all(|(f, g)| f.is_some() || *g) {
            break;
        }
    }
    names
        .iter()
        .zip(found)
        .filter_map(|(n, v)| v.map(|v| (n.clone(), v)))
        .collect()
}

/// The first call from `program` to another BPF function, read from the object: where a
/// rejection that names no instruction (the combined stack size of a call chain, checked after
/// the whole program verified) comes from. Its C line comes from the object's `.BTF.ext` line
/// info. None when the program makes no such call or the object lacks what is needed.
pub fn call_site(object: &[u8], program: &str) -> Option<(u32, String, Option<SourceLine>)> {
    use object::read::elf::ElfFile64;
    use object::{Object, ObjectSection, ObjectSymbol};
    let mut storage = Vec::new();
    let bytes = crate::elf::aligned(object, &mut storage);
    let file = ElfFile64::<object::LittleEndian>::parse(bytes).ok()?;
    let sym = file
        .symbols()
        .find(|s| s.kind() == object::SymbolKind::Text && s.name() == Ok(program))?;
    let section = file.section_by_index(sym.section_index()?).ok()?;
    let code = section.data().ok()?;
    let start = usize::try_from(sym.address()).ok()?;
    let end = start.checked_add(usize::try_from(sym.size()).ok()?)?;
    let insns = code.get(start..end.min(code.len()))?;
    // BPF_JMP | BPF_CALL with src_reg BPF_PSEUDO_CALL (1): a call to a function in the object.
    let (i, insn) = insns
        .chunks_exact(8)
        .enumerate()
        .find(|(_, b)| b[0] == 0x85 && b[1] >> 4 == 1)?;
    let imm = i32::from_le_bytes([insn[4], insn[5], insn[6], insn[7]]);
    // The callee is named by a relocation (libbpf resolves it: the target instruction is the
    // symbol's plus imm + 1); without one the offset is already final.
    let at = (start + i * 8) as u64;
    let callee = section
        .relocations()
        .find(|(off, _)| *off == at)
        .and_then(|(_, r)| match r.target() {
            object::RelocationTarget::Symbol(idx) => file.symbol_by_index(idx).ok(),
            _ => None,
        })
        .and_then(|target| {
            let insn = i64::try_from(target.address() / 8).ok()? + i64::from(imm) + 1;
            let addr = u64::try_from(insn).ok()? * 8;
            let callee_section = target.section_index()?;
            file.symbols()
                .find(|s| {
                    s.kind() == object::SymbolKind::Text
                        && s.section_index() == Some(callee_section)
                        && s.address() == addr
                })
                .and_then(|s| s.name().ok().map(str::to_string))
        });
    let text = match callee {
        Some(name) => format!("call {name}"),
        None => format!("call pc{imm:+}"),
    };
    let idx = u32::try_from(i).ok()?;
    let call_off = u32::try_from(start + i * 8).ok()?;
    let section_name = section.name().ok()?;
    let btf = file.section_by_name(".BTF").and_then(|s| s.data().ok());
    let ext = file.section_by_name(".BTF.ext").and_then(|s| s.data().ok());
    let source = match (btf, ext) {
        (Some(btf), Some(ext)) => line_of(btf, ext, section_name, call_off),
        _ => None,
    };
    Some((idx, text, source))
}

fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    let s = b.get(off..off.checked_add(4)?)?;
    Some(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

/// The source line of the instruction at byte `insn_off` of `section`, from `.BTF.ext`'s line
/// info (records of insn_off, file_name_off, line_off, line_col, grouped by section name) and
/// the `.BTF` strings the offsets point into.
fn line_of(btf: &[u8], ext: &[u8], section: &str, insn_off: u32) -> Option<SourceLine> {
    let btf_hdr = u32_at(btf, 4)? as usize;
    let str_start = btf_hdr.checked_add(u32_at(btf, 16)? as usize)?;
    let strings = btf.get(str_start..str_start.checked_add(u32_at(btf, 20)? as usize)?)?;
    let string = |off: u32| -> Option<&str> {
        let rest = strings.get(off as usize..)?;
        let end = rest.iter().position(|b| *b == 0)?;
        std::str::from_utf8(&rest[..end]).ok()
    };
    let ext_hdr = u32_at(ext, 4)? as usize;
    let li_start = ext_hdr.checked_add(u32_at(ext, 16)? as usize)?;
    let li = ext.get(li_start..li_start.checked_add(u32_at(ext, 20)? as usize)?)?;
    let rec = u32_at(li, 0)? as usize;
    if rec < 16 {
        return None;
    }
    let mut pos = 4;
    while pos + 8 <= li.len() {
        let name = string(u32_at(li, pos)?);
        let n = u32_at(li, pos + 4)? as usize;
        let records = li.get(pos + 8..pos + 8 + n.checked_mul(rec)?)?;
        pos += 8 + n * rec;
        if name != Some(section) {
            continue;
        }
        // Records are in instruction order: the last one at or before the call, with a line.
        let mut best = None;
        for r in records.chunks_exact(rec) {
            let off = u32_at(r, 0)?;
            if off > insn_off {
                break;
            }
            let line = u32_at(r, 12)? >> 10;
            if line != 0 {
                best = Some((u32_at(r, 4)?, u32_at(r, 8)?, line));
            }
        }
        let (file, text, line) = best?;
        let file = string(file)?;
        return Some(SourceLine {
            file: file.rsplit('/').next().unwrap_or(file).to_string(),
            line,
            text: string(text)?.trim().to_string(),
        });
    }
    None
}

impl Diagnosis {
    /// For a stack-size rejection, which names no instruction: point at `program`'s first call
    /// into another function of `object`, the call that stacks the frames.
    pub fn place_stack_error(&mut self, object: &[u8], program: &str) {
        if self.insn.is_some() || self.hint != Some(Hint::StackLimit) {
            return;
        }
        if let Some((insn, text, source)) = call_site(object, program) {
            self.insn = Some(insn);
            self.insn_text = text;
            self.source = source;
        }
    }
    /// The summary a person reads first, one fact a line, indented under an error's heading:
    /// where (source), what (instruction, message), with what (registers), and what to do.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        if let Some(s) = &self.source {
            out.push_str(&format!("  at {s}: {}\n", s.text));
        }
        if let Some(i) = self.insn {
            if self.insn_text.is_empty() {
                out.push_str(&format!("  insn {i}\n"));
            } else {
                out.push_str(&format!("  insn {i}: {}\n", self.insn_text));
            }
        }
        if !self.message.is_empty() {
            out.push_str(&format!("  verifier: {}\n", self.message));
        }
        for (r, v) in &self.registers {
            out.push_str(&format!("  {r} {v}\n"));
        }
        if let Some(h) = self.hint {
            out.push_str(&format!("  hint: {}\n", h.text()));
        }
        out
    }

    /// One line for a status: `file.c:LINE: hint (message)`, falling back to what is known.
    pub fn one_line(&self) -> String {
        let what = match self.hint {
            Some(h) if h != Hint::Generic => format!("{} ({})", h.text(), self.message),
            _ => self.message.clone(),
        };
        match (&self.source, self.insn) {
            (Some(s), _) => format!("{s}: {what}"),
            (None, Some(i)) => format!("insn {i}: {what}"),
            (None, None) => what,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Real logs from Linux 6.18 (libbpf's level-1 retry) for tests/fixtures/bpf/verifier_*.bpf.c.
    const NULL: &str = include_str!("../testdata/verifier/null.log");
    const PACKET: &str = include_str!("../testdata/verifier/packet.log");
    const LOOP: &str = include_str!("../testdata/verifier/loop.log");
    const STACK: &str = include_str!("../testdata/verifier/stack.log");
    const TOO_LARGE: &str = include_str!("../testdata/verifier/too_large.log");

    fn src(file: &str, line: u32, text: &str) -> Option<SourceLine> {
        Some(SourceLine {
            file: file.into(),
            line,
            text: text.into(),
        })
    }

    #[test]
    fn null_check() {
        let d = diagnose(NULL, 40);
        assert_eq!(d.insn, Some(7));
        assert_eq!(d.insn_text, "r1 = *(u64 *)(r0 +0)");
        assert_eq!(d.message, "R0 invalid mem access 'map_value_or_null'");
        assert_eq!(d.source, src("verifier_null.bpf.c", 17, "*count += 1;"));
        assert_eq!(
            d.registers,
            vec![(
                "R0".to_string(),
                "map_value_or_null(id=1,map=packets_by_prot,ks=4,vs=8)".to_string()
            )]
        );
        assert_eq!(d.hint, Some(Hint::NullCheck));
        assert!(d.log_tail.ends_with("mark_read 0"), "{}", d.log_tail);
        assert_eq!(
            d.one_line(),
            "verifier_null.bpf.c:17: check the value returned by bpf_map_lookup_elem for NULL \
             before using it (R0 invalid mem access 'map_value_or_null')"
        );
    }

    #[test]
    fn packet_bounds() {
        let d = diagnose(PACKET, 40);
        assert_eq!(d.insn, Some(6));
        assert_eq!(d.insn_text, "r1 = *(u8 *)(r1 +23)");
        assert_eq!(
            d.message,
            "invalid access to packet, off=23 size=1, R1(id=0,off=23,r=14); \
             R1 offset is outside of the packet"
        );
        assert_eq!(
            d.source,
            src(
                "verifier_packet.bpf.c",
                14,
                "if (ip->protocol == IPPROTO_UDP)"
            )
        );
        assert_eq!(d.registers, vec![("R1".into(), "pkt(r=0)".into())]);
        assert_eq!(d.hint, Some(Hint::PacketBounds));
    }

    #[test]
    fn unbounded_loop_is_placed_at_the_named_insn() {
        let d = diagnose(LOOP, 40);
        assert_eq!(d.insn, Some(10));
        assert_eq!(d.insn_text, "goto pc-1");
        assert_eq!(d.message, "infinite loop detected at insn 10");
        assert_eq!(d.source, src("verifier_loop.bpf.c", 20, "if (*skip)"));
        assert!(d.registers.is_empty(), "{:?}", d.registers);
        assert_eq!(d.hint, Some(Hint::UnboundedLoop));
    }

    #[test]
    fn stack_size_has_no_instruction() {
        let d = diagnose(STACK, 40);
        assert_eq!(d.insn, None);
        assert_eq!(d.source, None);
        assert_eq!(
            d.message,
            "combined stack size of 2 calls is 656. Too large"
        );
        assert_eq!(d.hint, Some(Hint::StackLimit));
        assert_eq!(
            d.one_line(),
            format!("{} ({})", Hint::StackLimit.text(), d.message)
        );
    }

    #[test]
    fn a_stack_error_is_placed_at_the_call_from_the_object() {
        let object = std::fs::read(apiary_fixtures::object("verifier_stack")).expect("fixture");
        let mut d = diagnose(STACK, 40);
        d.place_stack_error(&object, "record_packet");
        assert_eq!(
            d.source,
            src("verifier_stack.bpf.c", 30, "save_copy(1, &r);")
        );
        assert_eq!(d.insn_text, "call save_copy");
        assert!(d.insn.is_some());
        // Another cause is left as the verifier placed it.
        let mut n = diagnose(NULL, 40);
        let before = n.clone();
        n.place_stack_error(&object, "record_packet");
        assert_eq!(n, before);
    }

    #[test]
    fn too_many_instructions() {
        let d = diagnose(TOO_LARGE, 10);
        assert_eq!(d.insn, Some(10));
        assert_eq!(d.insn_text, "r1 ^= r2");
        assert_eq!(
            d.message,
            "BPF program is too large. Processed 1000001 insn"
        );
        assert_eq!(
            d.source,
            src("verifier_too_large.bpf.c", 21, "h = (h ^ i) * 31;")
        );
        assert_eq!(
            d.registers,
            vec![
                ("R1".into(), "scalar()".into()),
                ("R2".into(), "0x30d3e".into())
            ]
        );
        assert_eq!(d.hint, Some(Hint::TooComplex));
        assert!(d.log_tail.starts_with("... ("), "{}", d.log_tail);
        assert_eq!(d.log_tail.lines().count(), 11);
    }

    #[test]
    fn other_messages_get_the_generic_hint() {
        let log = "0: R1=ctx() R10=fp0\n0: (b7) r0 = 0                 ; R0_w=0\n1: (79) r1 = *(u64 *)(r0 +32)\nR0 invalid mem access 'scalar'\nprocessed 2 insns (limit 1000000)\n";
        let d = diagnose(log, 40);
        assert_eq!(d.insn, Some(1));
        assert_eq!(d.registers, vec![("R0".into(), "0".into())]);
        assert_eq!(d.hint, Some(Hint::Generic));
        assert_eq!(d.source, None);
        assert_eq!(d.one_line(), "insn 1: R0 invalid mem access 'scalar'");
    }

    #[test]
    fn frames_printed_at_a_call_are_not_the_error() {
        // At a bpf-to-bpf call the kernel prints both frames; the error comes after.
        let log = "0: R1=ctx() R10=fp0\n; return helper(ctx); @ p.bpf.c:9\n3: (85) call pc+2\ncaller:\n R10=fp0\ncallee:\n frame1: R1=ctx() R10=fp0\n6: frame1: R1=ctx() R10=fp0\n; return *(int *)0; @ p.bpf.c:4\n6: (61) r0 = *(u32 *)(r1 +999)\ninvalid bpf_context access off=999 size=4\nprocessed 3 insns\n";
        let d = diagnose(log, 40);
        assert_eq!(d.insn, Some(6));
        assert_eq!(d.message, "invalid bpf_context access off=999 size=4");
        assert_eq!(d.source, src("p.bpf.c", 4, "return *(int *)0;"));
        assert_eq!(d.registers, vec![("R1".into(), "ctx()".into())]);
    }

    #[test]
    fn states_split_outside_parentheses() {
        assert_eq!(
            registers_of("frame1: R1=scalar(smin=0,var_off=(0x0; 0xff)) R2_w=fp-8 fp-8=mmmm????"),
            vec![
                ("R1".into(), "scalar(smin=0,var_off=(0x0; 0xff))".into()),
                ("R2".into(), "fp-8".into())
            ]
        );
        assert_eq!(
            registers_named("if w1 > r12 goto pc+1; R3(id=0) rx r5x"),
            vec!["R1".to_string(), "R3".to_string()]
        );
    }

    #[test]
    fn hints_round_trip_by_name() {
        for h in Hint::ALL {
            assert_eq!(Hint::from_name(h.name()), Some(h));
        }
        assert_eq!(Hint::from_name("nope"), None);
        assert_eq!(diagnose("", 5), Diagnosis::default());
    }
}
