//! `netpath monitor`: one node's drop events — and with `--trace` a sample of its
//! forwarded packets — live from the `EVENTS` ring buffer, as lines or JSON.
pub mod format;

use std::{
    io::Write,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{bail, Context, Result};
use aya::maps::{Map, MapData, RingBuf};
use netpath_common::names;
use tokio::{
    io::unix::AsyncFd,
    signal::unix::{signal, SignalKind},
};

use crate::datapath::{monotonic_ns, EventLoss, Pinned};
pub use format::{reason_named, Filter};

/// How far ahead a tracing monitor keeps the trace switch on; renewed every second,
/// so a monitor killed without cleaning up stops costing the datapath within this.
const TRACE_LEASE: Duration = Duration::from_secs(5);

pub struct MonitorArgs {
    pub node: String,
    /// The node's pin directory.
    pub dir: PathBuf,
    /// Where the lock that keeps to one monitor per node lives.
    pub lock_path: PathBuf,
    pub json: bool,
    pub filter: Filter,
    /// `--trace`: one forwarded packet in this many per CPU.
    pub trace_every: Option<u32>,
}

pub fn run(args: MonitorArgs) -> Result<()> {
    crate::files::one_shot_runtime()
        .context("start the monitor's runtime")?
        .block_on(watch(args))
}

async fn watch(args: MonitorArgs) -> Result<()> {
    let _lock = Lock::take(&args.lock_path, &args.node)?;
    let mut pinned = Pinned::open(&args.dir)?;
    let path = args.dir.join(names::EVENTS);
    let data = MapData::from_pin(&path)
        .with_context(|| format!("open {} (is the agent running?)", path.display()))?;
    let ring = RingBuf::try_from(Map::from_map_data(data)?).context("EVENTS is a ring buffer")?;
    // SAFETY: the ring buffer owns its fd for as long as the AsyncFd holds it, and
    // always reports that same fd.
    let mut ring = unsafe { AsyncFd::register(ring) }
        .map_err(|e| e.into_parts().1)
        .context("watch the event ring")?;
    let started = monotonic_ns();
    let wall_offset = realtime_ns() - started as i128;
    if let Some(every) = args.trace_every {
        set_trace(&mut pinned, every)?;
    }
    let mut loss = pinned.event_loss()?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    eprintln!(
        "monitoring node {} ({}); Ctrl-C to stop",
        args.node,
        if args.trace_every.is_some() {
            "drops and sampled forwarding"
        } else {
            "drops; --trace adds forwarding"
        }
    );
    let mut out = std::io::stdout().lock();
    let result: Result<()> = loop {
        tokio::select! {
            _ = term.recv() => break Ok(()),
            _ = int.recv() => break Ok(()),
            _ = tick.tick() => {
                if let Some(every) = args.trace_every {
                    if let Err(e) = set_trace(&mut pinned, every) {
                        break Err(e);
                    }
                }
                let now = pinned.event_loss()?;
                if let Err(e) = report_loss(&mut out, &args, loss, now) {
                    break broken_pipe_is_the_end(e);
                }
                loss = now;
            }
            ready = ring.readable_mut() => {
                let mut ready = ready.context("wait for events")?;
                let drained = drain(ready.get_inner_mut(), &mut out, &args, started, wall_offset);
                ready.clear_ready();
                if let Err(e) = drained {
                    break broken_pipe_is_the_end(e);
                }
            }
        }
    };
    if args.trace_every.is_some() {
        let mut c = pinned.monitor_config()?;
        c.trace_every = 0;
        c.trace_until_ns = 0;
        pinned.write_monitor_config(c)?;
    }
    result
}

/// Prints every waiting event the filter lets through; events from before this
/// monitor started (left in the ring while nobody read it) are skipped.
fn drain(
    ring: &mut RingBuf<MapData>,
    out: &mut impl Write,
    args: &MonitorArgs,
    started: u64,
    wall_offset: i128,
) -> std::io::Result<()> {
    while let Some(item) = ring.next() {
        let ev = match format::parse(&item) {
            Ok(ev) => ev,
            Err(e) => {
                eprintln!("monitor: skipped a record: {e}");
                continue;
            }
        };
        if ev.time_ns < started || !args.filter.matches(&ev) {
            continue;
        }
        match format::decode(&ev, &args.node, wall_offset) {
            Ok(d) if args.json => writeln!(
                out,
                "{}",
                serde_json::to_string(&d).map_err(std::io::Error::other)?
            )?,
            Ok(d) => writeln!(out, "{}", format::line(&d))?,
            Err(e) => eprintln!("monitor: skipped a record: {e}"),
        }
    }
    out.flush()
}

fn report_loss(
    out: &mut impl Write,
    args: &MonitorArgs,
    was: EventLoss,
    now: EventLoss,
) -> std::io::Result<()> {
    let (suppressed, lost) = (
        now.suppressed.saturating_sub(was.suppressed),
        now.lost.saturating_sub(was.lost),
    );
    if suppressed == 0 && lost == 0 {
        return Ok(());
    }
    if args.json {
        let doc = serde_json::json!({"kind": "loss", "node": args.node, "suppressed": suppressed, "lost": lost});
        writeln!(out, "{doc}")?;
    } else {
        writeln!(
            out,
            "-- {suppressed} events over the per-CPU budget (counted in STATS, not shown), {lost} lost (ring full)"
        )?;
    }
    out.flush()
}

fn broken_pipe_is_the_end(e: std::io::Error) -> Result<()> {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        return Ok(());
    }
    Err(e).context("write events")
}

fn set_trace(pinned: &mut Pinned, every: u32) -> Result<()> {
    let mut c = pinned.monitor_config()?;
    c.trace_every = every.max(1);
    c.trace_until_ns = monotonic_ns() + TRACE_LEASE.as_nanos() as u64;
    pinned.write_monitor_config(c)
}

fn realtime_ns() -> i128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i128)
        .unwrap_or(0)
}

/// One monitor per node: the ring buffer has a single read position, and two
/// readers would each see a random half of the events.
struct Lock {
    /// Holds the flock; closing it (after the unlink) releases the lock.
    _file: std::fs::File,
    path: PathBuf,
}

impl Lock {
    fn take(path: &Path, node: &str) -> Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        }
        let held = crate::files::lock_exclusive(path, false)
            .with_context(|| format!("lock {}", path.display()))?;
        let Some(file) = held else {
            bail!(
                "another netpath monitor is watching node {node} ({} is locked): \
                 the event ring has one reader",
                path.display()
            );
        };
        Ok(Self {
            _file: file,
            path: path.to_path_buf(),
        })
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}
