//! BIRD's control socket (what `birdc` speaks): a greeting, then one command per
//! line, each answered by lines `CODE-text` (more follow), ` text` (continuing the
//! last code) and a final `CODE text`; codes from 8000 up are errors. And the
//! replies the agent reads: `show route all`, `show protocols [all]` and `show status`.
use std::{collections::BTreeMap, net::Ipv4Addr, path::Path, time::Duration};

use serde::{Deserialize, Serialize};
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::UnixStream,
};

use super::BgpError;
use crate::net::Ipv4Net;

/// A reply must come within this (BIRD answers in milliseconds when it runs).
const TIMEOUT: Duration = Duration::from_secs(3);

/// Sends `command` and returns the reply's text lines (codes stripped).
pub async fn request(socket: &Path, command: &str) -> Result<Vec<String>, BgpError> {
    tokio::time::timeout(TIMEOUT, exchange(socket, command))
        .await
        .map_err(|_| BgpError::Control(format!("{command:?}: no answer within {TIMEOUT:?}")))?
}

async fn exchange(socket: &Path, command: &str) -> Result<Vec<String>, BgpError> {
    let io = |e: std::io::Error| BgpError::Control(format!("{}: {e}", socket.display()));
    let stream = UnixStream::connect(socket).await.map_err(io)?;
    let (rd, mut wr) = stream.into_split();
    let mut lines = BufReader::new(rd).lines();
    // The greeting: "0001 BIRD 2.0.12 ready."
    read_reply(&mut lines).await?;
    wr.write_all(format!("{command}\n").as_bytes())
        .await
        .map_err(io)?;
    read_reply(&mut lines).await
}

async fn read_reply(
    lines: &mut tokio::io::Lines<BufReader<tokio::net::unix::OwnedReadHalf>>,
) -> Result<Vec<String>, BgpError> {
    let mut out = Vec::new();
    loop {
        let Some(line) = lines
            .next_line()
            .await
            .map_err(|e| BgpError::Control(e.to_string()))?
        else {
            return Err(BgpError::Control("BIRD closed the connection".into()));
        };
        match Line::of(&line) {
            Line::More(text) => out.push(text.to_string()),
            Line::Last(code, text) if code >= 8000 => {
                return Err(BgpError::Refused(format!("{code} {text}")));
            }
            Line::Last(_, text) => {
                if !text.is_empty() {
                    out.push(text.to_string());
                }
                return Ok(out);
            }
        }
    }
}

enum Line<'a> {
    More(&'a str),
    Last(u16, &'a str),
}

impl<'a> Line<'a> {
    fn of(line: &'a str) -> Self {
        let code = line.get(..4).and_then(|c| c.parse::<u16>().ok());
        match (code, line.as_bytes().get(4)) {
            (Some(code), Some(b' ')) => Line::Last(code, &line[5..]),
            (Some(_), Some(b'-')) => Line::More(&line[5..]),
            _ => Line::More(line.strip_prefix(' ').unwrap_or(line)),
        }
    }
}

/// One route of BIRD's table, as far as the agent cares.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BirdRoute {
    pub prefix: Ipv4Net,
    /// The protocol (session) it came from, e.g. `mesh_192_168_56_12`.
    pub protocol: String,
    /// BIRD's choice among the routes to this prefix.
    pub best: bool,
    pub bgp: bool,
    pub next_hop: Option<Ipv4Addr>,
}

/// Parses the lines of `show route all`. A route line names its prefix, or leaves it
/// blank for another route to the same prefix; attribute lines start with a tab.
pub fn parse_routes(lines: &[String]) -> Vec<BirdRoute> {
    let mut out: Vec<BirdRoute> = Vec::new();
    let mut prefix: Option<Ipv4Net> = None;
    for line in lines {
        if let Some(attr) = line.strip_prefix('\t') {
            let Some(route) = out.last_mut() else {
                continue;
            };
            if let Some(t) = attr.strip_prefix("Type: ") {
                route.bgp = t.starts_with("BGP");
            } else if let Some(nh) = attr.strip_prefix("BGP.next_hop: ") {
                route.next_hop = nh.split_whitespace().next().and_then(|a| a.parse().ok());
            }
            continue;
        }
        if line.starts_with("Table ") {
            continue;
        }
        let mut words = line.split_whitespace().peekable();
        if let Some(net) = words.peek().and_then(|w| w.parse::<Ipv4Net>().ok()) {
            prefix = Some(net);
            words.next();
        }
        let (Some(prefix), Some(proto)) = (prefix, line.split_once('[')) else {
            continue;
        };
        let protocol = proto.1.split_whitespace().next().unwrap_or("").to_string();
        out.push(BirdRoute {
            prefix,
            protocol,
            best: line.contains("] * ") || line.ends_with("] *"),
            bgp: false,
            next_hop: None,
        });
    }
    out
}

/// One BGP session, from `show protocols`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    pub name: String,
    /// BIRD's protocol state: `up`, `start`, `down`, ….
    pub state: String,
    /// The BGP state and the last error, e.g. `Established` or `Active  Socket: …`.
    pub info: String,
}

impl Session {
    pub fn established(&self) -> bool {
        self.state == "up" && self.info.starts_with("Established")
    }
}

/// Parses the lines of `show protocols`: `name proto table state since info…`; of
/// `show protocols all`, the same lines (the details under them are indented).
pub fn parse_protocols(lines: &[String]) -> Vec<Session> {
    lines
        .iter()
        .filter(|l| !l.starts_with(char::is_whitespace))
        .filter_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            if w.len() < 5 || w[1] != "BGP" {
                return None;
            }
            Some(Session {
                name: w[0].to_string(),
                state: w[3].to_string(),
                info: w[5..].join(" "),
            })
        })
        .collect()
}

/// BIRD's graceful restart recovery, from `show status`. A BIRD started with `-R`
/// holds back its own announcements and waits until every BGP channel it locked
/// has recovered: its peer sent End-of-RIB, or never promised one (no graceful
/// restart capability, or restarting itself: the R bit in its OPEN), or the wait
/// timer (240 s) ran out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Recovery {
    pub in_progress: bool,
    /// Channels still waited for ("Waiting for N channels to recover").
    pub waiting: u32,
}

/// Parses the lines of `show status`.
pub fn parse_status(lines: &[String]) -> Recovery {
    let mut out = Recovery::default();
    for line in lines.iter().map(|l| l.trim()) {
        if line == "Graceful restart recovery in progress" {
            out.in_progress = true;
        } else if let Some(n) = line
            .strip_prefix("Waiting for ")
            .and_then(|rest| rest.strip_suffix(" channels to recover"))
        {
            out.waiting = n.parse().unwrap_or(0);
        }
    }
    out
}

/// What a peer's OPEN said about graceful restart, as `show protocols all` shows it
/// under "Neighbor capabilities" — which tells whether a BIRD in recovery waits for
/// that peer's End-of-RIB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerRestart {
    /// No graceful restart capability: BIRD does not wait for it.
    Absent,
    /// The peer is restarting itself (the R bit): BIRD does not wait for it.
    Restarting,
    /// It preserves routes and is not restarting: BIRD waits for its End-of-RIB.
    Awaited,
    /// A helper that lists no address family (FRR's default): BIRD shows no flags
    /// then, so whether it set the R bit cannot be seen.
    Hidden,
}

/// Parses the lines of `show protocols all` into each established BGP session's
/// [`PeerRestart`].
pub fn parse_peer_restart(lines: &[String]) -> BTreeMap<String, PeerRestart> {
    let mut out = BTreeMap::new();
    let mut protocol: Option<String> = None;
    // Inside "Neighbor capabilities" (at that indent): graceful restart aware, able
    // (lists a restart time), restarting.
    let mut caps: Option<(usize, [bool; 3])> = None;
    let mut close = |protocol: &Option<String>, caps: &mut Option<(usize, [bool; 3])>| {
        if let (Some(name), Some((_, [aware, able, restarting]))) = (protocol, caps.take()) {
            let r = match (aware, restarting, able) {
                (false, _, _) => PeerRestart::Absent,
                (true, true, _) => PeerRestart::Restarting,
                (true, false, true) => PeerRestart::Awaited,
                (true, false, false) => PeerRestart::Hidden,
            };
            out.insert(name.clone(), r);
        }
    };
    for line in lines {
        let text = line.trim_start();
        let indent = line.len() - text.len();
        if indent == 0 && !text.is_empty() {
            close(&protocol, &mut caps);
            let w: Vec<&str> = text.split_whitespace().collect();
            protocol = (w.get(1) == Some(&"BGP")).then(|| w[0].to_string());
            continue;
        }
        match &mut caps {
            Some((at, _)) if indent <= *at => close(&protocol, &mut caps),
            Some((_, seen)) => match text.trim_end() {
                "Graceful restart" => seen[0] = true,
                "Restart recovery" => seen[2] = true,
                t if t.starts_with("Restart time:") => seen[1] = true,
                _ => {}
            },
            None => {}
        }
        if text.trim_end() == "Neighbor capabilities" {
            caps = Some((indent, [false; 3]));
        }
    }
    close(&protocol, &mut caps);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reply as BIRD 2.0.12 sent it (captured here), codes included.
    const ROUTES: &str = "1007-Table master4:
 10.244.1.0/24        blackhole [own 18:27:54.302] * (200)
1008-\tType: static univ
1007-10.244.2.0/24        unicast [mesh_192_0_2_2 18:27:56.233] * (100) [i]
 \tvia 192.0.2.2 on bxa0
1008-\tType: BGP univ
1012-\tBGP.origin: IGP
 \tBGP.as_path: 
 \tBGP.next_hop: 192.0.2.2
 \tBGP.local_pref: 100
1007-                     unicast [peer_192_0_2_9 18:27:57.000] (100) [AS65000i]
 \tvia 192.0.2.9 on bxa0
1008-\tType: BGP univ
 \tBGP.next_hop: 192.0.2.9
1007-192.0.2.0/24         unicast [direct1 18:27:54.304] * (240)
 \tdev bxa0
1008-\tType: device univ";

    fn lines(text: &str) -> Vec<String> {
        text.lines()
            .map(|l| match Line::of(l) {
                Line::More(t) | Line::Last(_, t) => t.to_string(),
            })
            .collect()
    }

    #[test]
    fn routes_keep_their_prefix_protocol_choice_and_bgp_next_hop() {
        let r = parse_routes(&lines(ROUTES));
        assert_eq!(r.len(), 4, "{r:#?}");
        assert_eq!(
            (r[0].protocol.as_str(), r[0].bgp, r[0].best),
            ("own", false, true)
        );
        let b = &r[1];
        assert_eq!(b.prefix.to_string(), "10.244.2.0/24");
        assert_eq!(
            (b.protocol.as_str(), b.bgp, b.best),
            ("mesh_192_0_2_2", true, true)
        );
        assert_eq!(b.next_hop, Some(Ipv4Addr::new(192, 0, 2, 2)));
        let alt = &r[2];
        assert_eq!(
            alt.prefix, b.prefix,
            "a blank prefix continues the last one"
        );
        assert!(!alt.best && alt.bgp);
        assert_eq!(alt.next_hop, Some(Ipv4Addr::new(192, 0, 2, 9)));
        assert!(!r[3].bgp && r[3].next_hop.is_none());
    }

    #[test]
    fn sessions_are_the_bgp_protocols_with_their_state() {
        let s = parse_protocols(&lines(
            "2002-Name       Proto      Table      State  Since         Info
1002-device1    Device     ---        up     18:27:54.302  
 mesh_192_0_2_2 BGP        ---        up     18:27:55.264  Established   
 peer_192_0_2_9 BGP        ---        start  18:28:05.753  Active        Socket: Connection refused",
        ));
        assert_eq!(s.len(), 2, "{s:#?}");
        assert!(s[0].established());
        assert_eq!(s[1].info, "Active Socket: Connection refused");
        assert!(!s[1].established());
    }

    /// `show status` from BIRD 2.0.12 started with `-R`, captured here: while it
    /// waits for its peer's End-of-RIB, and after.
    const RECOVERING: &str = "1000-BIRD 2.0.12
1011-Router ID is 192.0.2.2
 Hostname is vm
 Current server time is 2026-12-07 04:56:12.027
 Last reboot on 2026-12-07 04:56:11.469
 Last reconfiguration on 2026-12-07 04:56:11.469
0024-Graceful restart recovery in progress
   Waiting for 1 channels to recover
   Wait timer is 239.442/240
0013 Daemon is up and running";
    const RECOVERED: &str = "1000-BIRD 2.0.12
1011-Router ID is 192.0.2.2
 Hostname is vm
 Current server time is 2026-12-07 04:56:15.440
 Last reboot on 2026-12-07 04:56:11.469
 Last reconfiguration on 2026-12-07 04:56:11.469
0013 Daemon is up and running";

    #[test]
    fn status_tells_whether_graceful_restart_recovery_still_waits() {
        assert_eq!(
            parse_status(&lines(RECOVERING)),
            Recovery {
                in_progress: true,
                waiting: 1
            }
        );
        assert_eq!(parse_status(&lines(RECOVERED)), Recovery::default());
        let three = RECOVERING.replace("for 1 channels", "for 3 channels");
        assert_eq!(parse_status(&lines(&three)).waiting, 3);
    }

    /// `show protocols all` from BIRD 2.0.12 restarted with `-R`, captured here (the
    /// listing from its static protocol on): FRR 8.4 at its defaults (a helper that
    /// lists no address family) and another BIRD with graceful restart on.
    const ALL_RECOVERING: &str = include_str!("testdata/protocols_all_recovering.txt");
    /// The same after FRR got `bgp graceful-restart-disable` and the other BIRD was
    /// itself killed and started with `-R`.
    const ALL_NO_EOR: &str = include_str!("testdata/protocols_all_peers_without_eor.txt");

    #[test]
    fn what_each_peer_said_about_graceful_restart() {
        let r = parse_peer_restart(&lines(ALL_RECOVERING));
        assert_eq!(
            r.into_iter().collect::<Vec<_>>(),
            [
                ("mesh_198_51_100_3".to_string(), PeerRestart::Awaited),
                ("peer_192_0_2_1".to_string(), PeerRestart::Hidden),
            ],
            "the local capabilities (restart recovery: ours) do not count"
        );
        let r = parse_peer_restart(&lines(ALL_NO_EOR));
        assert_eq!(r["peer_192_0_2_1"], PeerRestart::Absent);
        assert_eq!(r["mesh_198_51_100_3"], PeerRestart::Restarting);
        assert_eq!(r.len(), 2);
    }

    #[test]
    fn sessions_read_from_show_protocols_all_too() {
        let s = parse_protocols(&lines(ALL_RECOVERING));
        let names: Vec<&str> = s.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["peer_192_0_2_1", "mesh_198_51_100_3"]);
        assert!(s.iter().all(Session::established), "{s:#?}");
    }

    #[test]
    fn reply_lines_and_error_codes() {
        assert!(matches!(Line::of("0000 "), Line::Last(0, "")));
        assert!(matches!(
            Line::of("9001 syntax error"),
            Line::Last(9001, "syntax error")
        ));
        assert!(matches!(Line::of("1002-x"), Line::More("x")));
        assert!(matches!(Line::of(" \tvia"), Line::More("\tvia")));
        assert!(parse_routes(&lines("1007-garbage [ without anything\n 10.0.0.0/33 x")).is_empty());
    }
}
