//! Kubernetes Services and EndpointSlices as netpath's service records: a Service
//! becomes a `ServiceSpec` without endpoints (what `<prefix>/services/<ns>/<name>`
//! holds), an EndpointSlice the endpoints of the service its
//! `kubernetes.io/service-name` label names (`<prefix>/endpoints/<ns>/<service>`).
//! What netpath does not serve is refused with its field named: a headless or
//! ExternalName service, type LoadBalancer, SCTP, IPv6 or FQDN endpoints.
use std::{fmt, net::Ipv4Addr, str::FromStr};

use serde::Deserialize;
use serde_json::Value;

use crate::{
    policy::{IntOrString, ObjectMeta},
    spec::{
        EndpointPort, EndpointRecord, Protocol, ServicePort, ServiceSpec, ServiceType,
        SessionAffinity, TargetPort, TrafficPolicy, DEFAULT_AFFINITY_TIMEOUT,
    },
    store::etcd::EndpointSlice,
};

/// The label an EndpointSlice names its service with.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct KService {
    #[serde(default)]
    metadata: ObjectMeta,
    #[serde(default)]
    spec: KServiceSpec,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct KServiceSpec {
    #[serde(rename = "type")]
    kind: Option<String>,
    #[serde(rename = "clusterIP")]
    cluster_ip: Option<String>,
    #[serde(default)]
    ports: Vec<KServicePort>,
    session_affinity: Option<String>,
    session_affinity_config: Option<KAffinityConfig>,
    internal_traffic_policy: Option<String>,
    external_traffic_policy: Option<String>,
}

#[derive(Deserialize)]
struct KAffinityConfig {
    #[serde(rename = "clientIP")]
    client_ip: Option<KClientIp>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct KClientIp {
    timeout_seconds: Option<i64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct KServicePort {
    name: Option<String>,
    protocol: Option<String>,
    port: i64,
    target_port: Option<IntOrString>,
    node_port: Option<i64>,
}

fn err(field: &str, value: impl fmt::Display, why: impl fmt::Display) -> String {
    format!("{field} = {:?}: {why}", value.to_string())
}

fn port(field: &str, n: i64) -> Result<u16, String> {
    u16::try_from(n)
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| err(field, n, "must be 1-65535"))
}

fn parsed<T: FromStr<Err = String> + Default>(
    field: &str,
    v: &Option<String>,
) -> Result<T, String> {
    match v {
        None => Ok(T::default()),
        Some(s) => s.parse().map_err(|why: String| err(field, s, why)),
    }
}

/// A Service as netpath's record (no endpoints); `namespace` when it names none.
pub fn service(v: Value, namespace: &str) -> Result<ServiceSpec, String> {
    let k: KService = serde_json::from_value(v).map_err(|e| e.to_string())?;
    let s = k.spec;
    let kind = match s.kind.as_deref() {
        None | Some("ClusterIP") => ServiceType::ClusterIP,
        Some("NodePort") => ServiceType::NodePort,
        Some(other) => {
            return Err(err(
                "spec.type",
                other,
                "netpath serves types ClusterIP and NodePort",
            ))
        }
    };
    let cluster_ip = match s.cluster_ip.as_deref() {
        None | Some("") => {
            return Err(err(
                "spec.clusterIP",
                "",
                "netpath allocates no ClusterIPs: give the one the API server chose",
            ))
        }
        Some("None") => {
            return Err(err(
                "spec.clusterIP",
                "None",
                "a headless service has no ClusterIP to balance",
            ))
        }
        Some(ip) => ip
            .parse::<Ipv4Addr>()
            .map_err(|_| err("spec.clusterIP", ip, "not an IPv4 address"))?,
    };
    let mut ports = Vec::with_capacity(s.ports.len());
    for (i, p) in s.ports.iter().enumerate() {
        let f = |n: &str| format!("spec.ports[{i}].{n}");
        ports.push(ServicePort {
            name: p.name.clone().unwrap_or_default(),
            protocol: parsed::<Protocol>(&f("protocol"), &p.protocol)?,
            port: port(&f("port"), p.port)?,
            target_port: match &p.target_port {
                None => None,
                Some(IntOrString::Int(n)) => Some(TargetPort::Number(port(&f("targetPort"), *n)?)),
                Some(IntOrString::Str(s)) => Some(TargetPort::Name(s.clone())),
            },
            // Kubernetes keeps the node ports of a service that is no longer NodePort.
            node_port: match (kind, p.node_port) {
                (ServiceType::NodePort, Some(n)) => Some(port(&f("nodePort"), n)?),
                _ => None,
            },
        });
    }
    let timeout = s
        .session_affinity_config
        .and_then(|c| c.client_ip)
        .and_then(|c| c.timeout_seconds);
    let affinity_timeout = match timeout {
        None => DEFAULT_AFFINITY_TIMEOUT,
        Some(t) => u32::try_from(t).map_err(|_| {
            err(
                "spec.sessionAffinityConfig.clientIP.timeoutSeconds",
                t,
                "must be 1-86400",
            )
        })?,
    };
    Ok(ServiceSpec {
        namespace: k
            .metadata
            .namespace
            .unwrap_or_else(|| namespace.to_string()),
        name: k.metadata.name,
        kind,
        cluster_ip,
        ports,
        session_affinity: parsed::<SessionAffinity>("spec.sessionAffinity", &s.session_affinity)?,
        affinity_timeout,
        internal_traffic_policy: parsed::<TrafficPolicy>(
            "spec.internalTrafficPolicy",
            &s.internal_traffic_policy,
        )?,
        external_traffic_policy: parsed::<TrafficPolicy>(
            "spec.externalTrafficPolicy",
            &s.external_traffic_policy,
        )?,
        endpoints: Vec::new(),
        endpoint_ports: Vec::new(),
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct KSlice {
    #[serde(default)]
    metadata: ObjectMeta,
    address_type: String,
    // kubectl prints a slice without endpoints or ports with `null` there.
    #[serde(default, deserialize_with = "null_as_empty")]
    endpoints: Vec<KEndpoint>,
    #[serde(default, deserialize_with = "null_as_empty")]
    ports: Vec<KSlicePort>,
}

fn null_as_empty<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Option::<Vec<T>>::deserialize(d)?.unwrap_or_default())
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct KEndpoint {
    addresses: Vec<String>,
    #[serde(default)]
    conditions: KConditions,
}

#[derive(Deserialize, Default)]
struct KConditions {
    ready: Option<bool>,
    serving: Option<bool>,
    terminating: Option<bool>,
}

#[derive(Deserialize)]
struct KSlicePort {
    name: Option<String>,
    port: Option<i64>,
}

/// An EndpointSlice as (namespace, service, endpoints). The node an endpoint runs
/// on is netpath's to find from the pod CIDRs: Kubernetes' `nodeName` need not be
/// a netpath node's name.
pub fn endpoint_slice(
    v: Value,
    namespace: &str,
) -> Result<(String, String, EndpointSlice), String> {
    let k: KSlice = serde_json::from_value(v).map_err(|e| e.to_string())?;
    let service = k
        .metadata
        .labels
        .get(SERVICE_NAME_LABEL)
        .cloned()
        .ok_or_else(|| {
            err(
                &format!("metadata.labels[{SERVICE_NAME_LABEL}]"),
                "",
                "the slice names no service",
            )
        })?;
    if k.address_type != "IPv4" {
        return Err(err(
            "addressType",
            &k.address_type,
            "netpath balances IPv4 endpoints",
        ));
    }
    let mut endpoints = Vec::new();
    for (i, e) in k.endpoints.iter().enumerate() {
        for (j, a) in e.addresses.iter().enumerate() {
            let address = a.parse().map_err(|_| {
                err(
                    &format!("endpoints[{i}].addresses[{j}]"),
                    a,
                    "not an IPv4 address",
                )
            })?;
            let c = &e.conditions;
            endpoints.push(EndpointRecord {
                address,
                node: None,
                // Unknown readiness is ready, as Kubernetes tells consumers.
                ready: c.ready.unwrap_or(true),
                serving: c.serving,
                terminating: c.terminating.unwrap_or(false),
            });
        }
    }
    let mut ports = Vec::new();
    for (i, p) in k.ports.iter().enumerate() {
        let n = p
            .port
            .ok_or_else(|| err(&format!("ports[{i}].port"), "", "a port number is needed"))?;
        ports.push(EndpointPort {
            name: p.name.clone().unwrap_or_default(),
            port: port(&format!("ports[{i}].port"), n)?,
        });
    }
    let ns = k.metadata.namespace.unwrap_or_else(|| namespace.into());
    Ok((ns, service, EndpointSlice { endpoints, ports }))
}

/// Another slice of the same service folded in: its endpoints added, its ports
/// agreeing with those there.
pub fn merge_slice(into: &mut EndpointSlice, more: &EndpointSlice) -> Result<(), String> {
    for p in &more.ports {
        match into.ports.iter().find(|q| q.name == p.name) {
            Some(q) if q.port != p.port => {
                return Err(format!(
                    "port {:?} is {} here and {} in another slice of the service",
                    p.name, p.port, q.port
                ))
            }
            Some(_) => {}
            None => into.ports.push(p.clone()),
        }
    }
    for e in &more.endpoints {
        if !into.endpoints.iter().any(|x| x.address == e.address) {
            into.endpoints.push(e.clone());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_kubectl_service_becomes_a_record() {
        let s = service(
            json!({"apiVersion": "v1", "kind": "Service",
                "metadata": {"name": "web", "uid": "u"},
                "spec": {"type": "NodePort", "clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"],
                         "ports": [{"name": "http", "port": 80, "targetPort": "http", "nodePort": 30080,
                                    "protocol": "TCP"}],
                         "sessionAffinity": "ClientIP",
                         "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 60}},
                         "externalTrafficPolicy": "Local"},
                "status": {"loadBalancer": {}}}),
            "default",
        )
        .unwrap();
        assert_eq!((s.namespace.as_str(), s.name.as_str()), ("default", "web"));
        assert_eq!(s.kind, ServiceType::NodePort);
        assert_eq!(s.ports[0].node_port, Some(30080));
        assert_eq!(
            s.ports[0].target_port,
            Some(TargetPort::Name("http".into()))
        );
        assert_eq!(
            (s.session_affinity, s.affinity_timeout),
            (SessionAffinity::ClientIP, 60)
        );
        assert_eq!(s.external_traffic_policy, TrafficPolicy::Local);
        let e = service(
            json!({"metadata": {"name": "h"}, "spec": {"clusterIP": "None", "ports": []}}),
            "x",
        )
        .unwrap_err();
        assert!(e.starts_with("spec.clusterIP = \"None\""), "{e}");
        let e = service(
            json!({"metadata": {"name": "s"}, "spec": {"clusterIP": "10.96.0.1",
                   "ports": [{"port": 80, "protocol": "SCTP"}]}}),
            "x",
        )
        .unwrap_err();
        assert!(e.starts_with("spec.ports[0].protocol = \"SCTP\""), "{e}");
    }

    #[test]
    fn slices_become_the_services_endpoints_and_merge() {
        let slice = |name: &str, ip: &str, ready: bool| {
            json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                "metadata": {"name": name, "namespace": "x",
                             "labels": {SERVICE_NAME_LABEL: "web"}},
                "addressType": "IPv4",
                "endpoints": [{"addresses": [ip], "nodeName": "k8s-node-1",
                               "conditions": {"ready": ready, "terminating": !ready}}],
                "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]})
        };
        let (ns, svc, mut a) = endpoint_slice(slice("web-1", "10.244.1.5", true), "d").unwrap();
        assert_eq!((ns.as_str(), svc.as_str()), ("x", "web"));
        assert_eq!(a.endpoints[0].node, None, "nodeName is Kubernetes' name");
        let (_, _, b) = endpoint_slice(slice("web-2", "10.244.2.5", false), "d").unwrap();
        merge_slice(&mut a, &b).unwrap();
        assert_eq!(a.endpoints.len(), 2);
        assert!(a.endpoints[1].terminating && !a.endpoints[1].takes_new());
        assert_eq!(
            a.ports,
            [EndpointPort {
                name: "http".into(),
                port: 8080
            }]
        );
        let mut other = b.clone();
        other.ports[0].port = 9090;
        assert!(merge_slice(&mut a, &other).unwrap_err().contains("8080"));
        // What kubectl prints for a slice of a service without backends.
        let mut empty = slice("web-4", "10.244.1.5", true);
        empty["endpoints"] = Value::Null;
        empty["ports"] = Value::Null;
        let (_, _, e) = endpoint_slice(empty, "d").unwrap();
        assert!(e.endpoints.is_empty() && e.ports.is_empty());
        let mut v6 = slice("web-3", "fd00::1", true);
        v6["addressType"] = "IPv6".into();
        assert!(endpoint_slice(v6, "d")
            .unwrap_err()
            .starts_with("addressType"));
    }
}
