//! The socket before the node's identity is known: a joiner binds it, asks its
//! seeds for their settings through it, and then takes part in SWIM as itself.
use std::{
    collections::{BinaryHeap, HashMap},
    net::SocketAddr,
    sync::Arc,
    time::Duration,
};

use foca::{AccumulatingRuntime, Foca, PostcardCodec};
use rand::rngs::StdRng;
use tokio::{net::UdpSocket, time::Instant};

use super::{swim_config, Counters, News, Swim};
use crate::store::gossip::{
    peer::Peer,
    unix_ms,
    wire::{Kind, Wire},
    GossipError,
};

/// The socket, bound before the node's identity is known: a joiner compares
/// settings first.
pub(in crate::store::gossip) struct Bound {
    socket: UdpSocket,
    wire: Wire,
    seeds: Vec<SocketAddr>,
    settings_json: Vec<u8>,
    forget_after: Duration,
    counters: Arc<Counters>,
}

impl Bound {
    /// Listens on `listen`; `seeds` are the nodes to join through, `settings_json`
    /// what this node answers a joiner asking for its settings.
    pub async fn bind(
        listen: SocketAddr,
        key: Option<&[u8]>,
        seeds: Vec<SocketAddr>,
        settings_json: Vec<u8>,
        forget_after: Duration,
    ) -> Result<Self, GossipError> {
        let socket = UdpSocket::bind(listen)
            .await
            .map_err(|e| GossipError::Bind(listen, e))?;
        Ok(Self {
            socket,
            wire: Wire::new(key),
            seeds,
            settings_json,
            forget_after,
            counters: Arc::new(Counters::default()),
        })
    }

    pub fn seeds(&self) -> &[SocketAddr] {
        &self.seeds
    }

    /// Asks the seeds for their settings: the first answer (who sent it and the
    /// settings as JSON), or None when none came within `within`.
    pub async fn ask_settings(&self, within: Duration) -> Option<(SocketAddr, Vec<u8>)> {
        if self.seeds.is_empty() {
            return None;
        }
        let ask = self.wire.seal(Kind::SettingsAsk, unix_ms(), &[]);
        for s in &self.seeds {
            let _ = self.socket.send_to(&ask, s).await;
        }
        let mut buf = Swim::buffer();
        let end = Instant::now() + within;
        loop {
            let got = tokio::time::timeout_at(end, self.socket.recv_from(&mut buf)).await;
            let Ok(Ok((n, from))) = got else {
                return None;
            };
            match self.wire.open(&buf[..n], unix_ms()) {
                Ok((Kind::Settings, payload)) => return Some((from, payload.to_vec())),
                Ok(_) => {}
                Err(why) => self.counters.count(why),
            }
        }
    }

    /// Takes part as `me` (`knocks`: where in the seed list this node starts).
    pub fn join_as(self, me: Peer, knocks: usize) -> Swim {
        let foca = Foca::new(
            me,
            swim_config(self.forget_after),
            rand::make_rng::<StdRng>(),
            PostcardCodec,
        );
        Swim {
            foca,
            rt: AccumulatingRuntime::new(),
            socket: self.socket,
            wire: self.wire,
            timers: BinaryHeap::new(),
            pending: HashMap::new(),
            next_timer: 0,
            settings_json: self.settings_json,
            seeds: self.seeds,
            knocks,
            counters: self.counters,
            heard: false,
            got_members: false,
            forget_after: self.forget_after,
            scale: 1,
            news: News::default(),
            lonely_since: Instant::now(),
            synced: Instant::now(),
        }
    }
}
