//! A deadline-aware `wasi_snapshot_preview1.poll_oneoff`.
//!
//! wasmtime-wasi's synchronous `poll_oneoff` blocks the host thread for the whole requested sleep, and
//! epoch interruption only fires while wasm code runs, so `time.sleep(60)` would hold a worker for a
//! minute past its deadline. This one sleeps at most until the run's deadline and then traps (the run
//! becomes a timeout). Only clock subscriptions ever wait: the run's stdin is an in-memory pipe and
//! stdout/stderr are in-memory sinks, so every descriptor subscription is reported ready at once.
//!
//! Layouts (wasi_snapshot_preview1.witx): `subscription` is 48 bytes: userdata u64 @0, tag u8 @8
//! (0 clock, 1 fd_read, 2 fd_write), then for a clock: id u32 @16, timeout u64 @24, precision u64 @32,
//! flags u16 @40 (bit 0: absolute time); for an fd: fd u32 @16. `event` is 32 bytes: userdata u64 @0,
//! error u16 @8, type u8 @10, nbytes u64 @16, flags u16 @24.

use std::time::{Duration, Instant, SystemTime};

use wasmtime::{Caller, Extern, Linker};
use wasmtime_wasi::HostMonotonicClock;

use super::sandbox::RunState;

const SUBSCRIPTION_SIZE: usize = 48;
const EVENT_SIZE: usize = 32;
const ERRNO_SUCCESS: i32 = 0;
const ERRNO_FAULT: i32 = 21;
const ERRNO_INVAL: i32 = 28;
const CLOCK_REALTIME: u32 = 0;
const CLOCK_MONOTONIC: u32 = 1;

/// The guest's monotonic clock: nanoseconds since the run started. The same origin is used here to
/// turn absolute timeouts into sleeps.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RunClock {
    pub(crate) origin: Instant,
}

impl HostMonotonicClock for RunClock {
    fn resolution(&self) -> u64 {
        1
    }
    fn now(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

/// Define our `poll_oneoff` in `linker` (which must allow shadowing the wasmtime-wasi one).
pub(crate) fn add_to_linker(linker: &mut Linker<RunState>) -> wasmtime::Result<()> {
    linker.func_wrap("wasi_snapshot_preview1", "poll_oneoff", poll_oneoff)?;
    Ok(())
}

fn poll_oneoff(
    mut caller: Caller<'_, RunState>,
    subs_ptr: i32,
    events_ptr: i32,
    nsubs: i32,
    nevents_ptr: i32,
) -> wasmtime::Result<i32> {
    let Some(Extern::Memory(memory)) = caller.get_export("memory") else {
        wasmtime::bail!("poll_oneoff: the module exports no memory");
    };
    let (subs_ptr, events_ptr, nevents_ptr) = (subs_ptr as u32 as usize, events_ptr as u32 as usize, nevents_ptr as u32 as usize);
    let nsubs = nsubs as u32 as usize;
    if nsubs == 0 {
        return Ok(ERRNO_INVAL);
    }
    let mut subs = vec![0u8; nsubs.saturating_mul(SUBSCRIPTION_SIZE)];
    if memory.read(&caller, subs_ptr, &mut subs).is_err() {
        return Ok(ERRNO_FAULT);
    }

    // 1. Which subscriptions fire: every fd one now; otherwise the earliest clock.
    let origin = caller.data().clock.origin;
    let mut ready_fds = Vec::new();
    let mut earliest: Option<(Duration, u64)> = None;
    for sub in subs.chunks_exact(SUBSCRIPTION_SIZE) {
        let userdata = u64_at(sub, 0);
        match sub[8] {
            0 => {
                let id = u32_at(sub, 16);
                let timeout = u64_at(sub, 24);
                let absolute = u16_at(sub, 40) & 1 == 1;
                let wait = match (id, absolute) {
                    (_, false) => Duration::from_nanos(timeout),
                    (CLOCK_MONOTONIC, true) => Duration::from_nanos(timeout).saturating_sub(origin.elapsed()),
                    (CLOCK_REALTIME, true) => {
                        let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
                        Duration::from_nanos(timeout).saturating_sub(now)
                    }
                    _ => return Ok(ERRNO_INVAL),
                };
                if earliest.is_none_or(|(w, _)| wait < w) {
                    earliest = Some((wait, userdata));
                }
            }
            tag @ (1 | 2) => ready_fds.push((userdata, tag)),
            _ => return Ok(ERRNO_INVAL),
        }
    }

    // 2. Wait, but never past the run's deadline.
    let mut events = Vec::new();
    if ready_fds.is_empty() {
        let (wait, userdata) = earliest.unwrap_or_default();
        let deadline = caller.data().deadline;
        let now = Instant::now();
        if now + wait > deadline {
            std::thread::sleep(deadline.saturating_duration_since(now));
            caller.data_mut().timed_out = true;
            wasmtime::bail!("sleep past the run's deadline");
        }
        std::thread::sleep(wait);
        events.push(event(userdata, 0));
    } else {
        for (userdata, tag) in ready_fds {
            events.push(event(userdata, tag));
        }
    }

    // 3. Report.
    let n = events.len() as u32;
    let bytes: Vec<u8> = events.concat();
    if memory.write(&mut caller, events_ptr, &bytes).is_err()
        || memory.write(&mut caller, nevents_ptr, &n.to_le_bytes()).is_err()
    {
        return Ok(ERRNO_FAULT);
    }
    Ok(ERRNO_SUCCESS)
}

fn event(userdata: u64, kind: u8) -> Vec<u8> {
    let mut e = vec![0u8; EVENT_SIZE];
    e[0..8].copy_from_slice(&userdata.to_le_bytes());
    e[10] = kind;
    e
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
