//! Bulk TCP transfers whose content is checked end to end: pseudo-random bytes
//! hashed on both sides, so a corrupted or lost segment fails the transfer.
use std::{
    io::{Read, Write},
    net::{Ipv4Addr, TcpListener, TcpStream},
    path::Path,
    time::Instant,
};

use anyhow::{bail, ensure, Result};

use crate::netns;

/// Cheap 64-bit mixing hash over 8-byte words (the payload is a multiple of 8).
fn mix(h: u64, chunk: &[u8]) -> u64 {
    chunk.chunks_exact(8).fold(h, |h, w| {
        (h ^ u64::from_le_bytes(w.try_into().expect("8 bytes")))
            .wrapping_mul(0x9e37_79b9_7f4a_7c15)
            .rotate_left(23)
    })
}

fn fill(buf: &mut [u8], state: &mut u64) {
    for w in buf.chunks_exact_mut(8) {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        w.copy_from_slice(&state.to_le_bytes());
    }
}

/// Sends `total` bytes (a multiple of 1 MiB) from `client_ns` to `dst:port`, served
/// in `server_ns`, and fails unless every byte arrived unchanged; returns the seconds
/// it took.
pub fn transfer_intact(
    client_ns: &Path,
    server_ns: &Path,
    dst: Ipv4Addr,
    port: u16,
    total: usize,
) -> Result<f64> {
    let listener = netns::run_in(server_ns, || Ok(TcpListener::bind(("0.0.0.0", port))?))?;
    let started = Instant::now();
    let (sent, got) = std::thread::scope(|s| {
        let server = s.spawn(|| -> Result<(u64, usize)> {
            let (mut c, _) = listener.accept()?;
            let (mut h, mut n) = (0u64, 0usize);
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let k = c.read(&mut buf)?;
                if k == 0 {
                    break;
                }
                // Reads need not end on word boundaries: hash whole words only.
                let mut k = k;
                while k % 8 != 0 {
                    let more = c.read(&mut buf[k..k + (8 - k % 8)])?;
                    if more == 0 {
                        bail!("stream ended mid-word");
                    }
                    k += more;
                }
                h = mix(h, &buf[..k]);
                n += k;
            }
            Ok((h, n))
        });
        let sent = netns::run_in(client_ns, || {
            let mut c = TcpStream::connect((dst, port))?;
            let (mut h, mut state) = (0u64, 0x5eed_u64);
            let mut buf = vec![0u8; 1 << 20];
            for _ in 0..total / buf.len() {
                fill(&mut buf, &mut state);
                h = mix(h, &buf);
                c.write_all(&buf)?;
            }
            c.shutdown(std::net::Shutdown::Write)?;
            Ok(h)
        });
        if sent.is_err() {
            // Unblock the server's accept; its result no longer matters.
            let _ = netns::run_in(server_ns, || Ok(TcpStream::connect(("127.0.0.1", port))));
        }
        let got = server.join().unwrap_or_else(|_| bail!("server panicked"));
        (sent, got)
    });
    let (sent, (got_hash, got_len)) = (sent?, got?);
    ensure!(got_len == total, "{got_len} of {total} bytes arrived");
    ensure!(got_hash == sent, "content changed on the way");
    Ok(started.elapsed().as_secs_f64())
}
