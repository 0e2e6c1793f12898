//! BIRD's control socket (what `birdc` speaks): a greeting, then one command per
//! line, each answered by lines `CODE-text` (more follow), ` text` (continuing the
//! last code) and a final `CODE text`; codes from 8000 up are errors. And the two
//! replies the agent reads: `show route all` and `show protocols`.
use std::{net::Ipv4Addr, path::Path, time::Duration};

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

/// Parses the lines of `show protocols`: `name proto table state since info…`.
pub fn parse_protocols(lines: &[String]) -> Vec<Session> {
    lines
        .iter()
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
