//! The run journal: a small 0600 JSON file recording what this run created, written
//! before and after each creating action, so that
//! - the first Ctrl-C undoes exactly what this run created (never an earlier run's work),
//! - a run that died (second Ctrl-C, kill, power loss) leaves enough behind for the
//!   next run to resume, or to say what to clean up.
//!
//! Owns: the file format and its updates. What an action means and how it is undone
//! belongs to whoever records it (`cluster` for clusters and state files).

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::state;

pub const FILE_NAME: &str = "journal.json";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RunStatus {
    /// The run is going on, or died without updating the journal.
    Running,
    Completed,
    /// Interrupted, and what it created was undone.
    Undone,
    /// Failed; what it created may still exist (see the entries).
    Failed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EntryStatus {
    /// The action began; whatever it makes may exist in part.
    Started,
    Done,
    Undone,
}

/// What an entry made. Other steps of `up` record theirs as `Other`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "kebab-case")]
pub enum Action {
    KindCluster {
        name: String,
    },
    StateFile {
        path: PathBuf,
    },
    Other {
        id: String,
        detail: serde_json::Value,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    #[serde(flatten)]
    pub action: Action,
    pub status: EntryStatus,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub pid: u32,
    /// Unix seconds.
    pub started_at: u64,
    pub command: String,
    pub status: RunStatus,
    pub entries: Vec<Entry>,
}

impl Record {
    /// Entries that may have left something behind, newest first.
    pub fn leftovers(&self) -> Vec<(usize, &Action)> {
        self.entries
            .iter()
            .enumerate()
            .rev()
            .filter(|(_, e)| e.status != EntryStatus::Undone)
            .map(|(i, e)| (i, &e.action))
            .collect()
    }
}

/// This run's journal. Cheap to share by reference; updates are written at once.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    record: Mutex<Record>,
}

pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Reads a journal left by an earlier run, if any. An unreadable one (truncated by a
/// crash, edited by hand) is set aside with a warning (the second value) instead of
/// blocking every later run, `down` included: it only tells what an earlier run did.
pub fn read(path: &Path) -> Result<(Option<Record>, Option<String>)> {
    let Some(text) = state::read_optional(path)? else {
        return Ok((None, None));
    };
    match serde_json::from_str(&text) {
        Ok(r) => Ok((Some(r), None)),
        Err(e) => {
            let aside = state::set_aside(path)?;
            Ok((
                None,
                Some(format!(
                    "the journal of an earlier run was unreadable ({e}); set it aside as {} and went on without it",
                    aside.display()
                )),
            ))
        }
    }
}

impl Journal {
    /// Starts this run's journal at `path`, replacing the previous one (read it first).
    pub fn begin(path: &Path, command: &str) -> Result<Journal> {
        let j = Journal {
            path: path.to_path_buf(),
            record: Mutex::new(Record {
                pid: std::process::id(),
                started_at: now(),
                command: command.to_string(),
                status: RunStatus::Running,
                entries: Vec::new(),
            }),
        };
        j.save()?;
        Ok(j)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn save(&self) -> Result<()> {
        let text = {
            let r = self.record.lock().expect("journal lock");
            serde_json::to_string_pretty(&*r).expect("journal serializes")
        };
        state::write_private(&self.path, format!("{text}\n").as_bytes())
    }

    /// Records that `action` begins; returns its index for `done`/`undone`.
    pub fn started(&self, action: Action) -> Result<usize> {
        let i = {
            let mut r = self.record.lock().expect("journal lock");
            r.entries.push(Entry {
                action,
                status: EntryStatus::Started,
            });
            r.entries.len() - 1
        };
        self.save()?;
        Ok(i)
    }

    fn set(&self, i: usize, status: EntryStatus) -> Result<()> {
        self.record.lock().expect("journal lock").entries[i].status = status;
        self.save()
    }

    pub fn done(&self, i: usize) -> Result<()> {
        self.set(i, EntryStatus::Done)
    }

    pub fn undone(&self, i: usize) -> Result<()> {
        self.set(i, EntryStatus::Undone)
    }

    pub fn finish(&self, status: RunStatus) -> Result<()> {
        self.record.lock().expect("journal lock").status = status;
        self.save()
    }

    pub fn snapshot(&self) -> Record {
        self.record.lock().expect("journal lock").clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn entries_are_written_as_they_happen_and_the_file_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c/journal.json");
        let j = Journal::begin(&path, "pulsedev up").unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let a = j
            .started(Action::KindCluster { name: "dev".into() })
            .unwrap();
        let on_disk = read(&path).unwrap().0.unwrap();
        assert_eq!(on_disk.entries[0].status, EntryStatus::Started);
        j.done(a).unwrap();
        let b = j
            .started(Action::StateFile {
                path: "/s/cluster.json".into(),
            })
            .unwrap();
        j.undone(b).unwrap();
        let r = read(&path).unwrap().0.unwrap();
        assert_eq!(r.status, RunStatus::Running);
        assert_eq!(
            r.leftovers(),
            vec![(0, &Action::KindCluster { name: "dev".into() })]
        );
        j.finish(RunStatus::Undone).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("\"action\": \"kind-cluster\""), "{text}");
        assert!(text.contains("\"status\": \"undone\""), "{text}");
    }

    #[test]
    fn a_garbled_journal_is_set_aside_with_a_warning() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.json");
        std::fs::write(&path, "{").unwrap();
        let (record, warning) = read(&path).unwrap();
        assert!(record.is_none());
        assert!(warning.unwrap().contains("set it aside as"));
        assert!(!path.exists());
        let aside = std::fs::read_dir(dir.path())
            .unwrap()
            .next()
            .unwrap()
            .unwrap();
        assert_eq!(std::fs::read_to_string(aside.path()).unwrap(), "{");
        assert!(read(&dir.path().join("none")).unwrap().0.is_none());
    }
}
