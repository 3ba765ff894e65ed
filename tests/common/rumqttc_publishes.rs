//! Drives a `rumqttc` event loop in a task and hands its incoming PUBLISHes to a channel, for tests
//! that read what a subscriber received.

#![allow(dead_code)]

use rumqttc::{Event, EventLoop, Packet, Publish};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Polls `eventloop` until it fails (or nobody reads the channel any more), sending every
/// incoming PUBLISH to the returned receiver.
pub fn forward_publishes(
    mut eventloop: EventLoop,
) -> (mpsc::UnboundedReceiver<Publish>, JoinHandle<()>) {
    let (tx, publishes) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        while let Ok(event) = eventloop.poll().await {
            if let Event::Incoming(Packet::Publish(p)) = event {
                if tx.send(p).is_err() {
                    break;
                }
            }
        }
    });
    (publishes, task)
}
