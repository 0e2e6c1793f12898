//! A policy record checked and read into the form the compiler works with:
//! parsed CIDRs, protocol numbers, port ranges. Checking and reading are one pass,
//! so what `validate` admits is exactly what `compile` can read.
use super::{
    checks::{check_protocol, check_selector, port_name, Field, PolicyError, PORT_NAME},
    cidr::IpNet,
    records::{IntOrString, LabelSelector, NetworkPolicy, Peer, PolicyPort, PolicyType},
};

/// A policy as the compiler reads it.
#[derive(Debug)]
pub(crate) struct Resolved<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    pub pod_selector: &'a LabelSelector,
    /// The rules of each direction the policy lists in `policyTypes` (defaulted);
    /// `None` for a direction it leaves alone.
    pub ingress: Option<Vec<Rule<'a>>>,
    pub egress: Option<Vec<Rule<'a>>>,
}

#[derive(Debug)]
pub(crate) struct Rule<'a> {
    /// Empty: every peer.
    pub peers: Vec<PeerSel<'a>>,
    /// Empty: every protocol and port.
    pub ports: Vec<PortSel<'a>>,
}

#[derive(Debug)]
pub(crate) enum PeerSel<'a> {
    Block {
        cidr: IpNet,
        except: Vec<IpNet>,
    },
    /// Pods: `namespaces` `None` means the policy's own namespace, `pods` `None`
    /// every pod of the namespaces chosen.
    Pods {
        pods: Option<&'a LabelSelector>,
        namespaces: Option<&'a LabelSelector>,
    },
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct PortSel<'a> {
    pub protocol: u8,
    pub port: PortMatch<'a>,
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum PortMatch<'a> {
    /// Inclusive; a port left out is 0-65535.
    Range(u16, u16),
    /// A container port's name, resolved per pod.
    Named(&'a str),
}

/// `at` is the record (`policies[2] (x/allow-80)`).
pub(crate) fn resolve<'a>(at: &Field, p: &'a NetworkPolicy) -> Result<Resolved<'a>, PolicyError> {
    let spec_at = at.at("spec");
    let spec = &p.spec;
    check_selector(&spec_at.at("podSelector"), &spec.pod_selector)?;
    for (j, t) in spec.policy_types.iter().flatten().enumerate() {
        if let PolicyType::Unknown(v) = t {
            return Err(spec_at.nth("policyTypes", j).err(
                v,
                format!("must be one of {}", PolicyType::KNOWN.join(", ")),
            ));
        }
    }
    let mut ingress = Vec::with_capacity(spec.ingress.len());
    for (j, r) in spec.ingress.iter().enumerate() {
        ingress.push(rule(&spec_at.nth("ingress", j), "from", &r.from, &r.ports)?);
    }
    let mut egress = Vec::with_capacity(spec.egress.len());
    for (j, r) in spec.egress.iter().enumerate() {
        egress.push(rule(&spec_at.nth("egress", j), "to", &r.to, &r.ports)?);
    }
    let (has_ingress, has_egress) = spec.directions();
    Ok(Resolved {
        namespace: p.metadata.ns(),
        name: &p.metadata.name,
        pod_selector: &spec.pod_selector,
        ingress: has_ingress.then_some(ingress),
        egress: has_egress.then_some(egress),
    })
}

fn rule<'a>(
    at: &Field,
    peers_name: &str,
    peers: &'a [Peer],
    ports: &'a [PolicyPort],
) -> Result<Rule<'a>, PolicyError> {
    let peers = peers
        .iter()
        .enumerate()
        .map(|(j, p)| peer(&at.nth(peers_name, j), p))
        .collect::<Result<_, _>>()?;
    let ports = ports
        .iter()
        .enumerate()
        .map(|(j, p)| port(&at.nth("ports", j), p))
        .collect::<Result<_, _>>()?;
    Ok(Rule { peers, ports })
}

fn peer<'a>(at: &Field, p: &'a Peer) -> Result<PeerSel<'a>, PolicyError> {
    let selectors = p.pod_selector.is_some() || p.namespace_selector.is_some();
    let Some(block) = &p.ip_block else {
        if !selectors {
            return Err(at.err(
                "{}",
                "a peer needs podSelector, namespaceSelector or ipBlock",
            ));
        }
        if let Some(s) = &p.pod_selector {
            check_selector(&at.at("podSelector"), s)?;
        }
        if let Some(s) = &p.namespace_selector {
            check_selector(&at.at("namespaceSelector"), s)?;
        }
        return Ok(PeerSel::Pods {
            pods: p.pod_selector.as_ref(),
            namespaces: p.namespace_selector.as_ref(),
        });
    };
    let block_at = at.at("ipBlock");
    if selectors {
        return Err(block_at.err(
            &block.cidr,
            "a peer with ipBlock has no podSelector or namespaceSelector",
        ));
    }
    let cidr: IpNet = block
        .cidr
        .parse()
        .map_err(|e| block_at.at("cidr").err(&block.cidr, format!("{e}")))?;
    let mut except = Vec::with_capacity(block.except.len());
    for (k, text) in block.except.iter().enumerate() {
        let f = block_at.nth("except", k);
        let e: IpNet = text.parse().map_err(|why| f.err(text, format!("{why}")))?;
        if !cidr.contains(&e) {
            return Err(f.err(text, format!("not inside cidr {cidr}")));
        }
        if e == cidr {
            return Err(f.err(text, format!("must be narrower than cidr {cidr}")));
        }
        except.push(e);
    }
    Ok(PeerSel::Block { cidr, except })
}

fn port<'a>(at: &Field, p: &'a PolicyPort) -> Result<PortSel<'a>, PolicyError> {
    let protocol = match &p.protocol {
        None => 6,
        Some(proto) => check_protocol(&at.at("protocol"), proto)?,
    };
    let end_at = at.at("endPort");
    let port = match (&p.port, p.end_port) {
        (None, None) => PortMatch::Range(0, u16::MAX),
        (None, Some(end)) => return Err(end_at.err(end, "endPort needs a port")),
        (Some(IntOrString::Str(name)), end) => {
            if let Some(end) = end {
                return Err(end_at.err(end, "endPort needs a numeric port, not a named one"));
            }
            if !port_name(name) {
                return Err(at.at("port").err(name, PORT_NAME));
            }
            PortMatch::Named(name)
        }
        (Some(IntOrString::Int(n)), end) => {
            let lo = u16::try_from(*n)
                .ok()
                .filter(|n| *n != 0)
                .ok_or_else(|| at.at("port").err(n, "must be 1-65535"))?;
            let hi = match end {
                None => lo,
                Some(e) if e < i64::from(lo) => {
                    return Err(end_at.err(e, format!("below port {lo}")))
                }
                Some(e) => u16::try_from(e).map_err(|_| end_at.err(e, "must be at most 65535"))?,
            };
            PortMatch::Range(lo, hi)
        }
    };
    Ok(PortSel { protocol, port })
}
