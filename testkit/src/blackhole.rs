//! An address that never answers a connect: a listener whose accept queue is full, so the
//! kernel drops further SYNs and a TCP connect to it hangs until the client gives up. It
//! stands in for a broken route or a firewall that drops packets, on loopback only.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket, TcpStream};

/// Keeps the hole open while alive.
pub struct BlackHole {
    listener: TcpListener,
    _fillers: Vec<TcpStream>,
}

impl BlackHole {
    /// A black hole on 127.0.0.1.
    pub async fn start() -> std::io::Result<BlackHole> {
        let sock = TcpSocket::new_v4()?;
        sock.bind("127.0.0.1:0".parse().expect("literal address"))?;
        let listener = sock.listen(0)?;
        let addr = listener.local_addr()?;
        // Connections that are never accepted fill the queue (a backlog of 0 still admits one
        // or two, depending on the kernel); once it is full, new SYNs go unanswered.
        let mut fillers = Vec::new();
        for _ in 0..4 {
            if let Ok(Ok(s)) =
                tokio::time::timeout(Duration::from_millis(200), TcpStream::connect(addr)).await
            {
                fillers.push(s);
            }
        }
        Ok(BlackHole {
            listener,
            _fillers: fillers,
        })
    }

    /// Its address.
    pub fn addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("bound listener")
    }
}

/// Takes every TCP connection on `listener` and never says a word, holding each open until the
/// returned task is aborted: a stuck TLS terminator, a proxy in front of a dead backend, a
/// path that lets the TCP handshake through and nothing after it.
pub fn hold_silently(listener: TcpListener) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut conns = Vec::new();
        while let Ok((c, _)) = listener.accept().await {
            conns.push(c);
        }
    })
}
