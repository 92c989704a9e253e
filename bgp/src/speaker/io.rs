//! The speaker's sockets: the listener's accept loop, outgoing connections, and each
//! connection's reader (cutting the stream into messages) and writer (coalescing them), plus
//! the control socket's loop. Thin by design: every decision is the core's.

use std::net::{IpAddr, SocketAddr};
use std::os::fd::OwnedFd;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::{mpsc, oneshot};
use tracing::warn;

use crate::fsm::ConnectionId;
use crate::packet;

use super::config::PeerConfig;
use super::control::{ControlRequest, ControlResponse};
use super::socket::{self, SessionSecurity};
use super::{Command, Event, Outgoing};

pub(super) async fn accept_loop(listener: TcpListener, events: mpsc::Sender<Event>) {
    loop {
        match listener.accept().await {
            Ok((stream, remote)) => {
                if events.send(Event::Accepted(stream, remote)).await.is_err() {
                    return;
                }
            }
            Err(e) => {
                // Out of descriptors and the like: back off instead of spinning.
                warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// The TTL a session without GTSM sends with: eBGP 1 unless `ebgp_multihop` allows more
/// (single-hop eBGP, as BIRD, FRR and Cilium default to), iBGP the system's.
pub(super) fn session_ttl(local_as: u32, peer: &PeerConfig) -> Option<u8> {
    (peer.remote_as != local_as).then(|| peer.ebgp_multihop.unwrap_or(1))
}

pub(super) async fn connect(
    peer: IpAddr,
    conn: ConnectionId,
    target: SocketAddr,
    local: Option<IpAddr>,
    security: SessionSecurity,
    timeout: Duration,
    events: mpsc::Sender<Event>,
) {
    let attempt = async {
        let sock = socket::outgoing(target, local, &security)?;
        let std_stream = std::net::TcpStream::from(OwnedFd::from(sock));
        let socket = tokio::net::TcpSocket::from_std_stream(std_stream);
        socket.connect(target).await
    };
    let event = match tokio::time::timeout(timeout, attempt).await {
        Ok(Ok(stream)) => Event::Connected { peer, conn, stream },
        Ok(Err(error)) => Event::ConnectFailed { peer, conn, error },
        Err(_) => Event::ConnectFailed {
            peer,
            conn,
            error: std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"),
        },
    };
    let _ = events.send(event).await;
}

pub(super) async fn read_loop(
    mut r: OwnedReadHalf,
    peer: IpAddr,
    conn: ConnectionId,
    events: mpsc::Sender<Event>,
    mut max_len: tokio::sync::watch::Receiver<usize>,
) {
    let mut buf = BytesMut::with_capacity(64 * 1024);
    // After an OPEN, framing waits for the core to say how long the messages that follow
    // may be (Extended Message is negotiated by that OPEN, RFC 8654 §3).
    let mut after_open = false;
    loop {
        if !after_open {
            match r.read_buf(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
        after_open = false;
        let mut frames = Vec::new();
        let limit = *max_len.borrow_and_update();
        loop {
            match packet::frame_len_within(&buf, limit) {
                Ok(Some(n)) if buf.len() >= n => {
                    let frame = buf.split_to(n).freeze();
                    let open = frame.get(HEADER_TYPE) == Some(&OPEN_TYPE);
                    frames.push(frame);
                    if open {
                        after_open = true;
                        break;
                    }
                }
                Ok(_) => break,
                Err(error) => {
                    if !frames.is_empty() {
                        let _ = events.send(Event::Frames { peer, conn, frames }).await;
                    }
                    let _ = events.send(Event::BadHeader { peer, conn, error }).await;
                    return;
                }
            }
        }
        if !frames.is_empty()
            && events
                .send(Event::Frames { peer, conn, frames })
                .await
                .is_err()
        {
            return;
        }
        if after_open {
            // The core answers once it has handled the OPEN (or the connection goes away,
            // and with it this task).
            if max_len.changed().await.is_err() {
                return;
            }
        }
        if buf.capacity() - buf.len() < 4096 {
            buf.reserve(64 * 1024);
        }
    }
    let _ = events.send(Event::Closed { peer, conn }).await;
}

/// Offset of the type octet in the message header, and the type of OPEN (RFC 4271 §4.1).
const HEADER_TYPE: usize = 18;
const OPEN_TYPE: u8 = 1;

pub(super) async fn write_loop(mut w: OwnedWriteHalf, mut rx: mpsc::UnboundedReceiver<Outgoing>) {
    let mut out = BytesMut::with_capacity(64 * 1024);
    while let Some(first) = rx.recv().await {
        let mut close = false;
        let mut next = Some(first);
        // Coalesce everything already queued into as few writes as possible.
        while let Some(item) = next.take() {
            match item {
                Outgoing::Messages(msgs) => {
                    for m in msgs {
                        out.extend_from_slice(&m);
                    }
                }
                Outgoing::Close => {
                    close = true;
                    break;
                }
            }
            if out.len() >= 256 * 1024 {
                break;
            }
            next = rx.try_recv().ok();
        }
        if !out.is_empty() {
            if w.write_all(&out).await.is_err() {
                return;
            }
            out.clear();
        }
        if close {
            let _ = w.shutdown().await;
            return;
        }
    }
}

pub(super) async fn control_loop(listener: UnixListener, commands: mpsc::Sender<Command>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let commands = commands.clone();
        tokio::spawn(async move {
            use tokio::io::{AsyncBufReadExt, BufReader};
            let (r, mut w) = stream.into_split();
            let mut lines = BufReader::new(r).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let response = match serde_json::from_str::<ControlRequest>(&line) {
                    Ok(req) => {
                        let (tx, rx) = oneshot::channel();
                        if commands.send(Command::Control(req, tx)).await.is_err() {
                            return;
                        }
                        match rx.await {
                            Ok(r) => r,
                            Err(_) => return,
                        }
                    }
                    Err(e) => ControlResponse::Error {
                        message: format!("bad request: {e}"),
                    },
                };
                let Ok(mut text) = serde_json::to_vec(&response) else {
                    return;
                };
                text.push(b'\n');
                if w.write_all(&text).await.is_err() {
                    return;
                }
            }
        });
    }
}
