//! Idempotent producers (§5.2.1): the epoch/sequence rules as pure functions.
//!
//! Stores call [`check`] while they hold the stream's write lock, so validation and the append
//! it allows are one step for each `(stream, producer)` pair, and apply the verdict with
//! [`ProducerState::accept`] only once the append is committed.

/// Largest epoch or sequence number a client may send: 2^53-1, so JavaScript can hold it.
pub const MAX_PRODUCER_NUMBER: u64 = (1 << 53) - 1;

/// What one `Producer-Id` has committed on one stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProducerState {
    /// Current epoch: requests with a lower epoch are fenced off.
    pub epoch: u64,
    /// Highest sequence number accepted in `epoch`.
    pub last_seq: u64,
}

/// The `(Producer-Epoch, Producer-Seq)` of one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProducerClaim {
    /// Client-declared epoch.
    pub epoch: u64,
    /// Per-request sequence number within the epoch.
    pub seq: u64,
}

/// The outcome of validating a request against a producer's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// New data: append it, then record `claim` as the producer's state (200).
    Accept,
    /// Already appended: succeed without appending (204). `last_seq` is the highest sequence
    /// accepted in the current epoch, which is what the response reports.
    Duplicate {
        /// Highest accepted sequence in the producer's epoch.
        last_seq: u64,
    },
    /// The request's epoch is older than the producer's (403, zombie fencing).
    StaleEpoch {
        /// The producer's current epoch.
        current: u64,
    },
    /// A higher epoch must start at sequence 0 (400).
    EpochStartNotZero,
    /// A sequence number was skipped (409).
    SeqGap {
        /// The next sequence the server expects.
        expected: u64,
        /// The sequence the request carried.
        received: u64,
    },
}

/// Validates `claim` against the producer's `state` (`None` for a producer never seen here).
#[must_use]
pub fn check(state: Option<ProducerState>, claim: ProducerClaim) -> Verdict {
    let Some(state) = state else {
        // A new producer starts its sequence at 0, whatever epoch it declares.
        return if claim.seq == 0 {
            Verdict::Accept
        } else {
            Verdict::SeqGap { expected: 0, received: claim.seq }
        };
    };
    if claim.epoch < state.epoch {
        return Verdict::StaleEpoch { current: state.epoch };
    }
    if claim.epoch > state.epoch {
        return if claim.seq == 0 { Verdict::Accept } else { Verdict::EpochStartNotZero };
    }
    if claim.seq <= state.last_seq {
        return Verdict::Duplicate { last_seq: state.last_seq };
    }
    if claim.seq == state.last_seq + 1 {
        Verdict::Accept
    } else {
        Verdict::SeqGap { expected: state.last_seq + 1, received: claim.seq }
    }
}

impl ProducerState {
    /// The state after an accepted claim.
    #[must_use]
    pub fn accept(claim: ProducerClaim) -> ProducerState {
        ProducerState { epoch: claim.epoch, last_seq: claim.seq }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(epoch: u64, seq: u64) -> ProducerClaim {
        ProducerClaim { epoch, seq }
    }

    fn state(epoch: u64, last_seq: u64) -> Option<ProducerState> {
        Some(ProducerState { epoch, last_seq })
    }

    /// Exhaustive over a small grid: every verdict follows the table in §5.2.1.
    #[test]
    fn table_holds_on_a_grid() {
        for se in 0..5u64 {
            for ss in 0..5u64 {
                for ce in 0..5u64 {
                    for cs in 0..7u64 {
                        let v = check(state(se, ss), claim(ce, cs));
                        let expected = if ce < se {
                            Verdict::StaleEpoch { current: se }
                        } else if ce > se {
                            if cs == 0 { Verdict::Accept } else { Verdict::EpochStartNotZero }
                        } else if cs <= ss {
                            Verdict::Duplicate { last_seq: ss }
                        } else if cs == ss + 1 {
                            Verdict::Accept
                        } else {
                            Verdict::SeqGap { expected: ss + 1, received: cs }
                        };
                        assert_eq!(v, expected, "state ({se},{ss}) claim ({ce},{cs})");
                    }
                }
            }
        }
    }

    #[test]
    fn new_producer_must_start_at_zero() {
        for epoch in [0, 1, MAX_PRODUCER_NUMBER] {
            assert_eq!(check(None, claim(epoch, 0)), Verdict::Accept);
            assert_eq!(check(None, claim(epoch, 3)), Verdict::SeqGap { expected: 0, received: 3 });
        }
    }

    #[test]
    fn duplicate_reports_highest_seq_not_request_seq() {
        assert_eq!(check(state(0, 7), claim(0, 2)), Verdict::Duplicate { last_seq: 7 });
    }

    #[test]
    fn extremes_do_not_overflow() {
        let max = MAX_PRODUCER_NUMBER;
        assert_eq!(check(state(max, max), claim(max, max)), Verdict::Duplicate { last_seq: max });
        assert_eq!(check(state(0, max - 1), claim(0, max)), Verdict::Accept);
        // Even u64::MAX, which the HTTP layer never lets through, stays total.
        assert_eq!(check(state(0, u64::MAX - 1), claim(0, u64::MAX)), Verdict::Accept);
    }

    #[test]
    fn accept_records_the_claim() {
        assert_eq!(ProducerState::accept(claim(3, 0)), ProducerState { epoch: 3, last_seq: 0 });
    }
}
