//! The stack lock (`target/stack/.lock`).

use std::fs::{self, File};
use std::time::Instant;

use anyhow::{Context, Result};

use crate::util::{self, say, secs};

/// An exclusive lock on the stack of this workspace (`target/stack/.lock`),
/// held while the stack is changed and for a whole `cargo xtask it`, so that
/// two runs sharing a target directory do not stop each other's services.
pub(crate) struct StackLock {
    _file: File,
}

/// Takes the stack lock, waiting (and saying so) while another run holds it.
pub(crate) fn lock() -> Result<StackLock> {
    let dir = util::stack_dir();
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(".lock");
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let t = Instant::now();
            say(format!(
                "another `cargo xtask` run uses the stack of this workspace (lock {}): waiting …",
                path.display()
            ));
            file.lock()
                .with_context(|| format!("locking {}", path.display()))?;
            say(format!("got the stack lock after {}", secs(t.elapsed())));
        }
        Err(std::fs::TryLockError::Error(e)) => {
            return Err(e).with_context(|| format!("locking {}", path.display()));
        }
    }
    Ok(StackLock { _file: file })
}
