//! A SOCKS5 proxy on loopback (RFC 1928: no authentication, CONNECT only) that answers a
//! connect it could not make with the reply code of the error, as dante and microsocks do, and
//! keeps every target it was asked for, in order. Strict where RFC 1928 §5 is: an IP address
//! sent as a name (ATYP 3) is refused with "address type not supported", as some servers do.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A running proxy; dropping it stops accepting (tunnels already open run to their end).
pub struct Socks5 {
    addr: SocketAddr,
    asked: Arc<Mutex<Vec<String>>>,
    connections: Arc<AtomicUsize>,
    accept: tokio::task::JoinHandle<()>,
}

impl Drop for Socks5 {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

impl Socks5 {
    /// Listens on 127.0.0.1:0.
    pub async fn start() -> io::Result<Socks5> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let asked = Arc::new(Mutex::new(Vec::new()));
        let log = asked.clone();
        let connections = Arc::new(AtomicUsize::new(0));
        let count = connections.clone();
        let accept = tokio::spawn(async move {
            while let Ok((down, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve(down, log.clone()));
            }
        });
        Ok(Socks5 {
            addr,
            asked,
            connections,
            accept,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The targets of every CONNECT so far (`ip:port`, `[ipv6]:port` or `name:port`).
    pub fn asked(&self) -> Vec<String> {
        self.asked.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// How many connections it has accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

/// RFC 1928 §6 reply codes.
const SUCCEEDED: u8 = 0;
const GENERAL_FAILURE: u8 = 1;
const NETWORK_UNREACHABLE: u8 = 3;
const HOST_UNREACHABLE: u8 = 4;
const CONNECTION_REFUSED: u8 = 5;
const TTL_EXPIRED: u8 = 6;
const COMMAND_NOT_SUPPORTED: u8 = 7;
const ADDRESS_TYPE_NOT_SUPPORTED: u8 = 8;

async fn serve(mut down: TcpStream, asked: Arc<Mutex<Vec<String>>>) -> io::Result<()> {
    // §3: VER NMETHODS METHODS; only "no authentication" (0) is offered back.
    let mut head = [0u8; 2];
    down.read_exact(&mut head).await?;
    let mut methods = vec![0u8; head[1] as usize];
    down.read_exact(&mut methods).await?;
    if head[0] != 5 || !methods.contains(&0) {
        return down.write_all(&[5, 0xff]).await;
    }
    down.write_all(&[5, 0]).await?;
    // §4: VER CMD RSV ATYP DST.ADDR DST.PORT.
    let mut req = [0u8; 4];
    down.read_exact(&mut req).await?;
    let host = match req[3] {
        1 => {
            let mut a = [0u8; 4];
            down.read_exact(&mut a).await?;
            Ipv4Addr::from(a).to_string()
        }
        4 => {
            let mut a = [0u8; 16];
            down.read_exact(&mut a).await?;
            Ipv6Addr::from(a).to_string()
        }
        3 => {
            let n = down.read_u8().await? as usize;
            let mut name = vec![0u8; n];
            down.read_exact(&mut name).await?;
            let name = String::from_utf8_lossy(&name).into_owned();
            if name.parse::<std::net::IpAddr>().is_ok() {
                let _ = down.read_u16().await?;
                return reply(&mut down, ADDRESS_TYPE_NOT_SUPPORTED).await;
            }
            name
        }
        _ => return reply(&mut down, ADDRESS_TYPE_NOT_SUPPORTED).await,
    };
    let port = down.read_u16().await?;
    if req[1] != 1 {
        return reply(&mut down, COMMAND_NOT_SUPPORTED).await;
    }
    let shown = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    asked.lock().unwrap_or_else(|e| e.into_inner()).push(shown);
    let dial = TcpStream::connect((host.as_str(), port)).await;
    let mut up = match dial {
        Ok(up) => up,
        Err(e) => {
            let code = match e.kind() {
                io::ErrorKind::ConnectionRefused => CONNECTION_REFUSED,
                io::ErrorKind::NetworkUnreachable => NETWORK_UNREACHABLE,
                io::ErrorKind::HostUnreachable => HOST_UNREACHABLE,
                io::ErrorKind::TimedOut => TTL_EXPIRED,
                _ => GENERAL_FAILURE,
            };
            return reply(&mut down, code).await;
        }
    };
    reply(&mut down, SUCCEEDED).await?;
    tokio::io::copy_bidirectional(&mut down, &mut up)
        .await
        .map(|_| ())
}

/// VER REP RSV ATYP BND.ADDR BND.PORT, the bound address left unspecified (0.0.0.0:0).
async fn reply(down: &mut TcpStream, code: u8) -> io::Result<()> {
    down.write_all(&[5, code, 0, 1, 0, 0, 0, 0, 0, 0]).await
}
