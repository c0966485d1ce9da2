//! `.dockerignore` with the docker CLI's semantics: reading the file, compiling the
//! patterns, and deciding for one context-relative path whether it is sent.
//!
//! Owns: the pattern language only. Must not walk directories or touch Docker; the
//! context walker (`context`) asks `Matcher::excluded` and `Matcher::may_descend`.
//!
//! The rules, as the docker CLI applies them (docs.docker.com "dockerignore" and the
//! moby pattern matcher it uses):
//! - one pattern per line; a line whose first byte is `#` is a comment; surrounding
//!   whitespace is trimmed; empty lines are skipped;
//! - patterns are cleaned like Go's `filepath.Clean` and anchored at the context root:
//!   a leading `/` or `./` is dropped, `a/../b` is `b`;
//! - `*` matches any run of characters except `/`, `?` one character except `/`,
//!   `[a-z]` / `[^a-z]` a character class, `\x` the character `x`;
//! - `**` matches any number of directories, including none (`**/x`, `a/**/b`), and a
//!   trailing `**` matches everything below;
//! - a pattern excludes the path it matches and everything below it (a matched
//!   directory's contents go too), because a path also counts as matched when one of
//!   its parent directories matches;
//! - `!pattern` re-includes; patterns are evaluated in order and the last match wins;
//! - an excluded directory is still descended into when a `!` pattern's text starts
//!   with that directory (so `!dir/keep` works), otherwise it is skipped whole;
//! - the Dockerfile and `.dockerignore` are always sent (added as `!` patterns).
//!
//! Quirks kept on purpose so that we send exactly what `docker build` sends:
//! `**` glued to other characters (`a**b`) only spans whole directories, and a pattern
//! starting with `**` followed by plain text (`**foo`) matches any path ending in it.

use std::fmt;

/// One compiled pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    /// The cleaned text, without the leading `!`.
    text: String,
    exclusion: bool,
    /// Number of `/`-separated parts of `text`.
    depth: usize,
    kind: Kind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    /// Plain text: the path must equal it.
    Exact,
    /// Text then a trailing `**`: the path must start with the text.
    Prefix(String),
    /// `**` then plain text: the path must end with the text.
    Suffix(String),
    /// Anything with wildcards.
    Glob(Vec<Token>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Char(char),
    /// `?`: one character, not `/`.
    One,
    /// `*`: any run without `/`.
    Star,
    /// A trailing `**` after other wildcards: anything at all.
    Any,
    /// `**` (with its `/` eaten) before more pattern: nothing, or anything ending in `/`.
    Dirs,
    Class {
        negated: bool,
        items: Vec<(char, char)>,
    },
}

/// A problem in a `.dockerignore` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatternError {
    pub line: usize,
    pub pattern: String,
    pub message: String,
}

impl fmt::Display for PatternError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "line {}: {:?}: {}",
            self.line, self.pattern, self.message
        )
    }
}

/// The patterns of one context, in file order.
#[derive(Debug, Clone, Default)]
pub struct Matcher {
    patterns: Vec<Pattern>,
    has_exclusions: bool,
}

impl Matcher {
    /// Reads `.dockerignore` text, then adds the `!` patterns that keep the Dockerfile
    /// and `.dockerignore` itself (the docker CLI does the same before sending).
    pub fn from_dockerignore(text: &str, dockerfile: &str) -> Result<Matcher, PatternError> {
        Matcher::from_ignore_file(text, &[".dockerignore", dockerfile])
    }

    /// Reads ignore-file text (the `.dockerignore` syntax), then adds a `!` pattern for
    /// each path of `always_sent` that the patterns would exclude.
    pub fn from_ignore_file(text: &str, always_sent: &[&str]) -> Result<Matcher, PatternError> {
        let mut lines = Vec::new();
        for (i, raw) in text.split('\n').enumerate() {
            let raw = if i == 0 {
                raw.trim_start_matches('\u{feff}')
            } else {
                raw
            };
            if raw.starts_with('#') {
                continue;
            }
            let line = raw.trim();
            if line.is_empty() {
                continue;
            }
            let (invert, rest) = match line.strip_prefix('!') {
                Some(rest) => (true, rest.trim()),
                None => (false, line),
            };
            let mut p = if rest.is_empty() {
                String::new()
            } else {
                let c = clean(rest);
                match c.strip_prefix('/') {
                    Some(stripped) if !stripped.is_empty() => stripped.to_string(),
                    _ => c,
                }
            };
            if invert {
                p.insert(0, '!');
            }
            lines.push((i + 1, p));
        }
        let mut m = Matcher::default();
        for (line, p) in &lines {
            m.push(p).map_err(|message| PatternError {
                line: *line,
                pattern: p.clone(),
                message,
            })?;
        }
        // Always sent: the daemon needs them. Only added when they would be excluded,
        // like the CLI (the resulting set of files is the same either way).
        for keep in always_sent {
            let keep = clean(keep);
            if m.excluded(&keep) {
                m.push(&format!("!{keep}"))
                    .expect("a plain path is a valid pattern");
            }
        }
        Ok(m)
    }

    /// Compiles patterns given one per item (already read from a file).
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Result<Matcher, String> {
        let mut m = Matcher::default();
        for p in patterns {
            m.push(p.as_ref())?;
        }
        Ok(m)
    }

    fn push(&mut self, raw: &str) -> Result<(), String> {
        let raw = raw.trim();
        if raw.is_empty() {
            return Ok(());
        }
        let cleaned = clean(raw);
        let (exclusion, text) = match cleaned.strip_prefix('!') {
            Some("") => return Err("illegal exclusion pattern \"!\"".to_string()),
            Some(rest) => (true, rest.to_string()),
            None => (false, cleaned),
        };
        validate(&text)?;
        let kind = compile(&text);
        self.has_exclusions |= exclusion;
        self.patterns.push(Pattern {
            depth: text.split('/').count(),
            text,
            exclusion,
            kind,
        });
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// Whether `path` (relative to the context, `/`-separated, no leading `./`) is
    /// left out of the context. A path counts as matched by a pattern when the pattern
    /// matches it or one of its parent directories; the last matching pattern decides.
    pub fn excluded(&self, path: &str) -> bool {
        let path = clean(path);
        if path == "." {
            return false;
        }
        let parents: Vec<&str> = match path.rfind('/') {
            Some(i) => path[..i].split('/').collect(),
            None => Vec::new(),
        };
        let mut excluded = false;
        for p in &self.patterns {
            // An exclude can only flip "included", a `!` only "excluded".
            if p.exclusion != excluded {
                continue;
            }
            let mut hit = p.matches(&path);
            if !hit {
                let mut prefix = String::new();
                for dir in &parents {
                    if !prefix.is_empty() {
                        prefix.push('/');
                    }
                    prefix.push_str(dir);
                    if p.matches(&prefix) {
                        hit = true;
                        break;
                    }
                }
            }
            if hit {
                excluded = !p.exclusion;
            }
        }
        excluded
    }

    /// For an excluded directory: whether something below it may still be
    /// re-included, so the walk must look inside. Mirrors the CLI, which descends
    /// only when a `!` pattern's text starts with `dir/`.
    pub fn may_descend(&self, dir: &str) -> bool {
        if !self.has_exclusions {
            return false;
        }
        let dir_slash = format!("{}/", clean(dir));
        self.patterns
            .iter()
            .filter(|p| p.exclusion)
            .any(|p| format!("{}/", p.text).starts_with(&dir_slash))
    }
}

impl Pattern {
    fn matches(&self, path: &str) -> bool {
        match &self.kind {
            Kind::Exact => path == self.text,
            Kind::Prefix(prefix) => path.starts_with(prefix.as_str()),
            Kind::Suffix(suffix) => {
                path.ends_with(suffix.as_str())
                    || suffix.strip_prefix('/').is_some_and(|rest| path == rest)
            }
            Kind::Glob(tokens) => glob_match(tokens, &path.chars().collect::<Vec<_>>()),
        }
    }
}

/// Go's `filepath.Clean` for `/`-separated paths: collapse `//`, drop `.` parts,
/// resolve `..` lexically (never above the root), no trailing `/`; "" becomes ".".
pub fn clean(path: &str) -> String {
    let rooted = path.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|p| *p != "..") {
                    parts.pop();
                } else if !rooted {
                    parts.push("..");
                }
            }
            p => parts.push(p),
        }
    }
    let joined = parts.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".to_string(),
        (false, false) => joined,
    }
}

/// The syntax errors Go's `filepath.Match` reports: a class that is not closed or is
/// empty, a range with a missing end, a trailing `\`.
fn validate(p: &str) -> Result<(), String> {
    let chars: Vec<char> = p.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '\\' => {
                if i + 1 >= chars.len() {
                    return Err("syntax error in pattern: trailing `\\`".into());
                }
                i += 2;
            }
            '[' => {
                let (_, next) = parse_class(&chars, i)
                    .ok_or_else(|| "syntax error in pattern: bad character class".to_string())?;
                i = next;
            }
            _ => i += 1,
        }
    }
    Ok(())
}

/// Parses a class starting at `chars[start] == '['`; returns it and the index after `]`.
#[allow(clippy::type_complexity)]
fn parse_class(chars: &[char], start: usize) -> Option<((bool, Vec<(char, char)>), usize)> {
    let mut i = start + 1;
    let negated = chars.get(i) == Some(&'^');
    if negated {
        i += 1;
    }
    let mut items = Vec::new();
    let one = |i: &mut usize| -> Option<char> {
        let c = *chars.get(*i)?;
        match c {
            '\\' => {
                let e = *chars.get(*i + 1)?;
                *i += 2;
                Some(e)
            }
            '-' | ']' => None,
            c => {
                *i += 1;
                Some(c)
            }
        }
    };
    loop {
        if chars.get(i) == Some(&']') && !items.is_empty() {
            return Some(((negated, items), i + 1));
        }
        let lo = one(&mut i)?;
        let hi = if chars.get(i) == Some(&'-') {
            i += 1;
            one(&mut i)?
        } else {
            lo
        };
        items.push((lo, hi));
    }
}

/// Turns a cleaned pattern into a matcher the way the moby pattern matcher does,
/// including its exact / prefix / suffix shortcuts (which differ from the glob in the
/// corner cases listed in the module comment).
fn compile(p: &str) -> Kind {
    #[derive(PartialEq)]
    enum Detected {
        Exact,
        Prefix,
        Suffix,
        Glob,
    }
    let chars: Vec<char> = p.chars().collect();
    let mut tokens = Vec::new();
    let mut detected = Detected::Exact;
    let mut i = 0;
    let mut first = true;
    while i < chars.len() {
        let c = chars[i];
        i += 1;
        match c {
            '*' if chars.get(i) == Some(&'*') => {
                i += 1;
                if chars.get(i) == Some(&'/') {
                    i += 1;
                }
                if i >= chars.len() {
                    if detected == Detected::Exact {
                        detected = Detected::Prefix;
                    } else {
                        tokens.push(Token::Any);
                        detected = Detected::Glob;
                    }
                } else {
                    tokens.push(Token::Dirs);
                    detected = Detected::Glob;
                }
                if first {
                    detected = Detected::Suffix;
                }
            }
            '*' => {
                tokens.push(Token::Star);
                detected = Detected::Glob;
            }
            '?' => {
                tokens.push(Token::One);
                detected = Detected::Glob;
            }
            '\\' => match chars.get(i) {
                Some(&e) => {
                    i += 1;
                    tokens.push(Token::Char(e));
                    detected = Detected::Glob;
                }
                None => tokens.push(Token::Char('\\')),
            },
            '[' => {
                let ((negated, items), next) =
                    parse_class(&chars, i - 1).expect("validated before compiling");
                i = next;
                tokens.push(Token::Class { negated, items });
                detected = Detected::Glob;
            }
            c => tokens.push(Token::Char(c)),
        }
        first = false;
    }
    match detected {
        Detected::Exact => Kind::Exact,
        Detected::Prefix => Kind::Prefix(p[..p.len() - 2].to_string()),
        Detected::Suffix => Kind::Suffix(p[2..].to_string()),
        Detected::Glob => Kind::Glob(tokens),
    }
}

/// Whole-string match of `tokens` against `text`, by dynamic programming over
/// (token, position) so no pattern can make it exponential.
fn glob_match(tokens: &[Token], text: &[char]) -> bool {
    let n = text.len();
    // reach[j]: the tokens so far can consume exactly text[..j].
    let mut reach = vec![false; n + 1];
    reach[0] = true;
    for t in tokens {
        let mut next = vec![false; n + 1];
        match t {
            Token::Char(c) => {
                for j in 0..n {
                    if reach[j] && text[j] == *c {
                        next[j + 1] = true;
                    }
                }
            }
            Token::One => {
                for j in 0..n {
                    if reach[j] && text[j] != '/' {
                        next[j + 1] = true;
                    }
                }
            }
            Token::Class { negated, items } => {
                for j in 0..n {
                    if reach[j] {
                        let inside = items
                            .iter()
                            .any(|(lo, hi)| *lo <= text[j] && text[j] <= *hi);
                        // Go's regexp: a negated class also matches `/`, a plain one
                        // only what it lists.
                        if inside != *negated {
                            next[j + 1] = true;
                        }
                    }
                }
            }
            Token::Star => {
                for j in 0..=n {
                    if reach[j] {
                        next[j] = true;
                        let mut k = j;
                        while k < n && text[k] != '/' {
                            k += 1;
                            next[k] = true;
                        }
                    }
                }
            }
            Token::Any => {
                if let Some(first) = reach.iter().position(|r| *r) {
                    for slot in next.iter_mut().skip(first) {
                        *slot = true;
                    }
                }
            }
            Token::Dirs => {
                // Nothing, or any run that ends with `/`.
                if let Some(first) = reach.iter().position(|r| *r) {
                    for j in first..=n {
                        if reach[j] {
                            next[j] = true;
                        }
                        if j > first && text[j - 1] == '/' {
                            next[j] = true;
                        }
                    }
                }
            }
        }
        reach = next;
        if !reach.iter().any(|r| *r) {
            return false;
        }
    }
    reach[n]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (patterns, path, excluded?) — derived from the documented behaviour of
    /// `.dockerignore` (docs.docker.com/build/concepts/context/#dockerignore-files)
    /// and the cases the moby pattern matcher is known to decide.
    const TABLE: &[(&[&str], &str, bool)] = &[
        // Plain names are anchored at the root.
        (&["secret.txt"], "secret.txt", true),
        (&["secret.txt"], "sub/secret.txt", false),
        (&["secret.txt"], "secret.txt.bak", false),
        // A leading `/` or `./` is the root too.
        (&["/secret.txt"], "secret.txt", true),
        (&["./secret.txt"], "secret.txt", true),
        (&["/sub/a"], "sub/a", true),
        // Cleaning: `a/../b`, `a//b`, trailing `/`.
        (&["tmp/../build"], "build", true),
        (&["sub//a"], "sub/a", true),
        (&["build/"], "build", true),
        (&["build/"], "build/out.o", true),
        // A matched directory excludes what is below it.
        (&["node_modules"], "node_modules/x/index.js", true),
        (&["node_modules"], "app/node_modules/x.js", false),
        (&["docs/drafts"], "docs/drafts/one.md", true),
        (&["docs/drafts"], "docs/final.md", false),
        // `*` stays within one path part.
        (&["*.md"], "README.md", true),
        (&["*.md"], "docs/README.md", false),
        (&["*/*.md"], "docs/README.md", true),
        (&["*/*.md"], "docs/deep/README.md", false),
        (&["*/temp*"], "somedir/temporary.txt", true),
        (&["*/temp*"], "somedir/temp", true),
        (&["*/temp*"], "temp", false),
        (&["*/*/temp*"], "somedir/subdir/temporary.txt", true),
        (&["*/*/temp*"], "somedir/temporary.txt", false),
        (&["*"], "anything", true),
        (&["*"], "dir/below", true),
        // `?` is one character, not `/`.
        (&["temp?"], "tempa", true),
        (&["temp?"], "temp", false),
        (&["temp?"], "tempab", false),
        (&["a?b"], "a/b", false),
        // Classes.
        (&["file[0-9].txt"], "file7.txt", true),
        (&["file[0-9].txt"], "filex.txt", false),
        (&["file[^0-9].txt"], "filex.txt", true),
        (&["file[^0-9].txt"], "file1.txt", false),
        (&["[ab]c"], "bc", true),
        (&["[ab]c"], "cc", false),
        (&["[a-cx-z]"], "y", true),
        // Escapes.
        (&["\\*"], "*", true),
        (&["\\*"], "x", false),
        (&["a\\?"], "a?", true),
        (&["a\\?"], "ab", false),
        // Regex metacharacters are literal.
        (&["a.b"], "a.b", true),
        (&["a.b"], "axb", false),
        (&["a+(b)|{c}$"], "a+(b)|{c}$", true),
        (&["*.txt"], "atxt", false),
        // `**` spans any number of directories, including none.
        (&["**/*.go"], "main.go", true),
        (&["**/*.go"], "cmd/tool/main.go", true),
        (&["**/*.go"], "main.goo", false),
        (&["**/node_modules"], "node_modules", true),
        (&["**/node_modules"], "a/b/node_modules", true),
        (&["**/node_modules"], "a/b/node_modules/x/y.js", true),
        (&["**/node_modules"], "a/my_node_modules", false),
        (&["src/**/test"], "src/test", true),
        (&["src/**/test"], "src/a/b/test", true),
        (&["src/**/test"], "src/a/b/test/data.json", true),
        (&["src/**/test"], "lib/test", false),
        (&["src/**"], "src/a/b.c", true),
        (&["src/**"], "src", false),
        (&["src/**"], "srcx", false),
        (&["**"], "anything/at/all", true),
        (&["**/"], "x", true),
        (&["**/*"], "x/y", true),
        (&["**/a/**"], "x/a/y", true),
        (&["**/a/**"], "a/y", true),
        (&["**/a/**"], "x/ab/y", false),
        (&["a/**/*.log"], "a/x.log", true),
        (&["a/**/*.log"], "a/b/c/x.log", true),
        (&["a/**/*.log"], "b/x.log", false),
        // `**` glued to text only spans whole directories (moby quirk).
        (&["a**b"], "a/x/b", true),
        (&["a**b"], "axb", false),
        (&["**foo"], "barfoo", true),
        // `!` re-includes; the last match wins.
        (&["*.md", "!README.md"], "README.md", false),
        (&["*.md", "!README.md"], "CHANGES.md", true),
        (
            &["*.md", "!README*.md", "README-secret.md"],
            "README-secret.md",
            true,
        ),
        (
            &["*.md", "!README*.md", "README-secret.md"],
            "README-public.md",
            false,
        ),
        (&["!README.md", "*.md"], "README.md", true),
        (&["docs", "!docs/keep.md"], "docs/keep.md", false),
        (&["docs", "!docs/keep.md"], "docs/other.md", true),
        (&["docs", "!docs/keep.md"], "docs", true),
        (&["docs/*", "!docs/sub"], "docs/sub/x.md", false),
        (
            &["docs/*", "!docs/sub", "docs/sub/private"],
            "docs/sub/private/k",
            true,
        ),
        (&["**/*.tmp", "!keep/**"], "keep/a/b.tmp", false),
        (&["**/*.tmp", "!keep/**"], "other/b.tmp", true),
        // An exception that matches nothing changes nothing.
        (&["*.log", "!nothing"], "x.log", true),
        // No patterns, nothing excluded; the root itself never is.
        (&[], "any/file", false),
        (&["*"], ".", false),
    ];

    #[test]
    fn the_table() {
        let mut failures = Vec::new();
        for (patterns, path, want) in TABLE {
            let m = Matcher::from_dockerignore(&patterns.join("\n"), "Dockerfile")
                .unwrap_or_else(|e| panic!("{patterns:?}: {e}"));
            if m.excluded(path) != *want {
                failures.push(format!(
                    "patterns {patterns:?} path {path:?}: want excluded={want}"
                ));
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    #[test]
    fn reading_the_file() {
        let text = "\u{feff}# a comment\n  *.log  \n\n#*.md\n ! keep.log\n/abs/path\n./rel\n  # not a comment once indented\n";
        let m = Matcher::from_dockerignore(text, "Dockerfile").unwrap();
        let texts: Vec<(bool, &str)> = m
            .patterns
            .iter()
            .map(|p| (p.exclusion, p.text.as_str()))
            .collect();
        assert_eq!(
            texts,
            vec![
                (false, "*.log"),
                (true, "keep.log"),
                (false, "abs/path"),
                (false, "rel"),
                (false, "# not a comment once indented"),
            ]
        );
        assert!(m.excluded("a.log"));
        assert!(!m.excluded("keep.log"));
        assert!(!m.excluded("x.md"), "`#*.md` is a comment");
    }

    #[test]
    fn dockerfile_and_dockerignore_are_always_sent() {
        let m = Matcher::from_dockerignore("*\n", "build/Dockerfile.dev").unwrap();
        assert!(!m.excluded(".dockerignore"));
        assert!(!m.excluded("build/Dockerfile.dev"));
        assert!(m.excluded("build/other"));
        assert!(m.excluded("src/main.rs"));
        assert!(m.may_descend("build"), "the walk must enter build/");
        assert!(!m.may_descend("src"));
        let m = Matcher::from_dockerignore("Dockerfile\n.dockerignore\n", "./Dockerfile").unwrap();
        assert!(!m.excluded("Dockerfile"));
        assert!(!m.excluded(".dockerignore"));
    }

    #[test]
    fn descending_into_excluded_directories() {
        let m = Matcher::new(&["docs", "!docs/keep.md"]).unwrap();
        assert!(m.may_descend("docs"));
        assert!(!m.may_descend("doc"));
        assert!(!m.may_descend("other"));
        let m = Matcher::new(&["docs"]).unwrap();
        assert!(!m.may_descend("docs"), "no exceptions: skip the directory");
        // Like the CLI, a wildcard exception does not open excluded directories.
        let m = Matcher::new(&["vendor", "!**/*.go"]).unwrap();
        assert!(!m.may_descend("vendor"));
    }

    #[test]
    fn syntax_errors_name_the_line() {
        let e = Matcher::from_dockerignore("ok\n[abc\n", "Dockerfile").unwrap_err();
        assert_eq!(e.line, 2);
        assert!(e.message.contains("character class"), "{e}");
        assert!(Matcher::new(&["!"]).is_err());
        assert!(Matcher::new(&["a\\"]).is_err());
        assert!(Matcher::new(&["[]"]).is_err());
        assert!(Matcher::new(&["[a-]"]).is_err());
        assert!(Matcher::new(&["[\\]]"]).is_ok());
    }

    #[test]
    fn clean_is_go_filepath_clean() {
        for (input, want) in [
            ("", "."),
            (".", "."),
            ("./a", "a"),
            ("a/./b/", "a/b"),
            ("a//b", "a/b"),
            ("a/../b", "b"),
            ("../a", "../a"),
            ("/../a", "/a"),
            ("/", "/"),
            ("a/b/../..", "."),
        ] {
            assert_eq!(clean(input), want, "{input:?}");
        }
    }
}
