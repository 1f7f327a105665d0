//! Locking that outlives a panicked holder: the agent keeps serving its other containers.

use std::sync::{Mutex, MutexGuard, PoisonError};

/// [`Mutex::lock`], taking the data of a poisoned lock as it is. Every critical section in
/// the agent leaves its data whole at each step, so a panic elsewhere in the holder's
/// thread is no reason to stop the listeners that share it.
pub(crate) trait Locked<T> {
    fn locked(&self) -> MutexGuard<'_, T>;
}

impl<T> Locked<T> for Mutex<T> {
    fn locked(&self) -> MutexGuard<'_, T> {
        self.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
