//! The caps of a `memory` buffer: `max_events` records and `max_bytes` bytes (as
//! [`Records::approx_bytes`](sluice_model::records::Records::approx_bytes) counts them) wait
//! between the dataflow and the sink at most, then `when_full` decides.

use std::sync::{Condvar, Mutex, PoisonError};

use crate::WhenFull;

/// Counts the records queued in a memory buffer. The sender takes room before queueing a
/// batch; the sink's input gives it back when it receives the batch.
#[derive(Debug)]
pub struct EventGate {
    max_events: usize,
    max_bytes: u64,
    when_full: WhenFull,
    state: Mutex<GateState>,
    room: Condvar,
}

#[derive(Debug, Default)]
struct GateState {
    held: usize,
    held_bytes: u64,
    /// The sink stopped reading: nobody will free room again.
    closed: bool,
}

/// What [`EventGate::take`] decided for a batch.
#[derive(Debug, PartialEq, Eq)]
pub enum Admit {
    Queued,
    /// The buffer is full and `when_full = "drop_newest"`.
    Dropped,
    /// The sink stopped.
    Closed,
}

impl EventGate {
    pub fn new(max_events: usize, max_bytes: u64, when_full: WhenFull) -> EventGate {
        EventGate {
            max_events,
            max_bytes,
            when_full,
            state: Mutex::new(GateState::default()),
            room: Condvar::new(),
        }
    }

    /// Takes room for `n` records of `bytes` bytes, blocking the calling thread under
    /// `when_full = "block"`. A batch larger than either whole cap is let into an empty buffer
    /// rather than never.
    pub fn take(&self, n: usize, bytes: u64) -> Admit {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            if state.closed {
                return Admit::Closed;
            }
            let fits = state.held + n <= self.max_events
                && state.held_bytes.saturating_add(bytes) <= self.max_bytes;
            if state.held == 0 || fits {
                state.held += n;
                state.held_bytes = state.held_bytes.saturating_add(bytes);
                return Admit::Queued;
            }
            match self.when_full {
                WhenFull::DropNewest => return Admit::Dropped,
                WhenFull::Block => {
                    state = self
                        .room
                        .wait(state)
                        .unwrap_or_else(PoisonError::into_inner);
                }
            }
        }
    }

    /// Gives back room for `n` records of `bytes` bytes that left the buffer.
    pub fn release(&self, n: usize, bytes: u64) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.held = state.held.saturating_sub(n);
        state.held_bytes = state.held_bytes.saturating_sub(bytes);
        self.room.notify_all();
    }

    /// The sink stopped: wakes blocked senders so they give up.
    pub fn close(&self) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.closed = true;
        self.room.notify_all();
    }

    pub fn held(&self) -> usize {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .held
    }

    pub fn held_bytes(&self) -> u64 {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .held_bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn block_waits_for_room_and_close_releases_waiting_senders() {
        let gate = Arc::new(EventGate::new(10, u64::MAX, WhenFull::Block));
        assert_eq!(gate.take(8, 0), Admit::Queued);
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let sender = {
            let gate = gate.clone();
            std::thread::spawn(move || {
                done_tx.send(gate.take(5, 0)).expect("the test waits");
                done_tx.send(gate.take(10, 0)).expect("the test waits");
            })
        };
        assert!(done_rx.try_recv().is_err(), "took room that was not there");
        gate.release(8, 0);
        let wait = Duration::from_secs(30);
        assert_eq!(done_rx.recv_timeout(wait), Ok(Admit::Queued));
        assert_eq!(gate.held(), 5);
        gate.close();
        assert_eq!(done_rx.recv_timeout(wait), Ok(Admit::Closed));
        sender.join().expect("the sender thread ends");
    }

    #[test]
    fn a_batch_larger_than_the_cap_enters_an_empty_buffer() {
        let gate = EventGate::new(10, u64::MAX, WhenFull::DropNewest);
        assert_eq!(gate.take(50, 0), Admit::Queued);
        assert_eq!(gate.take(1, 0), Admit::Dropped);
        gate.release(50, 0);
        assert_eq!(gate.take(1, 0), Admit::Queued);
    }

    #[test]
    fn bytes_are_capped_as_well_as_records() {
        let gate = EventGate::new(1_000, 1_000, WhenFull::DropNewest);
        assert_eq!(gate.take(1, 600), Admit::Queued);
        assert_eq!(
            gate.take(1, 600),
            Admit::Dropped,
            "1 200 bytes in a 1 000-byte cap"
        );
        assert_eq!(gate.take(1, 400), Admit::Queued);
        assert_eq!(gate.held_bytes(), 1_000);
        gate.release(1, 600);
        assert_eq!(gate.take(1, 600), Admit::Queued);
        // One batch past the whole cap still enters an empty buffer.
        gate.release(2, 1_000);
        assert_eq!(gate.take(1, 5_000), Admit::Queued);
        assert_eq!(gate.take(1, 1), Admit::Dropped);
    }
}
