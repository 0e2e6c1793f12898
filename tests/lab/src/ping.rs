//! A train of ICMP echoes at a fixed pace, to measure what an event (a daemon
//! killed, a route replaced) costs live traffic: how many echoes went unanswered
//! and the longest run of them, as `ping -i` would show it.
use std::{
    net::Ipv4Addr,
    path::Path,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{anyhow, Result};

use crate::{
    check::{raw_icmp, UdpSocketLike},
    netns,
};

/// How long a reply may take after the last echo before it counts as lost.
const LAST_REPLY_WITHIN: Duration = Duration::from_secs(1);
/// Tells this train's echoes from any other ICMP the namespace sees.
const PAYLOAD: &[u8; 8] = b"np-train";

/// Echoes sent from one namespace to `dst` every `every` until `finish`.
pub struct PingTrain {
    dst: Ipv4Addr,
    every: Duration,
    stop: Arc<AtomicBool>,
    sender: JoinHandle<Result<u16>>,
    receiver: JoinHandle<Result<()>>,
    answered: Arc<Mutex<Vec<bool>>>,
    done: Arc<AtomicBool>,
}

/// What a train saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrainStats {
    pub sent: u16,
    /// Sequence numbers (from 0) never answered.
    pub lost: Vec<u16>,
    /// The longest run of consecutive unanswered echoes, as time at the train's pace.
    pub longest_gap: Duration,
}

impl std::fmt::Display for TrainStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} of {} lost, longest gap {:?}",
            self.lost.len(),
            self.sent,
            self.longest_gap
        )
    }
}

impl PingTrain {
    /// Starts sending from inside `ns` (the socket lives there; the threads need not).
    pub fn start(ns: &Path, dst: Ipv4Addr, every: Duration) -> Result<Self> {
        let sock = Arc::new(netns::run_in(ns, raw_icmp)?);
        // Unique per train in this process, so two trains in one namespace don't mix.
        static NEXT: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(0);
        let ident = (std::process::id() as u16) ^ NEXT.fetch_add(1, Ordering::Relaxed) ^ 0x7472;
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicBool::new(false));
        let answered = Arc::new(Mutex::new(Vec::new()));
        let sender = {
            let (sock, stop, answered) = (sock.clone(), stop.clone(), answered.clone());
            std::thread::spawn(move || send(&sock, dst, ident, every, &stop, &answered))
        };
        let receiver = {
            let (sock, done, answered) = (sock, done.clone(), answered.clone());
            std::thread::spawn(move || receive(&sock, dst, ident, &done, &answered))
        };
        Ok(Self {
            dst,
            every,
            stop,
            sender,
            receiver,
            answered,
            done,
        })
    }

    /// Echoes sent so far.
    pub fn sent(&self) -> usize {
        self.answered
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }

    /// Stops sending, waits for the last replies, and counts.
    pub fn finish(self) -> Result<TrainStats> {
        self.stop.store(true, Ordering::Relaxed);
        let sent = self
            .sender
            .join()
            .map_err(|_| anyhow!("ping train to {}: sender panicked", self.dst))??;
        std::thread::sleep(LAST_REPLY_WITHIN);
        self.done.store(true, Ordering::Relaxed);
        self.receiver
            .join()
            .map_err(|_| anyhow!("ping train to {}: receiver panicked", self.dst))??;
        let answered = self.answered.lock().unwrap_or_else(|p| p.into_inner());
        Ok(stats(&answered[..sent as usize], self.every))
    }
}

fn send(
    sock: &UdpSocketLike,
    dst: Ipv4Addr,
    ident: u16,
    every: Duration,
    stop: &AtomicBool,
    answered: &Mutex<Vec<bool>>,
) -> Result<u16> {
    let start = Instant::now();
    let mut seq: u16 = 0;
    while !stop.load(Ordering::Relaxed) && seq < u16::MAX {
        answered
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(false);
        // A send error (no route at that instant) is a lost echo, not a failed train.
        let _ = sock.send_to(&echo(ident, seq), dst);
        seq += 1;
        // Paced from the start, so a slow send does not stretch the train.
        let next = start + every * seq as u32;
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    Ok(seq)
}

fn receive(
    sock: &UdpSocketLike,
    dst: Ipv4Addr,
    ident: u16,
    done: &AtomicBool,
    answered: &Mutex<Vec<bool>>,
) -> Result<()> {
    let mut buf = [0u8; 1500];
    while !done.load(Ordering::Relaxed) {
        let Some(n) = sock.recv(&mut buf, Duration::from_millis(50))? else {
            continue;
        };
        if let Some(seq) = reply_seq(&buf[..n], dst, ident) {
            if let Some(slot) = answered
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get_mut(seq as usize)
            {
                *slot = true;
            }
        }
    }
    Ok(())
}

fn echo(ident: u16, seq: u16) -> [u8; 16] {
    let mut pkt = [0u8; 16];
    pkt[0] = 8;
    pkt[4..6].copy_from_slice(&ident.to_be_bytes());
    pkt[6..8].copy_from_slice(&seq.to_be_bytes());
    pkt[8..16].copy_from_slice(PAYLOAD);
    let c = crate::csum::fold(crate::csum::sum(&pkt));
    pkt[2..4].copy_from_slice(&c.to_be_bytes());
    pkt
}

/// The sequence number of `packet` (an IPv4 datagram) if it is the echo reply
/// from `dst` to one of this train's echoes.
fn reply_seq(packet: &[u8], dst: Ipv4Addr, ident: u16) -> Option<u16> {
    let ihl = ((*packet.first()? & 0xf) as usize) * 4;
    let icmp = packet.get(ihl..ihl + 16)?;
    let src = Ipv4Addr::new(packet[12], packet[13], packet[14], packet[15]);
    (src == dst && icmp[0] == 0 && icmp[4..6] == ident.to_be_bytes() && &icmp[8..16] == PAYLOAD)
        .then(|| u16::from_be_bytes([icmp[6], icmp[7]]))
}

fn stats(answered: &[bool], every: Duration) -> TrainStats {
    let lost: Vec<u16> = (0..answered.len() as u16)
        .filter(|&s| !answered[s as usize])
        .collect();
    let longest = answered.split(|&a| a).map(<[bool]>::len).max().unwrap_or(0);
    TrainStats {
        sent: answered.len() as u16,
        lost,
        longest_gap: every * longest as u32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lost_echoes_and_the_longest_run_of_them() {
        let s = stats(
            &[true, false, true, false, false, false, true, false],
            Duration::from_millis(50),
        );
        assert_eq!(s.sent, 8);
        assert_eq!(s.lost, vec![1, 3, 4, 5, 7]);
        assert_eq!(s.longest_gap, Duration::from_millis(150));
        assert_eq!(
            stats(&[true; 4], Duration::from_millis(50)).longest_gap,
            Duration::ZERO
        );
    }

    #[test]
    fn only_this_trains_replies_from_the_destination_count() {
        let dst = Ipv4Addr::new(10, 244, 3, 2);
        let mut reply = vec![0x45u8; 20];
        reply[12..16].copy_from_slice(&dst.octets());
        reply.extend_from_slice(&echo(7, 42));
        reply[20] = 0;
        assert_eq!(reply_seq(&reply, dst, 7), Some(42));
        assert_eq!(reply_seq(&reply, dst, 8), None, "another train's ident");
        assert_eq!(reply_seq(&reply, Ipv4Addr::new(10, 244, 3, 3), 7), None);
        reply[20] = 8;
        assert_eq!(reply_seq(&reply, dst, 7), None, "a request, not a reply");
        assert_eq!(reply_seq(&reply[..30], dst, 7), None, "truncated");
    }
}
