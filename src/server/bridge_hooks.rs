//! What the server gives the bridges (`crate::bridge`) at start: the address of the listener a
//! bridge's local session connects to, and the sink that publishes its state to `$SYS`. The
//! bridges themselves run on their own threads; nothing here runs them.

use std::net::SocketAddr;

use crate::config::BrokerConfig;
use crate::protocol::QoS;

use super::host_client::HostClient;

/// Where a bridge's local session connects: its `local_listener`, or the first plain TCP
/// listener, at a loopback address when the listener is bound to every interface.
pub(super) fn local_address(
    config: &BrokerConfig,
    addresses: &[(String, SocketAddr)],
    bridge: &crate::config::BridgeConfig,
) -> Result<SocketAddr, String> {
    let listener = config
        .listeners
        .iter()
        .filter(|l| crate::config::local_capable(l))
        .find(|l| {
            bridge
                .local_listener
                .as_ref()
                .is_none_or(|name| &l.name == name)
        })
        .ok_or_else(|| {
            format!(
                "bridge '{}': no plain TCP listener to connect to",
                bridge.name
            )
        })?;
    let mut addr = addresses
        .iter()
        .find(|(name, _)| *name == listener.name)
        .map_or(listener.bind, |(_, addr)| *addr);
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    Ok(addr)
}

/// Publishes a bridge's state, retained, at `$SYS/broker/bridges/NAME/state`, and why it is not
/// connected at `$SYS/broker/bridges/NAME/error` (retained; cleared, an empty retained message,
/// once it is).
pub(super) fn state_sink(host: HostClient) -> crate::bridge::StateSink {
    Box::new(move |name, connected, failure| {
        let state = if connected {
            "connected"
        } else {
            "disconnected"
        };
        let error = failure.unwrap_or("");
        for (level, payload) in [("state", state), ("error", error)] {
            let topic = format!("$SYS/broker/bridges/{name}/{level}");
            let payload = bytes::Bytes::copy_from_slice(payload.as_bytes());
            if let Err(error) = host.publish(&topic, payload, QoS::AtMostOnce, true) {
                log::debug!("{topic}: {error}");
            }
        }
    })
}
