//! ADD's result in the spec's JSON, for every version the plugin speaks, and
//! reading our attachment back out of a `prevResult`.
use std::net::Ipv4Addr;

use serde_json::{json, Value};

use crate::net::Mac;

/// What ADD wired, as the result reports it.
#[derive(Debug, Clone)]
pub struct Wired {
    pub host_ifname: String,
    pub host_mac: Mac,
    pub ifname: String,
    pub pod_mac: Mac,
    pub sandbox: String,
    pub ip: Ipv4Addr,
    pub gateway: Ipv4Addr,
    pub mtu: u32,
}

fn array(v: Option<&Value>) -> Vec<Value> {
    v.and_then(Value::as_array).cloned().unwrap_or_default()
}

/// The result: `prev`'s content (when the plugin is not first in a chain) with
/// this attachment appended.
pub fn add(version: &str, prev: Option<&Value>, w: &Wired) -> Value {
    let mut interfaces = array(prev.and_then(|p| p.get("interfaces")));
    let mut ips = array(prev.and_then(|p| p.get("ips")));
    let mut routes = array(prev.and_then(|p| p.get("routes")));
    let with_mtu = version == "1.1.0";
    let mut host = json!({ "name": w.host_ifname, "mac": w.host_mac.to_string() });
    let mut pod = json!({ "name": w.ifname, "mac": w.pod_mac.to_string(), "sandbox": w.sandbox });
    if with_mtu {
        host["mtu"] = w.mtu.into();
        pod["mtu"] = w.mtu.into();
    }
    interfaces.push(host);
    let pod_index = interfaces.len();
    interfaces.push(pod);
    let mut ip = json!({
        "address": format!("{}/32", w.ip),
        "gateway": w.gateway.to_string(),
        "interface": pod_index,
    });
    if version == "0.4.0" {
        ip["version"] = "4".into();
    }
    ips.push(ip);
    routes.push(json!({ "dst": "0.0.0.0/0", "gw": w.gateway.to_string() }));
    json!({
        "cniVersion": version,
        "interfaces": interfaces,
        "ips": ips,
        "routes": routes,
        "dns": prev.and_then(|p| p.get("dns")).cloned().unwrap_or_else(|| json!({})),
    })
}

/// The address `prev` reports for interface `ifname` inside a sandbox.
pub fn address_of(prev: &Value, ifname: &str) -> Option<Ipv4Addr> {
    let interfaces = prev.get("interfaces")?.as_array()?;
    let index = interfaces.iter().position(|i| {
        i.get("name").and_then(Value::as_str) == Some(ifname) && i.get("sandbox").is_some()
    })?;
    prev.get("ips")?
        .as_array()?
        .iter()
        .filter(|ip| ip.get("interface").and_then(Value::as_u64) == Some(index as u64))
        .filter_map(|ip| ip.get("address")?.as_str()?.split('/').next()?.parse().ok())
        .next()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wired() -> Wired {
        Wired {
            host_ifname: "np0123".into(),
            host_mac: Mac([2, 0, 0, 0, 0, 1]),
            ifname: "eth0".into(),
            pod_mac: Mac([2, 0, 0, 0, 0, 2]),
            sandbox: "/run/netns/x".into(),
            ip: Ipv4Addr::new(10, 244, 1, 2),
            gateway: Ipv4Addr::new(169, 254, 1, 1),
            mtu: 1450,
        }
    }

    #[test]
    fn result_shapes_per_version_and_round_trip() {
        let r = add("1.0.0", None, &wired());
        assert_eq!(r["ips"][0]["address"], "10.244.1.2/32");
        assert_eq!(r["ips"][0]["interface"], 1);
        assert_eq!(r["ips"][0]["gateway"], "169.254.1.1");
        assert!(r["ips"][0].get("version").is_none());
        assert!(r["interfaces"][1].get("mtu").is_none());
        assert_eq!(address_of(&r, "eth0"), Some(Ipv4Addr::new(10, 244, 1, 2)));
        assert_eq!(add("0.4.0", None, &wired())["ips"][0]["version"], "4");
        assert_eq!(add("1.1.0", None, &wired())["interfaces"][1]["mtu"], 1450);
    }

    #[test]
    fn appends_to_a_previous_result() {
        let prev = json!({
            "cniVersion": "1.0.0",
            "interfaces": [{"name": "lo", "sandbox": "/run/netns/x"}],
            "ips": [{"address": "127.0.0.1/8", "interface": 0}],
            "dns": {"nameservers": ["10.0.0.10"]},
        });
        let r = add("1.0.0", Some(&prev), &wired());
        assert_eq!(r["interfaces"].as_array().unwrap().len(), 3);
        assert_eq!(r["ips"][1]["interface"], 2);
        assert_eq!(r["dns"]["nameservers"][0], "10.0.0.10");
        assert_eq!(address_of(&r, "eth0"), Some(Ipv4Addr::new(10, 244, 1, 2)));
        assert_eq!(address_of(&r, "lo"), Some(Ipv4Addr::new(127, 0, 0, 1)));
        assert_eq!(address_of(&r, "eth9"), None);
    }
}
