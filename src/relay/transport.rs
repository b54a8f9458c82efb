//! What the relay needs from a connection, as traits, with their
//! implementations for native QUIC (`quinn::Connection`).

use crate::wire::stream::CloseConnection;

impl CloseConnection for quinn::Connection {
    fn close(&self, code: u32, reason: &[u8]) {
        quinn::Connection::close(self, quinn::VarInt::from_u32(code), reason);
    }

    async fn closed(&self) {
        let _ = quinn::Connection::closed(self).await;
    }
}
