//! Who is on the other end of a TLS connection: the verified client certificate's names.
//!
//! A TLS listener with `--tls-client-ca` verifies each client's certificate in the handshake
//! and puts what it names in every request of the connection as a [`PeerIdentity`] extension;
//! `auth.mode = "mtls"` maps it to a tenant.

/// The names in a client certificate the handshake verified.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerIdentity {
    /// The subject's common name (CN), when it has one.
    pub common_name: Option<String>,
    /// The certificate's URI subject alternative names, in order.
    pub uri_sans: Vec<String>,
}
