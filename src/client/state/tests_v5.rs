//! Unit tests of the MQTT 5 layer (`v5_layer.rs`), packet by packet.
